//! The client's end of a streamed entity command: a bounded queue of outcomes
//! from the entity's actor to whoever serves the client (gRPC server streaming,
//! Server-Sent Events). A client that stops reading cannot make it grow: once
//! the queue is full the stream is closed, and the client reads what was queued
//! and then a `RESOURCE_EXHAUSTED` error saying why. A client that leaves is
//! seen by the actor as the queue's closing.

use futures::{stream::BoxStream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::{call::Outcome, error::ProxyError};

/// How many messages a streamed command may have waiting for its client.
pub const STREAM_BUFFER: usize = 64;

/// The actor's side of one client stream.
pub struct StreamTo {
    sender: mpsc::Sender<Result<Outcome, ProxyError>>,
    /// The error the client reads after the queued messages, if the stream
    /// ends for a reason of the proxy's.
    last_word: Option<oneshot::Sender<ProxyError>>,
}

/// What became of one message for the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The client is gone.
    Gone,
    /// The client did not keep up; the stream is over for it.
    Overflowed,
}

/// A new client stream: the actor's end, and the outcomes for the client.
pub fn client_stream(capacity: usize) -> (StreamTo, BoxStream<'static, Result<Outcome, ProxyError>>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let (last_word, heard) = oneshot::channel();
    let tail = futures::stream::once(heard).filter_map(|word| std::future::ready(word.ok().map(Err)));
    (
        StreamTo {
            sender,
            last_word: Some(last_word),
        },
        ReceiverStream::new(receiver).chain(tail).boxed(),
    )
}

impl StreamTo {
    /// Queues one message for the client without waiting. When the queue is
    /// full the stream ends with `RESOURCE_EXHAUSTED` after what it holds.
    pub(crate) fn push(&self, outcome: Result<Outcome, ProxyError>) -> Pushed {
        match self.sender.try_send(outcome) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Gone,
            Err(mpsc::error::TrySendError::Full(_)) => Pushed::Overflowed,
        }
    }

    /// Ends the stream: the client reads what is queued, then `error`.
    pub(crate) fn end_with(mut self, error: ProxyError) {
        self.set_last_word(error);
    }

    /// Sets the error the client reads once the stream is dropped (the first
    /// one set wins).
    pub(crate) fn set_last_word(&mut self, error: ProxyError) {
        if let Some(last_word) = self.last_word.take() {
            let _ = last_word.send(error);
        }
    }

    /// Resolves once the client has gone. Cancel-safe.
    pub(crate) async fn gone(&self) {
        self.sender.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Answer, Next};

    fn message(n: u8) -> Result<Outcome, ProxyError> {
        Ok(Outcome::reply(Answer::new(prost_types::Any {
            type_url: "t".into(),
            value: vec![n],
        })))
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_gets_what_was_queued_then_a_clear_error() {
        let (to, mut from) = client_stream(2);
        assert_eq!(to.push(message(1)), Pushed::Queued);
        assert_eq!(to.push(message(2)), Pushed::Queued);
        assert_eq!(to.push(message(3)), Pushed::Overflowed);
        to.end_with(ProxyError::ResourceExhausted("too slow".into()));
        for n in [1, 2] {
            let Next::Reply(answer) = from.next().await.unwrap().unwrap().next else {
                panic!("a reply")
            };
            assert_eq!(answer.payload.value, vec![n]);
        }
        assert!(matches!(from.next().await, Some(Err(ProxyError::ResourceExhausted(_)))));
        assert!(from.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_that_ends_normally_has_no_error_and_a_leaving_client_is_seen() {
        let (to, mut from) = client_stream(4);
        assert_eq!(to.push(message(1)), Pushed::Queued);
        drop(to);
        assert!(from.next().await.unwrap().is_ok());
        assert!(from.next().await.is_none());

        let (to, from) = client_stream(4);
        drop(from);
        to.gone().await;
        assert_eq!(to.push(message(1)), Pushed::Gone);
    }
}
