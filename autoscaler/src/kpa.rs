//! The scaling decision, after Knative's KPA: from one service's load (windowed in-flight
//! requests, plus the requests the gateway holds while nothing is ready), its ready
//! instances and its settings to a desired instance count and the reason for it. It also
//! owns the service's idle-time histogram and, with the histogram policy, keeps the last
//! instance only where the next request is expected. Pure: no I/O and no clock; the
//! collector feeds it and writes out its answers.

use std::fmt;
use std::time::Duration;

use crate::idle::{IdleHistogram, Prediction};
use crate::settings::{KeepAlive, ScalingSettings};
use crate::timer_wake::TimerDue;
use crate::window::{Timestamp, Window};

/// What the service's ready instances reported at one tick, summed over the instances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests in flight right now.
    pub concurrency: f64,
    /// Requests completed per second since the previous scrape.
    pub requests_per_second: f64,
}

/// One tick's (or one poke's) input to [`Kpa::decide`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// `None` when nothing could be measured: no instance is ready, or every scrape failed.
    pub load: Option<Load>,
    pub ready_instances: u32,
    /// Requests the gateway holds because no instance is ready to take them, as it last
    /// reported (with its poke, then every second while they wait). They are in flight
    /// as far as the client is concerned, so they count as concurrency, as the requests
    /// Knative's activator buffers do.
    pub held: u32,
    /// What the held work is: requests at the gateway, or events for the service's
    /// event-log subscriptions (one unit of work, however many events).
    pub wake: Wake,
    /// The service's earliest pending timer, if it has one: an instance runs once
    /// it is due within the service's cold start.
    pub timer: Option<TimerDue>,
}

/// What wakes a service at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wake {
    /// Requests held at the gateway.
    #[default]
    Requests,
    /// Events written to an event log the service subscribes to: delivering them is
    /// work, as a request is (Knative's eventing delivers each event as a request).
    Events,
}

impl Observation {
    pub fn measured(concurrency: f64, requests_per_second: f64, ready_instances: u32) -> Self {
        Observation {
            load: Some(Load {
                concurrency,
                requests_per_second,
            }),
            ready_instances,
            held: 0,
            wake: Wake::Requests,
            timer: None,
        }
    }

    pub fn unmeasured(ready_instances: u32) -> Self {
        Observation {
            load: None,
            ready_instances,
            held: 0,
            wake: Wake::Requests,
            timer: None,
        }
    }

    pub fn with_held(self, held: u32) -> Self {
        Observation { held, ..self }
    }

    pub fn with_wake(self, wake: Wake) -> Self {
        Observation { wake, ..self }
    }

    pub fn with_timer(self, timer: Option<TimerDue>) -> Self {
        Observation { timer, ..self }
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
    /// Requests are held at the gateway while nothing is ready: sized by how many (the
    /// latest report, and the window's average of the reports when it differs).
    FromZero {
        held: u32,
        wake: Wake,
        average: f64,
        window: Duration,
        target: f64,
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
    /// The stable window averaged zero and the grace after it passed.
    ScaleToZero { window: Duration, grace: Duration },
    /// The idle-time histogram expects no request before the pre-warm.
    UntilPrewarm { prewarm: Duration },
    /// The idle-time histogram expects a request soon: one instance, started ahead of it.
    Prewarm { prewarm: Duration, keep_alive: Duration },
    /// No request came within the histogram's keep-alive window.
    KeepAliveEnded { idle: Duration },
    /// The service's earliest timer is due within its cold start: one instance, so the
    /// timer's call is made on time.
    TimerDue(TimerDue),
    /// No measurement to go on; only the min/max bounds moved the count.
    Bounds { limit: Limit },
}

/// The bound that settled the count when the load alone would have asked for another one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    ScaleUpRate(f64),
    ScaleDownRate(f64),
    MinScale(u32),
    MaxScale(u32),
    /// The stable window still holds traffic, so its average (Knative's measure of
    /// time-averaged concurrency) is above zero: one instance stays.
    TrafficInWindow {
        window: Duration,
    },
    /// The windows ask for zero; one instance stays through the grace.
    Grace {
        grace: Duration,
    },
}

/// One service's autoscaler state: its window of samples, the count it last asked for,
/// its panic mode, when it last saw traffic, and its idle-time histogram.
#[derive(Debug, Clone)]
pub struct Kpa {
    window: Window,
    desired: u32,
    panic: Option<Panic>,
    /// The last tick with traffic, or with an instance starting or not measurable.
    last_traffic: Timestamp,
    /// The last tick that saw requests; `None` until one is seen.
    last_invocation: Option<Timestamp>,
    /// A tick without requests came after `last_invocation`: the next request ends an
    /// idle time.
    idle_since_invocation: bool,
    /// Since when the windows have asked for zero (Knative: the revision went inactive);
    /// the grace counts from here.
    inactive_since: Option<Timestamp>,
    idle_times: IdleHistogram,
    idle_times_changed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Panic {
    /// The last tick whose panic window met the threshold; panic ends once a stable
    /// window has passed since it.
    last_over: Timestamp,
    /// The highest count asked for during this panic: panic mode never scales down.
    max_desired: u32,
}

/// What asked for the count, before the min and max bounds.
#[derive(Debug, Clone, Copy)]
enum Basis {
    Hold,
    Stable { average: f64, limit: Option<Limit> },
    Panic { average: f64, limit: Option<Limit> },
    ScaleToZero,
    UntilPrewarm { prewarm: Duration },
    Prewarm { prewarm: Duration, keep_alive: Duration },
    KeepAliveEnded { idle: Duration },
    TimerDue(TimerDue),
}

impl Kpa {
    /// Picks up a service that runs `desired` instances: a new deploy (the registry asks
    /// for its initial scale), a new Raft leader, a restarted autoscaler. Like Knative, it
    /// starts in panic mode when more than one instance runs: with no history the windows
    /// would read as idle and scale a loaded service down, so the count is held for one
    /// stable window while history builds up.
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
            last_invocation: None,
            idle_since_invocation: false,
            inactive_since: None,
            idle_times: IdleHistogram::new(),
            idle_times_changed: false,
        }
    }

