//! Stored payloads (`google.protobuf.Any`) as JSON for people: messages decoded with
//! the service's own descriptors (the proto3 JSON mapping), CloudState's primitive
//! (`p.cloudstate.io/...`) and JSON (`json.cloudstate.io/...`) payloads unwrapped.
//! A payload that cannot be decoded says why instead of failing the whole answer.

use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use prost_types::Any;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const PRIMITIVE_PREFIX: &str = "p.cloudstate.io/";
const JSON_PREFIX: &str = "json.cloudstate.io/";

/// One decoded payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PayloadView {
    /// The full type name from the type URL, e.g. `com.example.shoppingcart.ItemAdded`.
    pub type_name: String,
    /// The payload as JSON; null when it could not be decoded.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Why the payload could not be decoded, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Decodes payloads with one service's descriptors.
pub struct PayloadDecoder {
    pool: Option<DescriptorPool>,
}

impl PayloadDecoder {
    /// From the base64 `FileDescriptorSet` the service reported at discovery.
    pub fn new(descriptor_set: Option<&str>) -> Self {
        let pool = descriptor_set
            .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded).ok())
            .and_then(|bytes| DescriptorPool::decode(bytes.as_slice()).ok());
        PayloadDecoder { pool }
    }

    pub fn decode(&self, payload: &Any) -> PayloadView {
        let type_name = payload
            .type_url
            .rsplit_once('/')
            .map_or(payload.type_url.as_str(), |(_, name)| name)
            .to_owned();
        let decoded = if let Some(primitive) = payload.type_url.strip_prefix(PRIMITIVE_PREFIX) {
            decode_primitive(primitive, &payload.value)
        } else if payload.type_url.starts_with(JSON_PREFIX) {
            decode_json(&payload.value)
        } else {
            self.decode_message(&type_name, &payload.value)
        };
        match decoded {
            Ok(value) => PayloadView {
                type_name,
                value,
                error: None,
            },
            Err(error) => PayloadView {
                type_name,
                value: serde_json::Value::Null,
                error: Some(error),
            },
        }
    }

    fn decode_message(&self, type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
        let pool = self
            .pool
            .as_ref()
            .ok_or("the service has not reported its descriptors yet")?;
        let descriptor = pool
            .get_message_by_name(type_name)
            .ok_or_else(|| format!("{type_name} is not among the service's descriptors"))?;
        let message = DynamicMessage::decode(descriptor, bytes)
            .map_err(|error| format!("the bytes are not a valid {type_name}: {error}"))?;
        let options = SerializeOptions::new().skip_default_fields(false);
        message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|error| format!("{type_name} has no JSON form: {error}"))
    }
}

/// CloudState encodes a primitive as field 1 of a message, like the protobuf wrappers.
fn decode_primitive(kind: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    let malformed = |error: prost::DecodeError| format!("malformed {kind} payload: {error}");
    Ok(match kind {
        "string" => String::decode(bytes).map_err(malformed)?.into(),
        "bool" => bool::decode(bytes).map_err(malformed)?.into(),
        "int32" => i32::decode(bytes).map_err(malformed)?.into(),
        "int64" => i64::decode(bytes).map_err(malformed)?.into(),
        "float" => f64::from(f32::decode(bytes).map_err(malformed)?).into(),
        "double" => f64::decode(bytes).map_err(malformed)?.into(),
        "bytes" => base64::engine::general_purpose::STANDARD
            .encode(Vec::<u8>::decode(bytes).map_err(malformed)?)
            .into(),
        other => return Err(format!("unknown primitive payload type {other}")),
    })
}

/// CloudState's JSON payloads carry the JSON text as a `bytes` field 1.
fn decode_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let text = Vec::<u8>::decode(bytes).map_err(|error| format!("malformed JSON payload: {error}"))?;
    serde_json::from_slice(&text).map_err(|error| format!("the payload is not JSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        Any {
            type_url: type_url.into(),
            value,
        }
    }

    #[test]
    fn primitives_and_json_unwrap() {
        let decoder = PayloadDecoder::new(None);
        let text = decoder.decode(&any("p.cloudstate.io/string", "hi".to_owned().encode_to_vec()));
        assert_eq!(
            (text.type_name.as_str(), text.value),
            ("string", serde_json::json!("hi"))
        );
        let number = decoder.decode(&any("p.cloudstate.io/int64", 42i64.encode_to_vec()));
        assert_eq!(number.value, serde_json::json!(42));
        let json = decoder.decode(&any(
            "json.cloudstate.io/Thing",
            br#"{"a": [1, 2]}"#.to_vec().encode_to_vec(),
        ));
        assert_eq!(json.value, serde_json::json!({"a": [1, 2]}));
    }

    #[test]
    fn an_undecodable_payload_says_why() {
        let decoder = PayloadDecoder::new(None);
        let unknown = decoder.decode(&any("type.googleapis.com/com.example.Thing", vec![1, 2]));
        assert_eq!(unknown.type_name, "com.example.Thing");
        assert_eq!(unknown.value, serde_json::Value::Null);
        assert_eq!(
            unknown.error.as_deref(),
            Some("the service has not reported its descriptors yet")
        );
        let garbage = decoder.decode(&any("json.cloudstate.io/Thing", b"not json".to_vec().encode_to_vec()));
        assert!(garbage.error.unwrap().starts_with("the payload is not JSON"));
    }
}
