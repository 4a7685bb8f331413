//! A shopping cart kept as one value per user (a value entity), written with
//! strata-sdk: AddItem updates the value, RemoveCart deletes it. Serves on
//! HOST:PORT like any user function; PASSIVATION_MS sets the idle timeout.
//! With EXPIRE_MS set, the cart expires itself: every AddItem (re)schedules the
//! durable timer `expire`, which calls ExpireCart that long after the last add
//! (3 attempts); KeepCart cancels it. With FAIL_EVERY=N set, every Nth AddItem
//! this process handles fails (a revision with a bug, for the canary tests); with
//! SLOW_MS=N set, every AddItem takes N ms longer (a revision that got slower).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_e2e::valuecart::{AddLineItem, Cart, ExpireCart, LineItem};
use strata_sdk::{timer, Command, Failure, Reply, Service, ServiceCall, ValueContext, ValueEntity, ValueEntityService};

const SERVICE: &str = "strata.test.valuecart.ValueCart";
/// The product that makes ExpireCart fail.
const STICKY: &str = "sticky";
/// Calls of ExpireCart before its timer is kept as failed.
const EXPIRE_ATTEMPTS: u32 = 3;

struct ValueCart {
    /// How long after the last add the cart expires (`None`: never).
    expire_after: Option<Duration>,
    /// Every how many AddItems one fails (`None`: none does).
    fail_every: Option<u64>,
    /// How much longer each AddItem takes.
    slow: Option<Duration>,
}

/// AddItems this process handled, for FAIL_EVERY.
static ADDS: AtomicU64 = AtomicU64::new(0);

impl ValueEntity for ValueCart {
    type State = Cart;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, Cart>) -> Result<Reply, Failure> {
        match command.name() {
            "AddItem" => {
                let add: AddLineItem = command.decode()?;
                let nth = ADDS.fetch_add(1, Ordering::Relaxed) + 1;
                if self.fail_every.is_some_and(|every| nth % every == 0) {
                    return Err(Failure::new("failing as asked (FAIL_EVERY)"));
                }
                if let Some(slow) = self.slow {
                    // The handler is synchronous: a revision that got slower blocks.
                    std::thread::sleep(slow);
                }
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
                let reply = Reply::empty();
                let Some(after) = self.expire_after else {
                    return Ok(reply);
                };
                let expire = ServiceCall::new(
                    SERVICE,
                    "ExpireCart",
                    &ExpireCart {
                        user_id: command.entity_id().to_string(),
                    },
                );
                Ok(reply.with_effect(timer::schedule_attempts("expire", after, expire, EXPIRE_ATTEMPTS)))
            }
            "ExpireCart" => {
                if ctx
                    .state()
                    .is_some_and(|cart| cart.items.iter().any(|i| i.product_id == STICKY))
                {
                    return Err(Failure::new("the cart holds a sticky item and cannot expire"));
                }
                ctx.delete_state();
                Ok(Reply::empty())
            }
            "KeepCart" => Ok(Reply::empty().with_effect(timer::cancel("expire"))),
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
    let expire_after = std::env::var("EXPIRE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    let fail_every = std::env::var("FAIL_EVERY")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0);
    let slow = std::env::var("SLOW_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    Service::new(strata_e2e::VALUE_CART_DESCRIPTORS)
        .service_name("value-cart")
        .value_entity(
            ValueEntityService::new("strata.test.valuecart.ValueCart", "value-cart", move |_| ValueCart {
                expire_after,
                fail_every,
                slow,
            })
            .passivation_timeout(passivation),
        )
        .serve()
        .await
}
