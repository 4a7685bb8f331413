//! The decision function on synthetic metric series, one tick per second, asserting the
//! exact desired count and reason of every change.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::idle::HistogramPolicy;
use crate::settings::PanicWindow;

/// A service driven tick by tick; `changes` logs every decision that moved the count.
struct Run {
    kpa: Kpa,
    settings: ScalingSettings,
    now: u64,
    changes: Vec<(u64, u32, String)>,
}

impl Run {
    fn resume(settings: ScalingSettings, desired: u32) -> Run {
        Run {
            kpa: Kpa::resume(desired, Timestamp::ZERO),
            settings,
            now: 0,
            changes: Vec::new(),
        }
    }

    /// A service running one instance (what the registry asks for on deploy).
    fn deployed(settings: ScalingSettings) -> Run {
        Run::resume(settings, 1)
    }

    fn log(&mut self, decision: &Decision) {
        assert_eq!(
            decision.reason.is_some(),
            decision.changed(),
            "at {}s: {decision:?}",
            self.now
        );
        if let Some(reason) = &decision.reason {
            self.changes.push((self.now, decision.desired, reason.to_string()));
        }
    }

    /// One second later, with this observation.
    fn tick(&mut self, observation: Observation) -> Decision {
        self.now += 1;
        let decision = self
            .kpa
            .decide(&observation, &self.settings, Timestamp::from_secs(self.now));
        self.log(&decision);
        decision
    }

    /// One tick where the instances asked for last time are all ready (instant start) and
    /// carry `concurrency` in flight, completing as many requests a second.
    fn serve(&mut self, concurrency: f64) -> Decision {
        let ready = self.kpa.desired();
        if ready == 0 {
            return self.tick(Observation::unmeasured(0));
        }
        self.tick(Observation::measured(concurrency, concurrency, ready))
    }

    /// `serve` until (and including) second `until`; the desired count after each tick.
    fn serve_until(&mut self, until: u64, concurrency: f64) -> Vec<u32> {
        let mut desired = Vec::new();
        while self.now < until {
            desired.push(self.serve(concurrency).desired);
        }
        desired
    }

    /// One tick in which a short request arrives and completes (it finishes between two
    /// scrapes, so only the request counter shows it). At zero the gateway holds it and
    /// reports it: a cold start. Returns whether it was cold.
    fn request(&mut self) -> bool {
        let ready = self.kpa.desired();
        if ready == 0 {
            self.tick(Observation::unmeasured(0).with_held(1));
            return true;
        }
        self.tick(Observation::measured(0.0, 1.0, ready));
        false
    }

    /// Ticks without requests until (and including) second `until`.
    fn idle_until(&mut self, until: u64) -> Vec<u32> {
        self.serve_until(until, 0.0)
    }

    fn changes(&self) -> Vec<(u64, u32, &str)> {
        self.changes
            .iter()
            .map(|(at, desired, reason)| (*at, *desired, reason.as_str()))
            .collect()
    }
}

/// Knative's KPA: the defaults with the fixed keep-alive.
fn knative() -> ScalingSettings {
    ScalingSettings {
        keep_alive: KeepAlive::Fixed,
        ..Default::default()
    }
}

fn target(concurrency: f64) -> ScalingSettings {
    ScalingSettings {
        target_concurrency: concurrency,
        ..knative()
    }
}

fn histogram_policy(settings: ScalingSettings) -> ScalingSettings {
    ScalingSettings {
        keep_alive: KeepAlive::Histogram(HistogramPolicy::default()),
        ..settings
    }
}

const TO_ZERO: &str = "scale to zero: no traffic over the 60s stable window, then the 30s grace";

#[test]
fn a_starting_instance_is_never_scaled_away() {
    // Nothing ready, nothing to scrape, well past window and grace.
    let mut run = Run::deployed(ScalingSettings::default());
    for _ in 0..200 {
        assert_eq!(run.tick(Observation::unmeasured(0)).desired, 1);
    }
    assert_eq!(run.changes(), vec![]);
}

#[test]
fn steady_state_holds_the_count() {
    let mut one = Run::deployed(target(10.0));
    assert!(one.serve_until(300, 8.0).iter().all(|&desired| desired == 1));
    assert!(!one.kpa.is_panicking());
    assert_eq!(one.changes(), vec![]);

    let mut three = Run::resume(target(10.0), 3);
    assert!(three.serve_until(300, 25.0).iter().all(|&desired| desired == 3));
    assert_eq!(three.changes(), vec![]);
}

