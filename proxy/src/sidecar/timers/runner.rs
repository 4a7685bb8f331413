//! The loop that fires due timers. It keeps only a bounded window of the next
//! due timers of the shards this instance owns (read from the store, soonest
//! first), so 100,000 pending timers cost store space and no memory; it claims
//! each shard at its epoch before firing its timers, begins every call in the
//! store (fenced by that epoch and the timer's generation, and leased), makes
//! the call as a side effect is made, and records how it ended: done, retried
//! later with backoff, or failed for good. What to fire and how an attempt ends
//! are pure functions ([`plan`], [`attempt_end`]).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use strata_proto::cloudstate::{Metadata, MetadataEntry};
use strata_store::{AttemptEnd, Store, StoreError, StoredTimer, TimerAttempt, TimerKey, TimerStore};
use tokio::task::JoinSet;

use tokio::sync::watch;

use super::report::NextDueReport;
use crate::{
    call::{Call, CallContext},
    error::ProxyError,
    metrics::Metrics,
    model::Targets,
    sidecar::{
        effects::Router,
        membership::Ownership,
        timer_scope::{now_ms, TimerScope},
    },
    timer_request::retry_delay,
};

/// How many of the next due timers the runner holds at once.
pub const WINDOW: u32 = 256;
/// Calls of timers in flight at once.
pub const MAX_CONCURRENT_CALLS: usize = 64;
/// How often the runner looks at the store even when nothing told it to: timers
/// an action scheduled on another instance for a shard this one owns.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Beyond the call's own timeout, how long an attempt holds its lease.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The metadata entry that tells a timer's call which timer made it.
pub const TIMER_HEADER: &str = "strata-timer";

/// What the window says to do now.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Due and not in flight: call these now.
    pub fire: Vec<StoredTimer>,
    /// When the next timer of the window is due (`None`: none is).
    pub next_at_ms: Option<i64>,
}

/// The timers of `window` to call at `now_ms` (at most `room` of them), and
/// when the first one not called now is due. Those in flight are skipped.
pub fn plan(window: Vec<StoredTimer>, in_flight: &HashSet<(TimerKey, i64)>, room: usize, now_ms: i64) -> Plan {
    let mut fire = Vec::new();
    let mut next_at_ms = None;
    for timer in window {
        if in_flight.contains(&(timer.key.clone(), timer.generation)) {
            continue;
        }
        if timer.attempt_at_ms <= now_ms && fire.len() < room {
            fire.push(timer);
        } else {
            next_at_ms = Some(next_at_ms.map_or(timer.attempt_at_ms, |at: i64| at.min(timer.attempt_at_ms)));
        }
    }
    Plan { fire, next_at_ms }
}

/// How an attempt of `timer` (its `attempts` before this one) ended, at `now_ms`.
pub fn attempt_end(timer: &StoredTimer, result: &Result<(), ProxyError>, now_ms: i64) -> AttemptEnd {
    let Err(error) = result else {
        return AttemptEnd::Fired;
    };
    let made = timer.attempts + 1;
    let error = format!("{}: {error}", crate::error::code_name(error.grpc_code()));
    if made >= timer.max_attempts {
        return AttemptEnd::Failed { error, at_ms: now_ms };
    }
    let delay = i64::try_from(retry_delay(made).as_millis()).unwrap_or(i64::MAX);
    AttemptEnd::Retry {
        attempt_at_ms: now_ms.saturating_add(delay),
        error,
    }
}

/// How long from `now_ms` until `at_ms` (zero if past).
fn until(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0))
}

/// Fires the due timers of one sidecar.
pub struct TimerRunner {
    pub store: Arc<dyn Store>,
    pub scope: Arc<TimerScope>,
    /// The shards this instance owns (`None`: a standalone sidecar owns all).
    pub ownership: Option<watch::Receiver<Ownership>>,
    pub router: Router,
    pub targets: Arc<dyn Targets>,
    /// How long one timer's call may take.
    pub call_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Reports the service's earliest timer to the control plane (a managed
    /// sidecar while it owns shard 0).
    pub report: Option<Arc<NextDueReport>>,
}

