//! The decision function on synthetic metric series, one tick per second, asserting the
//! exact desired count and reason of every change.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::settings::PanicWindow;

/// A service driven tick by tick; `changes` logs every decision that moved the count.
struct Run {
    kpa: Kpa,
    settings: ScalingSettings,
    now: u64,
    changes: Vec<(u64, u32, String)>,
}

impl Run {
    fn deploy(settings: ScalingSettings) -> Run {
        let (kpa, decision) = Kpa::deploy(&settings, Timestamp::ZERO);
        let mut run = Run {
            kpa,
            settings,
            now: 0,
            changes: Vec::new(),
        };
        run.log(&decision);
        run
    }

    fn resume(settings: ScalingSettings, desired: u32) -> Run {
        Run {
            kpa: Kpa::resume(desired, Timestamp::ZERO),
            settings,
            now: 0,
            changes: Vec::new(),
        }
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

    fn changes(&self) -> Vec<(u64, u32, &str)> {
        self.changes
            .iter()
            .map(|(at, desired, reason)| (*at, *desired, reason.as_str()))
            .collect()
    }
}

fn target(concurrency: f64) -> ScalingSettings {
    ScalingSettings {
        target_concurrency: concurrency,
        ..Default::default()
    }
}

const INITIAL: (u64, u32, &str) = (0, 1, "initial scale 1 on deploy");

#[test]
fn initial_scale_is_one_on_deploy() {
    let (kpa, decision) = Kpa::deploy(&ScalingSettings::default(), Timestamp::ZERO);
    assert_eq!(kpa.desired(), 1);
    assert_eq!(decision.previous, 0);
    assert_eq!(decision.desired, 1);
    assert_eq!(
        decision.reason.map(|reason| reason.to_string()).as_deref(),
        Some("initial scale 1 on deploy")
    );

    // The instance is still starting (nothing ready, nothing to scrape) well past the grace
    // period: a starting instance is never scaled away.
    let mut run = Run::deploy(ScalingSettings::default());
    for _ in 0..45 {
        assert_eq!(run.tick(Observation::unmeasured(0)).desired, 1);
    }
    assert_eq!(run.changes(), vec![INITIAL]);

    // Min scale wins over the initial scale.
    let run = Run::deploy(ScalingSettings {
        min_scale: 3,
        ..Default::default()
    });
    assert_eq!(run.changes(), vec![(0, 3, "initial scale 3 on deploy")]);
}

#[test]
fn steady_state_holds_the_count() {
    let mut one = Run::deploy(target(10.0));
    assert!(one.serve_until(300, 8.0).iter().all(|&desired| desired == 1));
    assert!(!one.kpa.is_panicking());
    assert_eq!(one.changes(), vec![INITIAL]);

    let mut three = Run::deploy(ScalingSettings {
        initial_scale: 3,
        ..target(10.0)
    });
    assert!(three.serve_until(300, 25.0).iter().all(|&desired| desired == 3));
    assert_eq!(three.changes(), vec![(0, 3, "initial scale 3 on deploy")]);
}

#[test]
fn step_up_follows_the_stable_window() {
    let mut run = Run::deploy(ScalingSettings {
        initial_scale: 4,
        ..target(10.0)
    });
    run.serve_until(60, 40.0);
    let desired = run.serve_until(150, 60.0);
    // The 60 s average climbs by 1/3 a second: above 40 at once, above 50 after 31 s.
    assert_eq!(desired[..30], [5; 30]);
    assert_eq!(desired[30..], [6; 60]);
    assert!(!run.kpa.is_panicking());
    assert_eq!(
        run.changes(),
        vec![
            (0, 4, "initial scale 4 on deploy"),
            (61, 5, "stable: 40.3 in flight over 60s at target 10 per instance"),
            (91, 6, "stable: 50.3 in flight over 60s at target 10 per instance"),
        ]
    );
}

#[test]
fn panic_enters_on_a_burst_and_exits_a_stable_window_after_it() {
    let mut run = Run::deploy(target(10.0));
    run.serve_until(10, 5.0);
    // One second of 40 in flight makes the 6 s window ask for 2 instances against 1 ready:
    // the 200% threshold.
    let decision = run.serve(40.0);
    assert!(decision.panicking);
    assert_eq!(decision.panic_concurrency, Some(65.0 / 6.0));
    run.serve_until(19, 40.0);
    // The burst is over, but panic mode holds 4 until a full stable window has passed since
    // the panic window last met the threshold (second 11).
    let held = run.serve_until(70, 5.0);
    assert_eq!(held, [4; 51]);
    assert!(run.kpa.is_panicking());
    let exit = run.serve(5.0);
    assert!(!exit.panicking);
    run.serve_until(100, 5.0);
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
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
                71,
                2,
                "stable: 9.7 in flight over 60s at target 10 per instance, limited by max scale-down rate 2x"
            ),
            (72, 1, "stable: 9.1 in flight over 60s at target 10 per instance"),
        ]
    );
}

