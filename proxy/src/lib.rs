//! Strata's data plane. The sidecar role: discovers the user function's entities
//! and actions, serves its gRPC services over gRPC, gRPC-web and HTTP+JSON, runs
//! one actor per active entity, persists state through a [`strata_store::Store`],
//! and performs the forwards and side effects the function asks for. The gateway
//! role routes the same calls to the sidecars of a deployment.

pub mod action;
pub mod admin;
pub mod backoff;
pub mod call;
pub mod control_plane;
pub mod descriptors;
pub mod dispatch;
pub mod effects;
pub mod entity;
pub mod error;
pub mod eventing;
#[cfg(test)]
mod fixtures;
pub mod function;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod grpc;
pub mod http_json;
pub mod ingress;
pub mod membership;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod passing;
pub mod path_template;
pub mod readiness;
pub mod reflection;
pub mod shard;
pub mod sidecar;
pub mod transcode;
pub mod wake;
