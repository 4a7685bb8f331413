//! The registry: the replicated state of the control plane (services, instances, shard
//! maps, desired scale and a bounded event history) and the pure `apply` that changes it.
//! Nothing here does I/O or reads a clock; Raft and the API live elsewhere.

mod apply;
mod command;
mod duration;
mod shard_map;
mod validate;

#[cfg(test)]
mod apply_tests;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use apply::{apply, Applied};
pub use command::{Command, Effect, Outcome, RegistryError, Request, ServicePatch, ServiceSpec};
pub use duration::{format_duration_ms, parse_duration_ms};
pub use shard_map::{rebalance, ShardMove};
pub use validate::{validate_name, validate_scaling, validate_stable_window};

/// Shards per service unless a service asks for another count.
pub const DEFAULT_SHARD_COUNT: u32 = 64;
/// How many events the registry keeps; older ones are dropped first.
pub const EVENT_HISTORY_LIMIT: usize = 1000;
pub const DEFAULT_MIN_SCALE: u32 = 0;
pub const DEFAULT_MAX_SCALE: u32 = 10;
pub const DEFAULT_TARGET_CONCURRENCY: u32 = 100;
pub const DEFAULT_SCALE_TO_ZERO_GRACE_MS: u64 = 30_000;

/// The whole replicated state. `BTreeMap`s keep iteration (and so snapshots and
/// effects) deterministic on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub services: BTreeMap<String, Service>,
    pub instances: BTreeMap<String, Instance>,
    pub events: VecDeque<Event>,
    pub next_event_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub command: Option<String>,
    pub image: Option<String>,
    pub min_scale: u32,
    pub max_scale: u32,
    pub target_concurrency: u32,
    pub scale_to_zero_grace_ms: u64,
    /// The autoscaler's stable window; `None` takes the platform's default.
    #[serde(default)]
    pub stable_window_ms: Option<u64>,
    /// Serialized `FileDescriptorSet` (base64) learned from discovery, once an instance is ready.
    pub descriptor_set: Option<String>,
    pub entities: Vec<EntityInfo>,
    /// Increases on every change of the spec or of the discovered descriptors.
    pub revision: u64,
    pub desired_replicas: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub shards: Vec<Shard>,
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
    pub state: InstanceState,
    pub registered_at_ms: u64,
    pub state_changed_at_ms: u64,
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
