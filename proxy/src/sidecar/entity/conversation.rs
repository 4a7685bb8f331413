//! The parts of the entity protocols that every entity type shares around the
//! function and the store: one command's round trip on an entity stream (with
//! its deadline), acting on a [`Decision`] that ends a command early, and the
//! errors of the store and the function. What a reply means is `decision`'s.

use strata_proto::cloudstate::Command;
use strata_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::Instrument as _;

use super::{
    decision::{Decision, Persist},
    session::{After, EntityCommand, ReplyTo, SessionContext},
};
use crate::{
    call::{Call, Outcome},
    error::{code_name, ProxyError},
    model::{MethodModel, Targets},
    sidecar::function::EntityStream,
    trace,
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
    /// Puts a command into the entity type's stream message.
    wrap: fn(Command) -> In,
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
    pub(super) fn new(to_function: ToFunction<In>, from_function: EntityStream<Out>, wrap: fn(Command) -> In) -> Self {
        Self {
            to_function,
            from_function,
            wrap,
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
    /// the command's deadline. When there is no answer, the caller is answered
    /// here and the `Err` says what the actor must do.
    pub(super) async fn ask(&mut self, ctx: &SessionContext, command: EntityCommand) -> Result<Asked<Out>, After> {
        self.ask_with(ctx, command, Some).await
    }

    /// [`Conversation::ask`], then what the answer means by the kind's `decide`
    /// (the method asked, the forward targets, the command's id, the answer),
    /// carried as far as the kind's own work: the call, where its result goes and
    /// what to persist (see [`to_persist`]); or what the actor does now that the
    /// command has failed.
    pub(super) async fn ask_and_decide<C>(
        &mut self,
        ctx: &SessionContext,
        command: EntityCommand,
        decide: fn(&MethodModel, &dyn Targets, i64, Out) -> Decision<C>,
    ) -> Result<(Call, ReplyTo, Persist<C>), After> {
        let Asked {
            call, reply, id, out, ..
        } = self.ask(ctx, command).await?;
        let decision = decide(&call.method, ctx.targets.as_ref(), id, out);
        let (persist, reply) = to_persist(decision, ctx, &call, reply)?;
        Ok((call, reply, persist))
    }

    /// [`Conversation::ask`] on a stream where the function may also send
    /// messages that are not the answer (a CRDT's streamed messages for other
    /// commands): `aside` keeps those (returning `None`) and gives back the rest.
    pub(super) async fn ask_with(
        &mut self,
        ctx: &SessionContext,
        command: EntityCommand,
        mut aside: impl FnMut(Out) -> Option<Out>,
    ) -> Result<Asked<Out>, After> {
        let EntityCommand { call, reply, stream } = command;
        let id = self.next_command_id;
        self.next_command_id += 1;
        // The function's span lasts until its answer (this function's return).
        let mut context = call.context;
        let _span = trace::step(&mut context, || trace::function_call(&call.method));
        let message = (self.wrap)(Command {
            entity_id: call.entity_id.clone().unwrap_or_default(),
            id,
            name: call.method.name().to_string(),
            payload: Some(call.payload.clone()),
            streamed: stream.is_some(),
            metadata: trace::with_traceparent(call.metadata.clone(), context.trace.as_ref()),
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

/// What to persist for the command, once a forward or side effect the proxy
/// refused is reported to the function; or, when the function failed the stream
/// or broke the protocol, what the actor does now that the command has failed.
pub(super) fn to_persist<C>(
    decision: Decision<C>,
    ctx: &SessionContext,
    call: &Call,
    reply: ReplyTo,
) -> Result<(Persist<C>, ReplyTo), After> {
    match decision {
        Decision::Persist(persist) => {
            report_refused(ctx, &persist.answer);
            Ok((persist, reply))
        }
        Decision::Violation(what) => Err(violation(ctx, call, reply, &what)),
        Decision::StreamFailure(description) => Err(fail_stream(reply, description)),
    }
}

/// Tells the function about a forward or side effect the proxy refused (the
/// client hears about it too).
pub(super) fn report_refused(ctx: &SessionContext, answer: &Result<Outcome, ProxyError>) {
    if let Err(ProxyError::Internal(message)) = answer {
        ctx.function.report_error(message.clone());
    }
}

/// The timer changes a successful command asked for, taken out of its outcome
/// to be stored with its state (a failed command has none).
pub(super) fn taken_timers(
    ctx: &SessionContext,
    call: &Call,
    answer: &mut Result<Outcome, ProxyError>,
) -> Vec<strata_store::TimerChange> {
    let Ok(outcome) = answer else {
        return Vec::new();
    };
    if outcome.timers.is_empty() {
        return Vec::new();
    }
    let requests = std::mem::take(&mut outcome.timers);
    ctx.timers.changes(
        &call.method.entity.service_name,
        call.entity_id.as_deref(),
        requests,
        crate::sidecar::timer_scope::now_ms(),
    )
}

/// Runs one store write in `span` (marked failed if it fails), recording how
/// long it took to become durable.
pub(super) async fn persist_timed(
    ctx: &SessionContext,
    service: &str,
    span: tracing::Span,
    write: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let result = write.instrument(span.clone()).await;
    ctx.metrics
        .persist_seconds
        .with_label_values(&[service])
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", tracing::field::display(error));
    }
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
