//! Watching one direction of a gRPC call: a [`Probe`] receives what was seen (each
//! message, then the end or an error) and lets a case expect it, waiting at most
//! [`PATIENCE`] for each. And [`call`], which runs a call of any shape on its own
//! task so nothing waits for response headers (some servers send them only with
//! their first message).

use std::{fmt::Debug, future::Future, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

/// The result of one check in a case: `Err` says what differed.
pub type Check = Result<(), String>;

/// How long a case waits for any one thing it expects.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// One thing seen on a direction of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen<T> {
    Message(T),
    /// The direction ended normally.
    Complete,
    /// The call failed (its status, as text).
    Error(String),
}

/// What one direction of a call showed, in order.
pub struct Probe<T> {
    what: &'static str,
    seen: mpsc::UnboundedReceiver<Seen<T>>,
}

/// The sending side of a [`Probe`].
pub type Recorder<T> = mpsc::UnboundedSender<Seen<T>>;

pub fn probe<T>(what: &'static str) -> (Recorder<T>, Probe<T>) {
    let (recorder, seen) = mpsc::unbounded_channel();
    (recorder, Probe { what, seen })
}

impl<T: Debug + PartialEq> Probe<T> {
    /// The next thing seen.
    pub async fn next(&mut self) -> Result<Seen<T>, String> {
        self.next_within(PATIENCE).await
    }

    pub async fn next_within(&mut self, patience: Duration) -> Result<Seen<T>, String> {
        match tokio::time::timeout(patience, self.seen.recv()).await {
            Ok(Some(seen)) => Ok(seen),
            Ok(None) => Ok(Seen::Complete),
            Err(_) => Err(format!("{}: nothing within {patience:?}", self.what)),
        }
    }

    /// The next message; anything else is a failure.
    pub async fn message(&mut self) -> Result<T, String> {
        match self.next().await? {
            Seen::Message(message) => Ok(message),
            other => Err(format!("{}: expected a message, got {other:?}", self.what)),
        }
    }

    /// Expects exactly `expected` next.
    pub async fn expect(&mut self, expected: T) -> Check {
        match self.next().await? {
            Seen::Message(message) if message == expected => Ok(()),
            other => Err(format!("{}: expected {expected:?}\n  got {other:?}", self.what)),
        }
    }

    /// Expects the direction to end normally.
    pub async fn expect_complete(&mut self) -> Check {
        self.expect_complete_within(PATIENCE).await
    }

    pub async fn expect_complete_within(&mut self, patience: Duration) -> Check {
        match self.next_within(patience).await? {
            Seen::Complete => Ok(()),
            other => Err(format!("{}: expected the end, got {other:?}", self.what)),
        }
    }

    /// Expects the call to fail next; its status text.
    pub async fn expect_error(&mut self) -> Result<String, String> {
        match self.next().await? {
            Seen::Error(status) => Ok(status),
            other => Err(format!("{}: expected an error, got {other:?}", self.what)),
        }
    }

    /// Nothing seen that no case expected (the end of a direction is no
    /// interaction).
    pub fn idle(&mut self) -> Check {
        while let Ok(seen) = self.seen.try_recv() {
            if let Seen::Message(message) = seen {
                return Err(format!("{}: unexpected {message:?}", self.what));
            }
        }
        Ok(())
    }
}

/// A call of any shape on its own task: what is sent on the returned sender goes
/// out as the request stream; what comes back is recorded on `answers`. `open`
/// makes the call (a client's method) and gives its answers as a stream.
pub fn call<In, Out, F, Fut>(open: F, answers: Recorder<Out>) -> mpsc::UnboundedSender<In>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: FnOnce(UnboundedReceiverStream<In>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<BoxStream<'static, Result<Out, Status>>, Status>> + Send + 'static,
{
    let (requests, outgoing) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = match open(UnboundedReceiverStream::new(outgoing)).await {
            Ok(stream) => stream,
            Err(status) => {
                let _ = answers.send(Seen::Error(status_text(&status)));
                return;
            }
        };
        loop {
            // Stop when nobody watches any more (the case is over).
            let next = tokio::select! {
                next = stream.next() => next,
                () = answers.closed() => return,
            };
            match next {
                Some(Ok(message)) => {
                    if answers.send(Seen::Message(message)).is_err() {
                        return;
                    }
                }
                Some(Err(status)) => {
                    let _ = answers.send(Seen::Error(status_text(&status)));
                    return;
                }
                None => {
                    let _ = answers.send(Seen::Complete);
                    return;
                }
            }
        }
    });
    requests
}

/// A status as `CODE: message`.
pub fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A unary answer as a one-message stream.
pub fn once<Out: Send + 'static>(answer: tonic::Response<Out>) -> BoxStream<'static, Result<Out, Status>> {
    futures::stream::iter([Ok(answer.into_inner())]).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_checks_what_was_seen_in_order() {
        let (recorder, mut probe) = probe::<i32>("numbers");
        recorder.send(Seen::Message(1)).unwrap();
        recorder.send(Seen::Message(2)).unwrap();
        recorder.send(Seen::Complete).unwrap();
        assert_eq!(probe.expect(1).await, Ok(()));
        assert_eq!(
            probe.expect(3).await,
            Err("numbers: expected 3\n  got Message(2)".to_string())
        );
        assert_eq!(probe.expect_complete().await, Ok(()));
        // Once the recorder is gone, the direction is over.
        drop(recorder);
        assert_eq!(probe.next().await, Ok(Seen::Complete));
    }

    #[tokio::test]
    async fn idle_ignores_ends_but_not_messages() {
        let (recorder, mut probe) = probe::<i32>("numbers");
        recorder.send(Seen::Complete).unwrap();
        assert_eq!(probe.idle(), Ok(()));
        recorder.send(Seen::Message(7)).unwrap();
        assert_eq!(probe.idle(), Err("numbers: unexpected 7".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded() {
        let (_recorder, mut probe) = probe::<i32>("numbers");
        assert_eq!(probe.next().await, Err(format!("numbers: nothing within {PATIENCE:?}")));
    }
}
