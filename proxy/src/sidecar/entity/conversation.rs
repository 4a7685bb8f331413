//! The parts of the entity protocols that every entity type shares: one command's
//! round trip on an entity stream (with its deadline), reading a reply's client
//! action and side effects into an [`Outcome`], and the errors of the store and
//! the function.

use strata_proto::cloudstate::{client_action::Action, ClientAction, Command, Failure, SideEffect};
use strata_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::session::{After, EntityCommand, ReplyTo, SessionContext};
use crate::{
    call::{resolve_effects, resolve_target, Answer, Call, Next, Outcome, TargetKind, Targets},
    error::{code_name, ProxyError},
    model::MethodModel,
    sidecar::function::EntityStream,
};

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

/// A command the function answered: the call, its id, the answer, and where the
/// result goes.
pub(super) struct Asked<Out> {
    pub call: Call,
    pub reply: ReplyTo,
    /// The client stream of a streamed command.
    pub stream: Option<super::client_stream::StreamTo>,
    pub id: i64,
    pub out: Out,
}

impl<In, Out> Conversation<In, Out> {
    pub(super) fn new(to_function: ToFunction<In>, from_function: EntityStream<Out>) -> Self {
        Self {
            to_function,
            from_function,
            next_command_id: 1,
        }
    }

    /// Sends the function a message that is not a command (`false`: the stream
    /// is gone, and the next command will find out).
    pub(super) fn send(&self, message: Box<In>) -> bool {
        self.to_function.send(message).is_ok()
    }

    /// The function's next message while no command is in flight (`None`: it
    /// ended the stream). Cancel-safe.
    pub(super) async fn heard(&mut self) -> Result<Option<Out>, tonic::Status> {
        self.from_function.message().await
    }

    /// Whether the function has ended the stream while nothing was in flight.
    pub(super) fn is_closed(&mut self) -> bool {
        self.from_function.is_closed()
    }

    /// Sends the next command and waits for the function's answer to it, until
    /// the command's deadline. `wrap` puts the command into the entity type's
    /// stream message. When there is no answer, the caller is answered here and
    /// the `Err` says what the actor must do.
    pub(super) async fn ask(
        &mut self,
        ctx: &SessionContext,
        command: EntityCommand,
        wrap: impl FnOnce(Command) -> In,
    ) -> Result<Asked<Out>, After> {
        self.ask_with(ctx, command, wrap, Some).await
    }

    /// [`Conversation::ask`] on a stream where the function may also send
    /// messages that are not the answer (a CRDT's streamed messages for other
    /// commands): `aside` keeps those (returning `None`) and gives back the rest.
    pub(super) async fn ask_with(
        &mut self,
        ctx: &SessionContext,
        command: EntityCommand,
        wrap: impl FnOnce(Command) -> In,
        mut aside: impl FnMut(Out) -> Option<Out>,
    ) -> Result<Asked<Out>, After> {
        let EntityCommand { call, reply, stream } = command;
        let id = self.next_command_id;
        self.next_command_id += 1;
        let message = wrap(Command {
            entity_id: call.entity_id.clone().unwrap_or_default(),
            id,
            name: call.method.name().to_string(),
            payload: Some(call.payload.clone()),
            streamed: stream.is_some(),
            metadata: call.metadata.clone(),
        });
        let deadline = call.context.deadline_within(ctx.command_timeout);
        let too_late = call.context.timeout_reason(call.method.name(), ctx.command_timeout);
        let error = if self.to_function.send(Box::new(message)).is_ok() {
            let answer = async {
                loop {
                    match self.from_function.message().await {
                        Ok(Some(out)) => match aside(out) {
                            Some(out) => return Ok(Some(out)),
                            None => continue,
                        },
                        other => return other,
                    }
                }
            };
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(Some(out))) => {
                    return Ok(Asked {
                        call,
                        reply,
                        stream,
                        id,
                        out,
                    })
                }
                Ok(Ok(None)) => None,
                Ok(Err(status)) => Some(function_unavailable(ctx, &status)),
                Err(_) => {
                    tracing::warn!(command_id = id, %too_late, "restarting the entity");
                    Some(ProxyError::DeadlineExceeded(format!(
                        "{too_late}; the entity was restarted"
                    )))
                }
            }
        } else {
            None
        };
        let error = error.unwrap_or_else(|| {
            ProxyError::Unavailable("the user function closed the entity's stream before answering; retry".into())
        });
        let _ = reply.send(Err(error));
        Err(After::Restart)
    }
}