#[test]
fn step_up_follows_the_stable_window() {
    let mut run = Run::resume(target(10.0), 4);
    run.serve_until(60, 40.0);
    let desired = run.serve_until(150, 60.0);
    // The 60 s average climbs by 1/3 a second: above 40 at once, above 50 after 31 s.
    assert_eq!(desired[..30], [5; 30]);
    assert_eq!(desired[30..], [6; 60]);
    assert!(!run.kpa.is_panicking());
    assert_eq!(
        run.changes(),
        vec![
            (61, 5, "stable: 40.3 in flight over 60s at target 10 per instance"),
            (91, 6, "stable: 50.3 in flight over 60s at target 10 per instance"),
        ]
    );
}

#[test]
fn panic_enters_on_a_burst_and_exits_strictly_after_a_stable_window() {
    let mut run = Run::deployed(target(10.0));
    run.serve_until(10, 5.0);
    // One second of 40 in flight makes the 6 s window ask for 2 instances against 1 ready:
    // the 200% threshold.
    let decision = run.serve(40.0);
    assert!(decision.panicking);
    assert_eq!(decision.panic_concurrency, Some(65.0 / 6.0));
    run.serve_until(19, 40.0);
    // The burst is over, but panic mode holds 4 until more than a full stable window has
    // passed since the panic window last met the threshold (second 11): at second 71,
    // exactly a window later, it still holds (Knative's strict `Before`).
    let held = run.serve_until(71, 5.0);
    assert_eq!(held, [4; 52]);
    assert!(run.kpa.is_panicking());
    let exit = run.serve(5.0);
    assert!(!exit.panicking);
    run.serve_until(100, 5.0);
    assert_eq!(
        run.changes(),
        vec![
            (
                11,
                2,
                "panic: 10.8 in flight over 6s vs capacity 10 (1 ready x 10 per instance)"
            ),
            (
                13,
                3,
                "panic: 22.5 in flight over 6s vs capacity 20 (2 ready x 10 per instance)"
            ),
            (
                15,
                4,
                "panic: 34.2 in flight over 6s vs capacity 30 (3 ready x 10 per instance)"
            ),
            (
                72,
                2,
                "stable: 9.1 in flight over 60s at target 10 per instance, limited by max scale-down rate 2x"
            ),
            (73, 1, "stable: 8.5 in flight over 60s at target 10 per instance"),
        ]
    );
}

#[test]
fn no_scale_down_while_panicking() {
    let mut run = Run::deployed(ScalingSettings {
        max_scale: 20,
        ..target(1.0)
    });
    run.serve_until(5, 1.0);
    run.serve_until(8, 12.0);
    // Load falls back to 1 in flight at once; the 6 s window asks for 1 instance within
    // seconds, yet the count stays at its panic peak.
    let held = run.serve_until(66, 1.0);
    assert_eq!(held, [7; 58]);
    assert!(run.kpa.is_panicking());
    run.serve_until(70, 1.0);
    assert!(!run.kpa.is_panicking());
    assert_eq!(
        run.changes(),
        vec![
            (
                6,
                3,
                "panic: 2.8 in flight over 6s vs capacity 1 (1 ready x 1 per instance)"
            ),
            (
                7,
                5,
                "panic: 4.7 in flight over 6s vs capacity 3 (3 ready x 1 per instance)"
            ),
            (
                8,
                7,
                "panic: 6.5 in flight over 6s vs capacity 5 (5 ready x 1 per instance)"
            ),
            (
                67,
                3,
                "stable: 1.2 in flight over 60s at target 1 per instance, limited by max scale-down rate 2x"
            ),
            (68, 1, "stable: 1.0 in flight over 60s at target 1 per instance"),
        ]
    );
}

#[test]
fn scale_up_rate_limits_each_decision() {
    // A threshold no burst reaches keeps this in stable mode.
    let settings = ScalingSettings {
        max_scale: 20,
        max_scale_up_rate: 2.0,
        panic_threshold: 100.0,
        ..target(1.0)
    };
    let mut run = Run::deployed(settings.clone());
    assert_eq!(run.serve_until(6, 10.0), [2, 4, 8, 10, 10, 10]);
    let limited = "stable: 10.0 in flight over 60s at target 1 per instance, limited by max scale-up rate 2x";
    assert_eq!(
        run.changes(),
        vec![
            (1, 2, limited),
            (2, 4, limited),
            (3, 8, limited),
            (4, 10, "stable: 10.0 in flight over 60s at target 1 per instance"),
        ]
    );

    // The limit is relative to ready instances, so it does not compound while the new
    // instances are still starting.
    let mut slow = Run::deployed(settings);
    let desired: Vec<u32> = [1, 1, 1, 1, 2, 4]
        .into_iter()
        .map(|ready| slow.tick(Observation::measured(10.0, 10.0, ready)).desired)
        .collect();
    assert_eq!(desired, [2, 2, 2, 2, 4, 8]);
}

