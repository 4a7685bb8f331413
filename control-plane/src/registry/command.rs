//! The inputs of [`apply`](super::apply) (commands, stamped by the leader with a time),
//! its answers, and the effects that the leader's runtime and watchers act upon.

use serde::{Deserialize, Serialize};

use strata_settings::{RevisionSpec, ServiceSettings};

use super::logged::{LoggedPatch, LoggedSpec};
use super::{
    AuditRecord, CanaryAnalysis, CanarySpec, EntityInfo, Event, IdleTimes, Instance, RunOutcome, Schedule,
    ScheduleSpec, Service,
};

/// One Raft log entry's payload. The leader stamps `at_ms` when it proposes, so every
/// replica applies the same time and the state machine stays deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Command {
    CreateService(ServiceSpec),
    UpdateService {
        name: String,
        patch: ServicePatch,
    },
    DeleteService {
        name: String,
    },
    /// Written by the autoscaler (or by hand); clamped to the service's min/max scale.
    SetDesiredReplicas {
        service: String,
        replicas: u32,
        reason: String,
    },
    /// A request arrived while the service had no instance wanted: ask for one (or
    /// `min_scale`) now. Only acts when the desired count is zero, so it never undoes
    /// a scale-up that was decided meanwhile. What a poke does on a control plane that
    /// runs no autoscaler; with one, the autoscaler decides and writes the count.
    ScaleFromZero {
        service: String,
        reason: String,
    },
    /// The autoscaler stores a service's idle-time histogram. No event, no effect.
    RecordIdleTimes {
        service: String,
        idle_times: IdleTimes,
    },
    RegisterInstance {
        id: String,
        service: String,
        address: String,
        /// Where the sidecar serves /metrics and health (empty: at `address`).
        #[serde(default)]
        admin_address: String,
        /// The revision it runs (0: not said).
        #[serde(default)]
        revision: u64,
    },
    /// The instance finished discovery; it may now own shards.
    InstanceReady {
        id: String,
        descriptor_set: Option<String>,
        entities: Vec<EntityInfo>,
        /// Persistence ids the function's actions subscribe to.
        #[serde(default)]
        subscriptions: Vec<String>,
    },
    /// The instance is going away: it gives up its shards but is still known.
    DrainInstance {
        id: String,
        reason: String,
    },
    RemoveInstance {
        id: String,
        reason: String,
    },
    /// A change of the Raft membership, kept in the history next to scale events.
    RecordClusterEvent {
        reason: String,
    },
    /// Something a runtime driver saw happen to a service's instance that the
    /// registry would not otherwise record (a command that cannot start, an
    /// instance that crashed before registering), kept in the history.
    RecordInstanceFailure {
        service: String,
        instance: String,
        reason: String,
        /// The revision the instance ran (0: not said): a new revision's failures
        /// count against its rollout.
        #[serde(default)]
        revision: u64,
    },
    /// The instance finished the commands of these shards it was handing off and
    /// passivated their entities: their next owners may hold them now.
    ReleaseShards {
        instance: String,
        shards: Vec<u32>,
    },
    /// The leader's sweep: hand-offs not released in time complete anyway.
    ExpireHandoffs,
    /// Serve an earlier revision again (`to`, or the one before the serving one),
    /// with a rollout like a deploy's.
    Rollback {
        service: String,
        to: Option<u64>,
    },
    /// Gives revision `revision` (a kept one, not the serving one) `percent` of the
    /// service's shards as a canary; 100 promotes it, 0 ends the canary.
    SetTraffic {
        service: String,
        revision: u64,
        percent: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<CanaryAnalysis>,
    },
    /// The canary becomes the serving revision.
    Promote {
        service: String,
    },
    /// The canary analysis found revision `revision` failing: its slice goes back
    /// to the serving revision, and the revision is marked failed with `reason`.
    FailCanary {
        service: String,
        revision: u64,
        reason: String,
    },
    /// A sidecar of `instance`'s service reports the service's earliest pending
    /// timer (`None`: none). No event.
    ReportTimers {
        instance: String,
        next_due_ms: Option<u64>,
    },
    CreateSchedule(ScheduleSpec),
    DeleteSchedule {
        name: String,
    },
    /// The leader is about to call for the schedule's time `time_ms`: refused if
    /// that time (or a later one) was started already, so no two leaders call one
    /// time. A run still in flight from another leader is marked interrupted.
    StartScheduleRun {
        name: String,
        time_ms: u64,
        /// Earlier missed times this run stands for.
        missed: u32,
    },
    /// How the call for `time_ms` ended.
    FinishScheduleRun {
        name: String,
        time_ms: u64,
        outcome: RunOutcome,
    },
    /// Missed times up to `through_ms` are skipped (catch-up `skip`).
    SkipScheduleTimes {
        name: String,
        through_ms: u64,
        missed: u32,
    },
    /// A management write, for the audit log (`id` and `at_ms` are assigned here).
    RecordAudit(AuditRecord),
    /// A management write and its audit record in one entry, so the record is
    /// committed with the write or not at all. The record's `status` is the
    /// answer on success; a refusal records the refusal's status instead.
    Audited {
        command: Box<Command>,
        record: AuditRecord,
    },
}

