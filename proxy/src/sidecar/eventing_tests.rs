//! The eventing runner's pure parts (grouping writes, the delivered metadata,
//! reading the option) and its loop against a real SQLite store with a fake
//! dispatcher: order, retries that never skip, offsets saved only after the
//! action answered, resumption.

use std::sync::Mutex;

use prost_types::Any;
use strata_proto::cloudstate::EntitySpec;
use strata_store::{EntityKey, JournalWrite as StoreWrite, SqliteStore};
use tokio::sync::Notify;

use super::*;
use crate::{
    call::{Answer, Answers, StreamedCall},
    error::ProxyError,
    model::ServiceModel,
};

fn subscribers_model() -> ServiceModel {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut compiler = protox::Compiler::new([fixtures, strata_proto::PROTO_DIR]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["subscribers.proto"]).unwrap();
    let entity = |entity_type: &str, service_name: &str, persistence_id: &str| strata_proto::cloudstate::Entity {
        entity_type: entity_type.into(),
        service_name: service_name.into(),
        persistence_id: persistence_id.into(),
        passivation_strategy: None,
    };
    use strata_proto::entity_types::{ACTION, VALUE_ENTITY};
    ServiceModel::from_spec(&EntitySpec {
        proto: compiler.encode_file_descriptor_set(),
        entities: vec![
            entity(ACTION, "test.subscribers.Projector", ""),
            entity(VALUE_ENTITY, "test.subscribers.Ledger", "ledger"),
        ],
        service_info: None,
    })
    .unwrap()
}

fn event(ord: i64, entity_id: &str, seq_nr: i64) -> LoggedEvent {
    LoggedEvent {
        offset: LogOffset { tx: 0, ord },
        entity_id: entity_id.into(),
        seq_nr,
        payload: Any {
            type_url: format!("json.cloudstate.io/{entity_id}"),
            value: seq_nr.to_string().into_bytes(),
        },
    }
}

#[test]
fn the_option_subscribes_unary_actions_and_topics_are_reported() {
    let model = subscribers_model();
    let subscribed: Vec<(String, String)> = model
        .subscriptions
        .iter()
        .map(|s| (s.subscriber(), s.event_log.clone()))
        .collect();
    assert_eq!(
        subscribed,
        [("test.subscribers.Projector.OnAudit".to_string(), "audits".to_string())]
    );
    let reported = model.skipped.join("\n");
    for expected in [
        "method test.subscribers.Projector.OnTopic subscribes to topic \"notes\": topic eventing is not supported",
        "method test.subscribers.Projector.Publish publishes to topic \"published\": topic eventing is not supported",
        "method test.subscribers.Projector.Streamed subscribes to event log \"audits\", but it takes a stream",
        "method test.subscribers.Ledger.Record subscribes to event log \"audits\", but only action methods",
    ] {
        assert!(reported.contains(expected), "{expected:?} not in:\n{reported}");
    }
    assert_eq!(model.skipped.len(), 4, "{reported}");
    // The methods are still served as plain calls.
    assert!(model.method("/test.subscribers.Projector/OnTopic").is_some());
}

#[test]
fn a_method_takes_the_events_of_its_input_type_or_every_event_as_any() {
    let model = subscribers_model();
    let any = model.subscriptions[0].clone();
    assert!(any.accepts("type.googleapis.com/test.subscribers.Note"));
    assert!(any.accepts("json.cloudstate.io/JsonEvent"));
    let typed = Subscription {
        method: model.method("/test.subscribers.Projector/Plain").unwrap().clone(),
        event_log: "audits".into(),
    };
    assert!(typed.accepts("type.googleapis.com/test.subscribers.Note"));
    assert!(!typed.accepts("type.googleapis.com/test.subscribers.Other"));
    assert!(!typed.accepts("json.cloudstate.io/test.subscribers.Note.x"));
    assert!(!typed.accepts("test.subscribers.Note"));
}