#[test]
fn scale_down_rate_limits_each_decision() {
    // A one-second window makes the count follow the load at once, isolating the limit.
    let settings = ScalingSettings {
        min_scale: 1,
        max_scale: 20,
        stable_window: Duration::from_secs(1),
        ..target(1.0)
    };
    let mut run = Run::resume(settings.clone(), 16);
    // Resumed with 16: panic mode holds them for a stable window (one second).
    assert_eq!(run.serve_until(3, 16.0), [16, 16, 16]);
    assert_eq!(run.serve_until(7, 1.0), [8, 4, 2, 1]);
    let limited = "stable: 1.0 in flight over 1s at target 1 per instance, limited by max scale-down rate 2x";
    assert_eq!(
        run.changes(),
        vec![
            (4, 8, limited),
            (5, 4, limited),
            (6, 2, limited),
            (7, 1, "stable: 1.0 in flight over 1s at target 1 per instance"),
        ]
    );

    // While the drained instances are still ready the count holds; and ready instances in
    // excess of the count never push it back up.
    let mut slow = Run::resume(settings, 16);
    slow.serve_until(3, 16.0);
    let desired: Vec<u32> = [16, 16, 8, 10]
        .into_iter()
        .map(|ready| slow.tick(Observation::measured(1.0, 1.0, ready)).desired)
        .collect();
    assert_eq!(desired, [8, 8, 4, 4]);
}

#[test]
fn min_and_max_bound_the_count() {
    let mut capped = Run::deployed(ScalingSettings {
        max_scale: 3,
        ..target(1.0)
    });
    assert_eq!(capped.serve_until(5, 10.0), [3; 5]);
    assert_eq!(
        capped.changes(),
        vec![(
            1,
            3,
            "panic: 10.0 in flight over 6s vs capacity 1 (1 ready x 1 per instance), capped at max scale 3"
        )]
    );

    // Min scale 2: idle for minutes, never below 2; raising min scale raises the count.
    let mut floored = Run::resume(
        ScalingSettings {
            min_scale: 2,
            ..target(1.0)
        },
        2,
    );
    assert!(floored.idle_until(200).iter().all(|&desired| desired == 2));
    floored.settings.min_scale = 4;
    assert_eq!(floored.serve(0.0).desired, 4);
    assert_eq!(
        floored.changes(),
        vec![(
            201,
            4,
            "stable: 0.0 in flight over 60s at target 1 per instance, raised to min scale 4"
        )]
    );

    // With no measurement yet, only the bounds move the count.
    let mut starting = Run::deployed(ScalingSettings::default());
    starting.tick(Observation::unmeasured(0));
    starting.settings.min_scale = 2;
    assert_eq!(starting.tick(Observation::unmeasured(0)).desired, 2);
    assert_eq!(
        starting.changes(),
        vec![(2, 2, "no load measured yet; raised to min scale 2")]
    );
}

#[test]
fn one_request_every_45_seconds_keeps_one_instance() {
    // Knative keeps the instance: a request every 45 s keeps the 60 s stable window's
    // average above zero, so the window never asks for zero and the grace never starts.
    let mut run = Run::deployed(knative());
    let mut cold = 0;
    for period in 1..=40 {
        run.idle_until(period * 45 - 1);
        cold += u32::from(run.request());
    }
    assert_eq!((run.now, cold), (1_800, 0));
    assert_eq!(run.changes(), vec![]);

    // Every 100 s is longer than window and grace: zero 90 s after each request, and each
    // request wakes it (one instance for one held request).
    let mut sparse = Run::deployed(knative());
    for period in 1..=3 {
        sparse.idle_until(period * 100 - 1);
        sparse.request();
    }
    sparse.idle_until(310);
    assert_eq!(
        sparse.changes(),
        vec![
            (90, 0, TO_ZERO),
            (
                100,
                1,
                "scale from zero: 1 request held at the gateway at target 70 per instance"
            ),
            (190, 0, TO_ZERO),
            (
                200,
                1,
                "scale from zero: 1 request held at the gateway at target 70 per instance"
            ),
            (290, 0, TO_ZERO),
            (
                300,
                1,
                "scale from zero: 1 request held at the gateway at target 70 per instance"
            ),
        ]
    );
}

