//! The actor's life cycle with a scripted session (no function, no store): a
//! restart starts the entity over at once, a stream failure fails what is queued
//! behind it, a command whose client deadline passed while it waited is not
//! sent, and an entity with an open stream does not passivate.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prost_types::Any;
use strata_store::{EntityKey, JournalEvent, JournalWrite, Recovery, Snapshot, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{
    call::{Answer, Call, CallContext, Outcome},
    fixtures,
    metrics::Metrics,
    model::Catalog,
    sidecar::entity::session::{EntityCommand, DEFAULT_COMMAND_TIMEOUT},
    sidecar::function::FunctionClient,
};

/// The entity ids the scripted session was activated for, in order (each test
/// uses its own entity id).
static ACTIVATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn activations(entity_id: &str) -> usize {
    ACTIVATIONS.lock().unwrap().iter().filter(|id| *id == entity_id).count()
}

/// Answers each command by its payload: "restart" and "fail-stream" fail it and
/// ask for what they say; anything else is echoed.
struct Scripted;

impl Session for Scripted {
    type Heard = std::convert::Infallible;

    async fn activate(_: &SessionContext, _: &EntityModel, entity_id: &str) -> Result<Self, ProxyError> {
        ACTIVATIONS.lock().unwrap().push(entity_id.to_string());
        Ok(Scripted)
    }

    fn is_closed(&mut self) -> bool {
        false
    }

    fn state_bytes(&self) -> usize {
        0
    }

    async fn run(&mut self, _: &SessionContext, command: EntityCommand) -> After {
        let payload = command.call.payload.clone();
        match payload.value.as_slice() {
            b"restart" => {
                let _ = command.reply.send(Err(ProxyError::Failure("restarting".into())));
                After::Restart
            }
            b"fail-stream" => {
                let _ = command.reply.send(Err(ProxyError::Failure("boom".into())));
                After::StreamFailed("boom".into())
            }
            _ => {
                let _ = command.reply.send(Ok(Outcome::reply(Answer::new(payload))));
                After::Continue
            }
        }
    }

    async fn close(self, _: &SessionContext) {}
}

fn context() -> Arc<SessionContext> {
    Arc::new(SessionContext {
        detached: tokio::sync::mpsc::unbounded_channel().0,
        function: FunctionClient::new("127.0.0.1", 9).unwrap(),
        store: Arc::new(NoStore),
        metrics: Arc::new(Metrics::new()),
        targets: Arc::new(Catalog::default()),
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
        instance_id: "test".into(),
        timers: Arc::new(crate::sidecar::timer_scope::TimerScope::standalone()),
    })
}

type Answers = Vec<oneshot::Receiver<Result<Outcome, ProxyError>>>;

/// Queues commands with these payloads for `entity_id`, runs its actor until the
/// mailbox is drained, and returns the answers.
async fn run(entity_id: &str, payloads: &[&str], context: CallContext) -> Answers {
    let (_, method) = fixtures::method("/test.things.Warehouse/Create");
    let (tx, rx) = mpsc::channel(16);
    let mut answers = Vec::new();
    for payload in payloads {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method: method.clone(),
            entity_id: Some(entity_id.into()),
            payload: Any {
                type_url: String::new(),
                value: payload.as_bytes().to_vec(),
            },
            metadata: None,
            context,
        };
        tx.send(Box::new(EntityCommand {
            call,
            reply,
            stream: None,
        }))
        .await
        .unwrap();
        answers.push(answer);
    }
    let own = tx.downgrade();
    drop(tx);
    let actor = Actor {
        ctx: context_for_test(),
        registry: Arc::default(),
        entity: method.entity.clone(),
        key: (method.entity.service_name.clone(), entity_id.into()),
        streams: Arc::default(),
    };
    actor.run::<Scripted>(rx, own).await;
    answers
}

fn context_for_test() -> Arc<SessionContext> {
    context()
}

/// The scripted session never touches the store.
struct NoStore;

#[async_trait]
impl Store for NoStore {
    async fn recover(&self, _: &EntityKey) -> Result<Recovery, StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
    async fn events(&self, _: &EntityKey, _: i64) -> Result<Vec<JournalEvent>, StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
    async fn latest_snapshot(&self, _: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
    async fn append(&self, _: JournalWrite) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
    async fn load_value(&self, _: &EntityKey) -> Result<Option<Any>, StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
    async fn save_value(&self, _: &EntityKey, _: Option<Any>) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("no store in this test".into()))
    }
}

