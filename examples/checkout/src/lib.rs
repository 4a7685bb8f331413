//! A checkout action in front of the shopping cart: `Review` forwards to
//! `ShoppingCart.GetCart`, `Purchase` removes each bought item from the cart with
//! a synchronous side effect, so the receipt comes only once the cart is
//! emptied of them. The cart is another deployed service; the proxy routes both
//! to it.

use shopping_cart::api as cart;
use strata_sdk::{Action, ActionService, Command, Failure, Reply, Service, ServiceCall, SideEffect};

/// Messages generated from `proto/checkout.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/com.example.checkout.rs"));
}

/// The `FileDescriptorSet` of `proto/` (and the cart's API it imports).
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub const SERVICE_NAME: &str = "com.example.checkout.Checkout";

/// The checkout action.
pub struct Checkout;

impl Checkout {
    fn review(command: &Command) -> Result<Reply, Failure> {
        let review: api::ReviewRequest = command.decode()?;
        Ok(Reply::forward(ServiceCall::new(
            shopping_cart::SERVICE_NAME,
            "GetCart",
            &cart::GetShoppingCart {
                user_id: review.user_id,
            },
        )))
    }

    fn purchase(command: &Command) -> Result<Reply, Failure> {
        let purchase: api::PurchaseRequest = command.decode()?;
        if purchase.product_ids.is_empty() {
            return Err(Failure::new("a purchase needs at least one product"));
        }
        let removals = purchase.product_ids.iter().map(|product_id| {
            SideEffect::synchronous(ServiceCall::new(
                shopping_cart::SERVICE_NAME,
                "RemoveItem",
                &cart::RemoveLineItem {
                    user_id: purchase.user_id.clone(),
                    product_id: product_id.clone(),
                },
            ))
        });
        let receipt = api::Receipt {
            user_id: purchase.user_id.clone(),
            product_ids: purchase.product_ids.clone(),
        };
        Ok(Reply::message(&receipt).with_effects(removals))
    }
}

impl Action for Checkout {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        match command.name() {
            "Review" => Self::review(&command),
            "Purchase" => Self::purchase(&command),
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }
}

/// The user function: the checkout action alone (the cart is deployed apart).
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("checkout")
        .service_version(env!("CARGO_PKG_VERSION"))
        .action(ActionService::new(SERVICE_NAME, Checkout))
}

#[cfg(test)]
mod tests {
    use strata_sdk::testkit::action_command as command;

    use super::*;

    #[tokio::test]
    async fn review_forwards_to_the_cart() {
        let reply = Checkout
            .handle_unary(command("Review", &api::ReviewRequest { user_id: "ann".into() }))
            .await
            .unwrap();
        let forward = reply.forwarded().expect("a forward");
        assert_eq!(
            (forward.service(), forward.method()),
            (shopping_cart::SERVICE_NAME, "GetCart")
        );
    }

    #[tokio::test]
    async fn purchase_removes_every_item_before_the_receipt() {
        let reply = Checkout
            .handle_unary(command(
                "Purchase",
                &api::PurchaseRequest {
                    user_id: "ann".into(),
                    product_ids: vec!["apple".into(), "pear".into()],
                },
            ))
            .await
            .unwrap();
        assert!(reply.payload().is_some());
        assert_eq!(reply.effects().len(), 2);
        assert!(reply
            .effects()
            .iter()
            .all(|e| e.is_synchronous() && e.call().method() == "RemoveItem"));
        let failure = Checkout
            .handle_unary(command("Purchase", &api::PurchaseRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(failure.description(), "a purchase needs at least one product");
    }
}
