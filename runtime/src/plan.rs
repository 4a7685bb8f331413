//! The runtime's pure core: from what should run (each service's desired instance
//! count) and what a driver sees running (its instances, with their state in the
//! registry), the actions that close the gap. It reads no clock and does no I/O;
//! drivers observe, call [`plan`], and carry the actions out (processes for the
//! local driver, pods and the Deployment's scale for the Kubernetes driver).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use strata_control_plane::registry::InstanceState;

/// The first restart waits this long; each further failure in a row doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Settings of the plan that are the driver's, not the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// An instance not ready this long after it started is replaced.
    pub ready_timeout: Duration,
    /// An instance ready for this long clears its service's failures.
    pub healthy_after: Duration,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            ready_timeout: Duration::from_secs(60),
            healthy_after: Duration::from_secs(10),
        }
    }
}

/// How a driver sees one of its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Running,
    /// Being drained and stopped already: neither counted nor acted upon.
    Stopping,
    /// Gone (a process that exited, a pod that failed): `reason` says how.
    Exited {
        reason: String,
    },
}

/// One instance the driver sees (a process it started, a pod of the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    pub id: String,
    pub service: String,
    /// When it started, in the driver's milliseconds (the same clock as `now_ms`).
    pub started_at_ms: u64,
    pub health: Health,
    /// False for an instance the driver finds but did not start or see before, such
    /// as the pods a new leader finds after a control-plane failover.
    pub tracked: bool,
    /// The revision of its service it runs (0: not known; counted as the serving one).
    pub revision: u64,
}

/// A service's restart pacing: failures in a row and when the next start may happen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pacing {
    pub failures: u32,
    pub not_before_ms: u64,
}

impl Pacing {
    /// Counts one more failure and holds starts off for [`restart_delay`], returned.
    pub fn fail(&mut self, now_ms: u64) -> Duration {
        self.failures += 1;
        let delay = restart_delay(self.failures);
        self.not_before_ms = now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        delay
    }
}

/// Everything the plan looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The services this driver runs and how many instances each should have.
    pub desired: &'a BTreeMap<String, u32>,
    pub observed: &'a [ObservedInstance],
    /// The registry's instances: id to (service, state).
    pub registered: &'a BTreeMap<String, (String, InstanceState)>,
    pub pacing: &'a BTreeMap<String, Pacing>,
    /// Each service's serving revision (absent or 0: every instance counts as serving).
    pub serving: &'a BTreeMap<String, u64>,
    /// The instances that own a shard or are handing one off: an instance of an
    /// earlier revision stays until it owns nothing.
    pub owners: &'a BTreeSet<String>,
    /// Each service's canary: the revision and how many instances of it should run
    /// beside the serving revision's.
    pub canaries: &'a BTreeMap<String, (u64, u32)>,
    pub now_ms: u64,
    pub settings: PlanSettings,
}

/// Why an instance is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It exited or failed; the driver's words for how.
    Exited { reason: String },
    /// It started but was not ready within the ready timeout.
    NotReady { waited: Duration },
}

/// Why an instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    ScaledDown,
    ServiceDeleted,
    /// It runs a revision that no longer serves, and its shards have moved.
    Superseded,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaledDown => "scaled down",
            StopReason::ServiceDeleted => "the service was deleted",
            StopReason::Superseded => "its revision no longer serves and its shards have moved",
        }
    }
}

/// What a driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Track an instance found running (it counts toward the desired number).
    Adopt { instance: String },
    /// End a failed instance at once, record why (with when the service will try
    /// again), and remove it from the registry.
    Replace {
        instance: String,
        service: String,
        failure: Failure,
        retry_in: Duration,
    },
    /// Start no instance of the service before `until_ms`; `failures` in a row so far.
    BackOff {
        service: String,
        failures: u32,
        until_ms: u64,
    },
    /// The service's instances are healthy again: forget its failures.
    Recovered { service: String },
    /// The registry lists an instance this driver does not run: remove it.
    Orphan { instance: String },
    /// Start `count` new instances of the serving revision, or of `canary`.
    Start {
        service: String,
        count: u32,
        canary: Option<u64>,
    },
    /// Drain an instance (it hands its shards back), then stop it.
    Stop { instance: String, reason: StopReason },
}

/// Starts what is missing of `wanted` instances (of the serving revision, or of
/// `canary`), or stops the youngest beyond it.
fn converge_count(
    actions: &mut Vec<Action>,
    service: &str,
    canary: Option<u64>,
    instances: &mut Vec<&ObservedInstance>,
    wanted: u32,
    paced: Pacing,
    now_ms: u64,
) {
    let count = instances.len() as u32;
    if count < wanted && now_ms >= paced.not_before_ms {
        // After failures, one at a time; otherwise everything missing at once.
        let count = if paced.failures > 0 { 1 } else { wanted - count };
        actions.push(Action::Start {
            service: service.to_owned(),
            count,
            canary,
        });
    } else if count > wanted {
        // The youngest go first: the oldest hold the warmest entities.
        instances.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then_with(|| b.id.cmp(&a.id)));
        for instance in instances.iter().take((count - wanted) as usize) {
            actions.push(Action::Stop {
                instance: instance.id.clone(),
                reason: StopReason::ScaledDown,
            });
        }
    }
}

/// How long to wait before the next start after `failures` failures in a row.
pub fn backoff_delay(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(7));
    doubled.min(MAX_BACKOFF)
}

