//! The control plane's own Prometheus metrics, served at `/metrics` on the API port:
//! Raft (term, leader changes, log indexes, append latency), registry writes, scale
//! decisions and desired vs ready per service, instance starts, failures and cold
//! starts. Counts what the registry's effects say happened; decides nothing.

mod cold_start;

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::sync::broadcast::{self, error::RecvError};

pub use cold_start::{ColdStart, ColdStarts};

use crate::metrics_history::MetricsHistory;
use crate::node::RaftStatus;
use crate::raft::state_machine::AppliedEffects;
use crate::raft::Raft;
use crate::registry::{self, Effect, EventKind};

/// One node's metrics, in a registry of its own (tests run several nodes per process).
pub struct Telemetry {
    registry: Registry,
    /// Time to write and `fsync` one append to the Raft log.
    pub raft_append_seconds: Histogram,
    raft_term: IntGauge,
    raft_leader: IntGauge,
    raft_leader_changes: IntCounter,
    raft_last_log_index: IntGauge,
    raft_committed_index: IntGauge,
    raft_applied_index: IntGauge,
    registry_writes: IntCounterVec,
    scale_decisions: IntCounterVec,
    desired_replicas: IntGaugeVec,
    ready_replicas: IntGaugeVec,
    instance_starts: IntCounterVec,
    instance_failures: IntCounterVec,
    cold_start_seconds: HistogramVec,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let telemetry = Telemetry {
            registry: Registry::new(),
            raft_append_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "strata_raft_append_seconds",
                    "Time to write and fsync one append to the Raft log",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
            )
            .expect("valid metric"),
            raft_term: gauge("strata_raft_term", "The current Raft term as this node knows it"),
            raft_leader: gauge(
                "strata_raft_leader",
                "1 while this node acts as the leader (holds its lease), else 0",
            ),
            raft_leader_changes: IntCounter::new(
                "strata_raft_leader_changes_total",
                "Times this node saw a new leader",
            )
            .expect("valid metric"),
            raft_last_log_index: gauge(
                "strata_raft_last_log_index",
                "Index of the last entry in this node's log",
            ),
            raft_committed_index: gauge("strata_raft_committed_index", "Highest index known committed"),
            raft_applied_index: gauge("strata_raft_applied_index", "Highest index applied to the registry"),
            registry_writes: counters(
                "strata_registry_writes_total",
                "Registry commands proposed by this node, by command and outcome",
                &["command", "outcome"],
            ),
            scale_decisions: counters(
                "strata_scale_decisions_total",
                "Changes of a service's desired count, by kind of change (up, down, from_zero, to_zero)",
                &["service", "change"],
            ),
            desired_replicas: gauges(
                "strata_service_desired_replicas",
                "Instances the autoscaler wants",
                &["service"],
            ),
            ready_replicas: gauges(
                "strata_service_ready_replicas",
                "Instances ready to serve",
                &["service"],
            ),
            instance_starts: counters(
                "strata_instance_starts_total",
                "Instances that registered (started)",
                &["service"],
            ),
            instance_failures: counters(
                "strata_instance_failures_total",
                "Instances that failed to start or crashed",
                &["service"],
            ),
            cold_start_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "strata_service_cold_start_seconds",
                    "From a service's desired count leaving zero to its first ready instance",
                )
                .buckets(exponential_buckets(0.01, 2.0, 14).expect("valid buckets")),
                &["service"],
            )
            .expect("valid metric"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(telemetry.raft_append_seconds.clone()),
            Box::new(telemetry.raft_term.clone()),
            Box::new(telemetry.raft_leader.clone()),
            Box::new(telemetry.raft_leader_changes.clone()),
            Box::new(telemetry.raft_last_log_index.clone()),
            Box::new(telemetry.raft_committed_index.clone()),
            Box::new(telemetry.raft_applied_index.clone()),
            Box::new(telemetry.registry_writes.clone()),
            Box::new(telemetry.scale_decisions.clone()),
            Box::new(telemetry.desired_replicas.clone()),
            Box::new(telemetry.ready_replicas.clone()),
            Box::new(telemetry.instance_starts.clone()),
            Box::new(telemetry.instance_failures.clone()),
            Box::new(telemetry.cold_start_seconds.clone()),
        ];
        for collector in collectors {
            telemetry.registry.register(collector).expect("metric names are unique");
        }
        telemetry
    }

    /// Counts one registry command this node proposed.
    pub fn registry_write(&self, command: &str, outcome: &str) {
        self.registry_writes.with_label_values(&[command, outcome]).inc();
    }

    /// The Prometheus text exposition, with the gauges set from `raft` and
    /// `registry` (as the node reads them now).
    pub fn render(&self, raft: &RaftStatus, registry: &registry::Registry) -> String {
        let index = |id: Option<u64>| i64::try_from(id.unwrap_or(0)).unwrap_or(i64::MAX);
        self.raft_term.set(i64::try_from(raft.term).unwrap_or(i64::MAX));
        self.raft_leader.set(i64::from(raft.leading));
        self.raft_last_log_index.set(index(raft.last_log_index));
        self.raft_committed_index.set(index(raft.committed_index));
        self.raft_applied_index.set(index(raft.applied_index));
        // Rebuilt from the registry, so deleted services disappear.
        self.desired_replicas.reset();
        self.ready_replicas.reset();
        for service in registry.services.values() {
            self.desired_replicas
                .with_label_values(&[&service.name])
                .set(i64::from(service.desired_replicas));
            self.ready_replicas
                .with_label_values(&[&service.name])
                .set(i64::from(registry.ready_replicas(&service.name)));
        }
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::warn!(%error, "cannot encode the control plane's metrics");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    fn count(&self, effects: &[Effect], cold_starts: &mut ColdStarts, history: &MetricsHistory) {
        for effect in effects {
            match effect {
                Effect::Event(event) => {
                    let Some(service) = event.service.as_deref() else {
                        continue;
                    };
                    match event.kind {
                        EventKind::InstanceRegistered => self.instance_starts.with_label_values(&[service]).inc(),
                        EventKind::InstanceFailed => self.instance_failures.with_label_values(&[service]).inc(),
                        EventKind::ServiceDeleted => history.forget(service),
                        _ => {}
                    }
                }
                Effect::DesiredReplicasChanged { service, from, to } => {
                    let change = match (*from, *to) {
                        (0, _) => "from_zero",
                        (_, 0) => "to_zero",
                        (from, to) if to > from => "up",
                        _ => "down",
                    };
                    self.scale_decisions.with_label_values(&[service, change]).inc();
                }
                _ => {}
            }
        }
        for cold_start in cold_starts.observe(effects) {
            self.cold_start_seconds
                .with_label_values(&[&cold_start.service])
                .observe(cold_start.duration.as_secs_f64());
            history.cold_start(&cold_start.service, cold_start.duration);
        }
    }
}

/// Follows this node's Raft metrics (leader changes) and applied effects (instances,
/// scale changes, cold starts) until Raft shuts down.
pub(crate) async fn follow(
    raft: Raft,
    mut effects: broadcast::Receiver<AppliedEffects>,
    telemetry: Arc<Telemetry>,
    history: Arc<MetricsHistory>,
) {
    let mut metrics = raft.metrics();
    let mut leader = None;
    let mut cold_starts = ColdStarts::default();
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let current = metrics.borrow_and_update().current_leader;
                if current.is_some() && current != leader {
                    telemetry.raft_leader_changes.inc();
                }
                leader = current;
            }
            applied = effects.recv() => match applied {
                Ok(applied) => telemetry.count(&applied.effects, &mut cold_starts, &history),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "metrics fell behind the registry's effects; some counts are lost");
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}
