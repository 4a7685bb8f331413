//! The registry: the replicated state of the control plane (services with their
//! revisions, instances, shard maps, desired scale and a bounded event history) and
//! the pure `apply` that changes it.
//! Nothing here does I/O or reads a clock; Raft and the API live elsewhere.

mod apply;
mod canary;
mod command;
mod handoff;
mod logged;
mod revision;
mod rollout;
pub mod schedule;
pub mod schedule_call;
mod service_settings;
mod shard_map;
mod validate;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod rollout_tests;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use strata_autoscaler::IdleHistogram;

pub use apply::{apply, Applied};
pub use canary::{
    canary_shards, Canary, CanaryAnalysis, CanarySpec, DEFAULT_ANALYSIS_WINDOW_MS, DEFAULT_MIN_CALLS, P99_MARGIN_MS,
};
pub use command::{Command, Effect, Outcome, RegistryError, Request, ServicePatch, ServiceSpec};
pub use handoff::{max_handoffs, HANDOFF_TIMEOUT_MS};
pub use revision::Revision;
pub use rollout::{Owners, Rollout, ROLLOUT_MAX_FAILURES};
pub use schedule::{CatchUp, RunOutcome, Schedule, ScheduleRun, ScheduleSpec};
pub use shard_map::{rebalance, ShardMove};
pub use strata_settings::{
    format_duration_ms, parse_duration_ms, EnvVar, KeepAlive, RevisionSpec, ServiceSettings, DEFAULT_KEEP_ALIVE,
    DEFAULT_KEEP_ALIVE_PERCENTILE, DEFAULT_MAX_SCALE, DEFAULT_MIN_SCALE, DEFAULT_PREWARM_PERCENTILE,
    DEFAULT_SHARD_COUNT, DEFAULT_TARGET_CONCURRENCY,
};
pub use validate::validate_name;

/// How many events the registry keeps; older ones are dropped first.
pub const EVENT_HISTORY_LIMIT: usize = 1000;
/// How many audit records the registry keeps; older ones are dropped first. About
/// 200 bytes each, so the snapshot carries at most a few MiB of them.
pub const AUDIT_HISTORY_LIMIT: usize = 10_000;