    /// Starts from a stored idle-time histogram (kept in the registry across failovers).
    pub fn with_idle_times(self, idle_times: IdleHistogram) -> Kpa {
        Kpa { idle_times, ..self }
    }

    /// Takes over a count someone else wrote (an operator, a bounds change): as
    /// [`Kpa::resume`], but the windows and the idle-time histogram are kept.
    pub fn adopt(&mut self, desired: u32, now: Timestamp) {
        let fresh = Kpa::resume(desired, now);
        self.desired = fresh.desired;
        self.panic = fresh.panic;
        self.inactive_since = None;
    }

    pub fn desired(&self) -> u32 {
        self.desired
    }

    pub fn is_panicking(&self) -> bool {
        self.panic.is_some()
    }

    pub fn idle_times(&self) -> &IdleHistogram {
        &self.idle_times
    }

    /// Whether an idle time was recorded since the last call: the histogram needs storing.
    pub fn take_idle_times_changed(&mut self) -> bool {
        std::mem::take(&mut self.idle_times_changed)
    }

    /// Records this observation and decides the desired count. Expects settings that
    /// passed [`ScalingSettings::validate`]; with others the count is unspecified but the
    /// call still never panics.
    pub fn decide(&mut self, observation: &Observation, settings: &ScalingSettings, now: Timestamp) -> Decision {
        let previous = self.desired;
        let stable_window = settings.effective_stable_window();
        let panic_window = settings.effective_panic_window();
        let held = f64::from(observation.held);
        let concurrency = match observation.load {
            Some(load) => Some(load.concurrency.max(0.0) + held),
            None => (observation.held > 0).then_some(held),
        };
        if let Some(concurrency) = concurrency {
            self.window.record(now, concurrency);
        }
        self.window.prune(now, stable_window);
        let stable_average = self.window.average(now, stable_window);
        let panic_average = self.window.average(now, panic_window);

        let ready = observation.ready_instances;
        let invoked = observation.held > 0
            || observation
                .load
                .is_some_and(|load| load.concurrency > 0.0 || load.requests_per_second > 0.0);
        // An instance that is starting cannot report the requests waiting for it, and a
        // failed scrape says nothing: both count as traffic, so neither sends a service to
        // zero.
        let starting = previous > 0 && ready == 0;
        let unmeasured = previous > 0 && ready > 0 && concurrency.is_none();
        self.note_invocation(invoked, now);
        if invoked || starting || unmeasured {
            self.last_traffic = now;
        }

        let (count, basis) = if previous == 0 && concurrency.is_none() {
            (0, Basis::Hold)
        } else if let Some(stable_average) = stable_average {
            self.windowed_count(stable_average, panic_average, previous, ready, settings, now)
        } else {
            // No sample in the whole stable window (instances starting, every scrape
            // failing): hold.
            (previous, Basis::Hold)
        };
        let busy = invoked || unmeasured;
        let (count, basis) = self.last_instance(count, basis, previous, busy, observation.timer, settings, now);
        let (count, limit) = bound(count, settings);
        if count == 0 && previous != 0 {
            // What the windows held is over: the next request sizes the next step alone.
            self.window = Window::new();
            self.panic = None;
            self.inactive_since = None;
        }
        self.desired = count;
        let reason = (count != previous).then(|| explain(basis, limit, settings, ready, observation));
        self.decision(previous, reason, stable_average, panic_average)
    }

