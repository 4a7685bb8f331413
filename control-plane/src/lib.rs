//! Strata's control plane: an openraft cluster whose state machine is the registry of
//! services, instances and shards, with a REST management API and the data-plane gRPC
//! API. The data plane (proxy, gateway) lives elsewhere and talks to it over its APIs.

pub mod api;
pub mod auth;
pub mod data_plane;
pub mod logs;
pub mod metrics_history;
pub mod node;
pub mod raft;
pub mod registry;
pub mod runtime;
pub mod server;
pub use strata_tasks as tasks;
pub mod telemetry;
pub mod traces;
