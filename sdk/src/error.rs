//! The errors this crate returns: bad payloads, broken entity state, bad configuration,
//! failures to serve. Not a command's expected failure: that is a normal answer to the
//! client, [`Failure`](crate::Failure). Messages carry their cause in their text.

use prost::DecodeError;
use prost_types::Any;

/// A `google.protobuf.Any` did not hold the message that was asked for.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The type URL names another message.
    #[error("expected a {expected} message, got type URL {actual:?}")]
    UnexpectedType {
        /// Full name of the message that was asked for.
        expected: String,
        /// The type URL the payload carried.
        actual: String,
    },
    /// The type URL matches but the bytes do not decode.
    #[error("malformed {type_name} message: {reason}")]
    Malformed {
        /// Full name of the message.
        type_name: String,
        /// Why prost could not decode it.
        reason: DecodeError,
    },
}

/// An entity could not apply an event or restore a snapshot.
///
/// Its state can no longer be trusted, so the SDK fails the whole entity stream and the
/// proxy restarts the entity from its journal. Return it for corrupt or unknown data,
/// never for a command the client got wrong (that is a [`Failure`](crate::Failure)).
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// An event or snapshot payload did not decode.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The entity has no handler for this event type.
    #[error("unknown event type {type_url:?}")]
    UnknownEvent {
        /// The event's type URL.
        type_url: String,
    },
    /// Anything else, described for the logs.
    #[error("{0}")]
    Other(String),
}

impl EntityError {
    /// An error with a free-form description.
    pub fn new(description: impl Into<String>) -> Self {
        Self::Other(description.into())
    }

    /// The entity does not know this event's type.
    pub fn unknown_event(event: &Any) -> Self {
        Self::UnknownEvent {
            type_url: event.type_url.clone(),
        }
    }
}

/// `HOST` or `PORT` held something unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What it held.
    pub value: String,
    /// What it should hold.
    pub reason: String,
}

/// The user function could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address from the environment is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bytes given to [`Service::new`](crate::Service::new) are not a
    /// `FileDescriptorSet`.
    #[error("the file descriptor set does not decode: {0}")]
    Descriptor(DecodeError),
    /// An entity names a gRPC service that the descriptors do not define.
    #[error("service {service:?} is not in the file descriptor set (it defines: {known})")]
    UnknownService {
        /// The service an entity was registered for.
        service: String,
        /// The services the descriptors define, comma separated.
        known: String,
    },
    /// Two entities (or actions) were registered for the same gRPC service.
    #[error("service {0:?} is registered twice")]
    DuplicateService(String),
    /// Nothing to serve.
    #[error(
        "nothing registered: add an entity or action with Service::event_sourced, \
         Service::value_entity or Service::action"
    )]
    NoEntities,
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The gRPC server failed; the cause is the error's `source()`.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}
