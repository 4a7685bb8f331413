//! The autoscaler's state for every service and the steps of its loop, with no loop of
//! its own: the control plane's shell (`runtime/autoscale.rs`) calls [`Collector::sync`]
//! with what the registry holds, starts a [`Collector::round`] of scrapes every tick,
//! hands the observations to [`Collector::decide_all`], and passes the gateway's pokes to
//! [`Collector::poke`]. Owns no policy (that is [`Kpa`]) and no I/O of its own beyond its
//! [`MetricsSource`] and [`ScaleSink`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::idle::IdleHistogram;
use crate::kpa::{Decision, Kpa, Load, Observation, Wake};
use crate::scrape::{CounterRate, ScrapeError, Scraper};
use crate::settings::ScalingSettings;
use crate::timer_wake::TimerDue;
use crate::window::Timestamp;

/// How often every service is scraped and decided.
pub const TICK: Duration = Duration::from_secs(1);
/// Bounds one scrape so a hung sidecar cannot stretch a tick.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a held-request count from the gateway stands: it reports every second while
/// requests wait and stops once they are released.
pub const HELD_FRESH: Duration = Duration::from_secs(2);
/// A changed idle-time histogram is written at most this often per service; a new leader
/// loses at most this much of it.
pub const IDLE_TIMES_WRITE_INTERVAL: Duration = Duration::from_secs(10);

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

/// Where decisions go: the registry, through Raft, in the control plane.
#[async_trait]
pub trait ScaleSink: Send + Sync + 'static {
    /// Records `replicas` as the service's desired count, with the reason users see.
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError>;
    /// Stores the service's idle-time histogram, so a new leader starts from it.
    async fn record_idle_times(&self, service: &str, idle_times: &IdleHistogram) -> Result<(), SinkError>;
}

/// Where load comes from: the sidecars' `/metrics` in production, a script in tests.
#[async_trait]
pub trait MetricsSource: Send + Sync + 'static {
    /// The load of `service` summed over its ready instances' metrics `targets`, or `None`
    /// when nothing could be measured.
    async fn observe(&self, service: &str, targets: &[String], now: Timestamp) -> Option<Load>;
}

/// One service as the registry holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub name: String,
    pub settings: ScalingSettings,
    /// The metrics URLs of its ready instances.
    pub targets: Vec<String>,
    /// The desired count the registry holds.
    pub desired: u32,
    /// The stored idle-time histogram; read only when the service starts being tracked.
    pub idle_times: IdleHistogram,
    /// How long until the service's earliest pending timer is due (zero: due already),
    /// `None` without one.
    pub next_timer_due_in: Option<Duration>,
    /// The service's last cold start, `None` until it has had one.
    pub cold_start: Option<Duration>,
}

/// Whether the registry holds a count this collector neither decided nor wrote, which it
/// must then take over: someone else wrote it (an operator, the registry clamping it to
/// new bounds). `decided` is the collector's count, `written` the one it last wrote (or
/// took over); a registry that still shows `written` while `decided` differs is behind a
/// write that failed and will be retried, not overruled.
pub fn adoption(decided: u32, written: Option<u32>, registry: u32) -> Option<u32> {
    if registry == decided || written == Some(registry) {
        return None;
    }
    Some(registry)
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
    /// The count the registry got from this collector (or had when it was taken over).
    written: Option<u32>,
    /// The reason of the latest change, sent again if its write has to be retried.
    reason: String,
    /// The latest poke's held work (requests at the gateway, or events), and when it came.
    held: Option<(u32, Wake, Timestamp)>,
    /// The histogram changed since it was last stored.
    idle_times_dirty: bool,
    idle_times_written_at: Option<Timestamp>,
    /// When the earliest pending timer is due, and the cold start to wake it by.
    timer: Option<(Timestamp, Option<Duration>)>,
}

impl Tracked {
    /// The earliest timer as an observation at `now` sees it.
    fn timer_due(&self, now: Timestamp) -> Option<TimerDue> {
        self.timer.map(|(at, learned_cold_start)| TimerDue {
            due_in: at.saturating_since(now),
            learned_cold_start,
        })
    }
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

    /// The tracked service's idle-time histogram.
    pub fn idle_times(&self, service: &str) -> Option<&IdleHistogram> {
        self.services.get(service).map(|tracked| tracked.kpa.idle_times())
    }

    /// Brings the tracked services in line with the registry: new ones resume from its
    /// count and histogram, gone ones are forgotten, settings and targets are updated, and
    /// a count someone else wrote is taken over ([`adoption`]). Services with invalid
    /// settings are not scaled (and say so).
    pub fn sync(&mut self, services: Vec<ServiceState>) {
        let now = self.now();
        let listed: Vec<&str> = services.iter().map(|service| service.name.as_str()).collect();
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|name| !listed.contains(&name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.forget(&name);
        }
        for service in services {
            let timer = service
                .next_timer_due_in
                .map(|due_in| (now + due_in, service.cold_start));
            if let Err(error) = service.settings.validate() {
                warn!(service = service.name, %error, "invalid scaling settings; not autoscaling this service");
                self.forget(&service.name);
                continue;
            }
            match self.services.get_mut(&service.name) {
                Some(tracked) => {
                    tracked.settings = service.settings;
                    tracked.targets = service.targets;
                    tracked.timer = timer;
                    if let Some(count) = adoption(tracked.kpa.desired(), tracked.written, service.desired) {
                        info!(
                            service = service.name,
                            desired = count,
                            "adopting a count written elsewhere"
                        );
                        tracked.kpa.adopt(count, now);
                        tracked.written = Some(count);
                    }
                }
                None => {
                    info!(service = service.name, desired = service.desired, "tracking service");
                    let kpa = Kpa::resume(service.desired, now).with_idle_times(service.idle_times);
                    let tracked = Tracked {
                        settings: service.settings,
                        targets: service.targets,
                        kpa,
                        written: Some(service.desired),
                        reason: String::new(),
                        held: None,
                        idle_times_dirty: false,
                        idle_times_written_at: None,
                        timer,
                    };
                    self.services.insert(service.name, tracked);
                }
            }
        }
    }

