//! The autoscaler on the control plane: the one loop that drives `strata-autoscaler`.
//! While this node leads, every tick it brings the tracked services in line with the
//! registry (settings, the `/metrics` of ready sidecars, counts written by others, the
//! stored idle-time histogram), starts a round of scrapes, and hands the observations to
//! the KPA decision, which writes changed desired counts (with their reasons) and
//! idle-time histograms to the registry. Every scrape also feeds the dashboard's metric
//! series (its source wraps the Prometheus source). Pokes from the gateway (requests
//! held at zero) are decided as they come, even while a round's scrapes are in flight.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use strata_autoscaler::{
    collector::{Collector, PrometheusSource, ScaleSink, ServiceState, SinkError, SCRAPE_TIMEOUT, TICK},
    settings::{KeepAlive as KeepAlivePolicy, ScalingSettings},
    HistogramPolicy, IdleHistogram, Observation, Wake,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::{
    metrics_history::RecordingSource,
    node::{now_ms, ControlPlane},
    registry::{Command, IdleTimes, InstanceState, KeepAlive, Registry, Service},
};

/// How long a poke waits for the autoscaler's answer.
const POKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Autoscaler settings that are not (yet) per service.
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    pub stable_window: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        Self {
            stable_window: ScalingSettings::default().stable_window,
        }
    }
}

/// Why a poke got no count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PokeError {
    #[error("service {0:?} not found")]
    NotFound(String),
    #[error("service {0:?} is not autoscaled: its scaling settings are invalid")]
    NotScaled(String),
    #[error("this node no longer leads; retry shortly")]
    NotLeader,
    #[error("the autoscaler is not running; retry shortly")]
    Stopped,
}

/// A poke (a gateway's held requests, or a sidecar's events for a subscriber) on its
/// way to the autoscaler.
pub struct Poke {
    service: String,
    held: u32,
    wake: Wake,
    answer: oneshot::Sender<Result<u32, PokeError>>,
}

/// Hands pokes to the autoscaler loop (the data-plane API holds one).
#[derive(Clone)]
pub struct Pokes(mpsc::Sender<Poke>);

impl Pokes {
    /// `held` units of work (`wake` says what) wait for `service`: the desired count
    /// the autoscaler decided.
    pub async fn poke(&self, service: &str, held: u32, wake: Wake) -> Result<u32, PokeError> {
        let (answer, answered) = oneshot::channel();
        let poke = Poke {
            service: service.to_owned(),
            held,
            wake,
            answer,
        };
        self.0.send(poke).await.map_err(|_| PokeError::Stopped)?;
        match tokio::time::timeout(POKE_TIMEOUT, answered).await {
            Ok(Ok(result)) => result,
            _ => Err(PokeError::Stopped),
        }
    }
}

/// The poke channel: give the [`Pokes`] to the data-plane API and the receiver to [`run`].
pub fn pokes() -> (Pokes, mpsc::Receiver<Poke>) {
    let (sender, receiver) = mpsc::channel(64);
    (Pokes(sender), receiver)
}

struct RegistrySink {
    node: Arc<ControlPlane>,
}

#[async_trait]
impl ScaleSink for RegistrySink {
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError> {
        let command = Command::SetDesiredReplicas {
            service: service.to_string(),
            replicas,
            reason: reason.to_string(),
        };
        self.write(command).await
    }

    async fn record_idle_times(&self, service: &str, idle_times: &IdleHistogram) -> Result<(), SinkError> {
        let command = Command::RecordIdleTimes {
            service: service.to_string(),
            idle_times: IdleTimes::from_histogram(idle_times),
        };
        self.write(command).await
    }
}

impl RegistrySink {
    async fn write(&self, command: Command) -> Result<(), SinkError> {
        self.node
            .write(command)
            .await
            .map(|_| ())
            .map_err(|error| SinkError::new(error.to_string()))
    }
}

