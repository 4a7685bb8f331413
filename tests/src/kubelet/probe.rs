//! The kubelet's rules for one container's probes, pure: which probes run
//! (the startup probe until it first succeeds, then readiness and liveness),
//! what their results mean with their thresholds (started; ready after
//! `successThreshold` successes in a row and not ready after
//! `failureThreshold` failures in a row; restart after `failureThreshold`
//! startup or liveness failures in a row), and a fresh start after a restart.
//! Timing (periods, initial delays, timeouts) is the shell's.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// The three probes of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Readiness => "readiness",
            Kind::Liveness => "liveness",
        }
    }
}

/// A probe's timing and thresholds, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub fn of(probe: &Probe) -> Schedule {
        let seconds = |value: Option<i32>, default: i32| Duration::from_secs(value.unwrap_or(default).max(0) as u64);
        let count = |value: Option<i32>, default: i32| value.unwrap_or(default).max(1) as u32;
        Schedule {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10),
            timeout: seconds(probe.timeout_seconds, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }

    /// How long the probe may keep failing before its verdict: what a startup
    /// probe gives a container to start.
    pub fn budget(&self) -> Duration {
        self.initial_delay + self.period * self.failure_threshold
    }
}

/// Consecutive results of one probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    fn record(&mut self, ok: bool) {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
    }
}

/// What a result asks of the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do (the state may have changed: see `started`, `ready`).
    Continue,
    /// Kill the container and start it again, for this reason.
    Restart(String),
}

/// One container's probe state since it (re)started.
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    startup: Option<Schedule>,
    readiness: Option<Schedule>,
    liveness: Option<Schedule>,
    streaks: [Streak; 3],
    started: bool,
    ready: bool,
}

impl ContainerProbes {
    pub fn new(startup: Option<Schedule>, readiness: Option<Schedule>, liveness: Option<Schedule>) -> Self {
        let mut probes = ContainerProbes {
            startup,
            readiness,
            liveness,
            streaks: [Streak::default(); 3],
            started: false,
            ready: false,
        };
        probes.restart();
        probes
    }

    pub fn schedule(&self, kind: Kind) -> Option<Schedule> {
        match kind {
            Kind::Startup => self.startup,
            Kind::Readiness => self.readiness,
            Kind::Liveness => self.liveness,
        }
    }

    /// Whether `kind` is probed now.
    pub fn runs(&self, kind: Kind) -> bool {
        self.schedule(kind).is_some()
            && match kind {
                Kind::Startup => !self.started,
                Kind::Readiness | Kind::Liveness => self.started,
            }
    }