#[test]
fn the_grace_runs_on_top_of_the_stable_window() {
    let mut run = Run::deployed(target(10.0));
    run.serve_until(10, 5.0);
    // Traffic last seen at second 10: the window holds it until second 69; from second 70
    // the windows ask for zero and the 30 s grace keeps one instance until second 100.
    let idle = run.idle_until(99);
    assert_eq!(idle, [1; 89]);
    assert_eq!(run.serve(0.0).desired, 0);
    // At zero nothing is ready and nothing is scraped; it stays there.
    assert_eq!(run.idle_until(200), [0; 100]);
    assert_eq!(run.changes(), vec![(100, 0, TO_ZERO)]);

    // Short requests finish between two scrapes: the in-flight gauge reads 0 but the
    // request counter moves, and that is traffic too.
    let mut quick = Run::deployed(target(10.0));
    for _ in 0..20 {
        quick.tick(Observation::measured(0.0, 3.0, 1));
    }
    assert_eq!(quick.idle_until(109), [1; 89]);
    assert_eq!(quick.serve(0.0).desired, 0);

    // Min scale 1 never goes to zero.
    let mut kept = Run::deployed(ScalingSettings {
        min_scale: 1,
        ..target(10.0)
    });
    assert!(kept.idle_until(300).iter().all(|&desired| desired == 1));
}

#[test]
fn a_10x_burst_that_ends_steps_down_by_the_rate_then_reaches_zero_after_window_and_grace() {
    let mut run = Run::deployed(ScalingSettings {
        max_scale: 20,
        ..target(1.0)
    });
    run.idle_until(10);
    // Ten times the target for 20 s, then nothing.
    run.serve_until(30, 10.0);
    assert_eq!(run.kpa.desired(), 10);
    let after = run.idle_until(200);
    // No step down while panicking (it ends strictly more than a stable window after the
    // panic window last met the threshold, at second 12), then at most halving (the default
    // max scale-down rate 2) per decision as the average falls; never from many straight
    // to zero.
    let steps: Vec<u32> = after.windows(2).filter(|w| w[0] != w[1]).map(|w| w[1]).collect();
    assert_eq!(steps, [5, 3, 2, 1, 0]);
    assert_eq!(
        run.changes()[5..],
        [
            (
                16,
                10,
                "panic: 10.0 in flight over 6s vs capacity 9 (9 ready x 1 per instance)"
            ),
            (
                73,
                5,
                "stable: 2.8 in flight over 60s at target 1 per instance, limited by max scale-down rate 2x"
            ),
            (74, 3, "stable: 2.7 in flight over 60s at target 1 per instance"),
            (78, 2, "stable: 2.0 in flight over 60s at target 1 per instance"),
            (84, 1, "stable: 1.0 in flight over 60s at target 1 per instance"),
            // The last request was in flight at second 30: the stable window has averaged
            // zero from second 90, and the 30 s grace runs on top.
            (120, 0, TO_ZERO),
        ]
    );
}

#[test]
fn events_for_a_subscription_wake_a_service_at_zero_and_it_returns_to_zero_after_its_windows() {
    // A sidecar that wrote events the service subscribes to pokes it with one unit of
    // work: one instance, and the reason says events, not requests.
    let mut run = Run::resume(knative(), 0);
    run.idle_until(5);
    let decision = run.tick(Observation::unmeasured(0).with_held(1).with_wake(Wake::Events));
    assert_eq!((decision.previous, decision.desired), (0, 1));
    // Its deliveries are requests to the scraper: while it catches up it stays.
    run.serve_until(20, 1.0);
    // Caught up: no traffic for the stable window, then the grace, then zero.
    run.idle_until(120);
    assert_eq!(
        run.changes(),
        vec![
            (6, 1, "scale from zero: events arrived for its event-log subscriptions"),
            (110, 0, TO_ZERO),
        ]
    );
}