/// How one registered service scales.
pub fn scaling_settings(service: &Service, config: &AutoscaleConfig) -> ScalingSettings {
    let keep_alive = match service.keep_alive() {
        KeepAlive::Fixed => KeepAlivePolicy::Fixed,
        KeepAlive::Histogram => KeepAlivePolicy::Histogram(HistogramPolicy {
            prewarm_percentile: f64::from(service.prewarm_percentile),
            keep_alive_percentile: f64::from(service.keep_alive_percentile),
        }),
    };
    ScalingSettings {
        target_concurrency: f64::from(service.target_concurrency.max(1)),
        min_scale: service.min_scale,
        max_scale: service.max_scale,
        scale_to_zero_grace: Duration::from_millis(service.scale_to_zero_grace_ms),
        stable_window: service
            .stable_window_ms
            .map_or(config.stable_window, Duration::from_millis),
        keep_alive,
        ..ScalingSettings::default()
    }
}

/// Every service as the collector needs it: settings, ready instances' metrics, the
/// registry's count and stored idle times, its earliest timer as of `now_ms`, and its
/// latest cold start as `cold_start` knows it.
fn services(
    registry: &Registry,
    config: &AutoscaleConfig,
    now_ms: u64,
    cold_start: impl Fn(&str) -> Option<Duration>,
) -> Vec<ServiceState> {
    registry
        .services
        .values()
        .map(|service| ServiceState {
            name: service.name.clone(),
            settings: scaling_settings(service, config),
            targets: registry
                .instances_of(&service.name)
                .filter(|instance| instance.state == InstanceState::Ready)
                .map(|instance| format!("http://{}/metrics", instance.metrics_address()))
                .collect(),
            desired: service.desired_replicas,
            idle_times: service.idle_times.histogram(),
            next_timer_due_in: service
                .next_timer_due_ms
                .map(|due_ms| Duration::from_millis(due_ms.saturating_sub(now_ms))),
            cold_start: cold_start(&service.name),
        })
        .collect()
}

/// [`services`] as this node's registry and cold starts have them now.
fn registry_services(node: &ControlPlane, config: &AutoscaleConfig) -> Vec<ServiceState> {
    let history = node.history();
    node.read(|registry| services(registry, config, now_ms(), |name| history.last_cold_start(name)))
}

type Round = Pin<Box<dyn Future<Output = Vec<(String, Observation)>> + Send>>;

/// Runs until `stop` resolves.
pub async fn run(
    node: Arc<ControlPlane>,
    config: AutoscaleConfig,
    mut pokes: mpsc::Receiver<Poke>,
    stop: impl Future<Output = ()>,
) {
    let source = match PrometheusSource::new(SCRAPE_TIMEOUT) {
        Ok(source) => source,
        Err(error) => {
            tracing::error!(%error, "the autoscaler cannot scrape metrics; it is off");
            return;
        }
    };
    // Every scrape also feeds the dashboard's metric series.
    let source = RecordingSource::new(source, node.clone());
    let mut collector = Collector::new(source, RegistrySink { node: node.clone() });
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut round: Option<Round> = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            Some(poke) = pokes.recv() => {
                let answer = if node.is_leader() {
                    // A service deployed since the last tick is tracked from now on.
                    collector.sync(registry_services(&node, &config));
                    match collector.poke(&poke.service, poke.held.max(1), poke.wake).await {
                        Some(desired) => Ok(desired),
                        None if node.read(|registry| registry.services.contains_key(&poke.service)) => {
                            Err(PokeError::NotScaled(poke.service))
                        }
                        None => Err(PokeError::NotFound(poke.service)),
                    }
                } else {
                    Err(PokeError::NotLeader)
                };
                let _ = poke.answer.send(answer);
            }
            _ = ticks.tick(), if round.is_none() => {
                if !node.is_leader() {
                    // Another node scales; start afresh from the registry if leadership comes back.
                    collector.forget_all();
                    continue;
                }
                collector.sync(registry_services(&node, &config));
                round = Some(Box::pin(collector.round()));
            }
            observations = async { round.as_mut().expect("guarded by the branch condition").await }, if round.is_some() => {
                round = None;
                // The one place that receives each round's observations and decisions.
                collector.decide_all(observations).await;
            }
        }
    }
}