#[tokio::test]
async fn a_restart_starts_the_entity_over_at_once() {
    let mut answers = run("a", &["one", "restart"], CallContext::default()).await;
    assert_eq!(
        answers[0].try_recv().unwrap().unwrap(),
        Outcome::reply(Answer::new(Any {
            type_url: String::new(),
            value: b"one".to_vec()
        }))
    );
    assert_eq!(
        answers[1].try_recv().unwrap(),
        Err(ProxyError::Failure("restarting".into()))
    );
    // Activated for the first command, and again right after the restart, with
    // no command waiting for it.
    assert_eq!(activations("a"), 2);
}

#[tokio::test]
async fn a_stream_failure_fails_the_commands_queued_behind_it() {
    let mut answers = run("bb", &["fail-stream", "next", "last"], CallContext::default()).await;
    assert_eq!(answers[0].try_recv().unwrap(), Err(ProxyError::Failure("boom".into())));
    for queued in &mut answers[1..] {
        assert_eq!(
            queued.try_recv().unwrap(),
            Err(ProxyError::Unavailable(
                "entity bb of test.things.Warehouse failed (boom) before this command ran; retry".into()
            ))
        );
    }
    assert_eq!(activations("bb"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_command_past_its_client_deadline_is_not_sent() {
    let context = CallContext {
        deadline: Some(tokio::time::Instant::now()),
        hops: 0,
        routed_by: 0,
        trace: None,
    };
    let mut answers = run("ccc", &["late"], context).await;
    assert!(matches!(
        answers[0].try_recv().unwrap(),
        Err(ProxyError::DeadlineExceeded(_))
    ));
    assert_eq!(activations("ccc"), 0, "never activated for it");
}

/// A session whose commands "watch" and "unwatch" open and close a stream.
struct Watching {
    open: usize,
}

impl Session for Watching {
    type Heard = std::convert::Infallible;

    async fn activate(_: &SessionContext, _: &EntityModel, _: &str) -> Result<Self, ProxyError> {
        Ok(Watching { open: 0 })
    }

    fn is_closed(&mut self) -> bool {
        false
    }

    async fn run(&mut self, _: &SessionContext, command: EntityCommand) -> After {
        match command.call.payload.value.as_slice() {
            b"watch" => self.open += 1,
            _ => self.open -= 1,
        }
        let _ = command
            .reply
            .send(Ok(Outcome::reply(Answer::new(command.call.payload))));
        After::Continue
    }

    fn streams(&self) -> usize {
        self.open
    }

    fn state_bytes(&self) -> usize {
        0
    }

    async fn close(self, _: &SessionContext) {}
}

#[tokio::test(start_paused = true)]
async fn an_entity_with_an_open_stream_is_not_idle() {
    let (_, method) = fixtures::method("/test.things.Warehouse/Create");
    let (tx, rx) = mpsc::channel(4);
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let actor = Actor {
        ctx: context_for_test(),
        registry: Arc::default(),
        entity: method.entity.clone(),
        key: (method.entity.service_name.clone(), "w".into()),
        streams: streams.clone(),
    };
    let running = tokio::spawn(actor.run::<Watching>(rx, tx.downgrade()));
    let send = |what: &str| {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method: method.clone(),
            entity_id: Some("w".into()),
            payload: Any {
                type_url: String::new(),
                value: what.as_bytes().to_vec(),
            },
            metadata: None,
            context: CallContext::default(),
        };
        (
            EntityCommand {
                call,
                reply,
                stream: None,
            },
            answer,
        )
    };
    let (watch, answer) = send("watch");
    tx.send(Box::new(watch)).await.unwrap();
    answer.await.unwrap().unwrap();
    // --- long past its passivation timeout, the watched entity is still active
    tokio::time::sleep(method.entity.passivation * 5).await;
    assert!(!running.is_finished(), "an entity with an open stream passivated");
    assert_eq!(
        streams.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the registry sees the stream"
    );
    // --- once the stream closes, it passivates as usual
    let (unwatch, answer) = send("unwatch");
    tx.send(Box::new(unwatch)).await.unwrap();
    answer.await.unwrap().unwrap();
    assert_eq!(streams.load(std::sync::atomic::Ordering::Relaxed), 0);
    tokio::time::timeout(method.entity.passivation * 5, running)
        .await
        .expect("passivated once idle")
        .unwrap();
}
