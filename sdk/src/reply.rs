//! The two answers a command handler gives: a [`Reply`] carrying the method's output
//! message, or a [`Failure`] the client sees as gRPC `UNKNOWN` with its description.
//! Both become a protocol `ClientAction`; nothing else leaves this module.

use prost::{Message, Name};
use prost_types::Any;
use strata_proto::cloudstate as pb;

use crate::payload;

/// A successful answer: the gRPC method's output message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    payload: Any,
}

impl Reply {
    /// Replies with `message`, the method's output type.
    pub fn message<M: Message + Name>(message: &M) -> Self {
        Self {
            payload: payload::pack(message),
        }
    }

    /// Replies with `google.protobuf.Empty`.
    pub fn empty() -> Self {
        Self::message(&())
    }

    /// Replies with an already packed message.
    pub fn any(payload: Any) -> Self {
        Self { payload }
    }

    /// The reply's payload.
    pub fn payload(&self) -> &Any {
        &self.payload
    }

    pub(crate) fn into_client_action(self) -> pb::ClientAction {
        pb::ClientAction {
            action: Some(pb::client_action::Action::Reply(pb::Reply {
                payload: Some(self.payload),
                metadata: None,
            })),
        }
    }
}

/// A command failed in a way the client should hear about, e.g. invalid input.
///
/// The entity's state is untouched: events emitted or state updated before the failure
/// are discarded. With [`restart`](Failure::restart) the proxy also restarts the entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct Failure {
    description: String,
    restart: bool,
}

impl Failure {
    /// A failure with a description for the client.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            restart: false,
        }
    }

    /// Asks the proxy to restart the entity after this failure.
    #[must_use]
    pub fn restart(mut self) -> Self {
        self.restart = true;
        self
    }

    /// What the client is told.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the entity is restarted.
    pub fn restarts(&self) -> bool {
        self.restart
    }

    pub(crate) fn into_client_action(self, command_id: i64) -> pb::ClientAction {
        pb::ClientAction {
            action: Some(pb::client_action::Action::Failure(pb::Failure {
                command_id,
                description: self.description,
                restart: self.restart,
            })),
        }
    }
}
