//! Cart totals, a projection: how many of each product the shopping carts hold,
//! built from the carts' journal. The `CartEvents` action is subscribed to the
//! event log of persistence id `shopping-cart`; for each `ItemAdded` and
//! `ItemRemoved` it forwards a [`api::ProductChange`] to the product's
//! `ProductTotals` value entity. Eventing delivers at least once, so the entity
//! remembers, per cart, the last event sequence number it applied and ignores
//! one it has seen: a total counts every event exactly once.

use strata_sdk::{
    payload::unpack_if, Action, ActionService, Command, EventSource, Failure, Reply, Service, ServiceCall,
    ValueContext, ValueEntity, ValueEntityService,
};

/// Messages generated from `proto/carttotals.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/com.example.carttotals.rs"));
}

/// The shopping cart's events (its `domain.proto`), as the journal holds them.
#[allow(clippy::all, missing_docs)]
pub mod cart_events {
    include!(concat!(env!("OUT_DIR"), "/com.example.shoppingcart.persistence.rs"));
}

/// The `FileDescriptorSet` of `proto/` (and the cart's events), imports
/// included, as discovery sends it.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub const CART_EVENTS: &str = "com.example.carttotals.CartEvents";
pub const PRODUCT_TOTALS: &str = "com.example.carttotals.ProductTotals";
/// Where the product entities' values are stored.
pub const PRODUCT_TOTALS_PERSISTENCE_ID: &str = "product-totals";

/// The projection: one cart event in, one product change forwarded.
pub struct CartEvents;

impl CartEvents {
    /// The product change a cart event makes (`None`: an event of another type,
    /// which changes no total).
    pub fn change(command: &Command) -> Result<Option<api::ProductChange>, Failure> {
        let source = EventSource::of(command)
            .ok_or_else(|| Failure::new("OnCartEvent takes the carts' events, which only the proxy delivers"))?;
        let unreadable = |error: strata_sdk::PayloadError| Failure::new(format!("an unreadable cart event: {error}"));
        let change = |product_id: String| api::ProductChange {
            product_id,
            cart_id: source.entity_id.clone(),
            sequence_number: source.sequence_number,
            ..Default::default()
        };
        if let Some(added) = unpack_if::<cart_events::ItemAdded>(command.payload()).map_err(unreadable)? {
            let item = added.item.unwrap_or_default();
            return Ok(Some(api::ProductChange {
                added: item.quantity,
                ..change(item.product_id)
            }));
        }
        if let Some(removed) = unpack_if::<cart_events::ItemRemoved>(command.payload()).map_err(unreadable)? {
            return Ok(Some(api::ProductChange {
                removed: true,
                ..change(removed.product_id)
            }));
        }
        Ok(None)
    }
}

impl Action for CartEvents {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        match Self::change(&command)? {
            Some(change) => Ok(Reply::forward(ServiceCall::new(PRODUCT_TOTALS, "Apply", &change))),
            None => {
                tracing::info!(event_type = %command.payload().type_url, "not a cart change; skipped");
                Ok(Reply::none())
            }
        }
    }
}

/// One product's total: each cart's quantity of it.
pub struct ProductTotals;

impl ProductTotals {
    /// Applies `change` unless the cart's line has seen its event already;
    /// whether it changed anything.
    pub fn apply(state: &mut api::ProductState, change: &api::ProductChange) -> bool {
        let line = state.carts.entry(change.cart_id.clone()).or_default();
        if change.sequence_number <= line.last_sequence_number {
            return false;
        }
        line.quantity = if change.removed {
            0
        } else {
            line.quantity + change.added
        };
        line.last_sequence_number = change.sequence_number;
        true
    }

    pub fn total(state: &api::ProductState) -> i32 {
        state.carts.values().map(|line| line.quantity).sum()
    }
}

impl ValueEntity for ProductTotals {
    type State = api::ProductState;

    fn handle_command(
        &self,
        command: &Command,
        ctx: &mut ValueContext<'_, api::ProductState>,
    ) -> Result<Reply, Failure> {
        match command.name() {
            "Apply" => {
                let change: api::ProductChange = command.decode()?;
                let mut state = ctx.state().cloned().unwrap_or_default();
                if Self::apply(&mut state, &change) {
                    ctx.update_state(state);
                }
                Ok(Reply::empty())
            }
            "GetTotal" => {
                let _: api::GetProductTotal = command.decode()?;
                let total = ctx.state().map(Self::total).unwrap_or(0);
                Ok(Reply::message(&api::ProductTotal { total }))
            }
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }
}

/// The user function.
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("cart-totals")
        .service_version(env!("CARGO_PKG_VERSION"))
        .action(ActionService::new(CART_EVENTS, CartEvents))
        .value_entity(ValueEntityService::new(
            PRODUCT_TOTALS,
            PRODUCT_TOTALS_PERSISTENCE_ID,
            |_| ProductTotals,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(cart: &str, seq: i64, added: i32, removed: bool) -> api::ProductChange {
        api::ProductChange {
            product_id: "apple".into(),
            cart_id: cart.into(),
            sequence_number: seq,
            added,
            removed,
        }
    }

    #[test]
    fn every_event_counts_once_however_often_it_comes() {
        let mut state = api::ProductState::default();
        assert!(ProductTotals::apply(&mut state, &change("c1", 1, 2, false)));
        assert!(ProductTotals::apply(&mut state, &change("c2", 1, 5, false)));
        assert!(ProductTotals::apply(&mut state, &change("c1", 3, 1, false)));
        assert_eq!(ProductTotals::total(&state), 8);
        // Redelivered (at least once): ignored, also an earlier one of the cart.
        assert!(!ProductTotals::apply(&mut state, &change("c1", 3, 1, false)));
        assert!(!ProductTotals::apply(&mut state, &change("c1", 1, 2, false)));
        assert_eq!(ProductTotals::total(&state), 8);
        // Removed from c1: its quantity goes, c2's stays.
        assert!(ProductTotals::apply(&mut state, &change("c1", 4, 0, true)));
        assert_eq!(ProductTotals::total(&state), 5);
    }
}
