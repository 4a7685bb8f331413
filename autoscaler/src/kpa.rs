//! The scaling decision, in the style of Knative's KPA: from one service's load (windowed
//! in-flight requests), its ready instances and its settings to a desired instance count
//! and the reason for it. Pure: no I/O and no clock; the collector feeds it and writes out
//! its answers.

use std::fmt;
use std::time::Duration;

use crate::settings::ScalingSettings;
use crate::window::{Timestamp, Window};

/// What the service's ready instances reported at one tick, summed over the instances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests in flight right now.
    pub concurrency: f64,
    /// Requests completed per second since the previous scrape.
    pub requests_per_second: f64,
}

/// One tick's input to [`Kpa::decide`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// `None` when nothing could be measured: no instance is ready, or every scrape failed.
    pub load: Option<Load>,
    pub ready_instances: u32,
    /// A request arrived while the service had no instance (the gateway holds it).
    pub poked: bool,
}

impl Observation {
    pub fn measured(concurrency: f64, requests_per_second: f64, ready_instances: u32) -> Self {
        Observation {
            load: Some(Load {
                concurrency,
                requests_per_second,
            }),
            ready_instances,
            poked: false,
        }
    }

    pub fn unmeasured(ready_instances: u32) -> Self {
        Observation {
            load: None,
            ready_instances,
            poked: false,
        }
    }

    pub fn with_poke(self) -> Self {
        Observation { poked: true, ..self }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub previous: u32,
    /// Why the count changed; `Some` exactly when `desired != previous`.
    pub reason: Option<Reason>,
    pub panicking: bool,
    /// Average in-flight requests over the stable and panic windows, for dashboards.
    pub stable_concurrency: Option<f64>,
    pub panic_concurrency: Option<f64>,
}

impl Decision {
    pub fn changed(&self) -> bool {
        self.desired != self.previous
    }
}

/// Why a decision changed the desired count. `Display` gives the sentence written to the
/// registry and shown to users.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Initial {
        scale: u32,
    },
    ScaleToZero {
        grace: Duration,
    },
    Poke {
        limit: Option<Limit>,
    },
    Stable {
        average: f64,
        window: Duration,
        target: f64,
        limit: Option<Limit>,
    },
    Panic {
        average: f64,
        window: Duration,
        ready: u32,
        target: f64,
        limit: Option<Limit>,
    },
    /// No measurement to go on; only the min/max bounds moved the count.
    Bounds {
        limit: Limit,
    },
}

/// The bound that settled the count when the load alone would have asked for another one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    ScaleUpRate(f64),
    ScaleDownRate(f64),
    MinScale(u32),
    MaxScale(u32),
    /// Below one instance only through the grace period, never through a window average.
    KeepOne {
        grace: Duration,
    },
}

/// One service's autoscaler state: its window of samples, the count it last asked for,
/// its panic mode and when it last saw traffic.
#[derive(Debug, Clone)]
pub struct Kpa {
    window: Window,
    desired: u32,
    panic: Option<Panic>,
    last_traffic: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Panic {
    /// The last tick whose panic window met the threshold; panic ends a stable window later.
    last_over: Timestamp,
    /// The highest count asked for during this panic: panic mode never scales down.
    max_desired: u32,
}

/// What the load asked for, before the poke, min and max bounds.
enum Basis {
    Hold,
    Poke,
    Stable { average: f64, limit: Option<Limit> },
    Panic { average: f64, limit: Option<Limit> },
}

impl Kpa {
    /// A newly deployed service: the initial scale (clamped to min/max) so discovery can run.
    pub fn deploy(settings: &ScalingSettings, now: Timestamp) -> (Kpa, Decision) {
        let desired = settings.initial_scale.max(settings.min_scale).min(settings.max_scale);
        let kpa = Kpa {
            window: Window::new(),
            desired,
            panic: None,
            last_traffic: now,
        };
        let decision = Decision {
            desired,
            previous: 0,
            reason: (desired != 0).then_some(Reason::Initial { scale: desired }),
            panicking: false,
            stable_concurrency: None,
            panic_concurrency: None,
        };
        (kpa, decision)
    }

    /// Picks up a service that already runs `desired` instances (a new Raft leader, a
    /// restarted autoscaler). Like Knative, it starts in panic mode when more than one
    /// instance runs: with no history the windows would read as idle and scale a loaded
    /// service down, so the count is held for one stable window while history builds up.
    pub fn resume(desired: u32, now: Timestamp) -> Kpa {
        let panic = (desired > 1).then_some(Panic {
            last_over: now,
            max_desired: desired,
        });
        Kpa {
            window: Window::new(),
            desired,
            panic,
            last_traffic: now,
        }
    }

