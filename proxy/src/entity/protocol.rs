//! The parts of the entity protocols that every entity type shares: one round trip
//! on an entity stream, reading a client action, and handling a violation.

use prost_types::Any;
use strata_proto::cloudstate::{client_action::Action, ClientAction, Command, Failure};
use strata_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use std::sync::Arc;

use super::{actor::After, EntityCommand, ReplyTo, Shared};
use crate::error::{code_name, ProxyError};
use crate::function::EntityStream;
use crate::model::MethodModel;

/// The sending half of an entity stream. Messages travel boxed: a channel
/// allocates slots in blocks, and with one channel per active entity, slots the
/// size of a protocol message would cost kilobytes per entity.
pub(super) type ToFunction<In> = mpsc::UnboundedSender<Box<In>>;

/// A new entity stream: the sender for the actor, the stream for tonic.
pub(super) fn entity_stream<In: Send + 'static>() -> (ToFunction<In>, impl futures::Stream<Item = In> + Send + 'static)
{
    use futures::StreamExt;
    let (to_function, inbound) = mpsc::unbounded_channel::<Box<In>>();
    (
        to_function,
        UnboundedReceiverStream::new(inbound).map(|message| *message),
    )
}

/// One entity's protocol stream: what goes to the function, what comes back, and
/// the command ids (from 1 on every stream).
pub(super) struct Conversation<In, Out> {
    to_function: ToFunction<In>,
    from_function: EntityStream<Out>,
    next_command_id: i64,
}

impl<In, Out> Conversation<In, Out> {
    pub(super) fn new(to_function: ToFunction<In>, from_function: EntityStream<Out>) -> Self {
        Self {
            to_function,
            from_function,
            next_command_id: 1,
        }
    }

    /// Whether the function has ended the stream while nothing was in flight.
    pub(super) fn is_closed(&mut self) -> bool {
        self.from_function.is_closed()
    }

    /// Sends the next command and waits for the function's answer to it. `wrap`
    /// puts the command into the entity type's stream message. When the stream
    /// fails, the caller is answered here and `None` means: restart the entity.
    pub(super) async fn ask(
        &mut self,
        shared: &Shared,
        command: EntityCommand,
        entity_id: &str,
        wrap: impl FnOnce(Command) -> In,
    ) -> Option<Asked<Out>> {
        let EntityCommand {
            method,
            payload,
            metadata,
            reply,
        } = command;
        let id = self.next_command_id;
        self.next_command_id += 1;
        let message = wrap(Command {
            entity_id: entity_id.to_string(),
            id,
            name: method.name().to_string(),
            payload: Some(payload),
            streamed: false,
            metadata,
        });
        let error = if self.to_function.send(Box::new(message)).is_ok() {
            match self.from_function.message().await {
                Ok(Some(out)) => return Some(Asked { method, reply, id, out }),
                Ok(None) => None,
                Err(status) => Some(function_unavailable(shared, &status)),
            }
        } else {
            None
        };
        let error = error.unwrap_or_else(|| {
            ProxyError::Unavailable("the user function closed the entity's stream before answering; retry".into())
        });
        let _ = reply.send(Err(error));
        None
    }
}

/// The client's answer from a reply's client action, and whether to restart.
/// `None` when the action is missing (a protocol violation).
pub(super) fn client_answer(action: Option<ClientAction>) -> Option<(Result<Any, ProxyError>, bool)> {
    Some(match action.and_then(|a| a.action)? {
        Action::Reply(r) => (Ok(r.payload.unwrap_or_default()), false),
        Action::Failure(f) => (Err(ProxyError::Failure(f.description)), f.restart),
        Action::Forward(f) => (
            Err(ProxyError::Unimplemented(format!(
                "the function forwarded to {}.{}, and forwards are not supported yet",
                f.service_name, f.command_name
            ))),
            false,
        ),
    })
}

/// A stream-level `Failure`: fails the command in flight (or the whole stream,
/// id 0) and restarts the entity; for any other command it is a violation.
pub(super) fn stream_failure(command_id: i64, failure: Failure) -> Result<(Result<Any, ProxyError>, bool), String> {
    if failure.command_id == command_id || failure.command_id == 0 {
        Ok((Err(ProxyError::Failure(failure.description)), true))
    } else {
        Err(format!(
            "failure for command {} while command {command_id} was in flight",
            failure.command_id
        ))
    }
}

/// A command the function answered: its method, its id, the answer, and where
/// the client's answer goes.
pub(super) struct Asked<Out> {
    pub method: Arc<MethodModel>,
    pub reply: ReplyTo,
    pub id: i64,
    pub out: Out,
}

/// Reports a protocol violation to the function, fails the command, and restarts
/// the entity.
pub(super) fn violation(shared: &Shared, asked_for: (&MethodModel, ReplyTo), entity_id: &str, what: &str) -> After {
    let (method, reply) = asked_for;
    let service = &method.entity.service_name;
    shared
        .function
        .report_error(format!("protocol violation by entity {entity_id} of {service}: {what}"));
    let _ = reply.send(Err(ProxyError::Internal(format!(
        "the user function broke the protocol ({what}); the entity was restarted"
    ))));
    After::Restart
}

/// Runs one store write, recording how long it took to become durable.
pub(super) async fn persist_timed(
    shared: &Shared,
    service: &str,
    write: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let result = write.await;
    shared
        .metrics
        .persist_seconds
        .with_label_values(&[service])
        .observe(started.elapsed().as_secs_f64());
    result
}

pub(super) fn store_unavailable(error: StoreError) -> ProxyError {
    tracing::warn!(%error, "store failed");
    ProxyError::Unavailable("the state store is unavailable; retry".into())
}

pub(super) fn store_failed(error: StoreError) -> ProxyError {
    match error {
        StoreError::Conflict { .. } => {
            tracing::warn!(%error, "journal conflict: another writer owns this entity");
            ProxyError::Aborted("the entity was written concurrently elsewhere; retry".into())
        }
        other => store_unavailable(other),
    }
}

pub(super) fn function_unavailable(shared: &Shared, status: &tonic::Status) -> ProxyError {
    tracing::debug!(address = shared.function.address(), error = %status.message(), "user function call failed");
    ProxyError::Unavailable(format!(
        "the user function is unavailable ({}); retry",
        code_name(status.code()).to_lowercase()
    ))
}
