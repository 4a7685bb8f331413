//! The conformance suite every [`Store`] must pass, run against a real SQLite file
//! and a real PostgreSQL server (`STRATA_TEST_POSTGRES_URL`). Each check is written
//! once against a [`Backend`]; `backend_tests!` instantiates it per store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost_types::Any;
use tokio::task::JoinSet;

use crate::{
    CrdtRecord, CrdtWrite, EntityKey, JournalEvent, JournalWrite, LogOffset, Recovery, Snapshot, Store, StoreError,
    StoreStats,
};

#[path = "conformance_timers.rs"]
mod timer_checks;
use timer_checks::{
    due_timers_by_shard_and_time, timer_attempts_end_fired_retried_or_failed,
    timer_attempts_fenced_by_epoch_and_generation, timers_replaced_and_cancelled_by_key,
    timers_stored_with_the_command_or_not_at_all,
};

/// Where a store under test keeps its data, so a test can open it again (as a
/// restarted or second process would) and interfere with it from outside.
#[async_trait]
trait Backend: Send + Sync {
    /// A new store on the same data.
    async fn open(&self) -> Arc<dyn Store>;

    /// Takes the journal's write lock from outside the store until released, so
    /// that the store's writes queue up behind it.
    async fn block_journal_writes(&self) -> Box<dyn WriteBlock>;

    /// Removes what the test left behind (the temporary directory goes by itself).
    async fn cleanup(&self) {}
}

#[async_trait]
trait WriteBlock: Send {
    async fn release(self: Box<Self>);
}

// ---------------------------------------------------------------------------
// helpers

fn event(name: &str) -> Any {
    Any {
        type_url: "type.googleapis.com/test.Event".into(),
        value: name.as_bytes().to_vec(),
    }
}

fn state(name: &str) -> Any {
    Any {
        type_url: "type.googleapis.com/test.State".into(),
        value: name.as_bytes().to_vec(),
    }
}

fn write(key: &EntityKey, first_seq_nr: i64, names: &[&str], snapshot: Option<&str>) -> JournalWrite {
    JournalWrite {
        key: key.clone(),
        first_seq_nr,
        events: names.iter().map(|n| event(n)).collect(),
        snapshot: snapshot.map(|name| Snapshot {
            seq_nr: first_seq_nr + names.len() as i64 - 1,
            payload: state(name),
        }),
        timers: Vec::new(),
    }
}

/// The event names of a journal, for readable assertions.
fn names(events: &[JournalEvent]) -> Vec<(i64, String)> {
    events
        .iter()
        .map(|e| (e.seq_nr, String::from_utf8(e.payload.value.clone()).unwrap()))
        .collect()
}

fn delta(after: StoreStats, before: StoreStats) -> StoreStats {
    StoreStats {
        writes_queued: after.writes_queued - before.writes_queued,
        writes_committed: after.writes_committed - before.writes_committed,
        conflicts: after.conflicts - before.conflicts,
        transactions: after.transactions - before.transactions,
        failed_transactions: after.failed_transactions - before.failed_transactions,
    }
}

/// Waits until the store has queued `n` more writes than `before`.
async fn queued(store: &dyn Store, before: StoreStats, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stats().writes_queued < before.writes_queued + n {
        assert!(
            Instant::now() < deadline,
            "writes never reached the queue: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The event log of `persistence_id` after `after` once it shows at least `n`
/// events. A log may hold back writes while older transactions anywhere on the
/// server are still open (PostgreSQL), so a test awaits what it wrote.
async fn log_with(store: &dyn Store, persistence_id: &str, after: LogOffset, n: usize) -> Vec<crate::LoggedEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = store.event_log(persistence_id, after, 1000).await.unwrap();
        if log.len() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the event log shows {} of {n} events",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// the suite

async fn empty_recovery(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "nobody");
    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery, Recovery::default());
    assert_eq!(recovery.last_seq_nr(), 0);
    assert!(store.events(&key, 1).await.unwrap().is_empty());
    assert_eq!(store.latest_snapshot(&key).await.unwrap(), None);
    // A write with nothing in it stores nothing and succeeds.
    store.append(write(&key, 1, &[], None)).await.unwrap();
    assert_eq!(store.recover(&key).await.unwrap(), Recovery::default());
}

async fn append_and_recover(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "alice");
    store.append(write(&key, 1, &["a1", "a2", "a3"], None)).await.unwrap();
    store.append(write(&key, 4, &["a4"], None)).await.unwrap();
    store.append(write(&key, 5, &["a5"], None)).await.unwrap();

    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery.snapshot, None);
    assert_eq!(
        names(&recovery.events),
        vec![
            (1, "a1".into()),
            (2, "a2".into()),
            (3, "a3".into()),
            (4, "a4".into()),
            (5, "a5".into())
        ]
    );
    assert_eq!(recovery.events[0].payload, event("a1"));
    assert_eq!(recovery.last_seq_nr(), 5);
    assert_eq!(
        names(&store.events(&key, 4).await.unwrap()),
        vec![(4, "a4".into()), (5, "a5".into())]
    );
    assert!(store.events(&key, 6).await.unwrap().is_empty());

    // The same entity id under another persistence id, and another entity, are separate.
    store
        .append(write(&EntityKey::new("other", "alice"), 1, &["o1"], None))
        .await
        .unwrap();
    store
        .append(write(&EntityKey::new("cart", "bob"), 1, &["b1"], None))
        .await
        .unwrap();
    assert_eq!(store.recover(&key).await.unwrap().events.len(), 5);
    assert_eq!(
        names(&store.recover(&EntityKey::new("other", "alice")).await.unwrap().events),
        vec![(1, "o1".into())]
    );
}

