//! Test entities, their descriptors, a running function on a loopback port, and a
//! bidirectional stream helper that fails a test instead of hanging it.

use std::{future::Future, time::Duration};

use futures::StreamExt;
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};
use strata_sdk::{
    pack, unpack, unpack_if, Action, ActionService, Any, Command, CommandStream, EntityError, EventContext,
    EventSourcedEntity, EventSourcedService, Failure, Metadata, Reply, ReplyStream, ServeError, Service, ServiceCall,
    SideEffect, ValueContext, ValueEntity, ValueEntityService,
};
use tokio::{net::TcpListener, sync::mpsc, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

pub const COUNTER: &str = "test.Counter";
pub const REGISTER: &str = "test.Register";
pub const ECHO: &str = "test.Echo";

/// How long a test waits for any one message before failing.
const PATIENCE: Duration = Duration::from_secs(10);

/// `test.proto` with the services of the two test entities and the test action
/// (whose methods take and return `StringValue`s, streamed as their names say).
pub fn descriptors() -> Vec<u8> {
    let service = |name: &str, methods: &[&str]| ServiceDescriptorProto {
        name: Some(name.to_owned()),
        method: methods
            .iter()
            .map(|method| MethodDescriptorProto {
                name: Some((*method).to_owned()),
                input_type: Some(".google.protobuf.Int64Value".to_owned()),
                output_type: Some(".google.protobuf.Empty".to_owned()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let action = ServiceDescriptorProto {
        name: Some("Echo".to_owned()),
        method: [
            ("Shout", false, false),
            ("Forward", false, false),
            ("Quiet", false, false),
            ("Refuse", false, false),
            ("Panic", false, false),
            ("Join", true, false),
            ("Split", false, true),
            ("Hold", false, true),
            ("Upper", true, true),
        ]
        .into_iter()
        .map(|(name, streams_in, streams_out)| MethodDescriptorProto {
            name: Some(name.to_owned()),
            input_type: Some(".google.protobuf.StringValue".to_owned()),
            output_type: Some(".google.protobuf.StringValue".to_owned()),
            client_streaming: Some(streams_in),
            server_streaming: Some(streams_out),
            ..Default::default()
        })
        .collect(),
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("test.proto".to_owned()),
            package: Some("test".to_owned()),
            service: vec![
                service(
                    "Counter",
                    &[
                        "Increase",
                        "IncreaseTwice",
                        "Get",
                        "Fail",
                        "Panic",
                        "EmitJunk",
                        "Notify",
                        "Nothing",
                    ],
                ),
                service("Register", &["Set", "Get", "Delete", "Fail"]),
                action,
            ],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Events are `Int64Value` amounts; `Fail` emits then fails, `EmitJunk` emits an event
/// the counter cannot apply.
#[derive(Default)]
pub struct Counter {
    value: i64,
}

impl EventSourcedEntity for Counter {
    type Snapshot = i64;

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        match command.name() {
            "Increase" => {
                ctx.emit(command.decode::<i64>()?);
                Ok(Reply::empty())
            }
            "IncreaseTwice" => {
                let amount = command.decode::<i64>()?;
                ctx.emit(amount);
                ctx.emit(amount);
                Ok(Reply::empty())
            }
            "Get" => Ok(Reply::message(&self.value)),
            "Fail" => {
                ctx.emit(1_i64);
                let failure = Failure::new("counting is hard");
                Err(if command.decode::<i64>()? < 0 {
                    failure.restart()
                } else {
                    failure
                })
            }
            "Panic" => panic!("boom"),
            "EmitJunk" => {
                ctx.emit("junk".to_owned());
                Ok(Reply::empty())
            }
            // Counts, tells the register (before the client hears back), and
            // answers with the caller's trace id.
            "Notify" => {
                let amount = command.decode::<i64>()?;
                ctx.emit(amount);
                let trace = command.metadata().get("x-trace").unwrap_or("none").to_owned();
                Ok(Reply::empty()
                    .with_metadata(Metadata::new().with("x-trace", trace))
                    .with_effect(SideEffect::synchronous(ServiceCall::new(REGISTER, "Set", &amount))))
            }
            "Nothing" => {
                ctx.emit(1_i64);
                Ok(Reply::none())
            }
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        match unpack_if::<i64>(event)? {
            Some(amount) => {
                self.value += amount;
                Ok(())
            }
            None => Err(EntityError::unknown_event(event)),
        }
    }

    fn snapshot(&self) -> Option<i64> {
        Some(self.value)
    }

    fn restore(&mut self, snapshot: i64) -> Result<(), EntityError> {
        self.value = snapshot;
        Ok(())
    }
}

/// A value entity holding one string.
pub struct Register;

impl ValueEntity for Register {
    type State = String;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, String>) -> Result<Reply, Failure> {
        match command.name() {
            "Set" => {
                ctx.update_state(command.decode::<String>()?);
                Ok(Reply::empty())
            }
            "Get" => Ok(Reply::message(&ctx.state().cloned().unwrap_or_default())),
            "Delete" => {
                ctx.delete_state();
                Ok(Reply::empty())
            }
            "Fail" => {
                ctx.update_state("never".to_owned());
                Err(Failure::new("no"))
            }
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }
}

/// The test action: `Shout` upper-cases (with metadata and a side effect),
/// `Forward` forwards to the counter, `Quiet` sends no reply, `Refuse` fails with a
/// side effect, `Panic` panics, `Join` joins a stream with commas, `Split` splits
/// on spaces, `Hold` says "started" and then waits until cancelled (telling
/// `cancelled`), `Upper` upper-cases each message, failing on "bad".
pub struct Echo {
    pub cancelled: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

fn text(command: &Command) -> Result<String, Failure> {
    command.decode::<String>()
}

/// Sends on the channel when dropped: how a cancelled call shows itself.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tell) = self.0.take() {
            let _ = tell.send(());
        }
    }
}

impl Action for Echo {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        let effect = || SideEffect::asynchronous(ServiceCall::new(COUNTER, "Increase", &1_i64));
        match command.name() {
            "Shout" => Ok(Reply::message(&text(&command)?.to_uppercase())
                .with_metadata(Metadata::new().with("x-loud", "yes"))
                .with_effect(effect())),
            "Forward" => Ok(Reply::forward(ServiceCall::new(COUNTER, "Get", &0_i64))),
            "Quiet" => Ok(Reply::none().with_effect(effect())),
            "Refuse" => Err(Failure::new("refused").with_effect(effect())),
            "Panic" => panic!("action boom"),
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }

    async fn handle_streamed_in(&self, call: Command, requests: CommandStream) -> Result<Reply, Failure> {
        let parts: Vec<String> = requests.map(|c| text(&c).unwrap_or_default()).collect().await;
        let origin = call.metadata().get("x-origin").unwrap_or("?").to_owned();
        Ok(Reply::message(&format!("{origin}:{}", parts.join(","))))
    }

    fn handle_streamed_out(&self, command: Command) -> ReplyStream {
        match command.name() {
            "Split" => {
                let words: Vec<String> = text(&command)
                    .unwrap_or_default()
                    .split(' ')
                    .map(str::to_owned)
                    .collect();
                futures::stream::iter(words.into_iter().map(|w| Ok(Reply::message(&w)))).boxed()
            }
            _ => {
                let guard = OnDrop(self.cancelled.lock().unwrap().take());
                futures::stream::once(async { Ok(Reply::message(&"started".to_owned())) })
                    .chain(futures::stream::once(async move {
                        let _guard = guard;
                        std::future::pending::<Result<Reply, Failure>>().await
                    }))
                    .boxed()
            }
        }
    }

    fn handle_streamed(&self, _call: Command, requests: CommandStream) -> ReplyStream {
        requests
            .map(|command| match text(&command) {
                Ok(word) if word == "bad" => Err(Failure::new("bad word")),
                Ok(word) => Ok(Reply::message(&word.to_uppercase())),
                Err(failure) => Err(failure),
            })
            .boxed()
    }
}

/// The function the tests talk to: both entities (the counter snapshotting every
/// 5) and the echo action, whose cancellations are told on `cancelled`.
pub fn service_with_action(cancelled: oneshot::Sender<()>) -> Service {
    service().action(ActionService::new(
        ECHO,
        Echo {
            cancelled: std::sync::Mutex::new(Some(cancelled)),
        },
    ))
}

/// The function the tests talk to: both entities, the counter snapshotting every 5.
pub fn service() -> Service {
    Service::new(descriptors())
        .service_name("test-function")
        .service_version("1.2.3")
        .event_sourced(
            EventSourcedService::new(COUNTER, "counters", |_| Counter::default())
                .snapshot_every(5)
                .passivation_timeout(Duration::from_secs(30)),
        )
        .value_entity(ValueEntityService::new(REGISTER, "registers", |_| Register))
}

/// A function serving on a loopback port until dropped or stopped.
pub struct Running {
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    pub async fn start(service: Service) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(service.serve_with_shutdown(listener, async {
            let _ = stopped.await;
        }));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        let _ = self.stop.take().unwrap().send(());
        within(self.task.take().unwrap()).await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One bidirectional protocol stream, seen from the proxy.
pub struct Stream<In, Out> {
    sender: Option<mpsc::Sender<In>>,
    inbound: Streaming<Out>,
}

impl<In, Out> Stream<In, Out> {
    /// Opens a stream with `open`, a client's `handle` call.
    pub async fn open<F, Fut>(open: F) -> Self
    where
        F: FnOnce(ReceiverStream<In>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Streaming<Out>>, tonic::Status>>,
    {
        let (sender, receiver) = mpsc::channel(16);
        let inbound = within(open(ReceiverStream::new(receiver))).await.unwrap().into_inner();
        Self {
            sender: Some(sender),
            inbound,
        }
    }

    pub async fn send(&self, message: In) {
        self.sender
            .as_ref()
            .unwrap()
            .send(message)
            .await
            .unwrap_or_else(|_| panic!("the stream is closed"));
    }

    /// The next message; fails the test if the stream ends or errs.
    pub async fn recv(&mut self) -> Out {
        within(self.inbound.message()).await.unwrap().expect("the stream ended")
    }

    /// Asserts that the function ended the stream cleanly.
    pub async fn assert_closed(&mut self) {
        assert!(
            within(self.inbound.message()).await.unwrap().is_none(),
            "expected the stream to end"
        );
    }

    /// Ends the proxy's side, as passivation does.
    pub fn close(&mut self) {
        self.sender = None;
    }
}

/// Awaits `future`, failing the test after [`PATIENCE`] instead of hanging.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future).await.expect("timed out waiting")
}

pub fn empty() -> Any {
    pack(&())
}

/// Decodes an `Int64Value` payload.
pub fn int(payload: &Option<Any>) -> i64 {
    unpack::<i64>(payload.as_ref().unwrap()).unwrap()
}