    pub fn started(&self) -> bool {
        self.started
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The container (re)started: nothing is known of it yet. Without a startup
    /// probe it counts as started; without a readiness probe, ready once started.
    pub fn restart(&mut self) {
        self.streaks = [Streak::default(); 3];
        self.started = self.startup.is_none();
        self.ready = self.started && self.readiness.is_none();
    }

    /// The container stopped: not ready, whatever the probes said.
    pub fn stopped(&mut self) {
        self.ready = false;
    }

    /// One result of probe `kind` (`Err`: why it failed).
    pub fn record(&mut self, kind: Kind, result: Result<(), String>) -> Verdict {
        let Some(schedule) = self.schedule(kind) else {
            return Verdict::Continue;
        };
        if !self.runs(kind) {
            return Verdict::Continue;
        }
        let streak = &mut self.streaks[kind as usize];
        streak.record(result.is_ok());
        let Streak { successes, failures } = *streak;
        match (kind, result) {
            (Kind::Startup, Ok(())) => {
                self.started = true;
                self.ready = self.readiness.is_none();
                Verdict::Continue
            }
            (Kind::Readiness, Ok(())) => {
                if successes >= schedule.success_threshold {
                    self.ready = true;
                }
                Verdict::Continue
            }
            (Kind::Liveness, Ok(())) => Verdict::Continue,
            (Kind::Readiness, Err(_)) => {
                if failures >= schedule.failure_threshold {
                    self.ready = false;
                }
                Verdict::Continue
            }
            (Kind::Startup | Kind::Liveness, Err(error)) if failures >= schedule.failure_threshold => {
                self.ready = false;
                Verdict::Restart(format!(
                    "{} probe failed {failures} times in a row: {error}",
                    kind.name()
                ))
            }
            (Kind::Startup | Kind::Liveness, Err(_)) => Verdict::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(success: u32, failure: u32) -> Option<Schedule> {
        Some(Schedule {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        })
    }

    fn failed() -> Result<(), String> {
        Err("HTTP 503".into())
    }

    #[test]
    fn defaults_are_kubernetes_and_the_budget_is_period_times_threshold() {
        let probe: Probe =
            serde_json::from_value(serde_json::json!({"periodSeconds": 2, "failureThreshold": 70})).unwrap();
        let schedule = Schedule::of(&probe);
        assert_eq!(
            (schedule.timeout, schedule.success_threshold),
            (Duration::from_secs(1), 1)
        );
        assert_eq!(schedule.budget(), Duration::from_secs(140));
        let defaults = Schedule::of(&Probe::default());
        assert_eq!(
            (defaults.period, defaults.failure_threshold),
            (Duration::from_secs(10), 3)
        );
    }

    #[test]
    fn only_the_startup_probe_runs_until_it_succeeds() {
        let mut probes = ContainerProbes::new(schedule(1, 3), schedule(1, 2), schedule(1, 3));
        assert!(probes.runs(Kind::Startup) && !probes.runs(Kind::Readiness) && !probes.runs(Kind::Liveness));
        assert_eq!(
            probes.record(Kind::Liveness, failed()),
            Verdict::Continue,
            "not yet probed"
        );
        assert_eq!(probes.record(Kind::Startup, failed()), Verdict::Continue);
        assert_eq!(probes.record(Kind::Startup, Ok(())), Verdict::Continue);
        assert!(probes.started() && !probes.ready(), "ready only once readiness says so");
        assert!(!probes.runs(Kind::Startup) && probes.runs(Kind::Readiness) && probes.runs(Kind::Liveness));
        probes.record(Kind::Readiness, Ok(()));
        assert!(probes.ready());
    }

    #[test]
    fn a_startup_probe_that_keeps_failing_restarts_the_container() {
        let mut probes = ContainerProbes::new(schedule(1, 3), schedule(1, 2), schedule(1, 3));
        probes.record(Kind::Startup, failed());
        probes.record(Kind::Startup, failed());
        assert_eq!(
            probes.record(Kind::Startup, failed()),
            Verdict::Restart("startup probe failed 3 times in a row: HTTP 503".into())
        );
    }

    #[test]
    fn readiness_follows_its_thresholds_and_liveness_restarts_only_after_its_own() {
        let mut probes = ContainerProbes::new(None, schedule(2, 2), schedule(1, 3));
        assert!(probes.started(), "no startup probe: started at once");
        probes.record(Kind::Readiness, Ok(()));
        assert!(!probes.ready(), "two successes needed");
        probes.record(Kind::Readiness, Ok(()));
        assert!(probes.ready());
        probes.record(Kind::Readiness, failed());
        assert!(probes.ready(), "one failure of two");
        probes.record(Kind::Readiness, failed());
        assert!(!probes.ready());

        assert_eq!(probes.record(Kind::Liveness, failed()), Verdict::Continue);
        assert_eq!(probes.record(Kind::Liveness, failed()), Verdict::Continue);
        assert_eq!(
            probes.record(Kind::Liveness, Ok(())),
            Verdict::Continue,
            "a success breaks the streak"
        );
        probes.record(Kind::Liveness, failed());
        probes.record(Kind::Liveness, failed());
        assert!(
            matches!(probes.record(Kind::Liveness, failed()), Verdict::Restart(reason) if reason.starts_with("liveness probe failed 3 times"))
        );
        probes.restart();
        assert!(probes.started() && !probes.ready());
    }

    #[test]
    fn without_probes_a_started_container_is_ready_until_it_stops() {
        let mut probes = ContainerProbes::new(None, None, None);
        assert!(probes.started() && probes.ready());
        probes.stopped();
        assert!(!probes.ready());
    }
}
