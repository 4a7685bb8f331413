//! Strata's data plane. The sidecar role: discovers the user function's entities,
//! serves its gRPC services over gRPC, gRPC-web and HTTP+JSON, runs one actor per
//! active entity, and persists state through a [`store::Store`].

pub mod store;