    pub fn forget(&mut self, service: &str) {
        if self.services.remove(service).is_some() {
            info!(service, "no longer tracking service");
        }
    }

    /// Drops every service (leadership moved: another node scales).
    pub fn forget_all(&mut self) {
        for service in std::mem::take(&mut self.services).into_keys() {
            info!(service, "no longer tracking service");
        }
    }

    /// `held` units of work wait for `service`, which has no ready instance (requests the
    /// gateway holds, or events for its subscriptions): decides at once with them as its
    /// load. `None` if the service is not tracked.
    pub async fn poke(&mut self, service: &str, held: u32, wake: Wake) -> Option<u32> {
        let now = self.now();
        let Some(tracked) = self.services.get_mut(service) else {
            warn!(service, "poke for a service the autoscaler does not track");
            return None;
        };
        // Requests the gateway holds are the larger and more precise count: an
        // events poke (always one unit) does not replace a fresh one.
        let (held, wake) = match tracked.held {
            Some((requests, Wake::Requests, at)) if wake == Wake::Events && now.saturating_since(at) < HELD_FRESH => {
                (requests.max(held), Wake::Requests)
            }
            _ => (held, wake),
        };
        tracked.held = Some((held, wake, now));
        let observation = Observation::unmeasured(ready_count(&tracked.targets))
            .with_held(held)
            .with_wake(wake)
            .with_timer(tracked.timer_due(now));
        self.decide(service, observation, now).await;
        self.desired(service)
    }

    /// The observations of one round of scrapes, in a future that owns its inputs so the
    /// shell can take pokes while the scrapes are in flight.
    pub fn round(&self) -> impl Future<Output = Vec<(String, Observation)>> + Send + 'static {
        let now = self.now();
        let services: Vec<ToObserve> = self
            .services
            .iter()
            .map(|(service, tracked)| {
                let held = match tracked.held {
                    // Held requests are released as soon as an instance is ready.
                    Some((held, wake, at)) if tracked.targets.is_empty() && now.saturating_since(at) < HELD_FRESH => {
                        (held, wake)
                    }
                    _ => (0, Wake::Requests),
                };
                ToObserve {
                    service: service.clone(),
                    targets: tracked.targets.clone(),
                    held,
                    timer: tracked.timer_due(now),
                }
            })
            .collect();
        observe_all(self.source.clone(), services, now)
    }

    /// Decides every observed service, writes what changed, stores changed idle-time
    /// histograms, and returns each decision.
    pub async fn decide_all(&mut self, observations: Vec<(String, Observation)>) -> Vec<(String, Decision)> {
        let now = self.now();
        let mut decisions = Vec::with_capacity(observations.len());
        for (service, observation) in observations {
            if let Some(decision) = self.decide(&service, observation, now).await {
                decisions.push((service, decision));
            }
        }
        self.store_idle_times(now).await;
        decisions
    }

    /// One round and its decisions, without taking pokes meanwhile.
    pub async fn tick(&mut self) -> Vec<(String, Decision)> {
        let observations = self.round().await;
        self.decide_all(observations).await
    }

    async fn decide(&mut self, service: &str, observation: Observation, now: Timestamp) -> Option<Decision> {
        // Forgotten while its scrape was in flight.
        let tracked = self.services.get_mut(service)?;
        let was_panicking = tracked.kpa.is_panicking();
        let decision = tracked.kpa.decide(&observation, &tracked.settings, now);
        tracked.idle_times_dirty |= tracked.kpa.take_idle_times_changed();
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
        Some(decision)
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

    async fn store_idle_times(&mut self, now: Timestamp) {
        for (service, tracked) in &mut self.services {
            let due = tracked
                .idle_times_written_at
                .is_none_or(|at| now.saturating_since(at) >= IDLE_TIMES_WRITE_INTERVAL);
            if !tracked.idle_times_dirty || !due {
                continue;
            }
            match self.sink.record_idle_times(service, tracked.kpa.idle_times()).await {
                Ok(()) => {
                    tracked.idle_times_dirty = false;
                    tracked.idle_times_written_at = Some(now);
                }
                Err(error) => warn!(service, %error, "could not store the idle-time histogram; retrying"),
            }
        }
    }
}

fn ready_count(targets: &[String]) -> u32 {
    u32::try_from(targets.len()).unwrap_or(u32::MAX)
}

/// What one round observes of one service, beside its scrape.
struct ToObserve {
    service: String,
    targets: Vec<String>,
    /// Work held for it while nothing is ready.
    held: (u32, Wake),
    timer: Option<TimerDue>,
}

/// Observes every service concurrently. Owns its inputs so it can run beside pokes.
async fn observe_all<M: MetricsSource>(
    source: Arc<M>,
    services: Vec<ToObserve>,
    now: Timestamp,
) -> Vec<(String, Observation)> {
    let source = &source;
    join_all(services.into_iter().map(|to_observe| async move {
        let ToObserve {
            service,
            targets,
            held: (held, wake),
            timer,
        } = to_observe;
        let load = source.observe(&service, &targets, now).await;
        let observation = Observation {
            load,
            ready_instances: ready_count(&targets),
            held,
            wake,
            timer,
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