async fn journal_pages_newest_first(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "pages");
    for seq_nr in 1..=7 {
        store
            .append(write(&key, seq_nr, &[&format!("p{seq_nr}")], None))
            .await
            .unwrap();
    }
    store
        .append(write(&EntityKey::new("cart", "other"), 1, &["x1"], None))
        .await
        .unwrap();

    let newest = store.events_before(&key, i64::MAX, 3).await.unwrap();
    assert_eq!(
        names(&newest),
        vec![(7, "p7".into()), (6, "p6".into()), (5, "p5".into())]
    );
    let older = store.events_before(&key, 5, 3).await.unwrap();
    assert_eq!(
        names(&older),
        vec![(4, "p4".into()), (3, "p3".into()), (2, "p2".into())]
    );
    let oldest = store.events_before(&key, 2, 3).await.unwrap();
    assert_eq!(names(&oldest), vec![(1, "p1".into())]);
    assert!(store.events_before(&key, 1, 3).await.unwrap().is_empty());
    assert!(store
        .events_before(&EntityKey::new("cart", "nobody"), i64::MAX, 3)
        .await
        .unwrap()
        .is_empty());
}

async fn recovery_starts_at_latest_snapshot(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "snapshots");
    for seq_nr in 1..=12 {
        let snapshot = format!("state{seq_nr}");
        let with_snapshot = (seq_nr % 5 == 0).then_some(snapshot.as_str());
        store
            .append(write(&key, seq_nr, &[&format!("e{seq_nr}")], with_snapshot))
            .await
            .unwrap();
    }

    let recovery = store.recover(&key).await.unwrap();
    let snapshot = recovery.snapshot.clone().expect("a snapshot");
    assert_eq!(snapshot.seq_nr, 10);
    assert_eq!(snapshot.payload, state("state10"));
    assert_eq!(names(&recovery.events), vec![(11, "e11".into()), (12, "e12".into())]);
    assert_eq!(recovery.last_seq_nr(), 12);
    assert_eq!(store.latest_snapshot(&key).await.unwrap(), Some(snapshot));
    // Snapshots do not remove events: the whole journal is still there.
    assert_eq!(store.events(&key, 1).await.unwrap().len(), 12);

    // A snapshot written with the last event of a multi-event write is taken at that event.
    let multi = EntityKey::new("cart", "multi");
    store
        .append(write(&multi, 1, &["m1", "m2", "m3"], Some("at3")))
        .await
        .unwrap();
    let recovery = store.recover(&multi).await.unwrap();
    assert_eq!(recovery.snapshot.as_ref().unwrap().seq_nr, 3);
    assert!(recovery.events.is_empty());
    assert_eq!(recovery.last_seq_nr(), 3);
}

async fn snapshot_inside_a_multi_command_write(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "pipelined");
    // Five events from several commands; the snapshot came with the third.
    let mut batch = write(&key, 1, &["p1", "p2", "p3", "p4", "p5"], None);
    batch.snapshot = Some(Snapshot {
        seq_nr: 3,
        payload: state("at3"),
    });
    store.append(batch).await.unwrap();
    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery.snapshot.map(|s| s.seq_nr), Some(3));
    assert_eq!(names(&recovery.events), vec![(4, "p4".into()), (5, "p5".into())]);

    // A snapshot outside the write's events is refused, and nothing is stored.
    let mut outside = write(&key, 6, &["p6"], None);
    outside.snapshot = Some(Snapshot {
        seq_nr: 9,
        payload: state("at9"),
    });
    assert!(matches!(store.append(outside).await, Err(StoreError::Config(_))));
    assert_eq!(store.recover(&key).await.unwrap().last_seq_nr(), 5);
}

async fn duplicate_seq_nr_conflicts_and_stores_nothing(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("cart", "contested");
    store.append(write(&key, 1, &["a1", "a2", "a3"], None)).await.unwrap();

    // Overlaps at 3: none of 3', 4', 5' nor the snapshot may be stored.
    let refused = store.append(write(&key, 3, &["x3", "x4", "x5"], Some("x-state"))).await;
    match refused {
        Err(StoreError::Conflict { entity_id, seq_nr }) => {
            assert_eq!(entity_id, "contested");
            assert_eq!(seq_nr, 3);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A write whose first event is taken conflicts too, whatever follows it.
    assert!(matches!(
        store.append(write(&key, 1, &["y1"], Some("y-state"))).await,
        Err(StoreError::Conflict { seq_nr: 1, .. })
    ));

    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery.snapshot, None);
    assert_eq!(
        names(&recovery.events),
        vec![(1, "a1".into()), (2, "a2".into()), (3, "a3".into())]
    );
    assert_eq!(store.latest_snapshot(&key).await.unwrap(), None);

    // The rightful next write still goes through.
    store.append(write(&key, 4, &["a4"], Some("s4"))).await.unwrap();
    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery.snapshot.as_ref().unwrap().payload, state("s4"));
    assert_eq!(recovery.last_seq_nr(), 4);
}

