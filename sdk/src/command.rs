//! A command as a handler sees it: which gRPC method was called, on which entity
//! (none for an action), with what payload and metadata. Decoding the payload into
//! the method's input message is one call that fails the command cleanly when the
//! payload is something else.

use prost::{Message, Name};
use prost_types::Any;
use strata_proto::cloudstate as pb;

use crate::{payload, Failure, Metadata};

/// One call of a gRPC method of the user's service, addressed to one entity (or
/// to an action).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    entity_id: String,
    id: i64,
    name: String,
    payload: Any,
    metadata: Metadata,
}

impl Command {
    pub(crate) fn new(entity_id: String, id: i64, name: String, payload: Any) -> Self {
        Self {
            entity_id,
            id,
            name,
            payload,
            metadata: Metadata::new(),
        }
    }

    pub(crate) fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub(crate) fn from_proto(command: pb::Command) -> Self {
        Self::new(
            command.entity_id,
            command.id,
            command.name,
            command.payload.unwrap_or_default(),
        )
        .with_metadata(Metadata::from_proto(command.metadata))
    }

    /// The name of the gRPC method, e.g. `AddItem`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the entity the command is for (its entity key); empty for an
    /// action.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The metadata the caller sent (HTTP headers, gRPC metadata).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The command's number in this entity's stream, counting from 1 (0 for an
    /// action).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The method's input message, still packed.
    pub fn payload(&self) -> &Any {
        &self.payload
    }

    /// Decodes the payload as the method's input message `M`.
    ///
    /// A payload of another type fails the command with a description naming both
    /// types, so handlers can simply use `?`.
    pub fn decode<M: Message + Name + Default>(&self) -> Result<M, Failure> {
        payload::unpack(&self.payload).map_err(|error| Failure::new(format!("command {}: {error}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack;

    #[test]
    fn decodes_the_expected_type() {
        let command = Command::new("e".into(), 1, "Set".into(), pack(&"v".to_owned()));
        assert_eq!(command.decode::<String>().unwrap(), "v");
    }

    #[test]
    fn a_wrong_payload_fails_the_command() {
        let command = Command::new("e".into(), 1, "Set".into(), pack(&1_i32));
        let failure = command.decode::<String>().unwrap_err();
        assert_eq!(
            failure.description(),
            "command Set: expected a google.protobuf.StringValue message, got type URL \
             \"type.googleapis.com/google.protobuf.Int32Value\""
        );
        assert!(!failure.restarts());
    }
}