impl Command {
    /// The command's name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateService(_) => "create_service",
            Command::UpdateService { .. } => "update_service",
            Command::DeleteService { .. } => "delete_service",
            Command::SetDesiredReplicas { .. } => "set_desired_replicas",
            Command::ScaleFromZero { .. } => "scale_from_zero",
            Command::RecordIdleTimes { .. } => "record_idle_times",
            Command::RegisterInstance { .. } => "register_instance",
            Command::InstanceReady { .. } => "instance_ready",
            Command::DrainInstance { .. } => "drain_instance",
            Command::RemoveInstance { .. } => "remove_instance",
            Command::RecordClusterEvent { .. } => "record_cluster_event",
            Command::RecordInstanceFailure { .. } => "record_instance_failure",
            Command::ReportTimers { .. } => "report_timers",
            Command::ReleaseShards { .. } => "release_shards",
            Command::ExpireHandoffs => "expire_handoffs",
            Command::Rollback { .. } => "rollback",
            Command::SetTraffic { .. } => "set_traffic",
            Command::Promote { .. } => "promote",
            Command::FailCanary { .. } => "fail_canary",
            Command::CreateSchedule(_) => "create_schedule",
            Command::DeleteSchedule { .. } => "delete_schedule",
            Command::StartScheduleRun { .. } => "start_schedule_run",
            Command::FinishScheduleRun { .. } => "finish_schedule_run",
            Command::SkipScheduleTimes { .. } => "skip_schedule_times",
            Command::RecordAudit(_) => "record_audit",
            Command::Audited { command, .. } => command.kind(),
        }
    }
}

/// A service as requested: unset settings take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LoggedSpec")]
pub struct ServiceSpec {
    pub name: String,
    /// What it runs: its first revision.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    #[serde(flatten)]
    pub settings: ServiceSettings,
}

/// The fields of a service that an update may change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LoggedPatch")]
pub struct ServicePatch {
    /// A change of what runs is a new revision.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// The patch states every setting (a `StatefulService`'s spec is the whole
    /// truth): a setting it leaves out goes back to its default rather than keeping
    /// its value. The shard count, fixed at creation, is kept either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_settings: bool,
    /// The new revision this patch makes serves only a canary's slice beside the
    /// serving one (refused when the patch makes no new revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
}

/// What a successful command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Service(Box<Service>),
    Instance(Instance),
    Schedule(Box<Schedule>),
    Deleted,
    Recorded,
}

/// Why a command was refused. Replicated as part of the log's response, so it is data,
/// not a Rust error chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RegistryError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: String, name: String },
    #[error("{what} {name:?} not found")]
    NotFound { what: String, name: String },
    /// Not found, said in whole (e.g. with what exists instead).
    #[error("{message}")]
    Missing { message: String },
    #[error("{message}")]
    Conflict { message: String },
}

impl RegistryError {
    /// The HTTP status the management API answers this refusal with.
    pub fn http_status(&self) -> u16 {
        match self {
            RegistryError::Invalid { .. } => 400,
            RegistryError::NotFound { .. } | RegistryError::Missing { .. } => 404,
            RegistryError::AlreadyExists { .. } | RegistryError::Conflict { .. } => 409,
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        RegistryError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
    pub(crate) fn not_found(what: &str, name: &str) -> Self {
        RegistryError::NotFound {
            what: what.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What the leader's runtime and the watchers must act upon after a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Effect {
    /// Appended to the history; published on `/api/v1/events`.
    Event(Event),
    /// The runtime driver should converge on `to` instances.
    DesiredReplicasChanged { service: String, from: u32, to: u32 },
    /// Routing must send this shard to `to` from now on; `epoch` fences the old owner.
    ShardMoved {
        service: String,
        shard: u32,
        from: Option<String>,
        to: Option<String>,
        epoch: u64,
    },
    /// The runtime driver should stop this instance (its service is gone).
    StopInstance { service: String, instance: String },
    /// The service's spec, descriptors or ready set changed: routes must be re-read.
    RoutesChanged { service: String },
}
