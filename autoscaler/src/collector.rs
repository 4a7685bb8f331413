//! The thin shell around the decision function: every second it observes each tracked
//! service's load, feeds that service's [`Kpa`] and writes changed desired counts to a
//! [`ScaleSink`]. Owns no policy; the control plane says which services exist and where
//! their instances serve metrics, and implements the sink.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::kpa::{Kpa, Load, Observation, Reason};
use crate::scrape::{CounterRate, ScrapeError, Scraper};
use crate::settings::{ScalingSettings, SettingsError};
use crate::window::Timestamp;

/// How often every service is scraped and decided.
pub const TICK: Duration = Duration::from_secs(1);
/// Bounds one scrape so a hung sidecar cannot stretch a tick.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);

/// The sink could not record a count; the collector retries on the next tick.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
}

impl SinkError {
    pub fn new(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
        }
    }
}

/// Where desired counts go: the registry, through Raft, in the control plane.
#[async_trait]
pub trait ScaleSink: Send + Sync + 'static {
    /// Records `replicas` as the service's desired count, with the reason users see.
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError>;
}

/// Where load comes from: the sidecars' `/metrics` in production, a script in tests.
#[async_trait]
pub trait MetricsSource: Send + Sync + 'static {
    /// The load of `service` summed over its ready instances' metrics `targets`, or `None`
    /// when nothing could be measured.
    async fn observe(&self, service: &str, targets: &[String], now: Timestamp) -> Option<Load>;
}

/// Changes to what the collector tracks, sent by the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum CollectorCommand {
    /// Starts tracking a service, or updates its settings and targets (the metrics URLs of
    /// its ready instances). `desired` is the count the registry holds; a service new to
    /// this collector resumes from it, or with `None` (just deployed) gets its initial scale.
    Track {
        service: String,
        settings: ScalingSettings,
        targets: Vec<String>,
        desired: Option<u32>,
    },
    Forget {
        service: String,
    },
    /// A request is waiting for a service at zero: decide now, not on the next tick.
    Poke {
        service: String,
    },
}

pub struct Collector<M, S> {
    source: Arc<M>,
    sink: S,
    services: BTreeMap<String, Tracked>,
    origin: Instant,
}

struct Tracked {
    settings: ScalingSettings,
    targets: Vec<String>,
    kpa: Kpa,
    /// The count the sink last accepted; differs from the decision's after a failed write.
    written: Option<u32>,
    /// The reason of the latest change, sent again if its write has to be retried.
    reason: String,
}

impl<M: MetricsSource, S: ScaleSink> Collector<M, S> {
    pub fn new(source: M, sink: S) -> Self {
        Collector {
            source: Arc::new(source),
            sink,
            services: BTreeMap::new(),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.origin.elapsed())
    }

    /// The count last decided for `service`.
    pub fn desired(&self, service: &str) -> Option<u32> {
        self.services.get(service).map(|tracked| tracked.kpa.desired())
    }

    /// See [`CollectorCommand::Track`]; refuses invalid settings and keeps the old ones.
    pub async fn track(
        &mut self,
        service: &str,
        settings: ScalingSettings,
        targets: Vec<String>,
        desired: Option<u32>,
    ) -> Result<(), SettingsError> {
        settings.validate()?;
        if let Some(tracked) = self.services.get_mut(service) {
            tracked.settings = settings;
            tracked.targets = targets;
            return Ok(());
        }
        let now = self.now();
        let tracked = match desired {
            Some(desired) => Tracked {
                kpa: Kpa::resume(desired, now),
                settings,
                targets,
                written: Some(desired),
                reason: String::new(),
            },
            None => {
                let (kpa, _) = Kpa::deploy(&settings, now);
                // Written even when the initial scale is 0, so the registry matches.
                let reason = Reason::Initial { scale: kpa.desired() }.to_string();
                Tracked {
                    kpa,
                    settings,
                    targets,
                    written: None,
                    reason,
                }
            }
        };
        info!(service, desired = tracked.kpa.desired(), "tracking service");
        self.services.insert(service.to_owned(), tracked);
        self.write(service).await;
        Ok(())
    }

    pub fn forget(&mut self, service: &str) {
        if self.services.remove(service).is_some() {
            info!(service, "no longer tracking service");
        }
    }

    /// Decides `service` at once with a poke; `false` if the service is not tracked.
    pub async fn poke(&mut self, service: &str) -> bool {
        let Some(tracked) = self.services.get(service) else {
            warn!(service, "poke for a service the autoscaler does not track");
            return false;
        };
        let observation = Observation::unmeasured(ready_count(&tracked.targets)).with_poke();
        self.decide(service, observation).await;
        true
    }

    /// One round: observe every service, decide, write what changed.
    pub async fn tick(&mut self) {
        let observations = observe_all(self.source.clone(), self.snapshot(), self.now()).await;
        self.decide_all(observations).await;
    }

