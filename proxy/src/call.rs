//! What travels through the data path between the ingress, the sidecar's
//! dispatcher, the entity actors, the action runner and the gateway: a [`Call`] of
//! one method, the function's [`Outcome`] (a reply, a forward or nothing, plus side
//! effects), and the [`Answer`] the client gets. Also the [`Commands`] trait every
//! router implements and the resolution of forward and side-effect targets. Owns
//! types and checks only; nothing here does I/O but reading a streamed call's
//! one request.

use std::{sync::Arc, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use prost_reflect::DynamicMessage;
use prost_types::Any;
use strata_proto::cloudstate::Metadata;
use strata_telemetry::TraceParent;
use tokio::time::Instant;

use crate::{
    error::ProxyError,
    model::{EntityKind, MethodModel, Targets},
};

/// How many forwards and side effects may follow each other from one client
/// request before the chain is refused (a loop would otherwise run forever).
pub const MAX_HOPS: u32 = 16;

/// The header that carries a call's hop count between Strata processes.
pub const HOPS_HEADER: &str = "strata-hops";

/// The header that carries the route version a gateway routed a call by, so the
/// sidecar it chose can catch up with that version before refusing the call.
pub const ROUTES_HEADER: &str = "strata-routes";

/// Where a call stands: its deadline (the client's, if it gave one), how many
/// forwards or side effects led to it, the route version it was routed by
/// (0 when it did not come through a gateway's routing), and the trace context
/// its next span continues (see `trace.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallContext {
    pub deadline: Option<Instant>,
    pub hops: u32,
    pub routed_by: u64,
    pub trace: Option<TraceParent>,
}

impl CallContext {
    /// The context of a forward or side effect made while handling this call.
    /// Side effects that run after the reply do not inherit the deadline.
    pub fn next_hop(&self, keep_deadline: bool) -> CallContext {
        CallContext {
            deadline: if keep_deadline { self.deadline } else { None },
            hops: self.hops + 1,
            routed_by: 0,
            trace: self.trace,
        }
    }

    /// The earlier of the client's deadline and `limit` from now.
    pub fn deadline_within(&self, limit: Duration) -> Instant {
        let own = Instant::now() + limit;
        self.deadline.map_or(own, |client| client.min(own))
    }

    /// What ran out when `limit` (the proxy's own) or the client's deadline
    /// passes, whichever is first: for the error message.
    pub fn timeout_reason(&self, method: &str, limit: Duration) -> String {
        match self.deadline {
            Some(client) if client < Instant::now() + limit => {
                format!("the client's deadline passed before the user function answered {method}")
            }
            _ => format!("the user function did not answer {method} within {limit:?}"),
        }
    }

    /// Whether the client's deadline has passed already.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|deadline| deadline <= Instant::now())
    }
}

/// One call of a unary method.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Arc<MethodModel>,
    /// The entity the call is for; `None` for an action.
    pub entity_id: Option<String>,
    pub payload: Any,
    pub metadata: Option<Metadata>,
    pub context: CallContext,
}

impl Call {
    /// A call of `method` with an encoded request, reading the entity id from it
    /// when the method belongs to an entity.
    pub fn new(
        method: Arc<MethodModel>,
        payload: Any,
        metadata: Option<Metadata>,
        context: CallContext,
    ) -> Result<Call, ProxyError> {
        if method.entity.kind == EntityKind::Action {
            return Ok(Call {
                method,
                entity_id: None,
                payload,
                metadata,
                context,
            });
        }
        let message = DynamicMessage::decode(method.input(), payload.value.as_slice()).map_err(|e| {
            ProxyError::InvalidArgument(format!(
                "the request is not a valid {}: {e}",
                method.input().full_name()
            ))
        })?;
        Call::from_message(method, &message, payload, metadata, context)
    }