/// Conflicting writes share batches with good ones: each fails alone.
async fn conflict_in_a_batch_fails_alone(backend: &dyn Backend) {
    let store = backend.open().await;
    const N: usize = 40;
    // Entities that already have event 1: rewriting it conflicts, event 2 is fine.
    for i in 0..N {
        store
            .append(write(&EntityKey::new("batch", format!("taken-{i}")), 1, &["old"], None))
            .await
            .unwrap();
    }

    let before = store.stats();
    let block = backend.block_journal_writes().await;
    let mut tasks = JoinSet::new();
    let mut submitted = 0;
    let mut submit = |label: String, w: JournalWrite| {
        let store = store.clone();
        submitted += 1;
        tasks.spawn(async move { (label, w.key.clone(), store.append(w).await) });
    };
    for i in 0..N {
        let taken = EntityKey::new("batch", format!("taken-{i}"));
        let fresh = EntityKey::new("batch", format!("fresh-{i}"));
        let raced = EntityKey::new("batch", format!("raced-{i}"));
        submit("stale".into(), write(&taken, 1, &["stale"], Some("stale")));
        submit("next".into(), write(&taken, 2, &["next"], Some("next")));
        submit("fresh".into(), write(&fresh, 1, &["f1", "f2"], Some("fresh")));
        // Two writers of the same new sequence number: exactly one may win.
        submit("raced-a".into(), write(&raced, 1, &["a"], Some("a")));
        submit("raced-b".into(), write(&raced, 1, &["b"], Some("b")));
    }
    queued(store.as_ref(), before, submitted).await;
    block.release().await;

    let mut raced_winners: HashMap<String, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (label, key, result) = joined.unwrap();
        match label.as_str() {
            "stale" => assert!(
                matches!(result, Err(StoreError::Conflict { seq_nr: 1, .. })),
                "stale write to {key:?}: {result:?}"
            ),
            "next" | "fresh" => result.unwrap(),
            _ => match result {
                Ok(()) => {
                    let loser = raced_winners.insert(key.entity_id.clone(), label.clone());
                    assert!(loser.is_none(), "both writers of seq 1 of {key:?} won");
                }
                Err(StoreError::Conflict { seq_nr: 1, .. }) => {}
                Err(e) => panic!("raced write to {key:?} failed: {e}"),
            },
        }
    }
    assert_eq!(raced_winners.len(), N, "every raced entity has one winner");

    for i in 0..N {
        let taken = store
            .recover(&EntityKey::new("batch", format!("taken-{i}")))
            .await
            .unwrap();
        assert_eq!(taken.snapshot.unwrap().payload, state("next"));
        assert!(taken.events.is_empty());
        assert_eq!(
            names(
                &store
                    .events(&EntityKey::new("batch", format!("taken-{i}")), 1)
                    .await
                    .unwrap()
            ),
            vec![(1, "old".into()), (2, "next".into())]
        );

        let fresh = store
            .recover(&EntityKey::new("batch", format!("fresh-{i}")))
            .await
            .unwrap();
        assert_eq!(fresh.snapshot.unwrap().seq_nr, 2);

        let winner = &raced_winners[&format!("raced-{i}")];
        let expected = winner.trim_start_matches("raced-");
        let raced = store
            .recover(&EntityKey::new("batch", format!("raced-{i}")))
            .await
            .unwrap();
        assert_eq!(raced.snapshot.unwrap().payload, state(expected));
        assert_eq!(
            names(
                &store
                    .events(&EntityKey::new("batch", format!("raced-{i}")), 1)
                    .await
                    .unwrap()
            ),
            vec![(1, expected.to_owned())]
        );
    }

    let stats = delta(store.stats(), before);
    assert_eq!(stats.conflicts, 2 * N as u64);
    assert_eq!(stats.writes_committed, 3 * N as u64);
    assert_eq!(stats.failed_transactions, 0);
    assert!(
        stats.transactions < submitted,
        "{submitted} writes took {} transactions",
        stats.transactions
    );
}

async fn concurrent_appends_to_many_entities(backend: &dyn Backend) {
    let store = backend.open().await;
    const N: usize = 200;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let store = store.clone();
        tasks.spawn(async move {
            let key = EntityKey::new("many", format!("entity-{i}"));
            let first = format!("{i}-1");
            let second = format!("{i}-2");
            store.append(write(&key, 1, &[&first, &second], None)).await?;
            store
                .append(write(&key, 3, &[&format!("{i}-3")], Some(&format!("s{i}"))))
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    for i in 0..N {
        let key = EntityKey::new("many", format!("entity-{i}"));
        assert_eq!(
            names(&store.events(&key, 1).await.unwrap()),
            vec![(1, format!("{i}-1")), (2, format!("{i}-2")), (3, format!("{i}-3"))]
        );
        let recovery = store.recover(&key).await.unwrap();
        assert_eq!(recovery.snapshot.unwrap().payload, state(&format!("s{i}")));
        assert!(recovery.events.is_empty());
    }
}

/// Many concurrent writes share transactions: one sync serves many commands.
async fn group_commit_batches_writes(backend: &dyn Backend) {
    let store = backend.open().await;
    const N: u64 = 200;
    let before = store.stats();
    // Hold the writer back until all N writes wait in the queue, so that what is
    // counted is batching, not the speed of this machine.
    let block = backend.block_journal_writes().await;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let store = store.clone();
        tasks.spawn(async move {
            let key = EntityKey::new("group", format!("entity-{i}"));
            store.append(write(&key, 1, &["only"], None)).await
        });
    }
    queued(store.as_ref(), before, N).await;
    block.release().await;
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }

    let stats = delta(store.stats(), before);
    assert_eq!(stats.writes_committed, N);
    assert!(stats.transactions >= 1);
    assert!(
        stats.transactions < N,
        "{N} concurrent writes took {} transactions",
        stats.transactions
    );
    for i in 0..N {
        let key = EntityKey::new("group", format!("entity-{i}"));
        assert_eq!(store.recover(&key).await.unwrap().last_seq_nr(), 1);
    }
}

