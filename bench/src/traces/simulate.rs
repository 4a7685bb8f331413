//! Replays an arrival trace through Strata's own scaling decision (`Kpa::decide`, the code
//! the control plane runs) in simulated time: ticks every second as the autoscaler's loop,
//! pokes with the held count when a request finds no ready instance as the gateway does,
//! instances that take `cold_start` to become ready and stop at once. Hours of trace take
//! milliseconds, so every shape can run long enough for the histogram to learn.

use std::time::Duration;

use strata_autoscaler::{Kpa, Load, Observation, ScalingSettings, Timestamp, Wake};

/// How the simulated platform behaves.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// From asking for an instance until it serves (seconds).
    pub cold_start: f64,
    /// A request's time on a ready instance (seconds).
    pub service_time: f64,
}

/// What one trace cost under one policy.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: usize,
    /// Requests that found no ready instance and waited for one.
    pub cold: usize,
    pub latencies_ms: Vec<f64>,
    /// Instance lifetime, starting included.
    pub instance_seconds: f64,
    /// Time instances spent on requests.
    pub busy_seconds: f64,
}

impl Outcome {
    pub fn idle_instance_seconds(&self) -> f64 {
        (self.instance_seconds - self.busy_seconds).max(0.0)
    }

    pub fn add(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.cold += other.cold;
        self.latencies_ms.extend(other.latencies_ms);
        self.instance_seconds += other.instance_seconds;
        self.busy_seconds += other.busy_seconds;
    }
}

struct Instance {
    started: f64,
    ready: f64,
}

struct Platform {
    kpa: Kpa,
    settings: ScalingSettings,
    model: Model,
    instances: Vec<Instance>,
    /// Arrival times of requests the gateway holds.
    held: Vec<f64>,
    /// End times of requests on instances.
    in_flight: Vec<f64>,
    completed_since_tick: u32,
    outcome: Outcome,
}

impl Platform {
    fn ready(&self, now: f64) -> u32 {
        self.instances.iter().filter(|instance| instance.ready <= now).count() as u32
    }

    /// Releases held requests to the first instance that became ready, and retires
    /// finished requests.
    fn advance(&mut self, now: f64) {
        if !self.held.is_empty() {
            if let Some(first) = self
                .instances
                .iter()
                .map(|instance| instance.ready)
                .filter(|ready| *ready <= now)
                .min_by(f64::total_cmp)
            {
                for arrival in std::mem::take(&mut self.held) {
                    let served = first.max(arrival);
                    self.serve(arrival, served);
                }
            }
        }
        let before = self.in_flight.len();
        self.in_flight.retain(|end| *end > now);
        self.completed_since_tick += (before - self.in_flight.len()) as u32;
    }

    fn serve(&mut self, arrival: f64, start: f64) {
        let end = start + self.model.service_time;
        self.in_flight.push(end);
        self.outcome.latencies_ms.push((end - arrival) * 1_000.0);
        self.outcome.busy_seconds += self.model.service_time;
    }

    fn arrive(&mut self, now: f64) {
        self.advance(now);
        self.outcome.requests += 1;
        if self.ready(now) > 0 {
            self.serve(now, now);
            return;
        }
        self.outcome.cold += 1;
        self.held.push(now);
        // The gateway's poke: decided at once, with everything it holds.
        let observation = Observation::unmeasured(0).with_held(self.held.len() as u32);
        self.decide(observation, now);
    }

    fn tick(&mut self, now: f64) {
        self.advance(now);
        let ready = self.ready(now);
        let load = (ready > 0).then(|| Load {
            concurrency: self.in_flight.len() as f64,
            requests_per_second: f64::from(self.completed_since_tick),
        });
        self.completed_since_tick = 0;
        let held = if ready == 0 { self.held.len() as u32 } else { 0 };
        let observation = Observation {
            load,
            ready_instances: ready,
            held,
            wake: Wake::Requests,
            timer: None,
        };
        self.decide(observation, now);
    }

    fn decide(&mut self, observation: Observation, now: f64) {
        let at = Timestamp::from_duration(Duration::from_secs_f64(now));
        let desired = self.kpa.decide(&observation, &self.settings, at).desired as usize;
        while self.instances.len() < desired {
            self.instances.push(Instance {
                started: now,
                ready: now + self.model.cold_start,
            });
        }
        // Scale-down stops the youngest first, as the local runtime does.
        self.instances.sort_by(|a, b| a.started.total_cmp(&b.started));
        while self.instances.len() > desired {
            let stopped = self.instances.pop().expect("more instances than desired");
            self.outcome.instance_seconds += now - stopped.started;
        }
    }
}

