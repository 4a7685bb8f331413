//! Exact actions of the plan for each situation a driver meets.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use proptest::prelude::*;
use strata_control_plane::registry::InstanceState;

use super::plan::*;

const NOW: u64 = 1_000_000;

fn running(id: &str, service: &str, started_at_ms: u64) -> ObservedInstance {
    ObservedInstance {
        id: id.into(),
        service: service.into(),
        started_at_ms,
        health: Health::Running,
        tracked: true,
        revision: 0,
    }
}

struct Case {
    desired: BTreeMap<String, u32>,
    observed: Vec<ObservedInstance>,
    registered: BTreeMap<String, (String, InstanceState)>,
    pacing: BTreeMap<String, Pacing>,
    serving: BTreeMap<String, u64>,
    owners: BTreeSet<String>,
    canaries: BTreeMap<String, (u64, u32)>,
    now_ms: u64,
}

impl Case {
    fn new(desired: &[(&str, u32)]) -> Self {
        Case {
            desired: desired.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            observed: Vec::new(),
            registered: BTreeMap::new(),
            pacing: BTreeMap::new(),
            serving: BTreeMap::new(),
            owners: BTreeSet::new(),
            canaries: BTreeMap::new(),
            now_ms: NOW,
        }
    }

    fn with(mut self, instance: ObservedInstance, state: Option<InstanceState>) -> Self {
        if let Some(state) = state {
            self.registered
                .insert(instance.id.clone(), (instance.service.clone(), state));
        }
        self.observed.push(instance);
        self
    }

    fn registered(mut self, id: &str, service: &str, state: InstanceState) -> Self {
        self.registered.insert(id.into(), (service.into(), state));
        self
    }

    fn paced(mut self, service: &str, failures: u32, not_before_ms: u64) -> Self {
        self.pacing.insert(
            service.into(),
            Pacing {
                failures,
                not_before_ms,
            },
        );
        self
    }

    fn plan(&self) -> Vec<Action> {
        plan(PlanInput {
            desired: &self.desired,
            observed: &self.observed,
            registered: &self.registered,
            pacing: &self.pacing,
            serving: &self.serving,
            owners: &self.owners,
            canaries: &self.canaries,
            now_ms: self.now_ms,
            settings: PlanSettings {
                ready_timeout: Duration::from_secs(60),
                healthy_after: Duration::from_secs(10),
            },
        })
    }
}

fn start(service: &str, count: u32) -> Action {
    Action::Start {
        service: service.into(),
        count,
        canary: None,
    }
}

fn stop(instance: &str, reason: StopReason) -> Action {
    Action::Stop {
        instance: instance.into(),
        reason,
    }
}

#[test]
fn a_new_service_starts_every_instance_at_once() {
    assert_eq!(Case::new(&[("cart", 3)]).plan(), vec![start("cart", 3)]);
}

#[test]
fn nothing_to_do_when_what_runs_is_what_is_wanted() {
    let case = Case::new(&[("cart", 1)]).with(running("a", "cart", NOW - 5_000), Some(InstanceState::Ready));
    assert_eq!(case.plan(), vec![]);
}

#[test]
fn a_first_crash_is_replaced_at_once() {
    let mut crashed = running("a", "cart", NOW - 5_000);
    crashed.health = Health::Exited {
        reason: "the function exited (exit status: 1)".into(),
    };
    let case = Case::new(&[("cart", 2)])
        .with(crashed, Some(InstanceState::Ready))
        .with(running("b", "cart", NOW - 5_000), Some(InstanceState::Ready));
    // The replacement starts in the same round: the calls held for the crashed
    // instance wait milliseconds, not a backoff.
    assert_eq!(
        case.plan(),
        vec![
            Action::Replace {
                instance: "a".into(),
                service: "cart".into(),
                failure: Failure::Exited {
                    reason: "the function exited (exit status: 1)".into()
                },
                retry_in: Duration::ZERO,
            },
            Action::BackOff {
                service: "cart".into(),
                failures: 1,
                until_ms: NOW,
            },
            start("cart", 1),
        ]
    );
}

