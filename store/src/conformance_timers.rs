//! The timer checks of the conformance suite (`conformance.rs` runs them against
//! each store): timers stored with the command that scheduled them or not at all,
//! replaced and cancelled by key, read by shard and time, attempts fenced by the
//! shard's epoch and by the timer's generation, and how attempts end.

use std::sync::Arc;

use prost_types::Any;

use super::{event, unique_name, write, Backend};
use crate::{
    AttemptEnd, EntityKey, Store, StoreError, Timer, TimerAttempt, TimerCall, TimerChange, TimerCounts, TimerKey,
    TimerState, TimerStore,
};

fn key(service: &str, entity_id: &str, name: &str) -> TimerKey {
    TimerKey {
        service: service.into(),
        owner: "test.Cart".into(),
        entity_id: entity_id.into(),
        name: name.into(),
    }
}

fn timer(key: &TimerKey, shard: u32, due_ms: i64) -> Timer {
    Timer {
        key: key.clone(),
        shard,
        due_ms,
        call: TimerCall {
            service_name: "test.Cart".into(),
            method: "Expire".into(),
            payload: Any {
                type_url: "type.googleapis.com/test.Expire".into(),
                value: key.name.as_bytes().to_vec(),
            },
        },
        max_attempts: 3,
    }
}

fn schedule(key: &TimerKey, shard: u32, due_ms: i64) -> TimerChange {
    TimerChange::Schedule(timer(key, shard, due_ms))
}

fn timers(store: &Arc<dyn Store>) -> &dyn TimerStore {
    store.timers().expect("a real store keeps timers")
}

async fn names(store: &dyn TimerStore, service: &str, shards: Option<Vec<u32>>) -> Vec<(String, i64)> {
    store
        .due_timers(service, shards, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.key.name, t.attempt_at_ms))
        .collect()
}

