//! The answers a handler gives: a [`Reply`] (a message, a forward to another
//! method whose answer the client gets instead, or for actions no reply at all),
//! or a [`Failure`] the client sees as gRPC `UNKNOWN` with its description. Both
//! may carry [`SideEffect`]s, calls the proxy makes for the function; a reply may
//! carry [`Metadata`] for the client. Everything becomes protocol messages here.

use prost::{Message, Name};
use prost_types::Any;
use strata_proto::cloudstate as pb;

use crate::{payload, Metadata};

/// A call of a gRPC method, by the proxy on the function's behalf: the target of
/// a forward or a side effect. Any method of this function, and (in a Strata
/// deployment) of any other deployed service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCall {
    service: String,
    method: String,
    payload: Any,
    metadata: Metadata,
}

impl ServiceCall {
    /// Calls `method` of `service` (fully qualified, e.g.
    /// `com.example.shoppingcart.ShoppingCart`) with `message`, its input type.
    pub fn new<M: Message + Name>(service: impl Into<String>, method: impl Into<String>, message: &M) -> Self {
        Self::any(service, method, payload::pack(message))
    }

    /// Calls `method` of `service` with an already packed message.
    pub fn any(service: impl Into<String>, method: impl Into<String>, payload: Any) -> Self {
        Self {
            service: service.into(),
            method: method.into(),
            payload,
            metadata: Metadata::new(),
        }
    }

    /// Sends `metadata` with the call.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn payload(&self) -> &Any {
        &self.payload
    }
}

/// A call the proxy makes after the command succeeds: synchronous ones finish
/// before the client gets its answer, asynchronous ones start after it. A failed
/// command performs none.
#[derive(Debug, Clone, PartialEq)]
pub struct SideEffect {
    call: ServiceCall,
    synchronous: bool,
}

impl SideEffect {
    /// Performed after the client has its answer; its failure is only logged.
    pub fn asynchronous(call: ServiceCall) -> Self {
        Self {
            call,
            synchronous: false,
        }
    }

    /// Performed before the client gets its answer; its failure fails the request.
    pub fn synchronous(call: ServiceCall) -> Self {
        Self {
            call,
            synchronous: true,
        }
    }

    pub fn call(&self) -> &ServiceCall {
        &self.call
    }

    pub fn is_synchronous(&self) -> bool {
        self.synchronous
    }