async fn values_lifecycle(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("counter", "c1");
    let other = EntityKey::new("counter", "c2");
    assert_eq!(store.load_value(&key).await.unwrap(), None);

    store.save_value(&key, Some(state("one"))).await.unwrap();
    assert_eq!(store.load_value(&key).await.unwrap(), Some(state("one")));
    assert_eq!(store.load_value(&other).await.unwrap(), None);

    let replacement = Any {
        type_url: "type.googleapis.com/test.Other".into(),
        value: vec![0, 1, 2, 255],
    };
    store.save_value(&key, Some(replacement.clone())).await.unwrap();
    assert_eq!(store.load_value(&key).await.unwrap(), Some(replacement));

    store.save_value(&key, None).await.unwrap();
    assert_eq!(store.load_value(&key).await.unwrap(), None);
    // Deleting what is not there is not an error.
    store.save_value(&key, None).await.unwrap();

    // Empty bytes are a value, not an absence.
    let empty = Any {
        type_url: "type.googleapis.com/test.Empty".into(),
        value: vec![],
    };
    store.save_value(&other, Some(empty.clone())).await.unwrap();
    assert_eq!(store.load_value(&other).await.unwrap(), Some(empty));
}

async fn data_survives_reopening(backend: &dyn Backend) {
    let key = EntityKey::new("cart", "durable");
    {
        let store = backend.open().await;
        store.append(write(&key, 1, &["d1", "d2"], Some("s2"))).await.unwrap();
        store.append(write(&key, 3, &["d3"], None)).await.unwrap();
        store.save_value(&key, Some(state("v"))).await.unwrap();
    }
    let store = backend.open().await;
    let recovery = store.recover(&key).await.unwrap();
    assert_eq!(recovery.snapshot.unwrap().payload, state("s2"));
    assert_eq!(names(&recovery.events), vec![(3, "d3".into())]);
    assert_eq!(store.load_value(&key).await.unwrap(), Some(state("v")));
    // And the reopened store goes on where the first left off.
    assert!(matches!(
        store.append(write(&key, 3, &["again"], None)).await,
        Err(StoreError::Conflict { seq_nr: 3, .. })
    ));
    store.append(write(&key, 4, &["d4"], None)).await.unwrap();
}

