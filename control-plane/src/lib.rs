//! Strata's control plane: an openraft cluster whose state machine is the registry of
//! services, instances and shards, with a REST management API. The data plane (proxy,
//! gateway) and the runtime drivers live elsewhere and talk to it over its APIs.

pub mod api;
pub mod auth;
pub mod node;
pub mod raft;
pub mod registry;
pub mod server;