/// How long an instance's replacement waits after `failures` failures in a row: not
/// at all after the first (a function that crashed once is back in milliseconds,
/// and the calls held for it meanwhile are not refused), then [`backoff_delay`] of
/// the failures before it, so a crash loop still slows down.
pub fn restart_delay(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        _ => backoff_delay(failures - 1),
    }
}

/// The actions that bring what runs to what is desired. Deterministic: services and
/// instances are visited in id order, so equal inputs give equal plans.
pub fn plan(input: PlanInput<'_>) -> Vec<Action> {
    let PlanInput {
        desired,
        observed,
        registered,
        pacing,
        serving,
        owners,
        canaries,
        now_ms,
        settings,
    } = input;
    let mut actions = Vec::new();
    let mut pacing = pacing.clone();
    let mut sorted: Vec<&ObservedInstance> = observed.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));

    // Failed instances are replaced and their service backs off; the rest live on.
    // Instances of services that are no longer ours to run are stopped, failed or not.
    let mut live: Vec<&ObservedInstance> = Vec::new();
    let mut unwanted: Vec<&ObservedInstance> = Vec::new();
    for instance in sorted.iter().copied() {
        if !desired.contains_key(&instance.service) {
            if instance.health != Health::Stopping {
                unwanted.push(instance);
            }
            continue;
        }
        let state = registered.get(&instance.id).map(|(_, state)| *state);
        let age = Duration::from_millis(now_ms.saturating_sub(instance.started_at_ms));
        let failure = match &instance.health {
            Health::Stopping => continue,
            Health::Exited { reason } => Some(Failure::Exited { reason: reason.clone() }),
            Health::Running if age > settings.ready_timeout && state.is_none_or(|s| s == InstanceState::Starting) => {
                Some(Failure::NotReady {
                    waited: settings.ready_timeout,
                })
            }
            Health::Running => None,
        };
        let Some(failure) = failure else {
            if !instance.tracked {
                actions.push(Action::Adopt {
                    instance: instance.id.clone(),
                });
            }
            live.push(instance);
            continue;
        };
        let paced = pacing.entry(instance.service.clone()).or_default();
        let retry_in = paced.fail(now_ms);
        actions.push(Action::Replace {
            instance: instance.id.clone(),
            service: instance.service.clone(),
            failure,
            retry_in,
        });
        actions.push(Action::BackOff {
            service: instance.service.clone(),
            failures: paced.failures,
            until_ms: paced.not_before_ms,
        });
    }

    // A service is healthy again once an instance started after its backoff ended has
    // been ready a while (an older instance that kept running proves nothing).
    let recovered: BTreeSet<&str> = live
        .iter()
        .filter(|instance| {
            let Some(paced) = pacing.get(&instance.service).filter(|p| p.failures > 0) else {
                return false;
            };
            let ready = registered
                .get(&instance.id)
                .is_some_and(|(_, state)| *state == InstanceState::Ready);
            let age = Duration::from_millis(now_ms.saturating_sub(instance.started_at_ms));
            ready && instance.started_at_ms >= paced.not_before_ms && age > settings.healthy_after
        })
        .map(|instance| instance.service.as_str())
        .collect();
    for service in recovered {
        pacing.remove(service);
        actions.push(Action::Recovered {
            service: service.to_owned(),
        });
    }

    // Registered instances of our services that nothing here runs never heartbeat again.
    let seen: BTreeSet<&str> = sorted.iter().map(|instance| instance.id.as_str()).collect();
    for (id, (service, _)) in registered {
        if desired.contains_key(service) && !seen.contains(id.as_str()) {
            actions.push(Action::Orphan { instance: id.clone() });
        }
    }

    for (service, &wanted) in desired {
        // Instances of an earlier revision are not counted: new ones of the serving
        // revision start beside them, and they stop once their shards have moved. A
        // canary's are counted apart.
        let serving_revision = serving.get(service).copied().unwrap_or(0);
        let canary = canaries.get(service).copied();
        let current = |i: &ObservedInstance| serving_revision == 0 || i.revision == 0 || i.revision == serving_revision;
        let is_canary =
            |i: &ObservedInstance| canary.is_some_and(|(revision, _)| i.revision == revision && revision != 0);
        let (mut mine, others): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) = live
            .iter()
            .copied()
            .filter(|i| &i.service == service)
            .partition(|i| current(i) && !is_canary(i));
        let (canary_instances, superseded): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) =
            others.into_iter().partition(|i| is_canary(i));
        let serving_ready = mine.iter().any(|i| {
            registered
                .get(&i.id)
                .is_some_and(|(_, state)| *state == InstanceState::Ready)
        });
        for instance in superseded {
            if wanted == 0 || (serving_ready && !owners.contains(&instance.id)) {
                actions.push(Action::Stop {
                    instance: instance.id.clone(),
                    reason: if wanted == 0 {
                        StopReason::ScaledDown
                    } else {
                        StopReason::Superseded
                    },
                });
            }
        }
        let paced = pacing.get(service).copied().unwrap_or_default();
        converge_count(&mut actions, service, None, &mut mine, wanted, paced, now_ms);
        if let Some((revision, wanted)) = canary {
            let mut canary_instances = canary_instances;
            converge_count(
                &mut actions,
                service,
                Some(revision),
                &mut canary_instances,
                wanted,
                paced,
                now_ms,
            );
        }
    }

    for instance in unwanted {
        actions.push(Action::Stop {
            instance: instance.id.clone(),
            reason: StopReason::ServiceDeleted,
        });
    }
    actions
}
