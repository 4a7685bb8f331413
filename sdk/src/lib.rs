//! Rust language support for Strata user functions: the function side of the CloudState
//! 0.2 protocol (discovery, event-sourced and value entities, actions) behind a small
//! typed API. It owns no state storage; the proxy persists what entities emit.
//!
//! An entity is a trait implementation. Command handlers decode their input, emit
//! events (or update a value) and answer with a [`Reply`] or a [`Failure`]; the SDK runs
//! the protocol: initialization, journal replay, sequence numbers, snapshots, replies.
//! A reply may instead forward to another method ([`Reply::forward`]), carry
//! [`Metadata`] for the client, and ask for [`SideEffect`]s. An [`Action`] is a
//! stateless service whose methods may stream in either direction; an action
//! method subscribed to an event log in the proto is fed the events of an entity
//! type, and [`EventSource`] says which entity and sequence number each came from
//! (see [`eventing`]).
//!
//! ```no_run
//! use strata_sdk::{
//!     unpack, Any, Command, EntityError, EventContext, EventSourcedEntity,
//!     EventSourcedService, Failure, Reply, Service,
//! };
//!
//! /// A counter whose events are the amounts added (`google.protobuf.Int64Value`).
//! #[derive(Default)]
//! struct Counter {
//!     value: i64,
//! }
//!
//! impl EventSourcedEntity for Counter {
//!     type Snapshot = i64;
//!
//!     fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
//!         match command.name() {
//!             "Increase" => {
//!                 let amount: i64 = command.decode()?;
//!                 if amount <= 0 {
//!                     return Err(Failure::new("increase by a positive amount"));
//!                 }
//!                 ctx.emit(amount);
//!                 Ok(Reply::empty())
//!             }
//!             "Get" => Ok(Reply::message(&self.value)),
//!             other => Err(Failure::new(format!("unknown command {other}"))),
//!         }
//!     }
//!
//!     fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
//!         self.value += unpack::<i64>(event)?;
//!         Ok(())
//!     }
//!
//!     fn snapshot(&self) -> Option<i64> {
//!         Some(self.value)
//!     }
//!
//!     fn restore(&mut self, snapshot: i64) -> Result<(), EntityError> {
//!         self.value = snapshot;
//!         Ok(())
//!     }
//! }
//!
//! // In a real function: include_bytes! of the FileDescriptorSet that build.rs wrote
//! // with protox, imports included.
//! # const DESCRIPTORS: &[u8] = &[];
//!
//! #[tokio::main]
//! async fn main() -> Result<(), strata_sdk::ServeError> {
//!     Service::new(DESCRIPTORS)
//!         .service_name("counter")
//!         .event_sourced(
//!             EventSourcedService::new("example.Counter", "counters", |_entity_id| Counter::default())
//!                 .snapshot_every(50),
//!         )
//!         .serve() // HOST and PORT, default 127.0.0.1:8080; stops on SIGTERM or Ctrl-C
//!         .await
//! }
//! ```

mod action;
mod action_protocol;
mod command;
mod config;
mod crdt;
mod crdt_session;
mod discovery;
mod entity_session;
mod entity_stream;
mod error;
mod event_sourced;
mod event_sourced_session;
pub mod eventing;
mod metadata;
pub mod payload;
mod registry;
mod reply;
mod service;
pub mod testkit;
pub mod timer;
mod trace;
mod value_entity;
mod value_entity_session;

pub use action::{Action, ActionService, CommandStream, ReplyStream};
pub use command::Command;
pub use config::ListenConfig;
pub use crdt::{
    CancelContext, Clock, Crdt, CrdtContext, CrdtElement, CrdtEntity, CrdtService, Flag, GCounter, GSet, LwwRegister,
    OnCancel, OnChange, OrMap, OrSet, PnCounter, StreamContext, Vote, WriteConsistency,
};
pub use error::{ConfigError, EntityError, PayloadError, ServeError};
pub use event_sourced::{EventContext, EventSourcedEntity, EventSourcedService, DEFAULT_SNAPSHOT_EVERY};
pub use eventing::EventSource;
pub use metadata::{Metadata, MetadataValue};
pub use payload::{pack, unpack, unpack_if};
pub use prost_types::Any;
pub use reply::{Failure, Reply, ServiceCall, SideEffect};
pub use service::{Service, DEFAULT_SHUTDOWN_GRACE};
pub use strata_telemetry::TraceParent;
pub use value_entity::{ValueContext, ValueEntity, ValueEntityService};
