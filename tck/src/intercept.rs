//! The interceptor: a gRPC server that the proxy takes for the user function. It
//! passes every call on to the real function unchanged and records both
//! directions, so proxy cases can check the exact messages the proxy sent and
//! received. Each call the proxy makes becomes an [`Intercepted`] for a case to
//! take.

use std::{net::SocketAddr, sync::Arc};

use futures::{stream::BoxStream, StreamExt};
use strata_proto::cloudstate::{
    action::{
        action_protocol_client::ActionProtocolClient,
        action_protocol_server::{ActionProtocol, ActionProtocolServer},
        ActionCommand, ActionResponse,
    },
    crdt::{
        crdt_client::CrdtClient,
        crdt_server::{Crdt, CrdtServer},
        CrdtStreamIn, CrdtStreamOut,
    },
    entity_discovery_client::EntityDiscoveryClient,
    entity_discovery_server::{EntityDiscovery, EntityDiscoveryServer},
    eventsourced::{
        event_sourced_client::EventSourcedClient,
        event_sourced_server::{EventSourced, EventSourcedServer},
        EventSourcedStreamIn, EventSourcedStreamOut,
    },
    valueentity::{
        value_entity_client::ValueEntityClient,
        value_entity_server::{ValueEntity, ValueEntityServer},
        ValueEntityStreamIn, ValueEntityStreamOut,
    },
    EntitySpec, ProxyInfo, UserFunctionError,
};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{transport::Channel, Request, Response, Status, Streaming};

use crate::{
    probe::{probe, status_text, Check, Probe, Recorder, Seen, PATIENCE},
    protocol::Shape,
};

/// One call the proxy made to the function: what the proxy sent, what the
/// function answered.
pub struct Intercepted<In, Out> {
    pub incoming: Probe<In>,
    pub outgoing: Probe<Out>,
}

impl<In: std::fmt::Debug + PartialEq, Out: std::fmt::Debug + PartialEq> Intercepted<In, Out> {
    pub async fn expect_incoming(&mut self, expected: In) -> Check {
        self.incoming.expect(expected).await
    }

    pub async fn expect_outgoing(&mut self, expected: Out) -> Check {
        self.outgoing.expect(expected).await
    }

    /// Both directions ended (the proxy closed the stream, the function too).
    pub async fn expect_closed(&mut self) -> Check {
        self.expect_closed_within(PATIENCE).await
    }

    pub async fn expect_closed_within(&mut self, patience: std::time::Duration) -> Check {
        self.incoming.expect_complete_within(patience).await?;
        self.outgoing.expect_complete_within(patience).await
    }
}

/// A discovery the proxy made: what it said about itself, what the function
/// answered.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub info: ProxyInfo,
    pub spec: Result<EntitySpec, String>,
}

type Queue<T> = Mutex<mpsc::UnboundedReceiver<T>>;

/// A change the interceptor makes to the function's next CRDT answer, so a
/// case can hand the proxy what a faulty function would send.
pub type Tamper = Box<dyn FnOnce(CrdtStreamOut) -> CrdtStreamOut + Send>;

type TamperSlot = Arc<std::sync::Mutex<Option<Tamper>>>;

/// The calls the proxy made, for the cases to take in order.
pub struct Interceptor {
    pub address: SocketAddr,
    discoveries: Queue<Discovery>,
    event_sourced: Queue<Intercepted<EventSourcedStreamIn, EventSourcedStreamOut>>,
    value: Queue<Intercepted<ValueEntityStreamIn, ValueEntityStreamOut>>,
    crdt: Queue<Intercepted<CrdtStreamIn, CrdtStreamOut>>,
    crdt_tamper: TamperSlot,
    actions: Queue<(Shape, Intercepted<ActionCommand, ActionResponse>)>,
}

async fn take<T>(queue: &Queue<T>, what: &str) -> Result<T, String> {
    take_within(queue, what, PATIENCE).await
}

async fn take_within<T>(queue: &Queue<T>, what: &str, patience: std::time::Duration) -> Result<T, String> {
    match tokio::time::timeout(patience, queue.lock().await.recv()).await {
        Ok(Some(item)) => Ok(item),
        Ok(None) => Err("the interceptor stopped".into()),
        Err(_) => Err(format!("the proxy made no {what} within {patience:?}")),
    }
}