#[test]
fn five_times_the_target_from_zero_asks_for_five_at_once() {
    let mut run = Run::resume(target(10.0), 0);
    run.idle_until(5);
    // The gateway holds 50 requests at target 10 and pokes: one decision asks for all
    // five instances (the panic window reads 50 against a capacity of one instance).
    let decision = run.tick(Observation::unmeasured(0).with_held(50));
    assert_eq!((decision.previous, decision.desired, decision.panicking), (0, 5, true));
    // While they start, the gateway reports what it still holds: more held, more asked
    // (the panic window averages 50, 50 and 80).
    assert_eq!(run.tick(Observation::unmeasured(0).with_held(50)).desired, 5);
    assert_eq!(run.tick(Observation::unmeasured(0).with_held(80)).desired, 6);
    // Released to the first ready instance: panic never scales down.
    assert_eq!(run.tick(Observation::measured(80.0, 0.0, 1)).desired, 7);
    assert_eq!(
        run.changes(),
        vec![
            (
                6,
                5,
                "scale from zero: 50 requests held at the gateway at target 10 per instance"
            ),
            (
                8,
                6,
                "scale from zero: 80 requests held at the gateway, 60.0 on average over 6s, at target 10 per instance"
            ),
            (
                9,
                7,
                "panic: 65.0 in flight over 6s vs capacity 10 (1 ready x 10 per instance)"
            ),
        ]
    );

    // One request at the default target asks for one instance; a burst is capped by max
    // scale; min scale raised while at zero wins.
    let mut one = Run::resume(ScalingSettings::default(), 0);
    assert_eq!(one.tick(Observation::unmeasured(0).with_held(1)).desired, 1);
    let mut capped = Run::resume(
        ScalingSettings {
            max_scale: 3,
            ..target(10.0)
        },
        0,
    );
    capped.tick(Observation::unmeasured(0).with_held(50));
    let mut raised = Run::resume(target(10.0), 0);
    raised.settings.min_scale = 2;
    raised.tick(Observation::unmeasured(0).with_held(1));
    assert_eq!(
        [one.changes(), capped.changes(), raised.changes()].concat(),
        vec![
            (
                1,
                1,
                "scale from zero: 1 request held at the gateway at target 70 per instance"
            ),
            (
                1,
                3,
                "scale from zero: 50 requests held at the gateway at target 10 per instance, capped at max scale 3"
            ),
            (
                1,
                2,
                "scale from zero: 1 request held at the gateway at target 10 per instance, raised to min scale 2"
            ),
        ]
    );
}

#[test]
fn held_requests_count_beside_what_instances_report() {
    // Two instances starting, one ready with 10 in flight, and the gateway (which still
    // routes nothing) holding 30: the load is 40.
    let mut run = Run::resume(target(10.0), 3);
    let decision = run.tick(Observation::measured(10.0, 0.0, 1).with_held(30));
    assert_eq!(decision.stable_concurrency, Some(40.0));
}

#[test]
fn adopting_a_count_keeps_the_history() {
    let mut run = Run::deployed(target(10.0));
    run.serve_until(30, 5.0);
    run.kpa.adopt(4, Timestamp::from_secs(30));
    assert!(run.kpa.is_panicking(), "held like a resumed count");
    assert_eq!(run.kpa.desired(), 4);
    // The window still holds 30 s of 5 in flight: once the hold ends, one instance.
    run.serve_until(92, 5.0);
    assert_eq!(run.kpa.desired(), 1);
}

#[test]
fn resume_holds_the_count_for_a_stable_window() {
    // A new leader knows 5 instances run but has no history: it must not read the empty
    // window as idle.
    let mut run = Run::resume(target(1.0), 5);
    assert!(run.serve_until(60, 1.0).iter().all(|&desired| desired == 5));
    run.serve_until(63, 1.0);
    assert_eq!(
        run.changes(),
        vec![
            (
                61,
                2,
                "stable: 1.0 in flight over 60s at target 1 per instance, limited by max scale-down rate 2x"
            ),
            (62, 1, "stable: 1.0 in flight over 60s at target 1 per instance"),
        ]
    );
    assert!(!Kpa::resume(1, Timestamp::ZERO).is_panicking());
}

#[test]
fn failed_scrapes_hold_the_count_and_never_reach_zero() {
    let mut run = Run::deployed(target(10.0));
    run.serve_until(10, 25.0);
    let before = run.kpa.desired();
    for _ in 0..200 {
        assert_eq!(run.tick(Observation::unmeasured(before)).desired, before);
    }
}

#[test]
fn panic_window_as_a_fixed_duration() {
    let settings = ScalingSettings {
        panic_window: PanicWindow::Fixed(Duration::from_secs(2)),
        ..target(10.0)
    };
    let mut run = Run::deployed(settings);
    run.serve_until(10, 5.0);
    run.serve(40.0);
    assert_eq!(
        run.changes(),
        vec![(
            11,
            3,
            "panic: 22.5 in flight over 2s vs capacity 10 (1 ready x 10 per instance)"
        )]
    );
}