#[test]
fn no_scale_down_while_panicking() {
    let mut run = Run::deploy(ScalingSettings {
        max_scale: 20,
        ..target(1.0)
    });
    run.serve_until(5, 1.0);
    run.serve_until(8, 12.0);
    // Load falls back to 1 in flight at once; the 6 s window asks for 1 instance within
    // seconds, yet the count stays at its panic peak.
    let held = run.serve_until(65, 1.0);
    assert_eq!(held, [7; 57]);
    assert!(run.kpa.is_panicking());
    run.serve_until(70, 1.0);
    assert!(!run.kpa.is_panicking());
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
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
                66,
                3,
                "stable: 1.4 in flight over 60s at target 1 per instance, limited by max scale-down rate 2x"
            ),
            (67, 2, "stable: 1.2 in flight over 60s at target 1 per instance"),
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
    let mut run = Run::deploy(settings.clone());
    assert_eq!(run.serve_until(6, 10.0), [2, 4, 8, 10, 10, 10]);
    let limited = "stable: 10.0 in flight over 60s at target 1 per instance, limited by max scale-up rate 2x";
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
            (1, 2, limited),
            (2, 4, limited),
            (3, 8, limited),
            (4, 10, "stable: 10.0 in flight over 60s at target 1 per instance"),
        ]
    );

    // The limit is relative to ready instances, so it does not compound while the new
    // instances are still starting.
    let mut slow = Run::deploy(settings);
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
        initial_scale: 16,
        min_scale: 1,
        max_scale: 20,
        stable_window: Duration::from_secs(1),
        ..target(1.0)
    };
    let mut run = Run::deploy(settings.clone());
    assert_eq!(run.serve_until(3, 16.0), [16, 16, 16]);
    assert_eq!(run.serve_until(7, 1.0), [8, 4, 2, 1]);
    let limited = "stable: 1.0 in flight over 1s at target 1 per instance, limited by max scale-down rate 2x";
    assert_eq!(
        run.changes(),
        vec![
            (0, 16, "initial scale 16 on deploy"),
            (4, 8, limited),
            (5, 4, limited),
            (6, 2, limited),
            (7, 1, "stable: 1.0 in flight over 1s at target 1 per instance"),
        ]
    );

    // While the drained instances are still ready the count holds; and ready instances in
    // excess of the count never push it back up.
    let mut slow = Run::deploy(settings);
    let desired: Vec<u32> = [16, 16, 16, 8, 10]
        .into_iter()
        .map(|ready| slow.tick(Observation::measured(1.0, 1.0, ready)).desired)
        .collect();
    assert_eq!(desired, [8, 8, 8, 4, 4]);
}

#[test]
fn min_and_max_bound_the_count() {
    let mut capped = Run::deploy(ScalingSettings {
        max_scale: 3,
        ..target(1.0)
    });
    assert_eq!(capped.serve_until(5, 10.0), [3; 5]);
    assert_eq!(
        capped.changes(),
        vec![
            INITIAL,
            (
                1,
                3,
                "panic: 10.0 in flight over 6s vs capacity 1 (1 ready x 1 per instance), capped at max scale 3"
            ),
        ]
    );

    // Min scale 2: idle for minutes, never below 2; raising min scale raises the count.
    let mut floored = Run::deploy(ScalingSettings {
        min_scale: 2,
        ..target(1.0)
    });
    assert!(floored.serve_until(200, 0.0).iter().all(|&desired| desired == 2));
    floored.settings.min_scale = 4;
    assert_eq!(floored.serve(0.0).desired, 4);
    assert_eq!(
        floored.changes(),
        vec![
            (0, 2, "initial scale 2 on deploy"),
            (
                201,
                4,
                "stable: 0.0 in flight over 60s at target 1 per instance, raised to min scale 4"
            ),
        ]
    );

    // With no measurement yet, only the bounds move the count.
    let mut starting = Run::deploy(ScalingSettings::default());
    starting.tick(Observation::unmeasured(0));
    starting.settings.min_scale = 2;
    assert_eq!(starting.tick(Observation::unmeasured(0)).desired, 2);
    assert_eq!(
        starting.changes(),
        vec![INITIAL, (2, 2, "no load measured yet; raised to min scale 2")]
    );
}

