//! The async shell around an entity's protocol session: reads the proxy's messages one
//! at a time, hands each to the session (a plain state machine), and writes what it
//! answers. The only place that spawns entity tasks; it also turns panics into failures.

use std::{
    any::Any as PanicPayload,
    panic::{catch_unwind, AssertUnwindSafe},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, error, Instrument, Span};

/// What a session does after one inbound message.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<Out> {
    /// Nothing to send (an event was replayed, the entity initialized).
    Nothing,
    /// Send this and carry on.
    Send(Out),
    /// Send these, in order, and carry on.
    SendAll(Vec<Out>),
    /// Send this failure and end the stream: the entity is unusable.
    Close(Out),
}

/// An entity protocol's outbound message that can carry a stream-level failure.
pub(crate) trait FailureMessage {
    fn failure(failure: strata_proto::cloudstate::Failure) -> Self;
}

/// A stream-level failure for the command in flight (0: the stream itself).
pub(crate) fn stream_failure<O: FailureMessage>(command_id: i64, description: String, restart: bool) -> O {
    O::failure(strata_proto::cloudstate::Failure {
        command_id,
        description,
        restart,
    })
}

/// The proxy broke the protocol: end the stream.
pub(crate) fn protocol_error<O: FailureMessage>(command_id: i64, description: impl Into<String>) -> Step<O> {
    let description = format!("protocol error: {}", description.into());
    tracing::warn!(command_id, %description, "failing the entity stream");
    Step::Close(stream_failure(command_id, description, false))
}

/// One entity's side of a protocol stream, free of I/O so it can be tested directly.
pub(crate) trait Session: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;

    /// Handles one message from the proxy.
    fn on_message(&mut self, message: Self::In) -> Step<Self::Out>;

    /// The stream failure to send after user code panicked while handling a message.
    fn on_panic(&mut self, description: String) -> Self::Out;
}

/// Runs `session` over `inbound` on its own task, in `span`; returns the outbound stream.
pub(crate) fn spawn<S: Session>(
    mut session: S,
    mut inbound: Streaming<S::In>,
    span: Span,
) -> ReceiverStream<Result<S::Out, Status>> {
    // A small buffer: one reply per command, and the proxy sends one command at a time
    // per entity (more when it pipelines), so backpressure reaches it quickly.
    let (outbound, receiver) = mpsc::channel(16);
    let task = async move {
        loop {
            let message = match inbound.message().await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    debug!("proxy closed the entity stream");
                    break;
                }
                Err(status) => {
                    debug!(%status, "entity stream broke");
                    break;
                }
            };
            // The session is dropped right after a panic, so no broken state is observed.
            let step = catch_unwind(AssertUnwindSafe(|| session.on_message(message))).unwrap_or_else(|panic| {
                let description = panic_description(panic.as_ref());
                error!(panic = %description, "entity panicked, failing its stream");
                Step::Close(session.on_panic(description))
            });
            match step {
                Step::Nothing => {}
                Step::Send(out) => {
                    if outbound.send(Ok(out)).await.is_err() {
                        debug!("proxy stopped reading the entity stream");
                        break;
                    }
                }
                Step::SendAll(all) => {
                    for out in all {
                        if outbound.send(Ok(out)).await.is_err() {
                            debug!("proxy stopped reading the entity stream");
                            return;
                        }
                    }
                }
                Step::Close(out) => {
                    let _ = outbound.send(Ok(out)).await;
                    break;
                }
            }
        }
    };
    tokio::spawn(task.instrument(span));
    ReceiverStream::new(receiver)
}

pub(crate) fn panic_description(panic: &(dyn PanicPayload + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
