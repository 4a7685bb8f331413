//! A shopping cart kept as one value per user (a value entity), written with
//! strata-sdk: AddItem updates the value, RemoveCart deletes it. Serves on
//! HOST:PORT like any user function; PASSIVATION_MS sets the idle timeout.

use std::time::Duration;

use strata_e2e::valuecart::{AddLineItem, Cart, LineItem};
use strata_sdk::{Command, Failure, Reply, Service, ValueContext, ValueEntity, ValueEntityService};

struct ValueCart;

impl ValueEntity for ValueCart {
    type State = Cart;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, Cart>) -> Result<Reply, Failure> {
        match command.name() {
            "AddItem" => {
                let add: AddLineItem = command.decode()?;
                if add.quantity <= 0 {
                    return Err(Failure::new("quantity must be positive"));
                }
                let mut cart = ctx.state().cloned().unwrap_or_default();
                match cart.items.iter_mut().find(|i| i.product_id == add.product_id) {
                    Some(item) => item.quantity += add.quantity,
                    None => cart.items.push(LineItem {
                        product_id: add.product_id,
                        quantity: add.quantity,
                    }),
                }
                ctx.update_state(cart);
                Ok(Reply::empty())
            }
            "GetCart" => Ok(Reply::message(&ctx.state().cloned().unwrap_or_default())),
            "RemoveCart" => {
                ctx.delete_state();
                Ok(Reply::empty())
            }
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), strata_sdk::ServeError> {
    // Tests shorten the idle timeout to watch entities passivate.
    let passivation = std::env::var("PASSIVATION_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    Service::new(strata_e2e::VALUE_CART_DESCRIPTORS)
        .service_name("value-cart")
        .value_entity(
            ValueEntityService::new("strata.test.valuecart.ValueCart", "value-cart", |_| ValueCart)
                .passivation_timeout(passivation),
        )
        .serve()
        .await
}