#[test]
fn the_histogram_policy_prewarms_a_periodic_service() {
    let mut run = Run::deployed(histogram_policy(ScalingSettings::default()));
    // Learning: ten idle times of 45 s (eleven requests). Until then the fixed policy
    // holds (the window keeps the one instance).
    let mut cold = Vec::new();
    for period in 1..=14 {
        run.idle_until(period * 45 - 1);
        cold.push(run.request());
    }
    assert_eq!(cold, [false; 14], "never a cold start");
    assert_eq!(run.kpa.idle_times().samples(), 13);
    // From the eleventh request on (second 495) the histogram predicts: zero right after
    // each request, one instance from 37 s idle, the next request at 45 s.
    let unload = "idle-time histogram: no instance until the pre-warm at 37s idle";
    let prewarm = "idle-time histogram: pre-warm at 37s idle, kept for 12.8s";
    assert_eq!(
        run.changes(),
        vec![
            (496, 0, unload),
            (533, 1, prewarm),
            (541, 0, unload),
            (578, 1, prewarm),
            (586, 0, unload),
            (623, 1, prewarm),
        ]
    );

    // The expected request does not come: the instance goes once the keep-alive ends, and
    // the late request is a cold start.
    run.idle_until(700);
    assert!(run.request());
    assert_eq!(
        run.changes()[6..],
        [
            (631, 0, unload),
            (668, 1, prewarm),
            (680, 0, "idle-time histogram: no request within the 49.8s keep-alive"),
            (
                701,
                1,
                "scale from zero: 1 request held at the gateway at target 70 per instance"
            ),
        ]
    );
}

#[test]
fn the_histogram_policy_falls_back_to_the_grace_when_idle_times_are_spread() {
    // Idle times from 2 s to 50 s, no two alike: the histogram is flat, so the fixed
    // window-and-grace policy decides, exactly as without the histogram.
    let mut fixed = Run::deployed(knative());
    let mut learned = Run::deployed(histogram_policy(ScalingSettings::default()));
    for run in [&mut fixed, &mut learned] {
        let mut at = 0;
        for gap in (2..=50).step_by(3) {
            at += gap;
            run.idle_until(at - 1);
            run.request();
        }
        run.idle_until(at + 200);
    }
    assert_eq!(learned.kpa.idle_times().samples(), 16);
    assert_eq!(learned.changes(), fixed.changes());
    assert_eq!(learned.changes().len(), 1, "{:?}", learned.changes());
    assert_eq!(learned.changes()[0].2, TO_ZERO);

    // Panic mode and min scale are never overruled by the histogram.
    let mut floored = Run::deployed(histogram_policy(ScalingSettings {
        min_scale: 1,
        ..Default::default()
    }));
    for period in 1..=10 {
        floored.idle_until(period * 45 - 1);
        floored.request();
    }
    floored.idle_until(1_000);
    assert_eq!(floored.changes(), vec![]);
}

#[test]
fn reasons_read_well() {
    let reason = Reason::Stable {
        average: 0.0,
        window: Duration::from_secs(60),
        target: 2.5,
        limit: Some(Limit::Grace {
            grace: Duration::from_millis(1_500),
        }),
    };
    assert_eq!(
        reason.to_string(),
        "stable: 0.0 in flight over 60s at target 2.5 per instance, kept at 1 through the 1.5s scale-to-zero grace"
    );
    let kept = Reason::Stable {
        average: 0.2,
        window: Duration::from_secs(60),
        target: 70.0,
        limit: Some(Limit::TrafficInWindow {
            window: Duration::from_secs(60),
        }),
    };
    assert_eq!(
        kept.to_string(),
        "stable: 0.2 in flight over 60s at target 70 per instance, kept at 1: traffic within the 60s stable window"
    );
    let capped = Reason::Bounds {
        limit: Limit::MaxScale(5),
    };
    assert_eq!(capped.to_string(), "no load measured yet; capped at max scale 5");
    let prewarm = Reason::Prewarm {
        prewarm: Duration::from_millis(40_460),
        keep_alive: Duration::from_millis(11_449),
    };
    assert_eq!(
        prewarm.to_string(),
        "idle-time histogram: pre-warm at 40.5s idle, kept for 11.4s"
    );
}

/// One generated tick: the load (if measured), how the ready count relates to the last
/// desired count, requests held at the gateway, and the time since the previous tick.
#[derive(Debug, Clone)]
struct GeneratedTick {
    load: Option<(u16, u16)>,
    ready: ReadyMode,
    held: u32,
    step_millis: u64,
}

#[derive(Debug, Clone, Copy)]
enum ReadyMode {
    AsDesired,
    None,
    Lagging,
    Any(u32),
}

