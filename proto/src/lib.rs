//! The CloudState 0.2 protocol (byte for byte) and the user-facing options, as prost
//! messages with tonic clients and servers. Owns only generated code and the path of
//! the `.proto` files; no behaviour lives here.

#![allow(clippy::all, missing_docs, non_camel_case_types)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// A serialized `FileDescriptorSet` of every proto in this crate, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strata_protos.bin"));

/// The folder holding Strata's `.proto` files: the include path for user protos that
/// import `cloudstate/entity_key.proto` or `google/api/annotations.proto`.
pub const PROTO_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The protocol version this build speaks (CloudState 0.2).
pub const PROTOCOL_MAJOR_VERSION: i32 = 0;
/// See [`PROTOCOL_MAJOR_VERSION`].
pub const PROTOCOL_MINOR_VERSION: i32 = 2;

/// The persistence id an entity journals under: the one it declares, or its
/// gRPC service name when it declares none (as CloudState's proxy did).
pub fn persistence_id<'a>(declared: &'a str, service_name: &'a str) -> &'a str {
    if declared.is_empty() {
        service_name
    } else {
        declared
    }
}

/// Entity type names as they appear in `Entity.entity_type`.
pub mod entity_types {
    pub const EVENT_SOURCED: &str = "cloudstate.eventsourced.EventSourced";
    pub const VALUE_ENTITY: &str = "cloudstate.valueentity.ValueEntity";
    pub const CRDT: &str = "cloudstate.crdt.Crdt";
    pub const ACTION: &str = "cloudstate.action.ActionProtocol";
}
