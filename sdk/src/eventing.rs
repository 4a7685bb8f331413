//! Actions fed by an event log. A method declared in the proto with
//! `option (cloudstate.eventing).in.event_log = "<persistence id>";` receives
//! every event of that entity type as its input, at least once, in journal order
//! per entity. It is an ordinary [`crate::Action`] method: the proxy calls it
//! with the event as the payload and CloudEvents metadata that
//! [`EventSource::of`] reads (which entity, which sequence number). Its reply is
//! dropped, but a forward or side effects it asks for are performed (that is
//! how a projection updates an entity). A failure is retried until it passes:
//! the proxy never skips an event, so a subscriber must tolerate seeing one
//! again (remember the last sequence number per entity to make it idempotent).
//!
//! Also the JSON events of CloudState (`json.cloudstate.io/<name>`), which the
//! proxy passes through unchanged.

use prost::Message;
use prost_types::Any;

use crate::{Command, PayloadError};

/// The type URL prefix of a JSON payload.
pub const JSON_TYPE_URL_PREFIX: &str = "json.cloudstate.io/";

/// Where a delivered event comes from: the metadata the proxy sends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    /// The persistence id of the journal (the event log subscribed to).
    pub persistence_id: String,
    /// The entity whose journal holds the event.
    pub entity_id: String,
    /// The event's sequence number in that entity's journal, from 1.
    pub sequence_number: i64,
    /// The event's message type, e.g. `com.example.shoppingcart.persistence.ItemAdded`.
    pub event_type: String,
}

impl EventSource {
    /// The source of `command` if it is an event the proxy delivered from an
    /// event log (`None` for an ordinary call).
    pub fn of(command: &Command) -> Option<EventSource> {
        let metadata = command.metadata();
        Some(EventSource {
            persistence_id: metadata.get("ce-source")?.to_string(),
            entity_id: metadata.get("ce-subject")?.to_string(),
            sequence_number: metadata.get("ce-sequence")?.parse().ok()?,
            event_type: metadata.get("ce-type").unwrap_or_default().to_string(),
        })
    }
}

/// The wire form of a JSON payload: the JSON text (UTF-8 bytes) in field 1.
#[derive(Clone, PartialEq, Message)]
struct JsonText {
    #[prost(string, tag = "1")]
    json: String,
}

/// Packs JSON text as CloudState does: `json.cloudstate.io/<type_name>`.
pub fn pack_json(type_name: &str, json: &str) -> Any {
    Any {
        type_url: format!("{JSON_TYPE_URL_PREFIX}{type_name}"),
        value: JsonText { json: json.to_string() }.encode_to_vec(),
    }
}

/// The JSON text of a `json.cloudstate.io/...` payload.
pub fn unpack_json(payload: &Any) -> Result<String, PayloadError> {
    if !payload.type_url.starts_with(JSON_TYPE_URL_PREFIX) {
        return Err(PayloadError::UnexpectedType {
            expected: format!("{JSON_TYPE_URL_PREFIX}..."),
            actual: payload.type_url.clone(),
        });
    }
    let text = JsonText::decode(payload.value.as_slice()).map_err(|reason| PayloadError::Malformed {
        type_name: payload.type_url.clone(),
        reason,
    })?;
    Ok(text.json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    #[test]
    fn an_event_delivery_names_its_source_and_a_plain_call_has_none() {
        let metadata = Metadata::new()
            .with("ce-specversion", "1.0")
            .with("ce-source", "shopping-cart")
            .with("ce-subject", "cart-7")
            .with("ce-sequence", "12")
            .with("ce-type", "com.example.ItemAdded");
        let command = Command::new(String::new(), 0, "OnEvent".into(), Any::default()).with_metadata(metadata);
        assert_eq!(
            EventSource::of(&command),
            Some(EventSource {
                persistence_id: "shopping-cart".into(),
                entity_id: "cart-7".into(),
                sequence_number: 12,
                event_type: "com.example.ItemAdded".into(),
            })
        );
        let plain = Command::new(String::new(), 0, "OnEvent".into(), Any::default());
        assert_eq!(EventSource::of(&plain), None);
    }

    #[test]
    fn json_payloads_round_trip_and_others_are_refused() {
        let packed = pack_json("Note", r#"{"text":"hi"}"#);
        assert_eq!(packed.type_url, "json.cloudstate.io/Note");
        assert_eq!(unpack_json(&packed).unwrap(), r#"{"text":"hi"}"#);
        let other = Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        };
        assert!(unpack_json(&other).is_err());
    }
}