    /// Runs until the command channel closes: a round every [`TICK`], commands as they come,
    /// even while a round's scrapes are in flight, so a poke never waits for a slow sidecar.
    pub async fn run(mut self, mut commands: mpsc::Receiver<CollectorCommand>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                command = commands.recv() => match command {
                    Some(command) => {
                        self.apply(command).await;
                        continue;
                    }
                    None => return,
                },
            }
            let round = observe_all(self.source.clone(), self.snapshot(), self.now());
            tokio::pin!(round);
            let observations = loop {
                tokio::select! {
                    observations = &mut round => break observations,
                    command = commands.recv() => match command {
                        Some(command) => self.apply(command).await,
                        None => return,
                    },
                }
            };
            self.decide_all(observations).await;
        }
    }

    async fn apply(&mut self, command: CollectorCommand) {
        match command {
            CollectorCommand::Track {
                service,
                settings,
                targets,
                desired,
            } => {
                if let Err(error) = self.track(&service, settings, targets, desired).await {
                    warn!(service, %error, "refused autoscaling settings");
                }
            }
            CollectorCommand::Forget { service } => self.forget(&service),
            CollectorCommand::Poke { service } => {
                self.poke(&service).await;
            }
        }
    }

    fn snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.services
            .iter()
            .map(|(service, tracked)| (service.clone(), tracked.targets.clone()))
            .collect()
    }

    async fn decide_all(&mut self, observations: Vec<(String, Observation)>) {
        for (service, observation) in observations {
            self.decide(&service, observation).await;
        }
    }

    async fn decide(&mut self, service: &str, observation: Observation) {
        let now = self.now();
        // Forgotten while its scrape was in flight.
        let Some(tracked) = self.services.get_mut(service) else {
            return;
        };
        let was_panicking = tracked.kpa.is_panicking();
        let decision = tracked.kpa.decide(&observation, &tracked.settings, now);
        if decision.panicking != was_panicking {
            let concurrency = decision.panic_concurrency;
            info!(
                service,
                panicking = decision.panicking,
                ?concurrency,
                "panic mode changed"
            );
        }
        if let Some(reason) = &decision.reason {
            info!(service, desired = decision.desired, previous = decision.previous, %reason, "scale decision");
            tracked.reason = reason.to_string();
        }
        self.write(service).await;
    }

    /// Sends the decided count if the sink does not have it yet.
    async fn write(&mut self, service: &str) {
        let Some(tracked) = self.services.get_mut(service) else {
            return;
        };
        let desired = tracked.kpa.desired();
        if tracked.written == Some(desired) {
            return;
        }
        match self.sink.set_desired(service, desired, &tracked.reason).await {
            Ok(()) => tracked.written = Some(desired),
            Err(error) => warn!(service, desired, %error, "could not record the desired count; retrying next tick"),
        }
    }
}

fn ready_count(targets: &[String]) -> u32 {
    u32::try_from(targets.len()).unwrap_or(u32::MAX)
}

/// Observes every service concurrently. Owns its inputs so it can run beside commands.
async fn observe_all<M: MetricsSource>(
    source: Arc<M>,
    services: Vec<(String, Vec<String>)>,
    now: Timestamp,
) -> Vec<(String, Observation)> {
    let source = &source;
    join_all(services.into_iter().map(|(service, targets)| async move {
        let load = source.observe(&service, &targets, now).await;
        let observation = Observation {
            load,
            ready_instances: ready_count(&targets),
            poked: false,
        };
        (service, observation)
    }))
    .await
}

/// Scrapes the sidecars' Prometheus endpoints; request rates come from counter deltas
/// between rounds, per service and instance.
pub struct PrometheusSource {
    scraper: Scraper,
    rates: Mutex<HashMap<(String, String), CounterRate>>,
}

impl PrometheusSource {
    pub fn new(timeout: Duration) -> Result<Self, ScrapeError> {
        Ok(PrometheusSource {
            scraper: Scraper::new(timeout)?,
            rates: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl MetricsSource for PrometheusSource {
    async fn observe(&self, service: &str, targets: &[String], now: Timestamp) -> Option<Load> {
        if targets.is_empty() {
            return None;
        }
        let results = join_all(targets.iter().map(|url| self.scraper.scrape(url))).await;
        let mut rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the counters of instances that are gone, so the map only holds live ones.
        rates.retain(|(owner, url), _| owner != service || targets.contains(url));
        let (mut in_flight, mut requests_per_second, mut measured) = (0.0, 0.0, 0u32);
        for (url, result) in targets.iter().zip(results) {
            match result {
                Ok(metrics) => {
                    let counts = metrics.total();
                    in_flight += counts.in_flight;
                    let rate = rates.entry((service.to_owned(), url.clone())).or_default();
                    requests_per_second += rate.observe(now, counts.requests_total).unwrap_or(0.0);
                    measured += 1;
                }
                Err(error) => debug!(service, %error, "scrape failed"),
            }
        }
        if measured == 0 {
            warn!(
                service,
                instances = targets.len(),
                "no instance of the service could be scraped"
            );
            return None;
        }
        // Instances that could not be scraped are taken to be as loaded as the others:
        // counting them as idle would scale a busy service down because of flaky metrics.
        let scale = targets.len() as f64 / f64::from(measured);
        Some(Load {
            concurrency: in_flight * scale,
            requests_per_second: requests_per_second * scale,
        })
    }
}

#[cfg(test)]
#[path = "collector_tests.rs"]
mod tests;
