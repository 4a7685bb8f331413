//! Strata's data plane. The sidecar role: discovers the user function's entities,
//! serves its gRPC services over gRPC, gRPC-web and HTTP+JSON, runs one actor per
//! active entity, and persists state through a [`strata_store::Store`].

pub mod entity;
pub mod error;
pub mod function;
pub mod gateway;
pub mod grpc;
pub mod ingress;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod path_template;
pub mod shard;
pub mod sidecar;
pub mod transcode;