/// Two stores on the same data, as two processes have: each sees the other's
/// writes, and a stale writer is fenced off by the sequence numbers.
async fn two_stores_share_data(backend: &dyn Backend) {
    let first = backend.open().await;
    let second = backend.open().await;
    let key = EntityKey::new("cart", "moved");

    first.append(write(&key, 1, &["m1", "m2"], None)).await.unwrap();
    assert_eq!(second.recover(&key).await.unwrap().last_seq_nr(), 2);
    second.append(write(&key, 3, &["m3"], Some("s3"))).await.unwrap();
    let seen_by_first = first.recover(&key).await.unwrap();
    assert_eq!(seen_by_first.snapshot.unwrap().payload, state("s3"));
    // The first store still believes it owns the entity at seq 2: refused.
    assert!(matches!(
        first.append(write(&key, 3, &["stale"], None)).await,
        Err(StoreError::Conflict { seq_nr: 3, .. })
    ));

    second.save_value(&key, Some(state("from-second"))).await.unwrap();
    assert_eq!(first.load_value(&key).await.unwrap(), Some(state("from-second")));

    // Both write at once to their own entities.
    let mut tasks = JoinSet::new();
    for (name, store) in [("first", first.clone()), ("second", second.clone())] {
        for i in 0..20 {
            let store = store.clone();
            tasks.spawn(async move {
                let key = EntityKey::new("shared", format!("{name}-{i}"));
                store.append(write(&key, 1, &[name], None)).await
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    for i in 0..20 {
        for (name, reader) in [("first", &second), ("second", &first)] {
            let key = EntityKey::new("shared", format!("{name}-{i}"));
            assert_eq!(names(&reader.events(&key, 1).await.unwrap()), vec![(1, name.into())]);
        }
    }
}

fn crdt(key: &EntityKey, seq_nr: i64, name: Option<&str>) -> CrdtWrite {
    CrdtWrite {
        key: key.clone(),
        seq_nr,
        state: name.map(state),
    }
}

/// A CRDT's state is replaced write by write, each fenced by its sequence
/// number; a deletion keeps the number so it is fenced too.
async fn crdt_lifecycle_and_fencing(backend: &dyn Backend) {
    let store = backend.open().await;
    let key = EntityKey::new("likes", "post-1");
    let other = EntityKey::new("likes", "post-2");
    assert_eq!(store.load_crdt(&key).await.unwrap(), None);

    store.save_crdt(crdt(&key, 1, Some("one"))).await.unwrap();
    store.save_crdt(crdt(&key, 2, Some("two"))).await.unwrap();
    assert_eq!(
        store.load_crdt(&key).await.unwrap(),
        Some(CrdtRecord {
            seq_nr: 2,
            state: Some(state("two"))
        })
    );
    assert_eq!(store.load_crdt(&other).await.unwrap(), None);

    // A second first write, a repeated number and a gap all conflict and store nothing.
    for seq_nr in [1, 2, 4] {
        match store.save_crdt(crdt(&key, seq_nr, Some("stale"))).await {
            Err(StoreError::Conflict {
                entity_id,
                seq_nr: refused,
            }) => {
                assert_eq!(entity_id, "post-1");
                assert_eq!(refused, seq_nr);
            }
            other => panic!("expected a conflict at {seq_nr}, got {other:?}"),
        }
    }
    assert_eq!(store.load_crdt(&key).await.unwrap().unwrap().state, Some(state("two")));
    // A sequence number below 1 is bad input, not a conflict.
    assert!(matches!(
        store.save_crdt(crdt(&key, 0, Some("zero"))).await,
        Err(StoreError::Config(_))
    ));

    // Deleted: no state, the number stays and still fences.
    store.save_crdt(crdt(&key, 3, None)).await.unwrap();
    assert_eq!(
        store.load_crdt(&key).await.unwrap(),
        Some(CrdtRecord { seq_nr: 3, state: None })
    );
    assert!(matches!(
        store.save_crdt(crdt(&key, 3, Some("late"))).await,
        Err(StoreError::Conflict { seq_nr: 3, .. })
    ));
    // Empty bytes are a state, not an absence.
    let empty = Any {
        type_url: "type.googleapis.com/test.Empty".into(),
        value: vec![],
    };
    store
        .save_crdt(CrdtWrite {
            key: key.clone(),
            seq_nr: 4,
            state: Some(empty.clone()),
        })
        .await
        .unwrap();
    assert_eq!(store.load_crdt(&key).await.unwrap().unwrap().state, Some(empty));
}

/// Two owners of one CRDT (a shard that moved while the old owner still
/// runs): the stale one is refused, so the state can never fork; and the
/// state survives reopening.
async fn crdt_two_owners_cannot_fork(backend: &dyn Backend) {
    let first = backend.open().await;
    let second = backend.open().await;
    let key = EntityKey::new("presence", "room-1");
    first.save_crdt(crdt(&key, 1, Some("a"))).await.unwrap();
    let seen = second.load_crdt(&key).await.unwrap().unwrap();
    second.save_crdt(crdt(&key, seen.seq_nr + 1, Some("ab"))).await.unwrap();
    assert!(matches!(
        first.save_crdt(crdt(&key, 2, Some("ac"))).await,
        Err(StoreError::Conflict { seq_nr: 2, .. })
    ));

    // Many concurrent saves of one state from one number: exactly one wins.
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { first.clone() } else { second.clone() };
        let key = key.clone();
        tasks.spawn(async move { store.save_crdt(crdt(&key, 3, Some(&format!("w{i}")))).await });
    }
    let mut won = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict { seq_nr: 3, .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    drop((first, second));
    let reopened = backend.open().await;
    assert_eq!(reopened.load_crdt(&key).await.unwrap().unwrap().seq_nr, 3);
}

/// Every journal write enters its persistence id's event log in commit order;
/// a reader pages through it from any offset and sees each event once.
async fn event_log_in_commit_order(backend: &dyn Backend) {
    let store = backend.open().await;
    let a = EntityKey::new("cart", "a");
    let b = EntityKey::new("cart", "b");
    let elsewhere = EntityKey::new("other", "a");
    assert!(store.event_log("cart", LogOffset::START, 10).await.unwrap().is_empty());

    store.append(write(&a, 1, &["a1", "a2"], None)).await.unwrap();
    store.append(write(&b, 1, &["b1"], Some("sb1"))).await.unwrap();
    store.append(write(&elsewhere, 1, &["x1"], None)).await.unwrap();
    store.append(write(&a, 3, &["a3"], None)).await.unwrap();
    // Refused and empty writes leave no trace in the log.
    assert!(store.append(write(&a, 3, &["refused"], None)).await.is_err());
    store.append(write(&b, 2, &[], None)).await.unwrap();

    let all = log_with(&*store, "cart", LogOffset::START, 4).await;
    assert_eq!(all.len(), 4);
    let seen: Vec<(String, i64, String)> = all
        .iter()
        .map(|e| {
            (
                e.entity_id.clone(),
                e.seq_nr,
                String::from_utf8(e.payload.value.clone()).unwrap(),
            )
        })
        .collect();
    let expected = [("a", 1, "a1"), ("a", 2, "a2"), ("b", 1, "b1"), ("a", 3, "a3")];
    assert_eq!(
        seen,
        expected
            .iter()
            .map(|(e, s, n)| (e.to_string(), *s, n.to_string()))
            .collect::<Vec<_>>()
    );
    // One offset per write: a multi-event write shares it, later writes are later.
    assert_eq!(all[0].offset, all[1].offset);
    assert!(all[1].offset < all[2].offset && all[2].offset < all[3].offset);
    assert!(all[0].offset > LogOffset::START);

    // Paging: the limit counts writes, and a page resumes after its last offset.
    let page = store.event_log("cart", LogOffset::START, 1).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store.event_log("cart", page[1].offset, 100).await.unwrap();
    assert_eq!(rest, all[2..].to_vec());
    assert!(store.event_log("cart", all[3].offset, 100).await.unwrap().is_empty());
    assert_eq!(log_with(&*store, "other", LogOffset::START, 1).await.len(), 1);

    // Concurrent writers: every event appears exactly once, each entity's in order.
    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let key = EntityKey::new("busy", format!("e{}", i % 4));
            for attempt in 0.. {
                let next = store.recover(&key).await.unwrap().last_seq_nr() + 1;
                match store.append(write(&key, next, &[&format!("w{i}")], None)).await {
                    Ok(()) => return,
                    Err(StoreError::Conflict { .. }) if attempt < 100 => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    log_with(&*store, "busy", LogOffset::START, 20).await;
    let mut after = LogOffset::START;
    let mut seen = Vec::new();
    loop {
        let page = store.event_log("busy", after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(last.offset > after);
        after = last.offset;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 20);
    for entity in 0..4 {
        let seqs: Vec<i64> = seen
            .iter()
            .filter(|e| e.entity_id == format!("e{entity}"))
            .map(|e| e.seq_nr)
            .collect();
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
    }
}

/// A subscriber's offset is kept per persistence id, survives reopening, and
/// only moves forward.
async fn subscriber_offsets(backend: &dyn Backend) {
    let key = EntityKey::new("cart", "c");
    {
        let store = backend.open().await;
        assert_eq!(store.load_offset("totals", "cart").await.unwrap(), LogOffset::START);
        store.append(write(&key, 1, &["e1"], None)).await.unwrap();
        store.append(write(&key, 2, &["e2"], None)).await.unwrap();
        let log = log_with(&*store, "cart", LogOffset::START, 2).await;
        store.save_offset("totals", "cart", log[1].offset).await.unwrap();
        // A lagging runner saving an earlier offset does not move it back.
        store.save_offset("totals", "cart", log[0].offset).await.unwrap();
        assert_eq!(store.load_offset("totals", "cart").await.unwrap(), log[1].offset);
        assert_eq!(store.load_offset("totals", "other").await.unwrap(), LogOffset::START);
        assert_eq!(store.load_offset("audit", "cart").await.unwrap(), LogOffset::START);
    }
    let store = backend.open().await;
    let offset = store.load_offset("totals", "cart").await.unwrap();
    assert!(store.event_log("cart", offset, 10).await.unwrap().is_empty());
    store.append(write(&key, 3, &["e3"], None)).await.unwrap();
    let next = log_with(&*store, "cart", offset, 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq_nr, 3);
}

/// Instantiates every check of the suite as a test against one backend.
macro_rules! backend_tests {
    ($module:ident, $backend:path) => {
        mod $module {
            backend_tests!(@each $backend;
                empty_recovery,
                append_and_recover,
                recovery_starts_at_latest_snapshot,
                snapshot_inside_a_multi_command_write,
                journal_pages_newest_first,
                duplicate_seq_nr_conflicts_and_stores_nothing,
                conflict_in_a_batch_fails_alone,
                concurrent_appends_to_many_entities,
                group_commit_batches_writes,
                values_lifecycle,
                data_survives_reopening,
                two_stores_share_data,
                crdt_lifecycle_and_fencing,
                crdt_two_owners_cannot_fork,
                event_log_in_commit_order,
                subscriber_offsets,
                timers_replaced_and_cancelled_by_key,
                timers_stored_with_the_command_or_not_at_all,
                due_timers_by_shard_and_time,
                timer_attempts_fenced_by_epoch_and_generation,
                timer_attempts_end_fired_retried_or_failed,
            );
        }
    };
    (@each $backend:path; $($check:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $backend().await else { return };
                super::$check(&backend).await;
                super::Backend::cleanup(&backend).await;
            }
        )*
    };
}

backend_tests!(sqlite, super::sqlite_backend);
backend_tests!(postgres, super::postgres_backend);

// ---------------------------------------------------------------------------
// SQLite

struct SqliteBackend {
    dir: tempfile::TempDir,
}

impl SqliteBackend {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("strata.db")
    }
}

async fn sqlite_backend() -> Option<SqliteBackend> {
    Some(SqliteBackend {
        dir: tempfile::tempdir().unwrap(),
    })
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(crate::SqliteStore::open(self.path()).await.unwrap())
    }

    async fn block_journal_writes(&self) -> Box<dyn WriteBlock> {
        // The file exists once a store has opened it; BEGIN IMMEDIATE takes the
        // one write lock that every connection, in any process, must get.
        let path = self.path();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(30)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn
        })
        .await
        .unwrap();
        Box::new(SqliteBlock(conn))
    }
}

struct SqliteBlock(rusqlite::Connection);

#[async_trait]
impl WriteBlock for SqliteBlock {
    async fn release(self: Box<Self>) {
        let conn = self.0;
        tokio::task::spawn_blocking(move || conn.execute_batch("ROLLBACK").unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn sqlite_refuses_an_in_memory_database() {
    assert!(matches!(
        crate::open("sqlite://:memory:").await,
        Err(StoreError::Config(_))
    ));
    assert!(matches!(crate::open("sqlite://").await, Err(StoreError::Config(_))));
    assert!(matches!(crate::open("mysql://x").await, Err(StoreError::Config(_))));
}

#[tokio::test]
async fn sqlite_opens_through_a_url_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("strata.db");
    let store = crate::open(&format!("sqlite://{}", path.display())).await.unwrap();
    store
        .append(write(&EntityKey::new("p", "e"), 1, &["x"], None))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT max(version) FROM strata_schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    drop(crate::SqliteStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE strata_schema_version SET version = 99", [])
        .unwrap();
    match crate::SqliteStore::open(&path).await {
        Err(StoreError::Config(message)) => assert!(message.contains("99"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// A database of schema 1 (before CRDT states and the event log) upgrades in
/// place: its journals enter the event log, before anything written later.
#[tokio::test]
async fn sqlite_upgrades_schema_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    let old = EntityKey::new("cart", "old");
    {
        let store = crate::SqliteStore::open(&path).await.unwrap();
        store.append(write(&old, 1, &["o1", "o2"], None)).await.unwrap();
    }
    // Back to schema 1 as that code left it: no new tables, version 1.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE strata_crdts; DROP TABLE strata_event_log; DROP TABLE strata_subscriber_offsets;
             DROP TABLE strata_timers; DROP TABLE strata_timer_shards;
             DELETE FROM strata_schema_version; INSERT INTO strata_schema_version (version) VALUES (1);",
        )
        .unwrap();
    let store = crate::SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.recover(&old).await.unwrap().last_seq_nr(), 2);
    let new = EntityKey::new("cart", "new");
    store.append(write(&new, 1, &["n1"], None)).await.unwrap();
    let log = store.event_log("cart", LogOffset::START, 10).await.unwrap();
    let seen: Vec<(&str, i64)> = log.iter().map(|e| (e.entity_id.as_str(), e.seq_nr)).collect();
    assert_eq!(seen, vec![("old", 1), ("old", 2), ("new", 1)]);
    store.save_crdt(crdt(&new, 1, Some("c"))).await.unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT max(version) FROM strata_schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

/// A database of schema 2 (before timers) gains the timer tables and keeps its
/// event log as it was: its journals are not logged a second time.
#[tokio::test]
async fn sqlite_upgrades_schema_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    let old = EntityKey::new("cart", "old");
    {
        let store = crate::SqliteStore::open(&path).await.unwrap();
        store.append(write(&old, 1, &["o1"], None)).await.unwrap();
    }
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE strata_timers; DROP TABLE strata_timer_shards;
             DELETE FROM strata_schema_version; INSERT INTO strata_schema_version (version) VALUES (2);",
        )
        .unwrap();
    let store = crate::SqliteStore::open(&path).await.unwrap();
    let log = store.event_log("cart", LogOffset::START, 10).await.unwrap();
    assert_eq!(log.len(), 1, "the journal entered the log once");
    assert_eq!(store.timers().unwrap().next_timer_due("cart").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_reports_an_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a folder should be.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let result = crate::SqliteStore::open(blocker.join("strata.db")).await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
}

/// Several stores opening a brand-new file at once (as sidecars starting together
/// do) all get a working store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_first_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    let mut tasks = JoinSet::new();
    for i in 0..6 {
        let path = path.clone();
        tasks.spawn(async move {
            let store = crate::SqliteStore::open(&path).await?;
            store
                .append(write(&EntityKey::new("p", format!("e{i}")), 1, &["x"], None))
                .await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
}

/// The environment variable that turns `sqlite_child_process_writer` into the
/// second process of `sqlite_two_processes_share_a_file`.
const CHILD_PATH_VAR: &str = "STRATA_STORE_TEST_CHILD_SQLITE";

const PROCESS_WRITES: i64 = 100;

/// Writes to the file as one of two processes: its own entities and a contested
/// one, then prints how many contested sequence numbers it won.
async fn write_as(store: &dyn Store, name: &str) -> usize {
    let mut won = 0;
    for i in 0..PROCESS_WRITES {
        let own = EntityKey::new("process", format!("{name}-{i}"));
        store.append(write(&own, 1, &[name], None)).await.unwrap();
        let contested = EntityKey::new("process", "contested");
        match store.append(write(&contested, i + 1, &[name], None)).await {
            Ok(()) => won += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    won
}

/// Does nothing unless started by `sqlite_two_processes_share_a_file`.
#[tokio::test]
async fn sqlite_child_process_writer() {
    let Ok(path) = std::env::var(CHILD_PATH_VAR) else {
        return;
    };
    let store = crate::SqliteStore::open(&path).await.unwrap();
    // Tell the parent to start: both processes then write at the same time.
    std::fs::write(format!("{path}.child-ready"), b"").unwrap();
    let won = write_as(&store, "child").await;
    println!("child-won={won}");
}

/// Two real processes write one file at once: nothing is lost, and each contested
/// sequence number goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.db");
    let store = crate::SqliteStore::open(&path).await.unwrap();

    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "conformance::sqlite_child_process_writer", "--nocapture"])
        .env(CHILD_PATH_VAR, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = dir.path().join("strata.db.child-ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the child process never opened the store");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let parent_won = write_as(&store, "parent").await;
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let child_won: usize = stdout
        .lines()
        .find_map(|line| line.strip_prefix("child-won="))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"))
        .trim()
        .parse()
        .unwrap();

    for name in ["parent", "child"] {
        for i in 0..PROCESS_WRITES {
            let key = EntityKey::new("process", format!("{name}-{i}"));
            assert_eq!(names(&store.events(&key, 1).await.unwrap()), vec![(1, name.into())]);
        }
    }
    let contested = store.events(&EntityKey::new("process", "contested"), 1).await.unwrap();
    assert_eq!(
        contested.len(),
        PROCESS_WRITES as usize,
        "every sequence number has one event"
    );
    assert_eq!(parent_won + child_won, PROCESS_WRITES as usize);
    let by_parent = names(&contested).iter().filter(|(_, n)| n == "parent").count();
    assert_eq!(by_parent, parent_won);
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// The server under test, or `None` (skip) when none is configured and none is
/// required. CI sets `STRATA_REQUIRE_POSTGRES=1` so it can never skip silently.
fn postgres_url() -> Option<String> {
    match std::env::var("STRATA_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES_URL is not set; \
                 start a server with scripts/postgres.sh"
            );
            eprintln!("skipping: STRATA_TEST_POSTGRES_URL is not set (scripts/postgres.sh starts a server)");
            None
        }
    }
}

/// A schema of its own per test, chosen through `search_path`, so tests run
/// concurrently and repeatedly against one server.
struct PostgresBackend {
    admin: tokio_postgres::Client,
    schema: String,
    url: String,
}

async fn postgres_backend() -> Option<PostgresBackend> {
    let base = postgres_url()?;
    let admin = connect(&base).await;
    let schema = unique_name("strata_test");
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-csearch_path%3D{schema}&application_name={schema}");
    Some(PostgresBackend { admin, schema, url })
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"));
    tokio::spawn(connection);
    client
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(crate::PostgresStore::connect(&self.url).await.unwrap())
    }

    async fn block_journal_writes(&self) -> Box<dyn WriteBlock> {
        // SHARE mode lets readers through but makes every INSERT wait.
        let client = connect(&self.url).await;
        client
            .batch_execute("BEGIN; LOCK TABLE strata_journal IN SHARE MODE")
            .await
            .unwrap();
        Box::new(PostgresBlock(client))
    }

    async fn cleanup(&self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

struct PostgresBlock(tokio_postgres::Client);

#[async_trait]
impl WriteBlock for PostgresBlock {
    async fn release(self: Box<Self>) {
        self.0.batch_execute("ROLLBACK").await.unwrap();
    }
}

#[tokio::test]
async fn postgres_down_is_unavailable() {
    // Nothing listens on port 1: the answer must come at once, not hang.
    let result = crate::PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres").await;
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    let result = crate::open("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2")
        .await
        .map(drop);
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    assert!(matches!(
        crate::PostgresStore::connect("postgres://host:notaport/db").await,
        Err(StoreError::Config(_))
    ));
}

/// The server drops every connection of the store: the next write may fail, the
/// one after it reconnects and succeeds; reads recover the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_losing_its_connections() {
    let Some(backend) = postgres_backend().await else {
        return;
    };
    let store = backend.open().await;
    let key = EntityKey::new("cart", "reconnect");
    store.append(write(&key, 1, &["r1"], None)).await.unwrap();
    assert_eq!(store.recover(&key).await.unwrap().last_seq_nr(), 1);

    let terminated = backend
        .admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&backend.schema],
        )
        .await
        .unwrap();
    assert!(!terminated.is_empty());
    // Wait until the server has really closed them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = backend
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&backend.schema],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    match store.append(write(&key, 2, &["r2"], None)).await {
        Ok(()) => {}
        Err(StoreError::Unavailable(_)) => store.append(write(&key, 2, &["r2"], None)).await.unwrap(),
        Err(e) => panic!("unexpected error after losing the connection: {e}"),
    }
    let recovered = match store.recover(&key).await {
        Ok(recovery) => recovery,
        Err(StoreError::Unavailable(_)) => store.recover(&key).await.unwrap(),
        Err(e) => panic!("unexpected error after losing the connection: {e}"),
    };
    assert_eq!(names(&recovered.events), vec![(1, "r1".into()), (2, "r2".into())]);
    backend.cleanup().await;
}

/// A write the server refuses for its content (PostgreSQL text cannot hold NUL)
/// fails alone; the rest of its batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refused_write_fails_alone() {
    let Some(backend) = postgres_backend().await else {
        return;
    };
    let store = backend.open().await;
    let before = store.stats();
    let block = backend.block_journal_writes().await;
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let store = store.clone();
        let entity_id = if i == 5 {
            "bad\0id".to_owned()
        } else {
            format!("good-{i}")
        };
        tasks.spawn(async move {
            let key = EntityKey::new("refused", entity_id);
            (key.clone(), store.append(write(&key, 1, &["x"], Some("s"))).await)
        });
    }
    queued(store.as_ref(), before, 10).await;
    block.release().await;
    while let Some(joined) = tasks.join_next().await {
        let (key, result) = joined.unwrap();
        if key.entity_id.contains('\0') {
            assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        } else {
            result.unwrap();
            assert_eq!(store.recover(&key).await.unwrap().last_seq_nr(), 1);
        }
    }
    let stats = delta(store.stats(), before);
    assert_eq!(stats.writes_committed, 9);
    assert_eq!(stats.failed_transactions, 0);
    backend.cleanup().await;
}

/// Several stores creating the tables in a fresh schema at once all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_schema_creation() {
    let Some(backend) = postgres_backend().await else {
        return;
    };
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let url = backend.url.clone();
        tasks.spawn(async move { crate::PostgresStore::connect(&url).await.map(drop) });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap().unwrap();
    }
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema() {
    let Some(backend) = postgres_backend().await else {
        return;
    };
    drop(backend.open().await);
    backend
        .admin
        .batch_execute(&format!(
            "UPDATE {}.strata_schema_version SET version = 99",
            backend.schema
        ))
        .await
        .unwrap();
    match crate::PostgresStore::connect(&backend.url).await {
        Err(StoreError::Config(message)) => assert!(message.contains("99"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    backend.cleanup().await;
}
