//! Where a command's [`TimerRequest`]s become stored [`TimerChange`]s: which
//! deployment fires them, in which shard, under which key. An entity's timers
//! live in its own shard, so they move with it. Rings a bell when timers were
//! stored, so the runner (`timers/`) looks again at once.

use std::time::{SystemTime, UNIX_EPOCH};

use strata_store::{Timer, TimerCall, TimerChange, TimerKey};
use tokio::sync::Notify;

use crate::{call::TimerRequest, shard::shard_of};

/// The deployment name a standalone sidecar keeps its timers under.
pub const STANDALONE_SERVICE: &str = "standalone";
/// A standalone sidecar's shard count for its timers (it owns them all).
const STANDALONE_SHARDS: u32 = 64;

/// Whose timers these are: the deployment (the registry's service) whose
/// sidecars fire them, by shard. Rings a bell when timers were stored, so the
/// runner looks again at once.
pub struct TimerScope {
    pub service: String,
    /// The deployment's shard count, as the routes say (`None`: standalone).
    shard_count: Option<ShardCount>,
    stored: Notify,
}

/// Reads the deployment's current shard count.
pub type ShardCount = Box<dyn Fn() -> u32 + Send + Sync>;

impl TimerScope {
    /// A managed sidecar's scope: its deployment's shards as the routes say.
    pub fn managed(service: String, shard_count: ShardCount) -> Self {
        Self {
            service,
            shard_count: Some(shard_count),
            stored: Notify::new(),
        }
    }

    /// A standalone sidecar's scope: every shard is its own.
    pub fn standalone() -> Self {
        Self {
            service: STANDALONE_SERVICE.into(),
            shard_count: None,
            stored: Notify::new(),
        }
    }

    fn shard_count(&self) -> u32 {
        self.shard_count
            .as_ref()
            .map(|count| count())
            .filter(|&count| count > 0)
            .unwrap_or(STANDALONE_SHARDS)
    }

    /// The stored changes of a command of `owner` (a gRPC service) for
    /// `entity_id` (`None`: an action), made at `now_ms`. An entity's timers
    /// live in its own shard, so they move with it; an action's are spread by
    /// name.
    pub fn changes(
        &self,
        owner: &str,
        entity_id: Option<&str>,
        requests: Vec<TimerRequest>,
        now_ms: i64,
    ) -> Vec<TimerChange> {
        let shards = self.shard_count();
        requests
            .into_iter()
            .map(|request| {
                let key = TimerKey {
                    service: self.service.clone(),
                    owner: owner.to_string(),
                    entity_id: entity_id.unwrap_or_default().to_string(),
                    name: request.name().to_string(),
                };
                match request {
                    TimerRequest::Cancel { .. } => TimerChange::Cancel(key),
                    TimerRequest::Schedule {
                        when,
                        service_name,
                        method,
                        payload,
                        max_attempts,
                        ..
                    } => TimerChange::Schedule(Timer {
                        shard: shard_of(entity_id.unwrap_or(&key.name), shards),
                        key,
                        due_ms: when.due_ms(now_ms),
                        call: TimerCall {
                            service_name,
                            method,
                            payload,
                        },
                        max_attempts,
                    }),
                }
            })
            .collect()
    }

    /// Tells the runner that timers were stored (it looks again at once).
    pub fn stored(&self) {
        self.stored.notify_one();
    }

    /// Resolves when timers were stored since the last call.
    pub async fn changed(&self) {
        self.stored.notified().await
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