    pub fn desired(&self) -> u32 {
        self.desired
    }

    pub fn is_panicking(&self) -> bool {
        self.panic.is_some()
    }

    /// Records this tick's observation and decides the desired count. Expects settings that
    /// passed [`ScalingSettings::validate`]; with others the count is unspecified but the
    /// call still never panics.
    pub fn decide(&mut self, observation: &Observation, settings: &ScalingSettings, now: Timestamp) -> Decision {
        let previous = self.desired;
        let stable_window = settings.effective_stable_window();
        let panic_window = settings.effective_panic_window();
        if let Some(load) = observation.load {
            self.window.record(now, load.concurrency.max(0.0));
        }
        self.window.prune(now, stable_window);
        let stable_average = self.window.average(now, stable_window);
        let panic_average = self.window.average(now, panic_window);

        let ready = observation.ready_instances;
        let busy = observation
            .load
            .is_some_and(|load| load.concurrency > 0.0 || load.requests_per_second > 0.0);
        // An instance that is starting cannot report the requests the gateway holds for it,
        // and a failed scrape says nothing: both count as traffic, so neither can send a
        // service to zero.
        let starting = previous > 0 && ready == 0;
        let unmeasured = previous > 0 && ready > 0 && observation.load.is_none();
        let traffic = observation.poked || busy || starting || unmeasured;
        if traffic {
            self.last_traffic = now;
        }

        let idle_for = now.saturating_since(self.last_traffic);
        if settings.min_scale == 0 && !traffic && idle_for >= settings.scale_to_zero_grace {
            // Idleness through the whole grace period is a stronger signal than any window
            // average, so this bypasses the scale-down rate and ends a panic.
            self.panic = None;
            self.desired = 0;
            let reason = (previous != 0).then_some(Reason::ScaleToZero {
                grace: settings.scale_to_zero_grace,
            });
            return self.decision(previous, reason, stable_average, panic_average);
        }

        let (count, basis) = if previous == 0 && observation.poked {
            // Wake at once with one instance; the windows hold history from before the
            // service went idle, and take over once the instance reports its load.
            (1, Basis::Poke)
        } else if previous == 0 && !busy {
            (0, Basis::Hold)
        } else if let Some(stable_average) = stable_average {
            self.windowed_count(stable_average, panic_average, previous, ready, settings, now)
        } else {
            // No sample in the whole stable window (just deployed, every scrape failing): hold.
            (previous, Basis::Hold)
        };

        let floor = if previous > 0 || traffic {
            settings.min_scale.max(1)
        } else {
            settings.min_scale
        };
        let (count, limit) = bound(count, floor, settings);
        self.desired = count;
        let reason = (count != previous).then(|| explain(basis, limit, settings, ready));
        self.decision(previous, reason, stable_average, panic_average)
    }

    /// The count the windows ask for, rate-limited, with panic mode entered, held or left.
    fn windowed_count(
        &mut self,
        stable_average: f64,
        panic_average: Option<f64>,
        previous: u32,
        ready: u32,
        settings: &ScalingSettings,
        now: Timestamp,
    ) -> (u32, Basis) {
        // With no ready instance the capacity to compare against is one, as in Knative.
        let capacity = f64::from(ready.max(1));
        let up_limit = to_count((settings.max_scale_up_rate * capacity).ceil());
        let down_limit = to_count((capacity / settings.max_scale_down_rate).floor());
        // The limits bound how far one decision moves from the ready capacity, and never push
        // the count the other way: a scale-down still draining instances must not read as a
        // reason to scale up.
        let lower = previous.min(down_limit);
        let upper = previous.max(up_limit);
        let rate_limit = |want: u32| {
            if want > upper {
                (upper, Some(Limit::ScaleUpRate(settings.max_scale_up_rate)))
            } else if want < lower {
                (lower, Some(Limit::ScaleDownRate(settings.max_scale_down_rate)))
            } else {
                (want, None)
            }
        };

        let stable_want = instances_for(stable_average, settings.target_concurrency);
        let panic_want = panic_average.map(|average| instances_for(average, settings.target_concurrency));
        let over_threshold = panic_want.is_some_and(|want| f64::from(want) / capacity >= settings.panic_threshold);
        let stable_window = settings.effective_stable_window();
        self.panic = match self.panic {
            None if over_threshold => Some(Panic {
                last_over: now,
                max_desired: previous,
            }),
            Some(panic) if over_threshold => Some(Panic {
                last_over: now,
                ..panic
            }),
            Some(panic) if now.saturating_since(panic.last_over) >= stable_window => None,
            unchanged => unchanged,
        };

        let (stable_count, stable_limit) = rate_limit(stable_want);
        let Some(panic) = self.panic.as_mut() else {
            return (
                stable_count,
                Basis::Stable {
                    average: stable_average,
                    limit: stable_limit,
                },
            );
        };
        // Provision for the larger of the two windows: after a burst the stable average can
        // exceed the panic one.
        let (panic_count, panic_limit) = rate_limit(panic_want.unwrap_or(0));
        let (count, limit) = if panic_count >= stable_count {
            (panic_count, panic_limit)
        } else {
            (stable_count, stable_limit)
        };
        panic.max_desired = panic.max_desired.max(count);
        let average = panic_average.unwrap_or(stable_average);
        (panic.max_desired, Basis::Panic { average, limit })
    }

