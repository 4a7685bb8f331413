//! Durable timers as the store keeps them: what a timer is (its key, when it is
//! due, the call it makes), the changes a command makes to timers (stored in the
//! same transaction as the command's events or value), and [`TimerStore`], the
//! reads and writes of the sidecar that fires them and of the API that shows
//! them. Owns rows and fencing, not the firing loop or the protocol; times are
//! milliseconds since the Unix epoch, given by the caller (no clock here).

use async_trait::async_trait;
use prost_types::Any;

use crate::{EntityKey, StoreError};

/// Which timer: unique per `(service, owner, entity_id, name)`. `service` is the
/// deployment that fires it (the registry's service name), `owner` the gRPC
/// service whose command scheduled it, `entity_id` its entity (empty for an
/// action's timer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    pub service: String,
    pub owner: String,
    pub entity_id: String,
    pub name: String,
}

/// The call a timer makes when it is due: a unary method and its request.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerCall {
    /// Fully qualified gRPC service name.
    pub service_name: String,
    pub method: String,
    pub payload: Any,
}

/// A timer as a command schedules it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub key: TimerKey,
    /// The shard of the deployment that owns (and fires) the timer.
    pub shard: u32,
    pub due_ms: i64,
    pub call: TimerCall,
    /// Calls made before the timer is kept as failed.
    pub max_attempts: u32,
}

/// What a command does to timers; a command's changes apply in order, in the
/// transaction that stores its state.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerChange {
    /// Schedules the timer, replacing one of the same key (its attempts and any
    /// failure are forgotten, and its generation moves on).
    Schedule(Timer),
    /// Removes the timer, pending or failed; no timer of the key is fine.
    Cancel(TimerKey),
}

impl TimerChange {
    pub fn key(&self) -> &TimerKey {
        match self {
            TimerChange::Schedule(timer) => &timer.key,
            TimerChange::Cancel(key) => key,
        }
    }
}

/// Whether a stored timer still waits to be fired or ran out of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerState {
    Pending,
    Failed,
}

impl TimerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerState::Pending => "pending",
            TimerState::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> TimerState {
        if text == "failed" {
            TimerState::Failed
        } else {
            TimerState::Pending
        }
    }
}

/// A timer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTimer {
    pub key: TimerKey,
    pub shard: u32,
    /// When it was scheduled for.
    pub due_ms: i64,
    /// When it may be called next: the due time, then after each failed call the
    /// retry's time, and while a call is in flight the end of its lease (a
    /// sidecar that died mid-call leaves it to be called again then). For a
    /// failed timer: when it failed.
    pub attempt_at_ms: i64,
    pub call: TimerCall,
    /// Calls begun so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Moves on every time the key is scheduled again, so the end of an attempt
    /// never touches the timer that replaced it.
    pub generation: i64,
    pub state: TimerState,
    /// The latest call's error, if it failed.
    pub last_error: Option<String>,
}

/// How many timers a service has, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerCounts {
    pub pending: u64,
    pub failed: u64,
}

/// One call of a timer about to be made, by the owner of its shard.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerAttempt {
    pub key: TimerKey,
    pub generation: i64,
    /// The shard epoch the caller owns it at (`None`: a standalone sidecar, which
    /// owns every shard and is fenced by nobody).
    pub epoch: Option<u64>,
    /// Until when the call may take before another attempt may be made.
    pub lease_until_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// The call succeeded: the timer is done and removed.
    Fired,
    /// The call failed and will be made again at `attempt_at_ms`.
    Retry { attempt_at_ms: i64, error: String },
    /// The call failed and the timer ran out of attempts: kept as failed (its
    /// `attempt_at_ms` becomes `at_ms`, when it failed).
    Failed { error: String, at_ms: i64 },
}

/// The timers of every deployment in one store. Every write returns once it is
/// durable, through the same group commit as the entity writes.
#[async_trait]
pub trait TimerStore: Send + Sync + 'static {
    /// Applies `changes` in order in one transaction (the timers of an action's
    /// call, or of a command whose state did not change).
    async fn write_timers(&self, changes: Vec<TimerChange>) -> Result<(), StoreError>;

    /// Replaces (or deletes, `None`) a value entity's value and applies
    /// `changes` in the same transaction.
    async fn save_value_with_timers(
        &self,
        key: &EntityKey,
        value: Option<Any>,
        changes: Vec<TimerChange>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` pending timers of `service` in `shards` (`None`: every
    /// shard), soonest `attempt_at_ms` first: the window of the index a firing
    /// sidecar keeps in memory.
    async fn due_timers(
        &self,
        service: &str,
        shards: Option<Vec<u32>>,
        limit: u32,
    ) -> Result<Vec<StoredTimer>, StoreError>;

    /// The earliest `attempt_at_ms` of `service`'s pending timers.
    async fn next_timer_due(&self, service: &str) -> Result<Option<i64>, StoreError>;

    /// Up to `limit` of `service`'s timers in `state`: pending ones soonest
    /// first, failed ones latest first.
    async fn list_timers(&self, service: &str, state: TimerState, limit: u32) -> Result<Vec<StoredTimer>, StoreError>;

    /// How many timers `service` has, by state.
    async fn count_timers(&self, service: &str) -> Result<TimerCounts, StoreError>;

    /// Records that `shard` of `service` is owned at `epoch` from now on, so
    /// attempts at an older epoch are refused. Fails with
    /// [`StoreError::Stale`] (and changes nothing) if a newer epoch holds it.
    async fn claim_timer_shard(&self, service: &str, shard: u32, epoch: u64) -> Result<(), StoreError>;

    /// Counts one more call of the timer and leases it until the call must be
    /// over. Fails with [`StoreError::Stale`] (and changes nothing) if the timer
    /// was replaced, cancelled or failed since it was read, or its shard is held
    /// at a newer epoch: then it must not be called.
    async fn begin_timer_attempt(&self, attempt: &TimerAttempt) -> Result<(), StoreError>;

    /// Records how an attempt ended, for the generation it was made for (a
    /// timer replaced meanwhile is left as it is). Not fenced by the shard: the
    /// call was made, and recording it keeps the next owner from repeating it.
    async fn finish_timer(&self, key: &TimerKey, generation: i64, end: AttemptEnd) -> Result<(), StoreError>;
}

/// The shard list a query takes, as JSON (SQLite reads it with `json_each`).
pub(crate) fn shards_json(shards: &[u32]) -> String {
    let list: Vec<String> = shards.iter().map(u32::to_string).collect();
    format!("[{}]", list.join(","))
}
