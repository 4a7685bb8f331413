//! The timer runner: its pure plan and attempt ends asserted exactly, then the
//! loop over a real SQLite file with a router that records (and fails) calls:
//! a due timer is called once with its payload and removed, a failing one is
//! retried and then kept as failed with its error, and a shard held at a newer
//! epoch elsewhere is not fired here.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prost_types::Any;
use strata_store::{AttemptEnd, SqliteStore, Store, StoredTimer, Timer, TimerCall, TimerChange, TimerKey, TimerState};
use tokio::sync::watch;

use super::runner::*;
use crate::{
    call::{Answer, Answers, Call, Commands, StreamedCall},
    error::ProxyError,
    fixtures,
    metrics::Metrics,
    sidecar::{
        effects::Router,
        membership::Ownership,
        timer_scope::{now_ms, TimerScope},
    },
};

fn stored(name: &str, attempt_at_ms: i64, attempts: u32, max_attempts: u32) -> StoredTimer {
    StoredTimer {
        key: key("standalone", name),
        shard: 0,
        due_ms: attempt_at_ms,
        attempt_at_ms,
        call: record_call(),
        attempts,
        max_attempts,
        generation: 1,
        state: TimerState::Pending,
        last_error: None,
    }
}

fn key(service: &str, name: &str) -> TimerKey {
    TimerKey {
        service: service.into(),
        owner: "test.things.Warehouse".into(),
        entity_id: "shelf-1".into(),
        name: name.into(),
    }
}

fn record_call() -> TimerCall {
    TimerCall {
        service_name: "test.things.Auditor".into(),
        method: "Record".into(),
        payload: fixtures::thing_ref("shelf", 1),
    }
}

#[test]
fn the_plan_fires_what_is_due_and_not_in_flight_within_the_room() {
    let window = vec![
        stored("a", 10, 0, 3),
        stored("b", 20, 0, 3),
        stored("c", 30, 0, 3),
        stored("d", 90, 0, 3),
    ];
    let in_flight: HashSet<(TimerKey, i64)> = [(key("standalone", "a"), 1)].into();
    let plan = plan(window.clone(), &in_flight, 1, 30);
    assert_eq!(plan.fire, vec![stored("b", 20, 0, 3)]);
    // c is due but there is no room for it now: it is the next to look at.
    assert_eq!(plan.next_at_ms, Some(30));
    let plan = super::runner::plan(window, &HashSet::new(), 64, 15);
    assert_eq!(plan.fire, vec![stored("a", 10, 0, 3)]);
    assert_eq!(plan.next_at_ms, Some(20));
    assert_eq!(super::runner::plan(vec![], &HashSet::new(), 64, 15).next_at_ms, None);
}

#[test]
fn an_attempt_ends_fired_retried_with_backoff_or_failed_at_the_limit() {
    let timer = stored("t", 0, 0, 3);
    assert_eq!(attempt_end(&timer, &Ok(()), 1_000), AttemptEnd::Fired);
    let failed = Err(ProxyError::Failure("the cart is closed".into()));
    assert_eq!(
        attempt_end(&timer, &failed, 1_000),
        AttemptEnd::Retry {
            attempt_at_ms: 1_500,
            error: "UNKNOWN: the cart is closed".into()
        }
    );
    assert_eq!(
        attempt_end(&stored("t", 0, 1, 3), &failed, 1_000),
        AttemptEnd::Retry {
            attempt_at_ms: 2_000,
            error: "UNKNOWN: the cart is closed".into()
        }
    );
    assert_eq!(
        attempt_end(&stored("t", 0, 2, 3), &failed, 1_000),
        AttemptEnd::Failed {
            error: "UNKNOWN: the cart is closed".into(),
            at_ms: 1_000
        }
    );
}

/// Records every call; calls for shelf "broken" fail.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, Any, String)>>,
}

#[async_trait::async_trait]
impl Commands for Recorder {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        let timer = call
            .metadata
            .iter()
            .flat_map(|m| &m.entries)
            .find(|e| e.key == TIMER_HEADER)
            .and_then(|e| match &e.value {
                Some(strata_proto::cloudstate::metadata_entry::Value::StringValue(v)) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push((call.target_name(), call.payload.clone(), timer));
        if call.entity_id.as_deref() == Some("broken-1") {
            return Err(ProxyError::Failure("the shelf is broken".into()));
        }
        Ok(Answer::empty(&call.method))
    }
    async fn streamed(&self, _: StreamedCall) -> Result<Answers, ProxyError> {
        Err(ProxyError::Unimplemented("not here".into()))
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    recorder: Arc<Recorder>,
    scope: Arc<TimerScope>,
}

async fn setup(
    scope: TimerScope,
    ownership: Option<watch::Receiver<Ownership>>,
) -> (Setup, tokio::task::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("timers.db")).await.unwrap());
    let recorder = Arc::new(Recorder::default());
    let scope = Arc::new(scope);
    let runner = Arc::new(TimerRunner {
        store: store.clone(),
        scope: scope.clone(),
        ownership,
        router: Router::Shared(recorder.clone()),
        targets: Arc::new(fixtures::model()),
        call_timeout: Duration::from_secs(5),
        metrics: Arc::new(Metrics::new()),
        report: None,
    });
    let running = tokio::spawn(runner.run());
    (
        Setup {
            _dir: dir,
            store,
            recorder,
            scope,
        },
        running,
    )
}