#[test]
fn scale_to_zero_only_after_the_grace_period() {
    let mut run = Run::deploy(target(10.0));
    run.serve_until(10, 5.0);
    let idle = run.serve_until(39, 0.0);
    assert_eq!(idle, [1; 29], "29 s without traffic is not yet the 30 s grace period");
    assert_eq!(run.serve(0.0).desired, 0);
    // At zero nothing is ready and nothing is scraped; it stays there.
    assert_eq!(run.serve_until(100, 0.0), [0; 60]);
    assert_eq!(
        run.changes(),
        vec![INITIAL, (40, 0, "scale to zero after 30s without traffic")]
    );

    // A grace period longer than the stable window: an all-zero window average is not
    // enough, only the grace period sends the service to zero.
    let mut long = Run::deploy(ScalingSettings {
        scale_to_zero_grace: Duration::from_secs(90),
        ..target(10.0)
    });
    long.serve_until(10, 5.0);
    assert_eq!(long.serve_until(99, 0.0), [1; 89]);
    assert_eq!(long.serve(0.0).desired, 0);
    assert_eq!(
        long.changes(),
        vec![INITIAL, (100, 0, "scale to zero after 90s without traffic")]
    );

    // Min scale 1 never goes to zero.
    let mut kept = Run::deploy(ScalingSettings {
        min_scale: 1,
        ..target(10.0)
    });
    assert!(kept.serve_until(300, 0.0).iter().all(|&desired| desired == 1));
}

#[test]
fn completed_requests_count_as_traffic_without_anything_in_flight() {
    // Short requests finish between two scrapes: the in-flight gauge reads 0 but the
    // request counter moves, and the service must stay up.
    let mut run = Run::deploy(target(10.0));
    for _ in 0..20 {
        run.tick(Observation::measured(0.0, 3.0, 1));
    }
    assert_eq!(run.serve_until(49, 0.0), [1; 29]);
    assert_eq!(run.serve(0.0).desired, 0);
    assert_eq!(
        run.changes(),
        vec![INITIAL, (50, 0, "scale to zero after 30s without traffic")]
    );
}

#[test]
fn grace_period_counts_from_when_the_first_instance_is_ready() {
    let mut run = Run::deploy(target(10.0));
    for _ in 0..4 {
        run.tick(Observation::unmeasured(0));
    }
    run.serve_until(33, 0.0);
    assert_eq!(run.kpa.desired(), 1);
    assert_eq!(run.serve(0.0).desired, 0);
    assert_eq!(
        run.changes(),
        vec![INITIAL, (34, 0, "scale to zero after 30s without traffic")]
    );
}

#[test]
fn idleness_through_the_grace_period_ends_a_panic() {
    let mut run = Run::deploy(target(1.0));
    assert!(run.serve(10.0).panicking);
    assert_eq!(run.serve_until(30, 0.0), [10; 29]);
    let decision = run.serve(0.0);
    assert_eq!((decision.desired, decision.panicking), (0, false));
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
            (
                1,
                10,
                "panic: 10.0 in flight over 6s vs capacity 1 (1 ready x 1 per instance)"
            ),
            (31, 0, "scale to zero after 30s without traffic"),
        ]
    );
}

#[test]
fn poke_at_zero_scales_to_one_at_once() {
    let mut run = Run::deploy(target(10.0));
    run.serve_until(10, 5.0);
    run.serve_until(50, 0.0);
    assert_eq!(run.kpa.desired(), 0);

    // The decision that carries the poke asks for an instance: not the next one.
    let decision = run.tick(Observation::unmeasured(0).with_poke());
    assert_eq!((decision.previous, decision.desired), (0, 1));
    assert_eq!(decision.reason, Some(Reason::Poke { limit: None }));

    // The instance takes a while to start; the held requests keep it wanted.
    for _ in 0..40 {
        assert_eq!(run.tick(Observation::unmeasured(0)).desired, 1);
    }
    run.serve_until(100, 3.0);
    // A poke while instances run changes nothing.
    assert_eq!(run.tick(Observation::measured(3.0, 3.0, 1).with_poke()).desired, 1);
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
            (40, 0, "scale to zero after 30s without traffic"),
            (51, 1, "request arrived at zero: scale from zero"),
        ]
    );

    // With a min scale raised while at zero, the poke wakes it to min scale.
    let mut raised = Run::deploy(ScalingSettings {
        scale_to_zero_grace: Duration::ZERO,
        ..target(10.0)
    });
    raised.serve(0.0);
    assert_eq!(raised.kpa.desired(), 0);
    raised.settings.min_scale = 2;
    raised.tick(Observation::unmeasured(0).with_poke());
    assert_eq!(
        raised.changes()[2],
        (2, 2, "request arrived at zero: scale from zero, raised to min scale 2")
    );
}