/// What a reply means for the client: its outcome, and whether the entity must
/// restart (the function failed with `restart`). `None` when the reply has no
/// client action (a protocol violation). A failure performs no side effects; a
/// forward or side effect the proxy refuses fails the command.
pub(super) fn client_outcome(
    from: &MethodModel,
    targets: &dyn Targets,
    action: Option<ClientAction>,
    side_effects: Vec<SideEffect>,
) -> Option<(Result<Outcome, ProxyError>, bool)> {
    action.as_ref().and_then(|a| a.action.as_ref())?;
    Some(optional_client_outcome(from, targets, action, side_effects))
}

/// [`client_outcome`] where the client action may be missing (a message of a
/// streamed command that sends the client nothing, only side effects).
pub(super) fn optional_client_outcome(
    from: &MethodModel,
    targets: &dyn Targets,
    action: Option<ClientAction>,
    side_effects: Vec<SideEffect>,
) -> (Result<Outcome, ProxyError>, bool) {
    let next = match action.and_then(|a| a.action) {
        None => Ok(Next::Nothing),
        Some(Action::Failure(f)) => return (Err(ProxyError::Failure(f.description)), f.restart),
        Some(Action::Reply(r)) => Ok(Next::Reply(Answer {
            payload: r.payload.unwrap_or_default(),
            metadata: r.metadata,
        })),
        Some(Action::Forward(f)) => resolve_target(
            targets,
            from,
            TargetKind::Forward,
            &f.service_name,
            &f.command_name,
            f.payload,
            f.metadata,
        )
        .map(|call| Next::Forward(Box::new(call))),
    };
    let outcome = next.and_then(|next| {
        Ok(Outcome {
            next,
            effects: resolve_effects(from, targets, side_effects)?,
        })
    });
    (outcome, false)
}

/// A stream-level `Failure`: fails the command in flight (or the whole stream,
/// id 0); for any other command it is a violation.
pub(super) fn stream_failure(command_id: i64, failure: Failure) -> Result<String, String> {
    if failure.command_id == command_id || failure.command_id == 0 {
        Ok(failure.description)
    } else {
        Err(format!(
            "failure for command {} while command {command_id} was in flight",
            failure.command_id
        ))
    }
}

/// Answers the command of a stream-level failure and tells the actor.
pub(super) fn fail_stream(reply: ReplyTo, description: String) -> After {
    tracing::warn!(%description, "the user function failed the entity's stream");
    let _ = reply.send(Err(ProxyError::Failure(description.clone())));
    After::StreamFailed(description)
}

/// Reports a protocol violation to the function, fails the command, and restarts
/// the entity.
pub(super) fn violation(ctx: &SessionContext, call: &Call, reply: ReplyTo, what: &str) -> After {
    let service = &call.method.entity.service_name;
    let entity_id = call.entity_id.as_deref().unwrap_or_default();
    ctx.function
        .report_error(format!("protocol violation by entity {entity_id} of {service}: {what}"));
    let _ = reply.send(Err(ProxyError::Internal(format!(
        "the user function broke the protocol ({what}); the entity was restarted"
    ))));
    After::Restart
}

/// Tells the function about a forward or side effect the proxy refused (the
/// client hears about it too).
pub(super) fn report_refused(ctx: &SessionContext, answer: &Result<Outcome, ProxyError>) {
    if let Err(ProxyError::Internal(message)) = answer {
        ctx.function.report_error(message.clone());
    }
}

/// Runs one store write, recording how long it took to become durable.
pub(super) async fn persist_timed(
    ctx: &SessionContext,
    service: &str,
    write: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let result = write.await;
    ctx.metrics
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

/// The function's stream broke. A status the function sent itself (say, an SDK
/// that raised an exception) is its failure; a broken connection means it is
/// unavailable (crashed, restarting), and retrying may work.
pub(super) fn function_unavailable(ctx: &SessionContext, status: &tonic::Status) -> ProxyError {
    tracing::debug!(address = ctx.function.address(), error = %status.message(), "user function call failed");
    let sent_by_function = !crate::error::transport_failed(status)
        && !matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        );
    if sent_by_function {
        return ProxyError::Internal(format!(
            "the user function failed the entity's stream ({}): {}",
            code_name(status.code()),
            status.message()
        ));
    }
    ProxyError::Unavailable(format!(
        "the user function is unavailable ({}); retry",
        code_name(status.code()).to_lowercase()
    ))
}