impl Interceptor {
    /// Starts intercepting on a free loopback port, passing calls on to the
    /// function at `function`.
    pub async fn start(function: SocketAddr) -> anyhow::Result<Arc<Interceptor>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{function}"))?.connect_lazy();
        let (discoveries, discovered) = mpsc::unbounded_channel();
        let (event_sourced, event_sourced_calls) = mpsc::unbounded_channel();
        let (value, value_calls) = mpsc::unbounded_channel();
        let (crdt, crdt_calls) = mpsc::unbounded_channel();
        let crdt_tamper = TamperSlot::default();
        let (actions, action_calls) = mpsc::unbounded_channel();
        let relay = Relay {
            function: channel,
            discoveries,
            event_sourced,
            value,
            crdt,
            crdt_tamper: crdt_tamper.clone(),
            actions,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tonic::transport::Server::builder()
            .add_service(EntityDiscoveryServer::new(relay.clone()))
            .add_service(EventSourcedServer::new(relay.clone()))
            .add_service(ValueEntityServer::new(relay.clone()))
            .add_service(CrdtServer::new(relay.clone()))
            .add_service(ActionProtocolServer::new(relay))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("strata-tck: the interceptor stopped: {error}");
            }
        });
        Ok(Arc::new(Interceptor {
            address,
            discoveries: Mutex::new(discovered),
            event_sourced: Mutex::new(event_sourced_calls),
            value: Mutex::new(value_calls),
            crdt: Mutex::new(crdt_calls),
            crdt_tamper,
            actions: Mutex::new(action_calls),
        }))
    }

    /// The proxy's discovery call, waiting up to `patience` (a proxy starts
    /// with it).
    pub async fn discovery(&self, patience: std::time::Duration) -> Result<Discovery, String> {
        take_within(&self.discoveries, "discovery call", patience).await
    }

    pub async fn event_sourced(&self) -> Result<Intercepted<EventSourcedStreamIn, EventSourcedStreamOut>, String> {
        take(&self.event_sourced, "event-sourced entity stream").await
    }

    pub async fn value_entity(&self) -> Result<Intercepted<ValueEntityStreamIn, ValueEntityStreamOut>, String> {
        take(&self.value, "value entity stream").await
    }

    pub async fn crdt(&self) -> Result<Intercepted<CrdtStreamIn, CrdtStreamOut>, String> {
        take(&self.crdt, "CRDT entity stream").await
    }

    /// Changes the function's next CRDT answer (on any stream) with `tamper`
    /// before the proxy gets it; the recorded answer is the changed one.
    pub fn tamper_next_crdt_answer(&self, tamper: Tamper) {
        *self
            .crdt_tamper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tamper);
    }

    /// The next action call, which must have the given shape.
    pub async fn action(&self, shape: Shape) -> Result<Intercepted<ActionCommand, ActionResponse>, String> {
        let (seen, call) = take(&self.actions, "action call").await?;
        if seen != shape {
            return Err(format!(
                "expected a {shape:?} action call, the proxy made a {seen:?} one"
            ));
        }
        Ok(call)
    }

    /// Fails if the proxy made calls no case took.
    pub async fn idle(&self) -> Check {
        let mut stray = Vec::new();
        if self.event_sourced.lock().await.try_recv().is_ok() {
            stray.push("an event-sourced entity stream");
        }
        if self.value.lock().await.try_recv().is_ok() {
            stray.push("a value entity stream");
        }
        if self.crdt.lock().await.try_recv().is_ok() {
            stray.push("a CRDT entity stream");
        }
        if self.actions.lock().await.try_recv().is_ok() {
            stray.push("an action call");
        }
        if stray.is_empty() {
            Ok(())
        } else {
            Err(format!("the proxy also made {}", stray.join(" and ")))
        }
    }
}

/// Serves every protocol service by passing calls on to the function.
#[derive(Clone)]
struct Relay {
    function: Channel,
    discoveries: mpsc::UnboundedSender<Discovery>,
    event_sourced: mpsc::UnboundedSender<Intercepted<EventSourcedStreamIn, EventSourcedStreamOut>>,
    value: mpsc::UnboundedSender<Intercepted<ValueEntityStreamIn, ValueEntityStreamOut>>,
    crdt: mpsc::UnboundedSender<Intercepted<CrdtStreamIn, CrdtStreamOut>>,
    crdt_tamper: TamperSlot,
    actions: mpsc::UnboundedSender<(Shape, Intercepted<ActionCommand, ActionResponse>)>,
}

type Answers<Out> = ReceiverStream<Result<Out, Status>>;