impl TimerRunner {
    /// Runs until dropped (a store without timers: returns at once).
    pub async fn run(self: Arc<Self>) {
        if self.store.timers().is_none() {
            tracing::warn!("the store keeps no timers; timers will not fire");
            return;
        }
        let mut ownership = self.ownership.clone();
        let mut claimed: BTreeMap<u32, u64> = BTreeMap::new();
        let mut calls: JoinSet<(TimerKey, i64)> = JoinSet::new();
        let mut in_flight: HashSet<(TimerKey, i64)> = HashSet::new();
        loop {
            let shards = self.claim_owned(ownership.as_ref(), &mut claimed).await;
            let mut next_at_ms = None;
            if shards.as_ref().is_none_or(|s| !s.is_empty()) {
                let room = MAX_CONCURRENT_CALLS.saturating_sub(calls.len());
                match self.timers().due_timers(&self.scope.service, shards, WINDOW).await {
                    Ok(window) => {
                        let plan = plan(window, &in_flight, room, now_ms());
                        next_at_ms = plan.next_at_ms;
                        for timer in plan.fire {
                            let key = (timer.key.clone(), timer.generation);
                            in_flight.insert(key.clone());
                            let epoch = claimed.get(&timer.shard).copied();
                            let runner = self.clone();
                            calls.spawn(async move {
                                runner.fire(timer, epoch).await;
                                key
                            });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not read the due timers; trying again"),
                }
            }
            if let Some(report) = &self.report {
                let owns_first = ownership.as_ref().is_some_and(|o| o.borrow().owns_shard(0));
                if owns_first {
                    report.refresh(self.timers(), &self.scope.service).await;
                }
            }
            let wait = next_at_ms.map_or(REFRESH, |at| until(at, now_ms()).min(REFRESH));
            tokio::select! {
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    if let Ok(key) = done {
                        in_flight.remove(&key);
                    }
                }
                () = tokio::time::sleep(wait) => {}
                () = self.scope.changed() => {}
                changed = async { ownership.as_mut().expect("guarded").changed().await }, if ownership.is_some() => {
                    if changed.is_err() {
                        ownership = None;
                    }
                }
            }
            // Calls that ended meanwhile free their places at once.
            while let Some(Ok(key)) = calls.try_join_next() {
                in_flight.remove(&key);
            }
        }
    }

    fn timers(&self) -> &dyn TimerStore {
        self.store.timers().expect("checked when the runner started")
    }

    /// The shards to fire timers of (`None`: all, a standalone sidecar), each
    /// claimed in the store at the epoch this instance holds it at. A shard held
    /// at a newer epoch already (the routes here are behind) waits.
    async fn claim_owned(
        &self,
        ownership: Option<&watch::Receiver<Ownership>>,
        claimed: &mut BTreeMap<u32, u64>,
    ) -> Option<Vec<u32>> {
        let ownership = ownership?;
        let epochs = ownership.borrow().epochs.clone();
        claimed.retain(|shard, epoch| epochs.get(shard) == Some(epoch));
        for (&shard, &epoch) in &epochs {
            if claimed.contains_key(&shard) {
                continue;
            }
            match self.timers().claim_timer_shard(&self.scope.service, shard, epoch).await {
                Ok(()) => {
                    claimed.insert(shard, epoch);
                }
                Err(error) => {
                    tracing::debug!(shard, epoch, %error, "cannot claim the shard's timers yet")
                }
            }
        }
        Some(claimed.keys().copied().collect())
    }

    /// One attempt of one timer: begin it (fenced), call, record the end.
    async fn fire(&self, timer: StoredTimer, epoch: Option<u64>) {
        let now = now_ms();
        let lease = i64::try_from((self.call_timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
        let attempt = TimerAttempt {
            key: timer.key.clone(),
            generation: timer.generation,
            epoch,
            lease_until_ms: now.saturating_add(lease),
        };
        match self.timers().begin_timer_attempt(&attempt).await {
            Ok(()) => {}
            Err(StoreError::Stale(why)) => {
                tracing::debug!(timer = %timer.key.name, %why, "timer not called: it changed or its shard moved");
                return;
            }
            Err(error) => {
                tracing::warn!(timer = %timer.key.name, %error, "could not begin a timer's call; trying again");
                return;
            }
        }
        let target = format!("{}.{}", timer.call.service_name, timer.call.method);
        let result = self.call(&timer).await;
        let end = attempt_end(&timer, &result, now_ms());
        let outcome = match &end {
            AttemptEnd::Fired => "ok",
            AttemptEnd::Retry { .. } => "retry",
            AttemptEnd::Failed { .. } => "failed",
        };
        self.metrics.timer_calls.with_label_values(&[&target, outcome]).inc();
        match &end {
            AttemptEnd::Fired => {
                tracing::debug!(timer = %timer.key.name, entity_id = %timer.key.entity_id, %target, "timer fired")
            }
            AttemptEnd::Retry { error, .. } => {
                tracing::info!(timer = %timer.key.name, %target, %error, attempts = timer.attempts + 1, "timer's call failed; retrying later")
            }
            AttemptEnd::Failed { error, .. } => {
                tracing::warn!(timer = %timer.key.name, %target, %error, "timer's call failed its last attempt; kept as failed")
            }
        }
        if let Err(error) = self.timers().finish_timer(&timer.key, timer.generation, end).await {
            // The lease runs out and the timer is called again: at least once.
            tracing::warn!(timer = %timer.key.name, %error, "could not record a timer's call");
        }
    }

    /// Makes the timer's call through the sidecar's router, as a side effect.
    async fn call(&self, timer: &StoredTimer) -> Result<(), ProxyError> {
        let target = self
            .targets
            .method(&timer.call.service_name, &timer.call.method)
            .ok_or_else(|| {
                ProxyError::Unimplemented(format!(
                    "{}.{} is not a method of any known service",
                    timer.call.service_name, timer.call.method
                ))
            })?;
        let metadata = Metadata {
            entries: vec![MetadataEntry {
                key: TIMER_HEADER.into(),
                value: Some(strata_proto::cloudstate::metadata_entry::Value::StringValue(
                    timer.key.name.clone(),
                )),
            }],
        };
        let context = CallContext {
            deadline: Some(tokio::time::Instant::now() + self.call_timeout),
            hops: 1,
            routed_by: 0,
            trace: None,
        };
        let call = Call::new(target, timer.call.payload.clone(), Some(metadata), context)?;
        self.router.get()?.unary(call).await.map(drop)
    }
}