    /// A call whose request is decoded already (`message`, encoded as `payload`).
    pub fn from_message(
        method: Arc<MethodModel>,
        message: &DynamicMessage,
        payload: Any,
        metadata: Option<Metadata>,
        context: CallContext,
    ) -> Result<Call, ProxyError> {
        let entity_id = match method.entity.kind {
            EntityKind::Action => None,
            EntityKind::EventSourced | EntityKind::Value | EntityKind::Crdt => {
                Some(method.entity_id(message).map_err(ProxyError::InvalidArgument)?)
            }
        };
        Ok(Call {
            method,
            entity_id,
            payload,
            metadata,
            context,
        })
    }

    /// `service.Method`, for messages.
    pub fn target_name(&self) -> String {
        format!("{}.{}", self.method.entity.service_name, self.method.name())
    }
}

impl PartialEq for Call {
    fn eq(&self, other: &Self) -> bool {
        self.method.path() == other.method.path()
            && self.entity_id == other.entity_id
            && self.payload == other.payload
            && self.metadata == other.metadata
            && self.context == other.context
    }
}

/// One call of a streamed method (client, server or both).
pub struct StreamedCall {
    pub method: Arc<MethodModel>,
    /// The request messages as the client sends them.
    pub requests: Requests,
    pub metadata: Option<Metadata>,
    pub context: CallContext,
}

impl StreamedCall {
    /// The one request of an entity's server-streamed command, as a call (the
    /// entity is read from it).
    pub async fn into_entity_call(self) -> Result<Call, ProxyError> {
        let StreamedCall {
            method,
            mut requests,
            metadata,
            context,
        } = self;
        if method.descriptor.is_client_streaming() {
            return Err(ProxyError::Unimplemented(format!(
                "{} streams requests, and entity commands take one request",
                method.path()
            )));
        }
        let payload = requests
            .next()
            .await
            .ok_or_else(|| ProxyError::InvalidArgument(format!("no request message for {}", method.path())))??;
        Call::new(method, payload, metadata, context)
    }
}

pub type Requests = BoxStream<'static, Result<Any, ProxyError>>;
pub type Answers = BoxStream<'static, Result<Answer, ProxyError>>;

/// What the client gets: a reply message and the metadata the function attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub payload: Any,
    pub metadata: Option<Metadata>,
}

impl Answer {
    pub fn new(payload: Any) -> Answer {
        Answer {
            payload,
            metadata: None,
        }
    }

    /// The empty message of `method`'s output type (the answer when the function
    /// sends no reply to a unary call).
    pub fn empty(method: &MethodModel) -> Answer {
        Answer::new(Any {
            type_url: method.output_type_url().to_string(),
            value: Vec::new(),
        })
    }
}

/// What the client's command leads to, once the function has handled it.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Reply(Answer),
    /// Another method answers the client in the function's place.
    Forward(Box<Call>),
    /// No reply (an action may choose not to answer one message of a stream).
    Nothing,
}

/// A command the proxy runs for the function, before the reply is released
/// (synchronous) or after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub call: Call,
    pub synchronous: bool,
}

/// A successful command's result: the next step for the client, the side
/// effects to perform and the timer changes to store (an entity's with its
/// state). A failed command has no outcome, so it performs nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub next: Next,
    pub effects: Vec<Effect>,
    pub timers: Vec<TimerRequest>,
}

impl Outcome {
    #[cfg(test)]
    pub fn reply(answer: Answer) -> Outcome {
        Outcome {
            next: Next::Reply(answer),
            effects: Vec::new(),
            timers: Vec::new(),
        }
    }
}

/// Where calls go: the entities and actions of a sidecar, or (in a gateway, and
/// for a managed sidecar's forwards) the instance that serves them.
#[async_trait::async_trait]
pub trait Commands: Send + Sync + 'static {
    /// Runs one unary call; the answer comes once any state it produced is durable
    /// and its synchronous side effects are done.
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError>;

    /// Runs one streamed call; answers are produced as the function sends them.
    async fn streamed(&self, call: StreamedCall) -> Result<Answers, ProxyError>;
}