#[test]
fn events_are_grouped_into_their_journal_writes() {
    let writes = journal_writes(vec![
        event(1, "a", 1),
        event(1, "a", 2),
        event(2, "b", 1),
        event(3, "a", 3),
    ]);
    let shape: Vec<(i64, Vec<i64>)> = writes
        .iter()
        .map(|w| (w.offset.ord, w.events.iter().map(|e| e.seq_nr).collect()))
        .collect();
    assert_eq!(shape, [(1, vec![1, 2]), (2, vec![1]), (3, vec![3])]);
    assert!(journal_writes(Vec::new()).is_empty());
}

#[test]
fn a_delivery_carries_the_event_as_it_is_with_its_entity_and_sequence_number() {
    let model = subscribers_model();
    let subscription = model.subscriptions[0].clone();
    let mut logged = event(7, "cart-1", 12);
    logged.payload.type_url = "type.googleapis.com/com.example.ItemAdded".into();
    let call = delivery(&subscription, &logged);
    assert_eq!(call.payload, logged.payload);
    assert_eq!(call.entity_id, None);
    assert_eq!(call.context, CallContext::default());
    let entries: Vec<(String, String)> = call
        .metadata
        .unwrap()
        .entries
        .into_iter()
        .map(|e| match e.value {
            Some(metadata_entry::Value::StringValue(v)) => (e.key, v),
            other => panic!("{other:?}"),
        })
        .collect();
    let expect = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        entries,
        [
            expect("ce-specversion", "1.0"),
            expect("ce-id", "audits/cart-1/12"),
            expect("ce-source", "audits"),
            expect("ce-type", "com.example.ItemAdded"),
            expect("ce-subject", "cart-1"),
            expect("ce-sequence", "12"),
        ]
    );
}

/// Records every delivery (`entity:seq`, and whether it was taken); refuses
/// the events listed in `refuse` (each as many times as listed).
#[derive(Default)]
struct Subscriber {
    seen: Mutex<Vec<(String, bool)>>,
    refuse: Mutex<Vec<String>>,
    changed: Notify,
}

impl Subscriber {
    fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().unwrap().clone()
    }

    async fn until_taken(&self, count: usize) -> Vec<(String, bool)> {
        loop {
            let changed = self.changed.notified();
            let seen = self.seen();
            if seen.iter().filter(|(_, taken)| *taken).count() >= count {
                return seen;
            }
            changed.await;
        }
    }
}

#[async_trait::async_trait]
impl Commands for Subscriber {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        let metadata = call.metadata.clone().unwrap_or_default();
        let value = |key: &str| {
            metadata
                .entries
                .iter()
                .find(|e| e.key == key)
                .and_then(|e| match &e.value {
                    Some(metadata_entry::Value::StringValue(v)) => Some(v.clone()),
                    _ => None,
                })
        };
        let name = format!("{}:{}", value(keys::SUBJECT).unwrap(), value(keys::SEQUENCE).unwrap());
        let refused = {
            let mut refuse = self.refuse.lock().unwrap();
            match refuse.iter().position(|r| *r == name) {
                Some(at) => {
                    refuse.remove(at);
                    true
                }
                None => false,
            }
        };
        self.seen.lock().unwrap().push((name, !refused));
        self.changed.notify_waiters();
        if refused {
            return Err(ProxyError::Failure("not now".into()));
        }
        Ok(Answer::empty(&call.method))
    }

    async fn streamed(&self, _: StreamedCall) -> Result<Answers, ProxyError> {
        unreachable!("subscribers are unary")
    }
}

fn quick() -> Pacing {
    Pacing {
        idle: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
        retry: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
    }
}

async fn append(store: &SqliteStore, entity: &str, first_seq_nr: i64, events: usize) {
    let events = (0..events as i64)
        .map(|i| Any {
            type_url: "json.cloudstate.io/event".into(),
            value: (first_seq_nr + i).to_string().into_bytes(),
        })
        .collect();
    store
        .append(StoreWrite {
            key: EntityKey::new("audits", entity),
            first_seq_nr,
            events,
            snapshot: None,
            timers: Vec::new(),
        })
        .await
        .unwrap();
}