/// Replays `arrivals` (seconds, ascending) for `duration` seconds, starting with one
/// instance ready as after a deploy.
pub fn replay(arrivals: &[f64], duration: f64, settings: &ScalingSettings, model: Model) -> Outcome {
    let mut platform = Platform {
        kpa: Kpa::resume(1, Timestamp::ZERO),
        settings: settings.clone(),
        model,
        instances: vec![Instance {
            started: 0.0,
            ready: 0.0,
        }],
        held: Vec::new(),
        in_flight: Vec::new(),
        completed_since_tick: 0,
        outcome: Outcome::default(),
    };
    let mut next = arrivals.iter().copied().peekable();
    let mut second = 1.0;
    while second <= duration {
        while let Some(at) = next.next_if(|at| *at < second) {
            platform.arrive(at);
        }
        platform.tick(second);
        second += 1.0;
    }
    platform.advance(duration + model.cold_start + model.service_time);
    let end = duration;
    for instance in &platform.instances {
        platform.outcome.instance_seconds += (end - instance.started).max(0.0);
    }
    platform.outcome
}

#[cfg(test)]
mod tests {
    use strata_autoscaler::{HistogramPolicy, KeepAlive};

    use super::*;

    const MODEL: Model = Model {
        cold_start: 0.5,
        service_time: 0.002,
    };

    fn timer(period: f64, count: usize) -> Vec<f64> {
        (1..=count).map(|n| n as f64 * period).collect()
    }

    fn policies() -> (ScalingSettings, ScalingSettings) {
        let fixed = ScalingSettings {
            keep_alive: KeepAlive::Fixed,
            ..ScalingSettings::default()
        };
        let histogram = ScalingSettings {
            keep_alive: KeepAlive::Histogram(HistogramPolicy::default()),
            ..ScalingSettings::default()
        };
        (fixed, histogram)
    }

    #[test]
    fn a_45_second_timer_stays_warm_under_both_policies_and_the_histogram_costs_less() {
        let (fixed, histogram) = policies();
        let trace = timer(45.0, 80);
        let duration = 3_700.0;
        let kept = replay(&trace, duration, &fixed, MODEL);
        let learned = replay(&trace, duration, &histogram, MODEL);
        // Knative's policy keeps the one instance the whole hour, and 90 s (window and
        // grace) after the last request at 3,600 s.
        assert_eq!((kept.requests, kept.cold), (80, 0));
        assert!(
            (kept.instance_seconds - 3_691.0).abs() < 1.0,
            "{}",
            kept.instance_seconds
        );
        // The histogram learns in ten idle times, then keeps an instance about 13 s of
        // every 45: no cold start, far fewer instance-seconds.
        assert_eq!((learned.requests, learned.cold), (80, 0));
        assert!(
            learned.instance_seconds < 0.5 * kept.instance_seconds,
            "{} vs {}",
            learned.instance_seconds,
            kept.instance_seconds
        );
    }

    #[test]
    fn a_5_minute_timer_is_cold_every_time_under_the_fixed_policy_but_not_once_learned() {
        let (fixed, histogram) = policies();
        let trace = timer(300.0, 40);
        let kept = replay(&trace, 12_100.0, &fixed, MODEL);
        let learned = replay(&trace, 12_100.0, &histogram, MODEL);
        // Zero 90 s after each request, woken by the next: every request waits.
        assert_eq!((kept.requests, kept.cold), (40, 40));
        let max_latency = kept.latencies_ms.iter().copied().fold(0.0, f64::max);
        assert!((max_latency - 502.0).abs() < 1.0, "{max_latency}");
        // Learned after ten idle times: the instance is started ahead of each request.
        assert_eq!(learned.cold, 11, "cold while learning only");
    }

    #[test]
    fn a_burst_at_zero_waits_for_one_cold_start() {
        let (fixed, _) = policies();
        // Twenty requests at once after an hour of nothing, at target 70: one instance;
        // at target 1, as many as max scale.
        let burst: Vec<f64> = (0..20).map(|i| 3_600.0 + f64::from(i) * 0.001).collect();
        let outcome = replay(&burst, 3_700.0, &fixed, MODEL);
        assert_eq!(outcome.cold, 20);
        assert!(
            outcome.latencies_ms.iter().all(|ms| *ms < 510.0),
            "{:?}",
            outcome.latencies_ms
        );
    }
}