/// Checks a forward or side effect the function asked for and turns it into a
/// call: the target must exist, be unary, take the payload's type, and (for a
/// forward) answer with the type the client expects. `from` is the method whose
/// command asked for it.
pub fn resolve_target(
    targets: &dyn Targets,
    from: &MethodModel,
    kind: TargetKind,
    service: &str,
    method: &str,
    payload: Option<Any>,
    metadata: Option<Metadata>,
) -> Result<Call, ProxyError> {
    target_call(targets, from, kind, service, method, payload, metadata).map_err(|reason| {
        ProxyError::Internal(format!(
            "{}.{} {} {service}.{method}, {reason}",
            from.entity.service_name,
            from.name(),
            kind.verb()
        ))
    })
}

/// [`resolve_target`]'s checks; `Err` says why the target does not fit.
pub fn target_call(
    targets: &dyn Targets,
    from: &MethodModel,
    kind: TargetKind,
    service: &str,
    method: &str,
    payload: Option<Any>,
    metadata: Option<Metadata>,
) -> Result<Call, String> {
    let target = targets
        .method(service, method)
        .ok_or_else(|| "which is not a method of any known service".to_string())?;
    if target.descriptor.is_client_streaming() || target.descriptor.is_server_streaming() {
        return Err("which is streamed: only unary methods can be called".into());
    }
    let payload = payload.unwrap_or_default();
    let expected = target.input();
    if !payload.type_url.is_empty() && type_name(&payload.type_url) != expected.full_name() {
        return Err(format!(
            "with a {} payload, but the method takes a {}",
            type_name(&payload.type_url),
            expected.full_name()
        ));
    }
    if kind == TargetKind::Forward && target.output().full_name() != from.output().full_name() {
        return Err(format!(
            "which answers with a {}, but the client expects a {}",
            target.output().full_name(),
            from.output().full_name()
        ));
    }
    Call::new(target, payload, metadata, CallContext::default())
        .map_err(|error| format!("with a payload the target refuses ({error})"))
}

/// When a timer is due, as the function asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    After(Duration),
    /// Milliseconds since the Unix epoch.
    At(i64),
}

impl When {
    /// The due time in milliseconds since the Unix epoch, for a request made at `now_ms`.
    pub fn due_ms(self, now_ms: i64) -> i64 {
        match self {
            When::After(delay) => now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            When::At(at) => at,
        }
    }
}

/// What a command asks of the timers, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerRequest {
    Schedule {
        name: String,
        when: When,
        /// The call to make: `service_name`, `method` and its payload.
        service_name: String,
        method: String,
        payload: Any,
        max_attempts: u32,
    },
    Cancel {
        name: String,
    },
}

impl TimerRequest {
    pub fn name(&self) -> &str {
        match self {
            TimerRequest::Schedule { name, .. } | TimerRequest::Cancel { name } => name,
        }
    }
}

/// Whether a target is a forward, a side effect or a timer's call (for checks
/// and messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Forward,
    SideEffect,
    Timer,
}

impl TargetKind {
    fn verb(self) -> &'static str {
        match self {
            TargetKind::Forward => "forwarded to",
            TargetKind::SideEffect => "asked for a side effect on",
            TargetKind::Timer => "scheduled a timer calling",
        }
    }
}

/// The message name of a type URL (what follows the last '/').
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_earlier_deadline_wins() {
        let limit = Duration::from_secs(60);
        let now = Instant::now();
        assert_eq!(CallContext::default().deadline_within(limit), now + limit);
        let client = CallContext {
            deadline: Some(now + Duration::from_millis(300)),
            hops: 0,
            routed_by: 0,
            trace: None,
        };
        assert_eq!(client.deadline_within(limit), now + Duration::from_millis(300));
        assert_eq!(
            client.deadline_within(Duration::from_millis(100)),
            now + Duration::from_millis(100)
        );
        assert!(!client.expired());
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(client.expired());
        // Side effects after the reply do not inherit the client's deadline.
        assert_eq!(
            client.next_hop(false),
            CallContext {
                deadline: None,
                hops: 1,
                routed_by: 0,
                trace: None,
            }
        );
        assert_eq!(client.next_hop(true).deadline, client.deadline);
    }
}
