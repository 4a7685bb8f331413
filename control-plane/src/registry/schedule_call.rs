//! A schedule's call, resolved against the service's own descriptors: the method
//! must be one the service serves, and the JSON body must read as its input
//! message (the proto3 JSON mapping). Checked when a schedule is created, so bad
//! input is refused with the field at fault, and done again at every run to encode
//! the request the leader sends. Pure: reads the registry's descriptors only.

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::{RegistryError, Service};

/// The request for `method` (`package.Service/Method`) of `service` with `body`
/// (a JSON object), encoded as protobuf.
pub fn encode_call(service: &Service, method: &str, body: &str) -> Result<Vec<u8>, RegistryError> {
    let pool = descriptors(service)?;
    let (grpc_service, method_name) = method
        .split_once('/')
        .ok_or_else(|| RegistryError::invalid("call", format!("{method:?} is not package.Service/Method")))?;
    let found = pool
        .get_service_by_name(grpc_service)
        .and_then(|served| served.methods().find(|candidate| candidate.name() == method_name))
        .ok_or_else(|| RegistryError::NotFound {
            what: format!("method of service {:?}", service.name),
            name: method.to_owned(),
        })?;
    if found.is_client_streaming() {
        return Err(RegistryError::invalid(
            "call",
            format!("{method} takes a stream of requests; a schedule calls unary or server-streamed methods"),
        ));
    }
    let input = found.input();
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let request = DynamicMessage::deserialize(input.clone(), &mut deserializer).map_err(|error| {
        RegistryError::invalid(
            "body",
            format!(
                "the body is not a {} (the input of {method}): {error}",
                input.full_name()
            ),
        )
    })?;
    deserializer
        .end()
        .map_err(|error| RegistryError::invalid("body", format!("the body has more after its JSON object: {error}")))?;
    Ok(request.encode_to_vec())
}

/// The service's descriptors as discovery reported them.
fn descriptors(service: &Service) -> Result<DescriptorPool, RegistryError> {
    let not_yet = || RegistryError::Conflict {
        message: format!(
            "service {:?} has not reported its methods yet: create the schedule once an instance of it has been ready",
            service.name
        ),
    };
    let encoded = service.descriptor_set.as_deref().ok_or_else(not_yet)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| not_yet())?;
    DescriptorPool::decode(bytes.as_slice()).map_err(|_| not_yet())
}