#[test]
fn a_second_crash_in_a_row_backs_off() {
    let mut crashed = running("a", "cart", NOW - 500);
    crashed.health = Health::Exited {
        reason: "killed".into(),
    };
    let case = Case::new(&[("cart", 1)])
        .with(crashed, Some(InstanceState::Ready))
        .paced("cart", 1, NOW - 1);
    // No start this round: the replacement waits out the backoff.
    assert_eq!(
        case.plan(),
        vec![
            Action::Replace {
                instance: "a".into(),
                service: "cart".into(),
                failure: Failure::Exited {
                    reason: "killed".into()
                },
                retry_in: Duration::from_secs(1),
            },
            Action::BackOff {
                service: "cart".into(),
                failures: 2,
                until_ms: NOW + 1_000,
            },
        ]
    );
}

#[test]
fn failures_in_a_row_double_the_wait_up_to_a_minute() {
    let mut crashed = running("a", "cart", NOW - 500);
    crashed.health = Health::Exited {
        reason: "killed".into(),
    };
    let case = Case::new(&[("cart", 1)])
        .with(crashed, Some(InstanceState::Starting))
        .paced("cart", 3, NOW - 1);
    assert_eq!(
        case.plan()[1],
        Action::BackOff {
            service: "cart".into(),
            failures: 4,
            until_ms: NOW + 4_000,
        }
    );
    let delays: Vec<u64> = (1..=9).map(|n| backoff_delay(n).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    let restarts: Vec<u64> = (1..=9).map(|n| restart_delay(n).as_secs()).collect();
    assert_eq!(restarts, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn while_backing_off_nothing_starts_then_one_at_a_time() {
    let waiting = Case::new(&[("cart", 3)]).paced("cart", 2, NOW + 1);
    assert_eq!(waiting.plan(), vec![]);
    let due = Case::new(&[("cart", 3)]).paced("cart", 2, NOW);
    assert_eq!(due.plan(), vec![start("cart", 1)]);
}

#[test]
fn an_instance_ready_for_a_while_clears_the_failures() {
    // Started once the backoff had ended, ready for over 10 s.
    let case = Case::new(&[("cart", 2)])
        .with(running("a", "cart", NOW - 10_001), Some(InstanceState::Ready))
        .paced("cart", 2, NOW - 20_000);
    assert_eq!(
        case.plan(),
        vec![Action::Recovered { service: "cart".into() }, start("cart", 1),]
    );
    // Ready, but not for long enough: still one at a time.
    let young = Case::new(&[("cart", 3)])
        .with(running("a", "cart", NOW - 9_000), Some(InstanceState::Ready))
        .paced("cart", 2, NOW - 20_000);
    assert_eq!(young.plan(), vec![start("cart", 1)]);
    // An instance older than the failures proves nothing about the restarts.
    let old = Case::new(&[("cart", 3)])
        .with(running("a", "cart", NOW - 60_000), Some(InstanceState::Ready))
        .paced("cart", 2, NOW - 20_000);
    assert_eq!(old.plan(), vec![start("cart", 1)]);
}

#[test]
fn an_instance_that_never_becomes_ready_is_replaced() {
    let overdue = NOW - 60_001;
    let case = Case::new(&[("cart", 3)])
        .with(running("registered", "cart", overdue), Some(InstanceState::Starting))
        .with(running("silent", "cart", overdue), None)
        .with(running("ready", "cart", overdue), Some(InstanceState::Ready))
        .with(running("young", "cart", NOW - 59_000), None);
    let not_ready = Failure::NotReady {
        waited: Duration::from_secs(60),
    };
    assert_eq!(
        case.plan(),
        vec![
            Action::Replace {
                instance: "registered".into(),
                service: "cart".into(),
                failure: not_ready.clone(),
                retry_in: Duration::ZERO,
            },
            Action::BackOff {
                service: "cart".into(),
                failures: 1,
                until_ms: NOW,
            },
            Action::Replace {
                instance: "silent".into(),
                service: "cart".into(),
                failure: not_ready,
                retry_in: Duration::from_secs(1),
            },
            Action::BackOff {
                service: "cart".into(),
                failures: 2,
                until_ms: NOW + 1_000,
            },
        ]
    );
}

#[test]
fn scale_up_starts_what_is_missing() {
    let case = Case::new(&[("cart", 4)])
        .with(running("a", "cart", NOW - 5_000), Some(InstanceState::Ready))
        .with(running("b", "cart", NOW - 100), None);
    assert_eq!(case.plan(), vec![start("cart", 2)]);
}

#[test]
fn scale_down_stops_the_youngest_first() {
    let case = Case::new(&[("cart", 1)])
        .with(running("old", "cart", NOW - 30_000), Some(InstanceState::Ready))
        .with(running("newest", "cart", NOW - 1_000), Some(InstanceState::Ready))
        .with(running("middle", "cart", NOW - 20_000), Some(InstanceState::Ready));
    assert_eq!(
        case.plan(),
        vec![
            stop("newest", StopReason::ScaledDown),
            stop("middle", StopReason::ScaledDown)
        ]
    );
    let to_zero = Case::new(&[("cart", 0)]).with(running("old", "cart", NOW - 30_000), Some(InstanceState::Ready));
    assert_eq!(to_zero.plan(), vec![stop("old", StopReason::ScaledDown)]);
}

#[test]
fn instances_being_stopped_do_not_count() {
    let mut draining = running("a", "cart", NOW - 5_000);
    draining.health = Health::Stopping;
    let case = Case::new(&[("cart", 1)]).with(draining, Some(InstanceState::Draining));
    // Neither an orphan (it is seen) nor counted: a fresh instance starts.
    assert_eq!(case.plan(), vec![start("cart", 1)]);
}

#[test]
fn a_new_leader_adopts_the_instances_it_finds_instead_of_starting_more() {
    let mut found_a = running("cart-7d9f-a", "cart", NOW - 50_000);
    found_a.tracked = false;
    let mut found_b = running("cart-7d9f-b", "cart", NOW - 40_000);
    found_b.tracked = false;
    let case = Case::new(&[("cart", 2)])
        .with(found_a, Some(InstanceState::Ready))
        .with(found_b, Some(InstanceState::Ready));
    assert_eq!(
        case.plan(),
        vec![
            Action::Adopt {
                instance: "cart-7d9f-a".into()
            },
            Action::Adopt {
                instance: "cart-7d9f-b".into()
            },
        ]
    );
    // Adopted instances are scaled like any other: youngest first.
    let mut found = running("cart-7d9f-b", "cart", NOW - 40_000);
    found.tracked = false;
    let smaller = Case::new(&[("cart", 1)])
        .with(running("cart-7d9f-a", "cart", NOW - 50_000), Some(InstanceState::Ready))
        .with(found, Some(InstanceState::Ready));
    assert_eq!(
        smaller.plan(),
        vec![
            Action::Adopt {
                instance: "cart-7d9f-b".into()
            },
            stop("cart-7d9f-b", StopReason::ScaledDown),
        ]
    );
}

#[test]
fn registered_instances_nothing_runs_are_orphans() {
    let case = Case::new(&[("cart", 1)])
        .with(running("a", "cart", NOW - 5_000), Some(InstanceState::Ready))
        .registered("left-by-a-killed-run", "cart", InstanceState::Ready)
        // Another driver's service: not ours to judge.
        .registered("elsewhere", "billing", InstanceState::Ready);
    assert_eq!(
        case.plan(),
        vec![Action::Orphan {
            instance: "left-by-a-killed-run".into()
        }]
    );
}

#[test]
fn instances_of_a_deleted_service_are_stopped() {
    let mut crashed = running("gone-2", "gone", NOW - 5_000);
    crashed.health = Health::Exited {
        reason: "killed".into(),
    };
    let case = Case::new(&[("cart", 0)])
        .with(running("cart-1", "cart", NOW - 5_000), Some(InstanceState::Ready))
        .with(running("gone-1", "gone", NOW - 5_000), None)
        .with(crashed, None);
    // A crash of a deleted service's instance is no reason to back off: it just goes.
    assert_eq!(
        case.plan(),
        vec![
            stop("cart-1", StopReason::ScaledDown),
            stop("gone-1", StopReason::ServiceDeleted),
            stop("gone-2", StopReason::ServiceDeleted),
        ]
    );
}

/// One random instance of "cart" or "gone": health 0 running, 1 exited, 2 stopping.
fn any_instance() -> impl Strategy<Value = (ObservedInstance, Option<InstanceState>)> {
    (
        0u32..1000,
        prop_oneof![Just("cart"), Just("gone")],
        0u64..200_000,
        0u8..3,
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some(InstanceState::Starting)),
            Just(Some(InstanceState::Ready))
        ],
    )
        .prop_map(|(n, service, age, health, tracked, state)| {
            let health = match health {
                0 => Health::Running,
                1 => Health::Exited {
                    reason: "crashed".into(),
                },
                _ => Health::Stopping,
            };
            let instance = ObservedInstance {
                id: format!("{service}-{n}"),
                service: service.into(),
                started_at_ms: NOW - age,
                health,
                tracked,
                revision: 0,
            };
            (instance, state)
        })
}

proptest! {
    /// Whatever it sees, the plan keeps its promises: every failure of a wanted service
    /// is replaced once (a first one at once),
    /// nothing starts during a backoff, what runs after the plan is never more than
    /// wanted (nor less, unless it is backing off), and only live instances are stopped.
    #[test]
    fn the_plan_keeps_its_promises(
        instances in proptest::collection::vec(any_instance(), 0..12),
        desired in 0u32..6,
        failures in 0u32..4,
        wait_ms in 0u64..3_000,
    ) {
        let mut case = Case::new(&[("cart", desired)]);
        if failures > 0 {
            case = case.paced("cart", failures, NOW + wait_ms - 1_000);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (instance, state) in instances {
            if seen.insert(instance.id.clone()) {
                case = case.with(instance, state);
            }
        }
        let actions = case.plan();

        let exited: Vec<&str> = case.observed.iter()
            .filter(|i| i.service == "cart" && matches!(i.health, Health::Exited { .. }))
            .map(|i| i.id.as_str()).collect();
        for id in &exited {
            let replaced = actions.iter()
                .filter(|a| matches!(a, Action::Replace { instance, .. } if instance == id))
                .count();
            prop_assert_eq!(replaced, 1, "{} exited", id);
        }
        let replaced: Vec<&str> = actions.iter().filter_map(|a| match a {
            Action::Replace { instance, .. } => Some(instance.as_str()),
            _ => None,
        }).collect();
        let live_after = |service: &str| case.observed.iter()
            .filter(|i| i.service == service && i.health == Health::Running && !replaced.contains(&i.id.as_str()))
            .count() as i64;
        let started: i64 = actions.iter().map(|a| match a {
            Action::Start { service, count, .. } if service == "cart" => i64::from(*count),
            _ => 0,
        }).sum();
        let stopped: Vec<&str> = actions.iter().filter_map(|a| match a {
            Action::Stop { instance, .. } => Some(instance.as_str()),
            _ => None,
        }).collect();
        for id in stopped.iter().filter(|id| id.starts_with("cart-")) {
            let instance = case.observed.iter().find(|i| i.id == *id).unwrap();
            prop_assert_eq!(&instance.health, &Health::Running, "stopped {}", id);
            prop_assert!(!replaced.contains(id), "{} both stopped and replaced", id);
        }
        let cart_stopped = stopped.iter().filter(|id| id.starts_with("cart-")).count() as i64;
        let running = live_after("cart") + started - cart_stopped;
        // A backoff that ends now (a first crash) holds nothing off.
        let backing_off = actions.iter().any(|a| matches!(a, Action::BackOff { service, until_ms, .. } if service == "cart" && *until_ms > NOW))
            || (failures > 0 && wait_ms > 1_000);
        if backing_off {
            prop_assert_eq!(started, 0, "started during a backoff: {:?}", actions);
            prop_assert!(running <= i64::from(desired).max(live_after("cart")));
        } else if failures > 0 || !replaced.is_empty() {
            prop_assert!(started <= 1, "one at a time after failures: {:?}", actions);
        } else {
            prop_assert_eq!(running, i64::from(desired), "{:?}", actions);
        }
        prop_assert!(running <= i64::from(desired).max(live_after("cart") - cart_stopped), "{:?}", actions);
        // Everything of the deleted service is stopped, crashed or not, and never paced.
        let gone = case.observed.iter().filter(|i| i.service == "gone" && i.health != Health::Stopping).count();
        prop_assert_eq!(stopped.iter().filter(|id| id.starts_with("gone-")).count(), gone);
        let gone_paced = actions.iter().any(|a| matches!(a, Action::BackOff { service, .. } if service == "gone"));
        prop_assert!(!gone_paced, "{:?}", actions);
    }
}
