//! Talking the protocol to the function directly, as a proxy would, for the model
//! cases: a [`Connection`] per call, messages sent by the case and answers
//! expected exactly.

use std::fmt::Debug;

use futures::StreamExt;
use strata_proto::cloudstate::{
    action::{action_protocol_client::ActionProtocolClient, ActionCommand, ActionResponse},
    crdt::{crdt_client::CrdtClient, CrdtStreamIn, CrdtStreamOut},
    eventsourced::{event_sourced_client::EventSourcedClient, EventSourcedStreamIn, EventSourcedStreamOut},
    valueentity::{value_entity_client::ValueEntityClient, ValueEntityStreamIn, ValueEntityStreamOut},
};
use tokio::sync::mpsc;
use tonic::{transport::Channel, Status};

use crate::probe::{call, once, probe, Check, Probe};

/// One call to the function: requests sent by the case, answers it expects.
pub struct Connection<In, Out> {
    requests: Option<mpsc::UnboundedSender<In>>,
    pub answers: Probe<Out>,
}

impl<In, Out: Debug + PartialEq> Connection<In, Out> {
    pub fn send(&self, message: In) -> Check {
        self.requests
            .as_ref()
            .ok_or("the request stream was already completed")?
            .send(message)
            .map_err(|_| "the call ended before the request could be sent".to_string())
    }

    pub async fn expect(&mut self, expected: Out) -> Check {
        self.answers.expect(expected).await
    }

    /// Sends `message` and expects `expected` back.
    pub async fn exchange(&mut self, message: In, expected: Out) -> Check {
        self.send(message)?;
        self.expect(expected).await
    }

    /// Ends the request stream.
    pub fn complete(&mut self) {
        self.requests = None;
    }

    /// Ends the request stream and expects the function to end its answers (an
    /// entity passivated, a streamed call over).
    pub async fn passivate(&mut self) -> Check {
        self.complete();
        self.answers.expect_complete().await
    }
}

/// The function's protocol services, reached directly.
#[derive(Clone)]
pub struct Protocol {
    channel: Channel,
}

impl Protocol {
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    pub fn event_sourced(&self) -> Connection<EventSourcedStreamIn, EventSourcedStreamOut> {
        let mut client = EventSourcedClient::new(self.channel.clone());
        connection("the function's event-sourced answers", move |requests| async move {
            Ok(client.handle(requests).await?.into_inner().boxed())
        })
    }

    pub fn value_entity(&self) -> Connection<ValueEntityStreamIn, ValueEntityStreamOut> {
        let mut client = ValueEntityClient::new(self.channel.clone());
        connection("the function's value entity answers", move |requests| async move {
            Ok(client.handle(requests).await?.into_inner().boxed())
        })
    }

    pub fn crdt(&self) -> Connection<CrdtStreamIn, CrdtStreamOut> {
        let mut client = CrdtClient::new(self.channel.clone());
        connection("the function's CRDT answers", move |requests| async move {
            Ok(client.handle(requests).await?.into_inner().boxed())
        })
    }

    /// An action call of the given shape; the first request sent is its command.
    pub fn action(&self, shape: Shape) -> Connection<ActionCommand, ActionResponse> {
        let mut client = ActionProtocolClient::new(self.channel.clone());
        connection("the function's action answers", move |mut requests| async move {
            Ok(match shape {
                Shape::Unary => {
                    let command = requests.next().await.ok_or_else(no_command)?;
                    once(client.handle_unary(command).await?)
                }
                Shape::StreamedIn => once(client.handle_streamed_in(requests).await?),
                Shape::StreamedOut => {
                    let command = requests.next().await.ok_or_else(no_command)?;
                    client.handle_streamed_out(command).await?.into_inner().boxed()
                }
                Shape::Streamed => client.handle_streamed(requests).await?.into_inner().boxed(),
            })
        })
    }
}

/// A call made by `open`, its answers watched under the name `what`.
fn connection<In, Out, F, Fut>(what: &'static str, open: F) -> Connection<In, Out>
where
    In: Send + 'static,
    Out: Send + 'static,
    F: FnOnce(tokio_stream::wrappers::UnboundedReceiverStream<In>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<futures::stream::BoxStream<'static, Result<Out, Status>>, Status>>
        + Send
        + 'static,
{
    let (recorder, answers) = probe(what);
    Connection {
        requests: Some(call(open, recorder)),
        answers,
    }
}

fn no_command() -> Status {
    Status::cancelled("the case sent no command")
}

/// The four shapes of an action call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unary,
    StreamedIn,
    StreamedOut,
    Streamed,
}
