//! The CloudState shopping cart as a Strata user function: one event-sourced cart per
//! user, with its gRPC API and domain events generated from `proto/`. The binary in
//! `main.rs` only sets up logging and runs [`service`].

pub mod cart;

/// Messages generated from `proto/` (no gRPC code: the SDK serves the protocol).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

/// The public API: `com.example.shoppingcart`.
pub use proto::com::example::shoppingcart as api;
/// The persisted events and snapshot: `com.example.shoppingcart.persistence`.
pub use proto::com::example::shoppingcart::persistence as domain;

use strata_sdk::{EventSourcedService, Service};

/// The `FileDescriptorSet` of `proto/`, imports included, as discovery sends it.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The gRPC service the cart entity serves.
pub const SERVICE_NAME: &str = "com.example.shoppingcart.ShoppingCart";

/// Where the proxy stores the carts' journals and snapshots.
pub const PERSISTENCE_ID: &str = "shopping-cart";

/// A snapshot every 5 events, the cadence of CloudState's conformance tests.
pub const SNAPSHOT_EVERY: u64 = 5;

/// The shopping cart user function, ready to serve.
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("shopping-cart")
        .service_version(env!("CARGO_PKG_VERSION"))
        .event_sourced(
            EventSourcedService::new(SERVICE_NAME, PERSISTENCE_ID, |_user_id| cart::ShoppingCart::default())
                .snapshot_every(SNAPSHOT_EVERY),
        )
}
