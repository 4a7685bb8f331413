//! Test fixtures: the service model of `fixtures/things.proto` (Warehouse, a
//! value entity; Auditor, an event-sourced entity; Clerk, an action) and
//! encoded messages of it. Only [`things_spec`] is built outside tests, for the
//! fuzz targets.

#[cfg(test)]
use std::sync::Arc;

#[cfg(test)]
use prost::Message;
#[cfg(test)]
use prost_reflect::{DynamicMessage, Value};
#[cfg(test)]
use prost_types::Any;
use strata_proto::cloudstate::{Entity, EntitySpec};

#[cfg(test)]
use crate::model::{MethodModel, ServiceModel};

/// The entities of the fixture service (`proxy/fixtures/things.proto`): a
/// value entity, an event-sourced entity and an action.
pub fn things_spec(descriptor_set: Vec<u8>) -> EntitySpec {
    let entity = |entity_type: &str, service_name: &str, persistence_id: &str| Entity {
        entity_type: entity_type.into(),
        service_name: service_name.into(),
        persistence_id: persistence_id.into(),
        passivation_strategy: None,
    };
    use strata_proto::entity_types::{ACTION, EVENT_SOURCED, VALUE_ENTITY};
    EntitySpec {
        proto: descriptor_set,
        entities: vec![
            entity(VALUE_ENTITY, "test.things.Warehouse", "things"),
            entity(EVENT_SOURCED, "test.things.Auditor", "audits"),
            entity(ACTION, "test.things.Clerk", ""),
        ],
        service_info: None,
    }
}

/// The encoded descriptors of the fixture, imports included.
#[cfg(test)]
pub(crate) fn descriptor_set() -> Vec<u8> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut compiler = protox::Compiler::new([fixtures, strata_proto::PROTO_DIR]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["things.proto"]).unwrap();
    compiler.encode_file_descriptor_set()
}

#[cfg(test)]
pub(crate) fn spec() -> EntitySpec {
    things_spec(descriptor_set())
}

#[cfg(test)]
pub(crate) fn model() -> ServiceModel {
    ServiceModel::from_spec(&spec()).unwrap()
}

/// The model and one of its methods, by gRPC path.
#[cfg(test)]
pub(crate) fn method(path: &str) -> (ServiceModel, Arc<MethodModel>) {
    let model = model();
    let method = model.method(path).unwrap_or_else(|| panic!("no method {path}")).clone();
    (model, method)
}

#[cfg(test)]
fn encode(model: &ServiceModel, name: &str, shelf: &str, id: i64) -> Any {
    let mut message = DynamicMessage::new(model.pool.get_message_by_name(name).unwrap());
    message.set_field_by_name("shelf", Value::String(shelf.into()));
    message.set_field_by_name("thing_id", Value::I64(id));
    Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

/// A `test.things.Thing` on `shelf` with `id`.
#[cfg(test)]
pub(crate) fn thing(shelf: &str, id: i64) -> Any {
    encode(&model(), "test.things.Thing", shelf, id)
}

/// A `test.things.ThingRef` to `shelf` and `id`.
#[cfg(test)]
pub(crate) fn thing_ref(shelf: &str, id: i64) -> Any {
    encode(&model(), "test.things.ThingRef", shelf, id)
}