fn generated_settings() -> impl Strategy<Value = ScalingSettings> {
    (
        (0u32..=3, 0u32..=8, 1u32..=20),
        prop::sample::select(vec![1.5, 2.0, 10.0, 1000.0]),
        prop::sample::select(vec![1.5, 2.0, 4.0]),
        2u64..=30,
        5.0f64..=50.0,
        0u64..=20,
        prop::sample::select(vec![1.0, 2.0, 3.0]),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |((min_scale, extra, target), up, down, stable, percent, grace, threshold, histogram)| ScalingSettings {
                target_concurrency: f64::from(target),
                min_scale,
                max_scale: (min_scale + extra).max(1),
                stable_window: Duration::from_secs(stable),
                panic_window: PanicWindow::PercentOfStable(percent),
                panic_threshold: threshold,
                max_scale_up_rate: up,
                max_scale_down_rate: down,
                scale_to_zero_grace: Duration::from_secs(grace),
                keep_alive: if histogram {
                    KeepAlive::Histogram(HistogramPolicy::default())
                } else {
                    KeepAlive::Fixed
                },
            },
        )
}

fn generated_tick() -> impl Strategy<Value = GeneratedTick> {
    let load = prop_oneof![1 => Just(None), 2 => Just(Some((0, 0))), 6 => (0u16..300, 0u16..50).prop_map(Some)];
    let ready = prop_oneof![
        6 => Just(ReadyMode::AsDesired),
        1 => Just(ReadyMode::None),
        2 => Just(ReadyMode::Lagging),
        1 => (0u32..30).prop_map(ReadyMode::Any),
    ];
    let held = prop_oneof![9 => Just(0u32), 1 => 1u32..300];
    let step = prop_oneof![8 => Just(1_000u64), 2 => 1u64..3_000];
    (load, ready, held, step).prop_map(|(load, ready, held, step_millis)| GeneratedTick {
        load,
        ready,
        held,
        step_millis,
    })
}

// 256 cases by default; PROPTEST_CASES=N runs more.
proptest! {
    #[test]
    fn desired_stays_in_bounds_and_within_the_rate_limits(
        settings in generated_settings(),
        ticks in prop::collection::vec(generated_tick(), 1..250),
    ) {
        prop_assert_eq!(settings.validate(), Ok(()));
        let mut kpa = Kpa::resume(settings.min_scale.max(1), Timestamp::ZERO);
        let mut now = Timestamp::ZERO;
        // Measured traffic or held requests: the independent clock for window and grace.
        let mut last_busy = Timestamp::ZERO;
        let mut was_panicking = kpa.is_panicking();
        let mut lagging = kpa.desired();
        for tick in ticks {
            now = now + Duration::from_millis(tick.step_millis);
            let previous = kpa.desired();
            let ready = match tick.ready {
                ReadyMode::AsDesired => previous,
                ReadyMode::None => 0,
                ReadyMode::Lagging => lagging,
                ReadyMode::Any(ready) => ready,
            };
            lagging = previous;
            let load = tick.load.map(|(concurrency, rps)| Load {
                concurrency: f64::from(concurrency),
                requests_per_second: f64::from(rps),
            });
            if tick.held > 0 || load.is_some_and(|load| load.concurrency > 0.0 || load.requests_per_second > 0.0) {
                last_busy = now;
            }
            let observation = Observation { load, ready_instances: ready, held: tick.held, wake: Wake::Requests, timer: None };
            let decision = kpa.decide(&observation, &settings, now);
            let desired = decision.desired;

            prop_assert_eq!(decision.previous, previous);
            prop_assert_eq!(decision.reason.is_some(), desired != previous);
            prop_assert!(desired <= settings.max_scale);
            prop_assert!(desired >= settings.min_scale);
            if desired == 0 && previous != 0 {
                prop_assert_eq!(settings.min_scale, 0);
                prop_assert!(!decision.panicking, "to zero while panicking");
                if settings.keep_alive == KeepAlive::Fixed {
                    let quiet = now.saturating_since(last_busy);
                    prop_assert!(
                        quiet >= settings.stable_window + settings.scale_to_zero_grace,
                        "to zero after {quiet:?} without traffic"
                    );
                    // Only where the scale-down rate allows zero.
                    let down_limit = (f64::from(ready.max(1)) / settings.max_scale_down_rate).floor() as u32;
                    prop_assert_eq!(down_limit, 0, "to zero from {} ready", ready);
                } else {
                    // The histogram only moves the last instance.
                    prop_assert!(previous == 1 || now.saturating_since(last_busy) >= settings.stable_window);
                }
            }
            if tick.held > 0 {
                prop_assert!(desired >= 1);
            }
            let capacity = f64::from(ready.max(1));
            if desired > previous {
                let up_limit = (settings.max_scale_up_rate * capacity).ceil() as u32;
                prop_assert!(desired <= up_limit.max(settings.min_scale.max(1)), "{desired} from {previous}");
            }
            if desired > 0 && desired < previous {
                let down_limit = (capacity / settings.max_scale_down_rate).floor() as u32;
                prop_assert!(desired >= down_limit.min(settings.max_scale), "{desired} from {previous}");
            }
            if was_panicking && decision.panicking {
                prop_assert!(desired >= previous, "scaled down from {previous} to {desired} while panicking");
            }
            was_panicking = decision.panicking;
        }
    }
}