pub(super) async fn timers_replaced_and_cancelled_by_key(backend: &dyn Backend) {
    let store = backend.open().await;
    let service = unique_name("svc");
    let expire = key(&service, "alice", "expire");
    let store_timers = timers(&store);
    store_timers
        .write_timers(vec![schedule(&expire, 3, 1_000)])
        .await
        .unwrap();
    let stored = store_timers.due_timers(&service, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let first = &stored[0];
    assert_eq!(
        (
            first.shard,
            first.due_ms,
            first.attempt_at_ms,
            first.attempts,
            first.max_attempts
        ),
        (3, 1_000, 1_000, 0, 3)
    );
    assert_eq!(first.call, timer(&expire, 3, 1_000).call);
    assert_eq!((first.state, first.last_error.clone()), (TimerState::Pending, None));

    // --- scheduling the name again replaces the timer and moves its generation on
    store_timers
        .write_timers(vec![schedule(&expire, 3, 5_000)])
        .await
        .unwrap();
    let replaced = store_timers.due_timers(&service, None, 10).await.unwrap();
    assert_eq!(replaced.len(), 1);
    assert_eq!(
        (replaced[0].due_ms, replaced[0].generation),
        (5_000, first.generation + 1)
    );

    // --- one timer per name and entity; another entity's timer of that name is its own
    let bob = key(&service, "bob", "expire");
    store_timers.write_timers(vec![schedule(&bob, 7, 2_000)]).await.unwrap();
    assert_eq!(
        store_timers.count_timers(&service).await.unwrap(),
        TimerCounts { pending: 2, failed: 0 }
    );

    // --- changes apply in order: schedule then cancel leaves nothing
    let brief = key(&service, "carol", "brief");
    store_timers
        .write_timers(vec![schedule(&brief, 1, 10), TimerChange::Cancel(brief.clone())])
        .await
        .unwrap();
    store_timers
        .write_timers(vec![TimerChange::Cancel(expire.clone())])
        .await
        .unwrap();
    // Cancelling what is not there is not an error.
    store_timers
        .write_timers(vec![TimerChange::Cancel(expire.clone())])
        .await
        .unwrap();
    assert_eq!(
        names(store_timers, &service, None).await,
        vec![("expire".to_string(), 2_000)]
    );
    assert_eq!(store_timers.next_timer_due(&service).await.unwrap(), Some(2_000));
    assert_eq!(store_timers.next_timer_due(&unique_name("none")).await.unwrap(), None);
}

pub(super) async fn timers_stored_with_the_command_or_not_at_all(backend: &dyn Backend) {
    let store = backend.open().await;
    let service = unique_name("svc");
    let cart = EntityKey::new(unique_name("cart"), "alice");
    let expire = key(&service, "alice", "expire");

    // --- with the journal write: both stored
    let mut first = write(&cart, 1, &["e1"], None);
    first.timers = vec![schedule(&expire, 0, 100)];
    store.append(first).await.unwrap();
    assert_eq!(
        names(timers(&store), &service, None).await,
        vec![("expire".into(), 100)]
    );

    // --- a write that conflicts stores neither its events nor its timers
    let late = key(&service, "alice", "late");
    let mut conflicting = write(&cart, 1, &["again"], None);
    conflicting.timers = vec![schedule(&late, 0, 50), TimerChange::Cancel(expire.clone())];
    assert!(matches!(
        store.append(conflicting).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        names(timers(&store), &service, None).await,
        vec![("expire".into(), 100)]
    );
    assert_eq!(store.recover(&cart).await.unwrap().events.len(), 1);

    // --- a write of timers alone (a command that emitted no event)
    let mut timers_only = write(&cart, 2, &[], None);
    timers_only.timers = vec![TimerChange::Cancel(expire.clone())];
    store.append(timers_only).await.unwrap();
    assert!(names(timers(&store), &service, None).await.is_empty());

    // --- with a value entity's value, in the same transaction
    let value = EntityKey::new(unique_name("values"), "v1");
    timers(&store)
        .save_value_with_timers(&value, Some(event("v")), vec![schedule(&late, 2, 70)])
        .await
        .unwrap();
    assert_eq!(store.load_value(&value).await.unwrap(), Some(event("v")));
    assert_eq!(names(timers(&store), &service, None).await, vec![("late".into(), 70)]);

    // --- and they survive reopening, as any acknowledged write
    let reopened = backend.open().await;
    assert_eq!(
        names(timers(&reopened), &service, None).await,
        vec![("late".into(), 70)]
    );
}

pub(super) async fn due_timers_by_shard_and_time(backend: &dyn Backend) {
    let store = backend.open().await;
    let service = unique_name("svc");
    let other = unique_name("other");
    let store_timers = timers(&store);
    store_timers
        .write_timers(vec![
            schedule(&key(&service, "a", "t30"), 1, 30),
            schedule(&key(&service, "b", "t10"), 2, 10),
            schedule(&key(&service, "c", "t20"), 3, 20),
            schedule(&key(&service, "", "action"), 2, 40),
            schedule(&key(&other, "a", "elsewhere"), 1, 1),
        ])
        .await
        .unwrap();
    assert_eq!(
        names(store_timers, &service, None).await,
        vec![
            ("t10".to_string(), 10),
            ("t20".to_string(), 20),
            ("t30".to_string(), 30),
            ("action".to_string(), 40)
        ]
    );
    assert_eq!(
        names(store_timers, &service, Some(vec![1, 2])).await,
        vec![
            ("t10".to_string(), 10),
            ("t30".to_string(), 30),
            ("action".to_string(), 40)
        ]
    );
    assert!(names(store_timers, &service, Some(vec![])).await.is_empty());
    // The index's window is bounded: the soonest first.
    let window = store_timers.due_timers(&service, None, 2).await.unwrap();
    assert_eq!(
        window.iter().map(|t| t.key.name.as_str()).collect::<Vec<_>>(),
        ["t10", "t20"]
    );
    assert_eq!(store_timers.next_timer_due(&service).await.unwrap(), Some(10));
    assert_eq!(
        store_timers
            .list_timers(&service, TimerState::Pending, 10)
            .await
            .unwrap()
            .len(),
        4
    );
}

pub(super) async fn timer_attempts_fenced_by_epoch_and_generation(backend: &dyn Backend) {
    let store = backend.open().await;
    let service = unique_name("svc");
    let expire = key(&service, "alice", "expire");
    let store_timers = timers(&store);
    store_timers
        .write_timers(vec![schedule(&expire, 5, 100)])
        .await
        .unwrap();
    let generation = store_timers.due_timers(&service, None, 1).await.unwrap()[0].generation;
    let attempt = |epoch: Option<u64>, generation: i64| TimerAttempt {
        key: expire.clone(),
        generation,
        epoch,
        lease_until_ms: 60_100,
    };

    // --- the owner at epoch 2 claims the shard; an owner at epoch 1 is fenced
    store_timers.claim_timer_shard(&service, 5, 2).await.unwrap();
    assert!(matches!(
        store_timers.begin_timer_attempt(&attempt(Some(1), generation)).await,
        Err(StoreError::Stale(_))
    ));
    assert!(matches!(
        store_timers.claim_timer_shard(&service, 5, 1).await,
        Err(StoreError::Stale(_))
    ));
    // Claiming again at the same epoch is fine (a restarted owner).
    store_timers.claim_timer_shard(&service, 5, 2).await.unwrap();
    store_timers
        .begin_timer_attempt(&attempt(Some(2), generation))
        .await
        .unwrap();
    let leased = &store_timers.due_timers(&service, None, 1).await.unwrap()[0];
    assert_eq!((leased.attempts, leased.attempt_at_ms), (1, 60_100));

    // --- a newer owner takes the shard: the old one can no longer begin
    store_timers.claim_timer_shard(&service, 5, 3).await.unwrap();
    assert!(matches!(
        store_timers.begin_timer_attempt(&attempt(Some(2), generation)).await,
        Err(StoreError::Stale(_))
    ));
    // A standalone sidecar (no epoch) is fenced by nobody.
    store_timers
        .begin_timer_attempt(&attempt(None, generation))
        .await
        .unwrap();

    // --- a timer replaced meanwhile: the old generation can neither begin nor end it
    store_timers
        .write_timers(vec![schedule(&expire, 5, 900)])
        .await
        .unwrap();
    assert!(matches!(
        store_timers.begin_timer_attempt(&attempt(Some(3), generation)).await,
        Err(StoreError::Stale(_))
    ));
    store_timers
        .finish_timer(&expire, generation, AttemptEnd::Fired)
        .await
        .unwrap();
    let replacement = &store_timers.due_timers(&service, None, 1).await.unwrap()[0];
    assert_eq!((replacement.due_ms, replacement.attempts), (900, 0));
}

pub(super) async fn timer_attempts_end_fired_retried_or_failed(backend: &dyn Backend) {
    let store = backend.open().await;
    let service = unique_name("svc");
    let store_timers = timers(&store);
    let retried = key(&service, "a", "retried");
    let fired = key(&service, "b", "fired");
    store_timers
        .write_timers(vec![schedule(&retried, 0, 10), schedule(&fired, 0, 20)])
        .await
        .unwrap();
    let generation = |name: &str| {
        let name = name.to_string();
        let service = service.clone();
        async move {
            store_timers
                .due_timers(&service, None, 10)
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.key.name == name)
                .unwrap()
                .generation
        }
    };

    let g = generation("fired").await;
    store_timers.finish_timer(&fired, g, AttemptEnd::Fired).await.unwrap();
    let g = generation("retried").await;
    store_timers
        .finish_timer(
            &retried,
            g,
            AttemptEnd::Retry {
                attempt_at_ms: 2_000,
                error: "the entity was busy".into(),
            },
        )
        .await
        .unwrap();
    let pending = store_timers
        .list_timers(&service, TimerState::Pending, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].attempt_at_ms, pending[0].last_error.as_deref()),
        (2_000, Some("the entity was busy"))
    );

    // --- out of attempts: kept as failed, listed with its error, never due again
    store_timers
        .finish_timer(
            &retried,
            g,
            AttemptEnd::Failed {
                error: "UNKNOWN: no such cart".into(),
                at_ms: 9_000,
            },
        )
        .await
        .unwrap();
    assert!(store_timers.due_timers(&service, None, 10).await.unwrap().is_empty());
    assert_eq!(store_timers.next_timer_due(&service).await.unwrap(), None);
    let failed = store_timers
        .list_timers(&service, TimerState::Failed, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].state,
            failed[0].attempt_at_ms,
            failed[0].last_error.as_deref()
        ),
        (TimerState::Failed, 9_000, Some("UNKNOWN: no such cart"))
    );
    assert_eq!(
        store_timers.count_timers(&service).await.unwrap(),
        TimerCounts { pending: 0, failed: 1 }
    );
    // A failed attempt cannot begin again; scheduling the name again revives it.
    assert!(matches!(
        store_timers
            .begin_timer_attempt(&TimerAttempt {
                key: retried.clone(),
                generation: g,
                epoch: None,
                lease_until_ms: 1
            })
            .await,
        Err(StoreError::Stale(_))
    ));
    store_timers
        .write_timers(vec![schedule(&retried, 0, 50)])
        .await
        .unwrap();
    assert_eq!(
        store_timers.count_timers(&service).await.unwrap(),
        TimerCounts { pending: 1, failed: 0 }
    );
}