/// The whole replicated state. `BTreeMap`s keep iteration (and so snapshots and
/// effects) deterministic on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub services: BTreeMap<String, Service>,
    pub instances: BTreeMap<String, Instance>,
    pub events: VecDeque<Event>,
    pub next_event_id: u64,
    /// Every management write: who, what, the outcome, when (bounded, oldest dropped).
    #[serde(default)]
    pub audit: VecDeque<AuditRecord>,
    #[serde(default)]
    pub next_audit_id: u64,
    /// Calls the leader makes at the times of cron expressions, by name.
    #[serde(default)]
    pub schedules: BTreeMap<String, Schedule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// What the serving revision runs (the command or image, arguments,
    /// environment); each revision keeps its own in `revisions`.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    pub min_scale: u32,
    pub max_scale: u32,
    pub target_concurrency: u32,
    pub scale_to_zero_grace_ms: u64,
    /// The autoscaler's stable window; `None` takes the platform's default.
    #[serde(default)]
    pub stable_window_ms: Option<u64>,
    /// How the last instance is kept after traffic stops; `None` takes the platform's
    /// default ([`DEFAULT_KEEP_ALIVE`]), so changing that default needs no migration.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// With the histogram policy: the idle-time percentile at which an instance is pre-warmed.
    #[serde(default = "default_prewarm_percentile")]
    pub prewarm_percentile: u32,
    /// With the histogram policy: the idle-time percentile until which it is kept.
    #[serde(default = "default_keep_alive_percentile")]
    pub keep_alive_percentile: u32,
    /// How long a gateway holds a request while the service wakes from zero; `None`
    /// takes the gateway's own default.
    #[serde(default)]
    pub hold_timeout_ms: Option<u64>,
    /// How many revisions to keep; `None`: the default (20).
    #[serde(default)]
    pub revision_history: Option<u32>,
    /// The idle times between invocations the autoscaler has learned, kept here so a
    /// new leader starts from them.
    #[serde(default)]
    pub idle_times: IdleTimes,
    /// Serialized `FileDescriptorSet` (base64) learned from discovery, once an instance is ready.
    pub descriptor_set: Option<String>,
    pub entities: Vec<EntityInfo>,
    /// The persistence ids whose event logs the service's actions subscribe to, as
    /// discovery reported them: the sidecars writing those logs may wake it from zero.
    #[serde(default)]
    pub subscriptions: Vec<String>,
    /// When the service's earliest pending timer may be called (milliseconds
    /// since the Unix epoch), as its sidecars last reported: the autoscaler
    /// starts a service at zero in time for it.
    #[serde(default)]
    pub next_timer_due_ms: Option<u64>,
    /// Increases on every change of what runs, the settings or the discovered
    /// descriptors (what registries before revisions called the revision).
    #[serde(alias = "revision")]
    pub generation: u64,
    /// The revisions kept, oldest first: the newest `revision_history`, and always
    /// the serving one. Empty in a registry from before revisions until the service
    /// next changes (see [`Service::revision_records`]).
    #[serde(default)]
    pub revisions: Vec<Revision>,
    /// The newest revision's number (revisions count from 1 and are never reused).
    #[serde(default)]
    pub latest_revision: u64,
    /// The revision that runs: a deploy that changes what runs makes its new
    /// revision the serving one.
    #[serde(default)]
    pub serving_revision: u64,
    /// The move from one revision to another while the new one has not become
    /// ready yet (see `rollout.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// A revision serving a slice of the entities beside the serving one (see
    /// `canary.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    pub desired_replicas: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub shards: Vec<Shard>,
}

fn default_prewarm_percentile() -> u32 {
    DEFAULT_PREWARM_PERCENTILE
}

fn default_keep_alive_percentile() -> u32 {
    DEFAULT_KEEP_ALIVE_PERCENTILE
}

/// A service's idle-time histogram as stored: the non-empty bins (`[bin, count]`) and the
/// count of idle times beyond its range. The autoscaler owns what the bins mean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleTimes {
    pub bins: Vec<(u32, u32)>,
    pub out_of_bounds: u32,
}

impl IdleTimes {
    pub fn from_histogram(histogram: &IdleHistogram) -> Self {
        IdleTimes {
            bins: histogram
                .bins()
                .map(|(bin, count)| (u32::try_from(bin).unwrap_or(u32::MAX), count))
                .collect(),
            out_of_bounds: histogram.out_of_bounds(),
        }
    }

    pub fn histogram(&self) -> IdleHistogram {
        let bins = self
            .bins
            .iter()
            .map(|(bin, count)| (usize::try_from(*bin).unwrap_or(usize::MAX), *count));
        IdleHistogram::from_bins(bins, self.out_of_bounds)
    }
}

/// One entity (or action) served by a service, as reported by discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityInfo {
    pub entity_type: String,
    pub service_name: String,
    pub persistence_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The READY instance that owns this shard, if any.
    pub owner: Option<String>,
    /// Increases every time the owner changes, so a stale owner can be fenced.
    pub epoch: u64,
    /// Where the shard is going: its owner finishes what it runs and releases it,
    /// then `to` holds it (see `handoff.rs`). Calls are routed to `to` meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

impl Shard {
    pub fn unowned() -> Self {
        Shard {
            owner: None,
            epoch: 0,
            handoff: None,
        }
    }

    /// Where the shard's calls go: the hand-off's target while there is one.
    pub fn routed_to(&self) -> Option<&str> {
        self.handoff
            .as_ref()
            .map(|handoff| handoff.to.as_str())
            .or(self.owner.as_deref())
    }
}