    /// Counts idle times for the histogram: a tick with requests after one without ends
    /// an idle time.
    fn note_invocation(&mut self, invoked: bool, now: Timestamp) {
        if !invoked {
            self.idle_since_invocation |= self.last_invocation.is_some();
            return;
        }
        if let (Some(last), true) = (self.last_invocation, self.idle_since_invocation) {
            self.idle_times.record(now.saturating_since(last));
            self.idle_times_changed = true;
        }
        self.last_invocation = Some(now);
        self.idle_since_invocation = false;
    }

    /// The count the windows ask for (Knative's decider): rate-limited, with panic mode
    /// entered, held or left.
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
            // Strictly after a stable window, as Knative's `panicTime.Add(window).Before(now)`.
            Some(panic) if now.saturating_since(panic.last_over) > stable_window => None,
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

    /// The last instance: whether the service keeps one, goes to zero, or gets one ahead
    /// of an expected request or a due timer. Above one instance, in panic mode or with a
    /// min scale, the windows' count stands.
    #[allow(clippy::too_many_arguments)]
    fn last_instance(
        &mut self,
        count: u32,
        basis: Basis,
        previous: u32,
        busy: bool,
        timer: Option<TimerDue>,
        settings: &ScalingSettings,
        now: Timestamp,
    ) -> (u32, Basis) {
        if count > 1 || settings.min_scale > 0 || self.panic.is_some() {
            self.inactive_since = None;
            return (count, basis);
        }
        // A timer due within the cold start needs an instance whatever the windows say;
        // once its call is made the sidecar reports the next one, and the windows and
        // the grace take the service back to zero.
        if let Some(timer) = timer.filter(TimerDue::wakes) {
            self.inactive_since = None;
            return match count {
                0 => (1, Basis::TimerDue(timer)),
                _ => (count, basis),
            };
        }
        // The histogram only ever moves the last instance: a step down from more goes
        // through the windows and their rate limit first.
        if let Some(predicted) = self.predicted(settings, busy, now).filter(|_| previous <= 1) {
            self.inactive_since = None;
            return predicted;
        }
        if count == 1 || previous == 0 {
            self.inactive_since = None;
            return (count, basis);
        }
        // The windows ask for zero. Knative's stable average stays above zero while any
        // traffic is in the window (its concurrency is time-averaged; a sampled gauge
        // misses short requests), so the window must have seen none at all.
        let window = settings.effective_stable_window();
        if now.saturating_since(self.last_traffic) < window {
            self.inactive_since = None;
            return (1, with_limit(basis, Limit::TrafficInWindow { window }));
        }
        // Then Knative's grace, on top of the window.
        let inactive_since = *self.inactive_since.get_or_insert(now);
        if now.saturating_since(inactive_since) >= settings.scale_to_zero_grace {
            return (0, Basis::ScaleToZero);
        }
        let grace = settings.scale_to_zero_grace;
        (1, with_limit(basis, Limit::Grace { grace }))
    }

