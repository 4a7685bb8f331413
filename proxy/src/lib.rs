//! Strata's data plane. The sidecar role: discovers the user function's entities
//! and actions, serves its gRPC services over gRPC, gRPC-web and HTTP+JSON, runs
//! one actor per active entity, persists state through a [`strata_store::Store`],
//! and performs the forwards and side effects the function asks for. The gateway
//! role routes the same calls to the sidecars of a deployment.
//!
//! The source is laid out in layers: the shared vocabulary at the root (calls,
//! the service model, errors, metrics, metadata, the admin listener), and four
//! wings above it. `ingress` serves calls over gRPC, gRPC-web and HTTP+JSON;
//! `routing` reaches other instances (route tables, the control-plane client,
//! forwarding, holding). The roles use both: `sidecar` (with the entities) and
//! `gateway` (the edge), never each other. `tests/layering.rs` checks it. Other
//! crates see only the roles' entry points.

mod admin;
mod backoff;
mod call;
mod descriptors;
mod error;
mod fixtures;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod ingress;
mod metadata;
mod metrics;
mod model;
mod passing;
mod path_template;
mod readiness;
mod reply_targets;
mod routing;
mod shard;
pub mod sidecar;
mod timer_request;
mod trace;

pub use ingress::DEFAULT_MAX_BODY;
pub use routing::control_plane::DEFAULT_CONTROL_PLANE_TIMEOUT;