/// A shard on its way from its owner to `to`, since `since_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub to: String,
    pub since_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Starting,
    Ready,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub address: String,
    /// Where the sidecar serves /metrics and health; empty for sidecars that
    /// serve them on `address` (older ones).
    #[serde(default)]
    pub admin_address: String,
    pub state: InstanceState,
    /// The revision the instance runs (0: not said, as by sidecars the runtime
    /// did not start; such an instance serves whichever revision serves).
    #[serde(default)]
    pub revision: u64,
    pub registered_at_ms: u64,
    pub state_changed_at_ms: u64,
}

impl Instance {
    /// Where the instance's /metrics is served: its admin listener, or its
    /// ingress for a sidecar that has none.
    pub fn metrics_address(&self) -> &str {
        if self.admin_address.is_empty() {
            &self.address
        } else {
            &self.admin_address
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ServiceCreated,
    ServiceUpdated,
    ServiceDeleted,
    Scale,
    InstanceRegistered,
    InstanceReady,
    InstanceDraining,
    InstanceRemoved,
    InstanceFailed,
    Cluster,
    /// A new revision was made (what runs changed).
    RevisionCreated,
    /// A rollout, a rollback, or a rollout stopped because its revision failed.
    Rollout,
}

/// One entry of the bounded history: what happened, to what, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    pub service: Option<String>,
    pub instance: Option<String>,
    pub reason: String,
}

/// One management write as the audit log keeps it. `id` and `at_ms` are set by
/// `apply`; the API fills in the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: u64,
    pub at_ms: u64,
    /// Who: the principal's name (e.g. `admin token`), never the token.
    pub principal: String,
    pub method: String,
    pub path: String,
    /// What the write names: a service, a member, or `None` when neither path nor body says.
    pub target: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// The service's condition as users see it, derived from desired and ready counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Enough ready instances for the desired count.
    Ready,
    /// Some, but fewer than desired, instances are ready.
    Scaling,
    /// Instances are wanted but none is ready yet.
    Pending,
    /// Desired and ready are both zero.
    ScaledToZero,
}

impl Registry {
    pub fn ready_replicas(&self, service: &str) -> u32 {
        let ready = self
            .instances
            .values()
            .filter(|instance| instance.service == service && instance.state == InstanceState::Ready)
            .count();
        u32::try_from(ready).unwrap_or(u32::MAX)
    }

    pub fn status(&self, service: &Service) -> ServiceStatus {
        let ready = self.ready_replicas(&service.name);
        match (service.desired_replicas, ready) {
            (0, 0) => ServiceStatus::ScaledToZero,
            (_, 0) => ServiceStatus::Pending,
            (desired, ready) if ready < desired => ServiceStatus::Scaling,
            _ => ServiceStatus::Ready,
        }
    }

    pub fn instances_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances
            .values()
            .filter(move |instance| instance.service == service)
    }

    /// Ids of the READY instances of a service, sorted: the only possible shard owners.
    pub fn ready_instance_ids(&self, service: &str) -> Vec<String> {
        self.instances_of(service)
            .filter(|instance| instance.state == InstanceState::Ready)
            .map(|instance| instance.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod instance_tests {
    use super::*;

    #[test]
    fn metrics_are_read_on_the_admin_address_when_there_is_one() {
        let mut instance = Instance {
            id: "cart-1".into(),
            service: "cart".into(),
            address: "127.0.0.1:9000".into(),
            admin_address: "127.0.0.1:9001".into(),
            state: InstanceState::Ready,
            revision: 0,
            registered_at_ms: 0,
            state_changed_at_ms: 0,
        };
        assert_eq!(instance.metrics_address(), "127.0.0.1:9001");
        // an older sidecar that registered no admin address
        instance.admin_address.clear();
        assert_eq!(instance.metrics_address(), "127.0.0.1:9000");
    }
}
