//! The cart's logic through the SDK's in-process test kit: validation, events, how they
//! change the cart, and the snapshot round trip.

use strata_sdk::{pack, testkit::EventSourcedTestKit, EventSourcedEntity};

use super::ShoppingCart;
use crate::{api, domain};

fn cart() -> EventSourcedTestKit<ShoppingCart> {
    EventSourcedTestKit::new("alice", ShoppingCart::default())
}

fn add(product_id: &str, name: &str, quantity: i32) -> api::AddLineItem {
    api::AddLineItem {
        user_id: "alice".to_owned(),
        product_id: product_id.to_owned(),
        name: name.to_owned(),
        quantity,
    }
}

fn remove(product_id: &str) -> api::RemoveLineItem {
    api::RemoveLineItem {
        user_id: "alice".to_owned(),
        product_id: product_id.to_owned(),
    }
}

fn get(cart: &mut EventSourcedTestKit<ShoppingCart>) -> api::Cart {
    let effects = cart
        .handle(
            "GetCart",
            &api::GetShoppingCart {
                user_id: "alice".to_owned(),
            },
        )
        .unwrap();
    assert!(effects.events().is_empty());
    effects.reply()
}

fn line(product_id: &str, name: &str, quantity: i32) -> api::LineItem {
    api::LineItem {
        product_id: product_id.to_owned(),
        name: name.to_owned(),
        quantity,
    }
}

fn domain_line(product_id: &str, name: &str, quantity: i32) -> domain::LineItem {
    domain::LineItem {
        product_id: product_id.to_owned(),
        name: name.to_owned(),
        quantity,
    }
}

#[test]
fn adding_an_item_emits_item_added() {
    let mut cart = cart();
    let effects = cart.handle("AddItem", &add("tea", "Tea", 2)).unwrap();
    assert_eq!(effects.reply::<()>(), ());
    assert_eq!(
        effects.events(),
        [pack(&domain::ItemAdded {
            item: Some(domain_line("tea", "Tea", 2))
        })]
    );
    assert_eq!(get(&mut cart).items, [line("tea", "Tea", 2)]);
}

#[test]
fn adding_a_product_again_adds_to_its_quantity_in_place() {
    let mut cart = cart();
    cart.handle("AddItem", &add("tea", "Tea", 2)).unwrap();
    cart.handle("AddItem", &add("cake", "Cake", 1)).unwrap();
    cart.handle("AddItem", &add("tea", "Tea", 3)).unwrap();
    assert_eq!(get(&mut cart).items, [line("tea", "Tea", 5), line("cake", "Cake", 1)]);
}

#[test]
fn a_non_positive_quantity_fails_without_an_event() {
    let mut cart = cart();
    for quantity in [0, -1] {
        let failure = cart.handle("AddItem", &add("tea", "Tea", quantity)).unwrap_err();
        assert_eq!(
            failure.description(),
            "Quantity for item tea must be greater than zero."
        );
        assert!(!failure.restarts());
    }
    assert_eq!(cart.sequence(), 0);
    assert!(get(&mut cart).items.is_empty());
}

#[test]
fn removing_an_item_emits_item_removed() {
    let mut cart = cart();
    cart.handle("AddItem", &add("tea", "Tea", 2)).unwrap();
    cart.handle("AddItem", &add("cake", "Cake", 1)).unwrap();
    let effects = cart.handle("RemoveItem", &remove("tea")).unwrap();
    assert_eq!(
        effects.event::<domain::ItemRemoved>(0),
        domain::ItemRemoved {
            product_id: "tea".to_owned()
        }
    );
    assert_eq!(get(&mut cart).items, [line("cake", "Cake", 1)]);
}

#[test]
fn removing_an_item_not_in_the_cart_fails_without_an_event() {
    let mut cart = cart();
    let failure = cart.handle("RemoveItem", &remove("tea")).unwrap_err();
    assert_eq!(
        failure.description(),
        "Cannot remove item tea because it is not in the cart."
    );
    assert_eq!(cart.sequence(), 0);
}

#[test]
fn a_payload_of_another_type_fails_the_command() {
    let mut cart = cart();
    let failure = cart.handle("AddItem", &remove("tea")).unwrap_err();
    assert_eq!(
        failure.description(),
        "command AddItem: expected a com.example.shoppingcart.AddLineItem message, got type \
         URL \"type.googleapis.com/com.example.shoppingcart.RemoveLineItem\""
    );
}

#[test]
fn replayed_events_rebuild_the_cart() {
    let mut cart = cart();
    cart.replay(&domain::ItemAdded {
        item: Some(domain_line("tea", "Tea", 2)),
    })
    .unwrap();
    cart.replay(&domain::ItemRemoved {
        product_id: "tea".to_owned(),
    })
    .unwrap();
    cart.replay(&domain::ItemAdded {
        item: Some(domain_line("cake", "Cake", 1)),
    })
    .unwrap();
    assert_eq!(cart.entity().items(), [domain_line("cake", "Cake", 1)]);
}

#[test]
fn an_unknown_event_is_an_entity_error() {
    let mut cart = cart();
    let error = cart.replay(&api::Cart::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown event type \"type.googleapis.com/com.example.shoppingcart.Cart\""
    );
}

#[test]
fn the_snapshot_restores_the_same_cart() {
    let mut cart = cart().snapshot_every(2);
    cart.handle("AddItem", &add("tea", "Tea", 2)).unwrap();
    let effects = cart.handle("AddItem", &add("cake", "Cake", 1)).unwrap();
    let snapshot = effects.snapshot().expect("a snapshot at event 2");
    let snapshot = strata_sdk::unpack::<domain::Cart>(snapshot).unwrap();
    assert_eq!(
        snapshot.items,
        [domain_line("tea", "Tea", 2), domain_line("cake", "Cake", 1)]
    );

    let mut restored = ShoppingCart::default();
    restored.restore(snapshot).unwrap();
    assert_eq!(&restored, cart.entity());
}