#[test]
fn resume_holds_the_count_for_a_stable_window() {
    // A new leader knows 5 instances run but has no history: it must not read the empty
    // window as idle.
    let mut run = Run::resume(target(1.0), 5);
    assert!(run.serve_until(59, 1.0).iter().all(|&desired| desired == 5));
    run.serve_until(62, 1.0);
    assert_eq!(
        run.changes(),
        vec![
            (
                60,
                2,
                "stable: 1.0 in flight over 60s at target 1 per instance, limited by max scale-down rate 2x"
            ),
            (61, 1, "stable: 1.0 in flight over 60s at target 1 per instance"),
        ]
    );
    assert!(!Kpa::resume(1, Timestamp::ZERO).is_panicking());
}

#[test]
fn failed_scrapes_hold_the_count_and_never_reach_zero() {
    let mut run = Run::deploy(target(10.0));
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
    let mut run = Run::deploy(settings);
    run.serve_until(10, 5.0);
    run.serve(40.0);
    assert_eq!(
        run.changes(),
        vec![
            INITIAL,
            (
                11,
                3,
                "panic: 22.5 in flight over 2s vs capacity 10 (1 ready x 10 per instance)"
            )
        ]
    );
}

#[test]
fn reasons_read_well() {
    let limit = Some(Limit::KeepOne {
        grace: Duration::from_millis(1_500),
    });
    let reason = Reason::Stable {
        average: 0.0,
        window: Duration::from_secs(60),
        target: 2.5,
        limit,
    };
    assert_eq!(
        reason.to_string(),
        "stable: 0.0 in flight over 60s at target 2.5 per instance, kept at 1 until 1.5s without traffic"
    );
    let capped = Reason::Bounds {
        limit: Limit::MaxScale(5),
    };
    assert_eq!(capped.to_string(), "no load measured yet; capped at max scale 5");
}

/// One generated tick: the load (if measured), how the ready count relates to the last
/// desired count, a poke, and the seconds since the previous tick.
#[derive(Debug, Clone)]
struct GeneratedTick {
    load: Option<(u16, u16)>,
    ready: ReadyMode,
    poked: bool,
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
        0u32..=3,
        0u32..=8,
        1u32..=20,
        prop::sample::select(vec![1.5, 2.0, 10.0, 1000.0]),
        prop::sample::select(vec![1.5, 2.0, 4.0]),
        2u64..=30,
        5.0f64..=50.0,
        0u64..=20,
        prop::sample::select(vec![1.0, 2.0, 3.0]),
    )
        .prop_map(
            |(min_scale, extra, target, up, down, stable, percent, grace, threshold)| ScalingSettings {
                target_concurrency: f64::from(target),
                min_scale,
                max_scale: (min_scale + extra).max(1),
                initial_scale: 1,
                stable_window: Duration::from_secs(stable),
                panic_window: PanicWindow::PercentOfStable(percent),
                panic_threshold: threshold,
                max_scale_up_rate: up,
                max_scale_down_rate: down,
                scale_to_zero_grace: Duration::from_secs(grace),
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
    let step = prop_oneof![8 => Just(1_000u64), 2 => 1u64..3_000];
    (load, ready, prop::bool::weighted(0.1), step).prop_map(|(load, ready, poked, step_millis)| GeneratedTick {
        load,
        ready,
        poked,
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
        let (mut kpa, _) = Kpa::deploy(&settings, Timestamp::ZERO);
        let mut now = Timestamp::ZERO;
        // Measured traffic or a poke: the independent clock for the grace period.
        let mut last_busy = Timestamp::ZERO;
        let mut was_panicking = false;
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
            if tick.poked || load.is_some_and(|load| load.concurrency > 0.0 || load.requests_per_second > 0.0) {
                last_busy = now;
            }
            let observation = Observation { load, ready_instances: ready, poked: tick.poked };
            let decision = kpa.decide(&observation, &settings, now);
            let desired = decision.desired;

            prop_assert_eq!(decision.previous, previous);
            prop_assert_eq!(decision.reason.is_some(), desired != previous);
            prop_assert!(desired <= settings.max_scale);
            if desired < settings.min_scale {
                prop_assert_eq!(desired, 0);
            }
            if desired == 0 && previous != 0 {
                prop_assert_eq!(settings.min_scale, 0);
                prop_assert!(now.saturating_since(last_busy) >= settings.scale_to_zero_grace);
            }
            if tick.poked {
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