fn runner(
    store: &Arc<SqliteStore>,
    subscriber: &Arc<Subscriber>,
    ownership: Option<watch::Receiver<Ownership>>,
) -> Arc<Eventing> {
    Arc::new(Eventing {
        store: store.clone(),
        commands: subscriber.clone(),
        metrics: Arc::new(Metrics::new()),
        ownership,
        pacing: quick(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_journal_order_retries_without_skipping_and_resumes_from_the_saved_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await.unwrap());
    let subscription = subscribers_model().subscriptions[0].clone();
    let name = subscription.subscriber();
    append(&store, "a", 1, 2).await;
    append(&store, "b", 1, 1).await;
    append(&store, "a", 3, 1).await;

    // --- b:1 fails twice: retried, counted, and nothing after it goes first
    let subscriber = Arc::new(Subscriber::default());
    *subscriber.refuse.lock().unwrap() = vec!["b:1".into(), "b:1".into()];
    let eventing = runner(&store, &subscriber, None);
    let running = tokio::spawn({
        let (eventing, subscription) = (eventing.clone(), subscription.clone());
        async move { eventing.run(subscription).await }
    });
    let seen = subscriber.until_taken(4).await;
    let order: Vec<String> = seen
        .iter()
        .map(|(n, t)| format!("{n}{}", if *t { "" } else { "!" }))
        .collect();
    assert_eq!(order, ["a:1", "a:2", "b:1!", "b:1!", "b:1", "a:3"]);
    // The offset is saved after the last write's delivery; await it.
    let last = store
        .event_log("audits", LogOffset::START, 10)
        .await
        .unwrap()
        .last()
        .unwrap()
        .offset;
    while store.load_offset(&name, "audits").await.unwrap() != last {
        tokio::task::yield_now().await;
    }
    assert_eq!(eventing.metrics.event_failures.with_label_values(&[&name]).get(), 2);
    assert_eq!(eventing.metrics.events_delivered.with_label_values(&[&name]).get(), 4);
    // Every delivery is a request of the subscriber's service to the autoscaler, by
    // its outcome, and none stays in flight.
    let service = subscription.method.entity.service_name.as_str();
    let method = subscription.method.name();
    let requests = |code: &str| {
        eventing
            .metrics
            .requests
            .with_label_values(&[service, method, DELIVERY_PROTOCOL, code])
            .get()
    };
    assert_eq!((requests("OK"), requests("UNKNOWN")), (4, 2));
    assert_eq!(eventing.metrics.in_flight.with_label_values(&[service]).get(), 0);
    running.abort();
    let _ = running.await;

    // --- a new runner (a restart) starts after the saved offset: only new events
    append(&store, "b", 2, 2).await;
    let restarted = Arc::new(Subscriber::default());
    let eventing = runner(&store, &restarted, None);
    let running = tokio::spawn({
        let eventing = eventing.clone();
        async move { eventing.run(subscription).await }
    });
    let seen = restarted.until_taken(2).await;
    assert_eq!(seen, [("b:2".to_string(), true), ("b:3".to_string(), true)]);
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_of_the_subscription_shard_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await.unwrap());
    let subscription = subscribers_model().subscriptions[0].clone();
    append(&store, "a", 1, 1).await;
    let not_owning = Ownership {
        version: 1,
        shard_count: 4,
        owned: [1, 2].into(),
        epochs: Default::default(),
        ..Ownership::default()
    };
    let (tx, rx) = watch::channel(not_owning.clone());
    let subscriber = Arc::new(Subscriber::default());
    let eventing = runner(&store, &subscriber, Some(rx));
    assert!(!runs_subscriptions(Some(&not_owning)));
    assert!(runs_subscriptions(None), "a standalone sidecar runs them all");
    let running = tokio::spawn({
        let eventing = eventing.clone();
        async move { eventing.run(subscription).await }
    });
    // --- given shard 0, it consumes
    tx.send_replace(Ownership {
        version: 2,
        shard_count: 4,
        owned: [0, 1].into(),
        epochs: Default::default(),
        ..Ownership::default()
    });
    assert_eq!(subscriber.until_taken(1).await, [("a:1".to_string(), true)]);
    let name = subscribers_model().subscriptions[0].subscriber();
    let gauge = eventing.metrics.subscriptions_running.with_label_values(&[&name]);
    assert_eq!(gauge.get(), 1);
    // --- the sidecar shutting down (the ownership gone) ends the runner
    drop(tx);
    running.await.unwrap();
    assert_eq!(gauge.get(), 0);
}
