//! The shopping cart entity: command handlers that validate and emit `ItemAdded` or
//! `ItemRemoved`, the event handler that is the only place a cart changes, and the
//! `Cart` snapshot. Behaves as CloudState's shopping cart examples do.

use strata_sdk::{unpack_if, Any, Command, EntityError, EventContext, EventSourcedEntity, Failure, Reply};

use crate::{api, domain};

/// One user's cart: line items in the order they were first added.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ShoppingCart {
    items: Vec<domain::LineItem>,
}

impl ShoppingCart {
    /// The items, in the order they were first added.
    pub fn items(&self) -> &[domain::LineItem] {
        &self.items
    }

    fn add_item(&self, add: api::AddLineItem, ctx: &mut EventContext) -> Result<Reply, Failure> {
        if add.quantity <= 0 {
            return Err(Failure::new(format!(
                "Quantity for item {} must be greater than zero.",
                add.product_id
            )));
        }
        ctx.emit(domain::ItemAdded {
            item: Some(domain::LineItem {
                product_id: add.product_id,
                name: add.name,
                quantity: add.quantity,
            }),
        });
        Ok(Reply::empty())
    }

    fn remove_item(&self, remove: api::RemoveLineItem, ctx: &mut EventContext) -> Result<Reply, Failure> {
        if !self.items.iter().any(|item| item.product_id == remove.product_id) {
            return Err(Failure::new(format!(
                "Cannot remove item {} because it is not in the cart.",
                remove.product_id
            )));
        }
        ctx.emit(domain::ItemRemoved {
            product_id: remove.product_id,
        });
        Ok(Reply::empty())
    }

    fn get_cart(&self) -> Reply {
        let items = self
            .items
            .iter()
            .map(|item| api::LineItem {
                product_id: item.product_id.clone(),
                name: item.name.clone(),
                quantity: item.quantity,
            })
            .collect();
        Reply::message(&api::Cart { items })
    }

    fn item_added(&mut self, added: domain::ItemAdded) -> Result<(), EntityError> {
        let Some(item) = added.item else {
            return Err(EntityError::new("ItemAdded event without an item"));
        };
        match self
            .items
            .iter_mut()
            .find(|existing| existing.product_id == item.product_id)
        {
            // Adding a product already in the cart adds to its quantity.
            Some(existing) => existing.quantity += item.quantity,
            None => self.items.push(item),
        }
        Ok(())
    }

    fn item_removed(&mut self, removed: domain::ItemRemoved) {
        self.items.retain(|item| item.product_id != removed.product_id);
    }
}

impl EventSourcedEntity for ShoppingCart {
    type Snapshot = domain::Cart;

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        match command.name() {
            "AddItem" => self.add_item(command.decode()?, ctx),
            "RemoveItem" => self.remove_item(command.decode()?, ctx),
            "GetCart" => Ok(self.get_cart()),
            other => Err(Failure::new(format!("Unknown command {other}."))),
        }
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        if let Some(added) = unpack_if::<domain::ItemAdded>(event)? {
            return self.item_added(added);
        }
        if let Some(removed) = unpack_if::<domain::ItemRemoved>(event)? {
            self.item_removed(removed);
            return Ok(());
        }
        Err(EntityError::unknown_event(event))
    }

    fn snapshot(&self) -> Option<domain::Cart> {
        Some(domain::Cart {
            items: self.items.clone(),
        })
    }

    fn restore(&mut self, snapshot: domain::Cart) -> Result<(), EntityError> {
        self.items = snapshot.items;
        Ok(())
    }
}

#[cfg(test)]
#[path = "cart_tests.rs"]
mod tests;
