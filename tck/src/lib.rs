//! Strata's conformance kit: the cases of CloudState's kit, in Rust, run against a
//! proxy and a user function in any language. Model cases speak the protocol to
//! the function directly and check its exact answers; proxy cases call the proxy
//! as a client would and check, through an interceptor that sits between proxy
//! and function, the exact protocol messages the proxy sends and receives.
//! `scripts/tck` runs it; the closing line is `N passed, M failed`.

pub mod cases;
pub mod intercept;
pub mod kit;
pub mod messages;
pub mod probe;
pub mod protocol;

/// The model services' messages and gRPC clients (`tck/proto`).
pub mod model {
    include!(concat!(env!("OUT_DIR"), "/tck_model.rs"));

    /// The event-sourced model's package.
    pub use self::cloudstate::tck::model as es;
    /// The action model's package.
    pub use self::cloudstate::tck::model::action;
    /// The CRDT model's package.
    pub use self::cloudstate::tck::model::crdt;
    /// The event log eventing model's package.
    pub use self::cloudstate::tck::model::eventlogeventing as ev;
    /// The value entity model's package.
    pub use self::cloudstate::tck::model::valueentity as ve;
    /// The timers model's package (Strata's own).
    pub use self::strata::tck::model::timers;
    /// The published timer messages (`proto/strata/timers.proto`), generated
    /// from the proto as a function in any language generates them.
    pub use self::strata::timers as published_timers;

    /// The model's `FileDescriptorSet`, imports included.
    pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tck_model.bin"));
}