/// Passes one call on: the proxy's requests to the function as they come (each
/// recorded), the function's answers back (each recorded). `open` calls the
/// function. If the proxy goes away, the call to the function is dropped too.
fn relay<In, Out, F, Fut>(
    requests: BoxStream<'static, Result<In, Status>>,
    what: (&'static str, &'static str),
    open: F,
) -> (Intercepted<In, Out>, Answers<Out>)
where
    In: Clone + Send + 'static,
    Out: Clone + Send + 'static,
    F: FnOnce(UnboundedReceiverStream<In>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<BoxStream<'static, Result<Out, Status>>, Status>> + Send + 'static,
{
    let (in_recorder, incoming) = probe(what.0);
    let (out_recorder, outgoing) = probe(what.1);
    let (to_function, function_requests) = mpsc::unbounded_channel();
    tokio::spawn(pass_requests(requests, in_recorder, to_function));
    let (to_proxy, answers) = mpsc::channel(16);
    tokio::spawn(pass_answers(
        open(UnboundedReceiverStream::new(function_requests)),
        out_recorder,
        to_proxy,
    ));
    (Intercepted { incoming, outgoing }, ReceiverStream::new(answers))
}

async fn pass_requests<In: Clone>(
    mut requests: BoxStream<'static, Result<In, Status>>,
    recorder: Recorder<In>,
    to_function: mpsc::UnboundedSender<In>,
) {
    loop {
        match requests.next().await {
            Some(Ok(message)) => {
                let _ = recorder.send(Seen::Message(message.clone()));
                if to_function.send(message).is_err() {
                    return;
                }
            }
            Some(Err(status)) => {
                let _ = recorder.send(Seen::Error(status_text(&status)));
                // Keep the function's request stream open: the call will be
                // dropped when the proxy's side goes away.
                to_function.closed().await;
                return;
            }
            None => {
                let _ = recorder.send(Seen::Complete);
                return;
            }
        }
    }
}

async fn pass_answers<Out: Clone>(
    call: impl std::future::Future<Output = Result<BoxStream<'static, Result<Out, Status>>, Status>>,
    recorder: Recorder<Out>,
    to_proxy: mpsc::Sender<Result<Out, Status>>,
) {
    let mut answers = match call.await {
        Ok(answers) => answers,
        Err(status) => {
            let _ = recorder.send(Seen::Error(status_text(&status)));
            let _ = to_proxy.send(Err(status)).await;
            return;
        }
    };
    loop {
        let next = tokio::select! {
            next = answers.next() => next,
            () = to_proxy.closed() => return,
        };
        match next {
            Some(Ok(message)) => {
                let _ = recorder.send(Seen::Message(message.clone()));
                if to_proxy.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            Some(Err(status)) => {
                let _ = recorder.send(Seen::Error(status_text(&status)));
                let _ = to_proxy.send(Err(status)).await;
                return;
            }
            None => {
                let _ = recorder.send(Seen::Complete);
                return;
            }
        }
    }
}

/// The single answer of a call with a unary response.
async fn single<Out>(mut answers: Answers<Out>) -> Result<Response<Out>, Status> {
    match answers.next().await {
        Some(answer) => answer.map(Response::new),
        None => Err(Status::internal("the function ended the call without an answer")),
    }
}

fn streamed<In: Send + 'static>(request: Request<Streaming<In>>) -> BoxStream<'static, Result<In, Status>> {
    request.into_inner().boxed()
}

fn unary<In: Send + 'static>(request: Request<In>) -> BoxStream<'static, Result<In, Status>> {
    futures::stream::iter([Ok(request.into_inner())]).boxed()
}

#[tonic::async_trait]
impl EntityDiscovery for Relay {
    async fn discover(&self, request: Request<ProxyInfo>) -> Result<Response<EntitySpec>, Status> {
        let info = request.into_inner();
        let answer = EntityDiscoveryClient::new(self.function.clone())
            .discover(info.clone())
            .await;
        let _ = self.discoveries.send(Discovery {
            info,
            spec: answer.as_ref().map(|r| r.get_ref().clone()).map_err(status_text),
        });
        answer
    }

    async fn report_error(&self, request: Request<UserFunctionError>) -> Result<Response<()>, Status> {
        tracing::info!(message = %request.get_ref().message, "the proxy reported an error to the function");
        EntityDiscoveryClient::new(self.function.clone())
            .report_error(request.into_inner())
            .await
    }
}

#[tonic::async_trait]
impl EventSourced for Relay {
    type handleStream = Answers<EventSourcedStreamOut>;

    async fn handle(
        &self,
        request: Request<Streaming<EventSourcedStreamIn>>,
    ) -> Result<Response<Self::handleStream>, Status> {
        let mut client = EventSourcedClient::new(self.function.clone());
        let (intercepted, answers) = relay(
            streamed(request),
            (
                "the proxy's event-sourced messages",
                "the function's event-sourced answers",
            ),
            move |requests| async move { Ok(client.handle(requests).await?.into_inner().boxed()) },
        );
        let _ = self.event_sourced.send(intercepted);
        Ok(Response::new(answers))
    }
}

#[tonic::async_trait]
impl ValueEntity for Relay {
    type handleStream = Answers<ValueEntityStreamOut>;

    async fn handle(
        &self,
        request: Request<Streaming<ValueEntityStreamIn>>,
    ) -> Result<Response<Self::handleStream>, Status> {
        let mut client = ValueEntityClient::new(self.function.clone());
        let (intercepted, answers) = relay(
            streamed(request),
            (
                "the proxy's value entity messages",
                "the function's value entity answers",
            ),
            move |requests| async move { Ok(client.handle(requests).await?.into_inner().boxed()) },
        );
        let _ = self.value.send(intercepted);
        Ok(Response::new(answers))
    }
}

#[tonic::async_trait]
impl Crdt for Relay {
    type handleStream = Answers<CrdtStreamOut>;

    async fn handle(&self, request: Request<Streaming<CrdtStreamIn>>) -> Result<Response<Self::handleStream>, Status> {
        let mut client = CrdtClient::new(self.function.clone());
        let slot = self.crdt_tamper.clone();
        let tamper = move |answer: Result<CrdtStreamOut, Status>| {
            let change = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            match (answer, change) {
                (Ok(out), Some(change)) => Ok(change(out)),
                (answer, change) => {
                    *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = change;
                    answer
                }
            }
        };
        let (intercepted, answers) = relay(
            streamed(request),
            ("the proxy's CRDT messages", "the function's CRDT answers"),
            move |requests| async move { Ok(client.handle(requests).await?.into_inner().map(tamper).boxed()) },
        );
        let _ = self.crdt.send(intercepted);
        Ok(Response::new(answers))
    }
}

const ACTION_WHAT: (&str, &str) = ("the proxy's action commands", "the function's action answers");

#[tonic::async_trait]
impl ActionProtocol for Relay {
    type handleStreamedOutStream = Answers<ActionResponse>;
    type handleStreamedStream = Answers<ActionResponse>;

    async fn handle_unary(&self, request: Request<ActionCommand>) -> Result<Response<ActionResponse>, Status> {
        let mut client = ActionProtocolClient::new(self.function.clone());
        let (intercepted, answers) = relay(unary(request), ACTION_WHAT, move |mut requests| async move {
            let command = requests.next().await.ok_or_else(|| Status::cancelled("no command"))?;
            Ok(crate::probe::once(client.handle_unary(command).await?))
        });
        let _ = self.actions.send((Shape::Unary, intercepted));
        single(answers).await
    }

    async fn handle_streamed_in(
        &self,
        request: Request<Streaming<ActionCommand>>,
    ) -> Result<Response<ActionResponse>, Status> {
        let mut client = ActionProtocolClient::new(self.function.clone());
        let (intercepted, answers) = relay(streamed(request), ACTION_WHAT, move |requests| async move {
            Ok(crate::probe::once(client.handle_streamed_in(requests).await?))
        });
        let _ = self.actions.send((Shape::StreamedIn, intercepted));
        single(answers).await
    }

    async fn handle_streamed_out(
        &self,
        request: Request<ActionCommand>,
    ) -> Result<Response<Self::handleStreamedOutStream>, Status> {
        let mut client = ActionProtocolClient::new(self.function.clone());
        let (intercepted, answers) = relay(unary(request), ACTION_WHAT, move |mut requests| async move {
            let command = requests.next().await.ok_or_else(|| Status::cancelled("no command"))?;
            Ok(client.handle_streamed_out(command).await?.into_inner().boxed())
        });
        let _ = self.actions.send((Shape::StreamedOut, intercepted));
        Ok(Response::new(answers))
    }

    async fn handle_streamed(
        &self,
        request: Request<Streaming<ActionCommand>>,
    ) -> Result<Response<Self::handleStreamedStream>, Status> {
        let mut client = ActionProtocolClient::new(self.function.clone());
        let (intercepted, answers) = relay(streamed(request), ACTION_WHAT, move |requests| async move {
            Ok(client.handle_streamed(requests).await?.into_inner().boxed())
        });
        let _ = self.actions.send((Shape::Streamed, intercepted));
        Ok(Response::new(answers))
    }
}