    fn decision(
        &self,
        previous: u32,
        reason: Option<Reason>,
        stable_concurrency: Option<f64>,
        panic_concurrency: Option<f64>,
    ) -> Decision {
        debug_assert_eq!(reason.is_some(), self.desired != previous);
        Decision {
            desired: self.desired,
            previous,
            reason,
            panicking: self.panic.is_some(),
            stable_concurrency,
            panic_concurrency,
        }
    }
}

/// Applies the floor (min scale, or one while the service is awake) and max scale.
fn bound(count: u32, floor: u32, settings: &ScalingSettings) -> (u32, Option<Limit>) {
    if count > settings.max_scale {
        return (settings.max_scale, Some(Limit::MaxScale(settings.max_scale)));
    }
    if count < floor {
        let limit = if floor == settings.min_scale {
            Limit::MinScale(floor)
        } else {
            Limit::KeepOne {
                grace: settings.scale_to_zero_grace,
            }
        };
        return (floor.min(settings.max_scale), Some(limit));
    }
    (count, None)
}

fn explain(basis: Basis, bound: Option<Limit>, settings: &ScalingSettings, ready: u32) -> Reason {
    let target = settings.target_concurrency;
    match basis {
        Basis::Poke => Reason::Poke { limit: bound },
        Basis::Stable { average, limit } => Reason::Stable {
            average,
            window: settings.effective_stable_window(),
            target,
            limit: bound.or(limit),
        },
        Basis::Panic { average, limit } => Reason::Panic {
            average,
            window: settings.effective_panic_window(),
            ready,
            target,
            limit: bound.or(limit),
        },
        // A hold changes the count only through a bound.
        Basis::Hold => Reason::Bounds {
            limit: bound.unwrap_or(Limit::MaxScale(settings.max_scale)),
        },
    }
}

/// Instances needed to carry `average` requests at `target` each.
fn instances_for(average: f64, target: f64) -> u32 {
    to_count((average / target).ceil())
}

/// A non-negative float to a count; `as` saturates and maps NaN to zero, so this never panics.
fn to_count(value: f64) -> u32 {
    value.max(0.0) as u32
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Initial { scale } => write!(f, "initial scale {scale} on deploy")?,
            Reason::ScaleToZero { grace } => write!(f, "scale to zero after {} without traffic", Seconds(*grace))?,
            Reason::Poke { .. } => write!(f, "request arrived at zero: scale from zero")?,
            Reason::Stable {
                average,
                window,
                target,
                ..
            } => write!(
                f,
                "stable: {average:.1} in flight over {} at target {target} per instance",
                Seconds(*window)
            )?,
            Reason::Panic {
                average,
                window,
                ready,
                target,
                ..
            } => write!(
                f,
                "panic: {average:.1} in flight over {} vs capacity {} ({ready} ready x {target} per instance)",
                Seconds(*window),
                f64::from(*ready) * target,
            )?,
            Reason::Bounds { limit } => return write!(f, "no load measured yet; {limit}"),
        }
        match self {
            Reason::Poke { limit: Some(limit) }
            | Reason::Stable { limit: Some(limit), .. }
            | Reason::Panic { limit: Some(limit), .. } => write!(f, ", {limit}"),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::ScaleUpRate(rate) => write!(f, "limited by max scale-up rate {rate}x"),
            Limit::ScaleDownRate(rate) => write!(f, "limited by max scale-down rate {rate}x"),
            Limit::MinScale(min) => write!(f, "raised to min scale {min}"),
            Limit::MaxScale(max) => write!(f, "capped at max scale {max}"),
            Limit::KeepOne { grace } => write!(f, "kept at 1 until {} without traffic", Seconds(*grace)),
        }
    }
}

/// A duration as users write it: "60s", "1.5s".
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}s", self.0.as_secs_f64())
        }
    }
}

#[cfg(test)]
#[path = "kpa_tests.rs"]
mod tests;