    pub(crate) fn into_proto(self) -> pb::SideEffect {
        let ServiceCall {
            service,
            method,
            payload,
            metadata,
        } = self.call;
        pb::SideEffect {
            service_name: service,
            command_name: method,
            payload: Some(payload),
            synchronous: self.synchronous,
            metadata: metadata.into_proto(),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    answer: Answer,
    metadata: Metadata,
    effects: Vec<SideEffect>,
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Message(Any),
    Forward(ServiceCall),
    Nothing,
}

impl Reply {
    /// Replies with `message`, the method's output type.
    pub fn message<M: Message + Name>(message: &M) -> Self {
        Self::any(payload::pack(message))
    }

    /// Replies with `google.protobuf.Empty`.
    pub fn empty() -> Self {
        Self::message(&())
    }

    /// Replies with an already packed message.
    pub fn any(payload: Any) -> Self {
        Self::of(Answer::Message(payload))
    }

    /// Lets another method answer the client: the proxy calls it and its answer
    /// (which must be of this method's output type) is the client's.
    pub fn forward(call: ServiceCall) -> Self {
        Self::of(Answer::Forward(call))
    }

    /// Sends the client nothing for this message (actions only: a streamed
    /// call skips it, a unary call answers with the empty output message). An
    /// entity command must reply, forward or fail.
    pub fn none() -> Self {
        Self::of(Answer::Nothing)
    }

    fn of(answer: Answer) -> Self {
        Self {
            answer,
            metadata: Metadata::new(),
            effects: Vec::new(),
        }
    }

    /// Sends `metadata` to the client with the reply (response headers over
    /// HTTP, trailers over gRPC).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Adds a side effect, performed in the order added.
    #[must_use]
    pub fn with_effect(mut self, effect: SideEffect) -> Self {
        self.effects.push(effect);
        self
    }

    /// Adds side effects, performed in order.
    #[must_use]
    pub fn with_effects(mut self, effects: impl IntoIterator<Item = SideEffect>) -> Self {
        self.effects.extend(effects);
        self
    }

    /// The reply's message, if it is one (not a forward or no reply).
    pub fn payload(&self) -> Option<&Any> {
        match &self.answer {
            Answer::Message(payload) => Some(payload),
            _ => None,
        }
    }

    /// The forward, if the reply is one.
    pub fn forwarded(&self) -> Option<&ServiceCall> {
        match &self.answer {
            Answer::Forward(call) => Some(call),
            _ => None,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn effects(&self) -> &[SideEffect] {
        &self.effects
    }

    /// Whether this is [`Reply::none`].
    pub(crate) fn is_none(&self) -> bool {
        self.answer == Answer::Nothing
    }

    /// The failure an entity command gets for answering [`Reply::none`].
    pub(crate) fn entities_must_answer(command: &str) -> Failure {
        Failure::new(format!(
            "command {command} answered with no reply; an entity command must reply, forward or fail"
        ))
    }

    /// The protocol's action for the client (`None`: no reply) and side effects.
    pub(crate) fn into_proto(self) -> (Option<pb::client_action::Action>, Vec<pb::SideEffect>) {
        let action = match self.answer {
            Answer::Message(payload) => Some(pb::client_action::Action::Reply(pb::Reply {
                payload: Some(payload),
                metadata: self.metadata.into_proto(),
            })),
            Answer::Forward(call) => Some(pb::client_action::Action::Forward(pb::Forward {
                service_name: call.service,
                command_name: call.method,
                payload: Some(call.payload),
                metadata: call.metadata.into_proto(),
            })),
            Answer::Nothing => None,
        };
        (action, self.effects.into_iter().map(SideEffect::into_proto).collect())
    }
}

/// A command failed in a way the client should hear about, e.g. invalid input.
///
/// The entity's state is untouched: events emitted or state updated before the failure
/// are discarded. With [`restart`](Failure::restart) the proxy also restarts the entity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{description}")]
pub struct Failure {
    description: String,
    restart: bool,
    effects: Vec<SideEffect>,
}

impl Failure {
    /// A failure with a description for the client.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            restart: false,
            effects: Vec::new(),
        }
    }

    /// Asks the proxy to restart the entity after this failure.
    #[must_use]
    pub fn restart(mut self) -> Self {
        self.restart = true;
        self
    }

    /// Lists a side effect with the failure (actions only). The protocol lets a
    /// function send them; the proxy performs none for a failed command.
    #[must_use]
    pub fn with_effect(mut self, effect: SideEffect) -> Self {
        self.effects.push(effect);
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

    pub fn effects(&self) -> &[SideEffect] {
        &self.effects
    }

    /// The protocol's failure for command `command_id`, and its side effects.
    pub(crate) fn into_proto(self, command_id: i64) -> (pb::Failure, Vec<pb::SideEffect>) {
        let failure = pb::Failure {
            command_id,
            description: self.description,
            restart: self.restart,
        };
        (failure, self.effects.into_iter().map(SideEffect::into_proto).collect())
    }

    /// The client action of an entity command that failed (entities send no
    /// side effects with a failure).
    pub(crate) fn into_client_action(self, command_id: i64) -> pb::ClientAction {
        pb::ClientAction {
            action: Some(pb::client_action::Action::Failure(self.into_proto(command_id).0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_client_actions_with_their_effects() {
        let call = ServiceCall::new("a.B", "Call", &"x".to_owned()).with_metadata(Metadata::new().with("k", "v"));
        let reply = Reply::message(&7_i64)
            .with_metadata(Metadata::new().with("x-answer", "42"))
            .with_effect(SideEffect::synchronous(call.clone()))
            .with_effect(SideEffect::asynchronous(call.clone()));
        let (action, effects) = reply.into_proto();
        let Some(pb::client_action::Action::Reply(reply)) = action else {
            panic!("expected a reply")
        };
        assert_eq!(reply.metadata.unwrap().entries[0].key, "x-answer");
        assert_eq!(effects.iter().map(|e| e.synchronous).collect::<Vec<_>>(), [true, false]);
        assert_eq!(effects[0].service_name, "a.B");
        assert_eq!(effects[0].metadata.as_ref().unwrap().entries.len(), 1);

        let (action, _) = Reply::forward(call).into_proto();
        assert!(matches!(action, Some(pb::client_action::Action::Forward(f)) if f.command_name == "Call"));
        assert_eq!(Reply::none().into_proto().0, None);
    }
}