/// The earliest timer due at second `due_at`, seen at second `now`.
fn timer_at(due_at: u64, now: u64, learned_cold_start: Option<Duration>) -> Option<TimerDue> {
    Some(TimerDue {
        due_in: Duration::from_secs(due_at.saturating_sub(now)),
        learned_cold_start,
    })
}

#[test]
fn a_due_timer_wakes_a_service_at_zero_one_cold_start_ahead_then_it_returns_to_zero() {
    // A timer due at second 20; the service's cold starts take 3 s, so with the 2 s
    // margin its instance is asked for at second 15, and none before.
    let cold_start = Some(Duration::from_secs(3));
    let mut run = Run::resume(knative(), 0);
    while run.now < 15 {
        let timer = timer_at(20, run.now + 1, cold_start);
        run.tick(Observation::unmeasured(0).with_timer(timer));
    }
    assert_eq!(
        run.changes(),
        vec![(15, 1, "a timer is due in 5s; started ahead of it for its 3s cold start")]
    );
    // Starting for a second (which counts as traffic), then ready; the timer is
    // pending until its call is made at second 20, then the sidecar reports none.
    run.tick(Observation::unmeasured(0).with_timer(timer_at(20, 16, cold_start)));
    while run.now < 20 {
        let timer = timer_at(20, run.now + 1, cold_start);
        assert_eq!(
            run.tick(Observation::measured(0.0, 0.0, 1).with_timer(timer)).desired,
            1
        );
    }
    // No traffic over the stable window after the start, then the grace: zero.
    run.idle_until(200);
    assert_eq!(run.changes().last(), Some(&(106, 0, TO_ZERO)));
    assert_eq!(run.changes().len(), 2);
}

#[test]
fn a_timer_already_due_wakes_at_once_and_keeps_the_instance_while_it_stays_due() {
    // Nothing learned yet, and the timer overdue (its service was at zero too long).
    let mut run = Run::resume(histogram_policy(knative()), 0);
    let decision = run.tick(Observation::unmeasured(0).with_timer(timer_at(0, 1, None)));
    assert_eq!((decision.previous, decision.desired), (0, 1));
    assert_eq!(run.changes(), vec![(1, 1, "a timer is due now")]);
    // Its call keeps failing and is retried: the instance stays, well past the
    // window and the grace, whatever the histogram would predict.
    for _ in 0..300 {
        let timer = timer_at(0, run.now + 1, None);
        assert_eq!(
            run.tick(Observation::measured(0.0, 0.0, 1).with_timer(timer)).desired,
            1
        );
    }
    assert_eq!(run.changes().len(), 1);
}

#[test]
fn a_timer_beyond_the_cold_start_does_not_wake_and_an_unlearned_one_assumes_five_seconds() {
    let mut run = Run::resume(knative(), 0);
    // 5 s assumed plus the 2 s margin: 8 s ahead is too early, 7 s is on time.
    run.tick(Observation::unmeasured(0).with_timer(timer_at(9, 1, None)));
    assert_eq!(run.kpa.desired(), 0);
    run.tick(Observation::unmeasured(0).with_timer(timer_at(9, 2, None)));
    assert_eq!(
        run.changes(),
        vec![(
            2,
            1,
            "a timer is due in 7s; started ahead of it for an assumed 5s cold start"
        )]
    );
}

#[test]
fn held_requests_and_a_due_timer_read_as_requests() {
    // The requests size the step; the timer only ever asks for the one instance.
    let mut run = Run::resume(target(1.0), 0);
    let observation = Observation::unmeasured(0).with_held(3).with_timer(timer_at(0, 1, None));
    assert_eq!(run.tick(observation).desired, 3);
    assert!(run.changes()[0].2.starts_with("scale from zero: 3 requests held"));
}