impl Setup {
    async fn schedule(&self, name: &str, shelf: &str, shard: u32, due_ms: i64, max_attempts: u32) {
        let mut call = record_call();
        call.payload = fixtures::thing_ref(shelf, 1);
        let timer = Timer {
            key: key(&self.scope.service, name),
            shard,
            due_ms,
            call,
            max_attempts,
        };
        self.store
            .timers()
            .unwrap()
            .write_timers(vec![TimerChange::Schedule(timer)])
            .await
            .unwrap();
        self.scope.stored();
    }

    async fn until(&self, what: &str, check: impl Fn(&Setup) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !check(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn calls(&self) -> Vec<(String, Any, String)> {
        self.recorder.calls.lock().unwrap().clone()
    }

    async fn timers(&self, state: TimerState) -> Vec<StoredTimer> {
        self.store
            .timers()
            .unwrap()
            .list_timers(&self.scope.service, state, 10)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_timer_is_called_once_and_removed() {
    let (setup, running) = setup(TimerScope::standalone(), None).await;
    // --- one due now, one far ahead
    setup.schedule("soon", "shelf", 3, now_ms(), 3).await;
    setup.schedule("later", "shelf", 4, now_ms() + 3_600_000, 3).await;
    setup.until("the due timer's call", |s| !s.calls().is_empty()).await;
    let pending = loop {
        let pending = setup.timers(TimerState::Pending).await;
        if pending.len() == 1 {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(pending[0].key.name, "later");
    assert_eq!(
        setup.calls(),
        vec![(
            "test.things.Auditor.Record".to_string(),
            fixtures::thing_ref("shelf", 1),
            "soon".to_string()
        )]
    );
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_is_retried_then_kept_as_failed_with_its_error() {
    let (setup, running) = setup(TimerScope::standalone(), None).await;
    setup.schedule("doomed", "broken", 0, now_ms(), 2).await;
    // --- the first call fails and is retried (after half a second), the second is its last
    setup.until("two calls", |s| s.calls().len() >= 2).await;
    let failed = loop {
        let failed = setup.timers(TimerState::Failed).await;
        if !failed.is_empty() {
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].last_error.as_deref(), Some("UNKNOWN: the shelf is broken"));
    assert!(setup.timers(TimerState::Pending).await.is_empty());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(setup.calls().len(), 2, "a failed timer is never called again");
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_held_at_a_newer_epoch_elsewhere_is_not_fired_here() {
    let ownership = Ownership {
        version: 1,
        shard_count: 8,
        owned: [2, 5].into(),
        epochs: [(2, 4), (5, 1)].into(),
        ..Ownership::default()
    };
    let (tx, rx) = watch::channel(ownership);
    let scope = TimerScope::managed("cart".into(), Box::new(|| 8));
    // A newer owner of shard 5 claimed it already (this instance's routes are behind).
    let (setup, running) = setup(scope, Some(rx)).await;
    setup
        .store
        .timers()
        .unwrap()
        .claim_timer_shard("cart", 5, 2)
        .await
        .unwrap();
    setup.schedule("mine", "shelf", 2, now_ms(), 3).await;
    setup.schedule("moved", "shelf", 5, now_ms(), 3).await;
    setup.schedule("not-owned", "shelf", 6, now_ms(), 3).await;
    setup.until("the owned shard's timer", |s| !s.calls().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let called: Vec<String> = setup.calls().into_iter().map(|(_, _, timer)| timer).collect();
    assert_eq!(called, ["mine"]);
    // --- the routes catch up: this instance holds shard 5 at epoch 3 now, and fires it
    tx.send_replace(Ownership {
        version: 2,
        shard_count: 8,
        owned: [2, 5].into(),
        epochs: [(2, 4), (5, 3)].into(),
        ..Ownership::default()
    });
    setup.until("the moved shard's timer", |s| s.calls().len() == 2).await;
    running.abort();
}
