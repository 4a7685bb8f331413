//! Drives the SDK through its gRPC server on a loopback port with the protocol's own
//! tonic clients, as the proxy does, and asserts the exact messages it answers.

mod action;
mod discovery;
mod event_sourced;
mod serve;
mod support;
mod value_entity;
