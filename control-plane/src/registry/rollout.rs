//! Rollouts as the registry sees them. A deploy (or a rollback) makes a revision the
//! serving one at once: new instances run it. Until one of them is ready the old
//! revision's instances keep every shard (they are the only ones that may own
//! shards); from the moment one is, only the serving revision's ready instances may,
//! so the shards are handed off to them a few at a time (`handoff.rs`) and the old
//! instances, owning nothing, are stopped by the runtime. An entity's commands
//! therefore move from the old revision to the new one once and never back. A new
//! revision whose instances fail [`ROLLOUT_MAX_FAILURES`] times before one is ready
//! stops its rollout: the revision it replaced serves again. Pure: `apply` calls these.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{InstanceState, Registry, Service};

/// Failed starts of a new revision, before any of its instances was ready, that
/// stop its rollout.
pub const ROLLOUT_MAX_FAILURES: u32 = 3;

/// A move to revision `to` from revision `from`, until an instance of `to` is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub from: u64,
    pub to: u64,
    pub started_at_ms: u64,
    /// Instances of `to` that failed so far.
    pub failures: u32,
}

/// What one failure of an instance of a service does to its rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// No rollout, or the failure is not the new revision's.
    Nothing,
    /// Counted; the rollout goes on.
    Counted(u32),
    /// The rollout stops: `from` serves again.
    Stopped { from: u64, to: u64, failures: u32 },
}

impl Service {
    /// Whether an instance running `revision` runs what the service serves now (an
    /// instance that did not say runs whatever serves).
    pub fn runs_serving(&self, revision: u64) -> bool {
        revision == 0 || revision == self.serving()
    }

    /// Counts a failure of an instance running `revision` against the rollout.
    pub(super) fn rollout_failure(&mut self, revision: u64) -> AfterFailure {
        let Some(rollout) = self.rollout.as_mut().filter(|rollout| rollout.to == revision) else {
            return AfterFailure::Nothing;
        };
        rollout.failures += 1;
        if rollout.failures < ROLLOUT_MAX_FAILURES {
            return AfterFailure::Counted(rollout.failures);
        }
        let (from, to, failures) = (rollout.from, rollout.to, rollout.failures);
        self.rollout = None;
        AfterFailure::Stopped { from, to, failures }
    }
}

/// Who may own a service's shards: the canary's slice (its first shards), when
/// there is a canary, and the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    pub stable: BTreeSet<String>,
    /// How many shards the canary serves, and who may own them.
    pub canary: Option<(usize, BTreeSet<String>)>,
}

impl Owners {
    /// Who may own shard number `shard`.
    pub fn of_shard(&self, shard: usize) -> &BTreeSet<String> {
        match &self.canary {
            Some((count, owners)) if shard < *count => owners,
            _ => &self.stable,
        }
    }
}

impl Registry {
    /// The instances that may own the service's shards: the ready instances that run
    /// the serving revision, or, while none of them is ready, every ready instance
    /// (the old revision serves until the new one can). A canary's slice goes to
    /// the canary's ready instances, or stays with those while it has none.
    pub fn eligible_owners(&self, service: &str) -> Owners {
        let entry = self.services.get(service);
        let ready: Vec<_> = self
            .instances_of(service)
            .filter(|instance| instance.state == InstanceState::Ready)
            .collect();
        let running = |wanted: &dyn Fn(u64) -> bool| -> BTreeSet<String> {
            ready
                .iter()
                .filter(|instance| wanted(instance.revision))
                .map(|instance| instance.id.clone())
                .collect()
        };
        let current = running(&|revision| entry.is_none_or(|s| s.runs_serving(revision)));
        let stable = if current.is_empty() {
            running(&|_| true)
        } else {
            current
        };
        let canary = entry.and_then(Service::canary_slice).map(|(revision, count)| {
            let canaries = running(&|running| running == revision);
            (count, if canaries.is_empty() { stable.clone() } else { canaries })
        });
        Owners { stable, canary }
    }

    /// The instances that still run commands for the shards they own (ready or
    /// draining): theirs are handed off, not taken.
    pub fn live_owners(&self, service: &str) -> BTreeSet<String> {
        self.instances_of(service)
            .filter(|instance| instance.state != InstanceState::Starting)
            .map(|instance| instance.id.clone())
            .collect()
    }
}