    /// The histogram policy's count for an idle service with a predictable pattern.
    fn predicted(&self, settings: &ScalingSettings, busy: bool, now: Timestamp) -> Option<(u32, Basis)> {
        let KeepAlive::Histogram(policy) = settings.keep_alive else {
            return None;
        };
        if busy {
            return None;
        }
        let last = self.last_invocation?;
        let Prediction::Windows { prewarm, keep_alive } = self.idle_times.predict(&policy) else {
            return None;
        };
        let idle = now.saturating_since(last);
        Some(if idle < prewarm {
            (0, Basis::UntilPrewarm { prewarm })
        } else if idle < prewarm + keep_alive {
            (1, Basis::Prewarm { prewarm, keep_alive })
        } else {
            (
                0,
                Basis::KeepAliveEnded {
                    idle: prewarm + keep_alive,
                },
            )
        })
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

/// The windowed basis with the limit that kept one instance.
fn with_limit(basis: Basis, limit: Limit) -> Basis {
    match basis {
        Basis::Stable { average, .. } => Basis::Stable {
            average,
            limit: Some(limit),
        },
        other => other,
    }
}

/// Applies min and max scale.
fn bound(count: u32, settings: &ScalingSettings) -> (u32, Option<Limit>) {
    if count > settings.max_scale {
        return (settings.max_scale, Some(Limit::MaxScale(settings.max_scale)));
    }
    if count < settings.min_scale {
        return (settings.min_scale, Some(Limit::MinScale(settings.min_scale)));
    }
    (count, None)
}

fn explain(
    basis: Basis,
    bound: Option<Limit>,
    settings: &ScalingSettings,
    ready: u32,
    observation: &Observation,
) -> Reason {
    let target = settings.target_concurrency;
    let Observation { held, wake, .. } = *observation;
    match basis {
        // Nothing is ready: the held requests are the load.
        Basis::Stable { average, limit } if ready == 0 && held > 0 => Reason::FromZero {
            held,
            wake,
            average,
            window: settings.effective_stable_window(),
            target,
            limit: bound.or(limit),
        },
        Basis::Panic { average, limit } if ready == 0 && held > 0 => Reason::FromZero {
            held,
            wake,
            average,
            window: settings.effective_panic_window(),
            target,
            limit: bound.or(limit),
        },
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
        Basis::ScaleToZero => Reason::ScaleToZero {
            window: settings.effective_stable_window(),
            grace: settings.scale_to_zero_grace,
        },
        Basis::UntilPrewarm { prewarm } => Reason::UntilPrewarm { prewarm },
        Basis::Prewarm { prewarm, keep_alive } => Reason::Prewarm { prewarm, keep_alive },
        Basis::KeepAliveEnded { idle } => Reason::KeepAliveEnded { idle },
        Basis::TimerDue(timer) => Reason::TimerDue(timer),
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
            Reason::FromZero { wake: Wake::Events, .. } => {
                return f.write_str("scale from zero: events arrived for its event-log subscriptions")
            }
            Reason::FromZero {
                held,
                average,
                window,
                target,
                ..
            } => {
                let requests = if *held == 1 { "request" } else { "requests" };
                write!(f, "scale from zero: {held} {requests} held at the gateway")?;
                if (average - f64::from(*held)).abs() > f64::EPSILON {
                    write!(f, ", {average:.1} on average over {},", Seconds(*window))?;
                }
                write!(f, " at target {target} per instance")?
            }
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
            Reason::ScaleToZero { window, grace } => {
                return write!(
                    f,
                    "scale to zero: no traffic over the {} stable window, then the {} grace",
                    Seconds(*window),
                    Seconds(*grace)
                )
            }
            Reason::UntilPrewarm { prewarm } => {
                return write!(
                    f,
                    "idle-time histogram: no instance until the pre-warm at {} idle",
                    Seconds(*prewarm)
                )
            }
            Reason::Prewarm { prewarm, keep_alive } => {
                return write!(
                    f,
                    "idle-time histogram: pre-warm at {} idle, kept for {}",
                    Seconds(*prewarm),
                    Seconds(*keep_alive)
                )
            }
            Reason::KeepAliveEnded { idle } => {
                return write!(
                    f,
                    "idle-time histogram: no request within the {} keep-alive",
                    Seconds(*idle)
                )
            }
            Reason::TimerDue(timer) => {
                if timer.due_in.is_zero() {
                    return f.write_str("a timer is due now");
                }
                let assumed = if timer.learned_cold_start.is_some() {
                    "its"
                } else {
                    "an assumed"
                };
                return write!(
                    f,
                    "a timer is due in {}; started ahead of it for {assumed} {} cold start",
                    Seconds(timer.due_in),
                    Seconds(timer.cold_start())
                );
            }
            Reason::Bounds { limit } => return write!(f, "no load measured yet; {limit}"),
        }
        match self {
            Reason::FromZero { limit: Some(limit), .. }
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
            Limit::TrafficInWindow { window } => {
                write!(f, "kept at 1: traffic within the {} stable window", Seconds(*window))
            }
            Limit::Grace { grace } => write!(f, "kept at 1 through the {} scale-to-zero grace", Seconds(*grace)),
        }
    }
}

/// A duration as users write it, to a tenth of a second: "60s", "1.5s", "40.5s".
pub(crate) struct Seconds(pub(crate) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0.as_secs_f64() * 10.0).round() as u64;
        if tenths % 10 == 0 {
            write!(f, "{}s", tenths / 10)
        } else {
            write!(f, "{}.{}s", tenths / 10, tenths % 10)
        }
    }
}

#[cfg(test)]
#[path = "kpa_tests.rs"]
mod tests;
