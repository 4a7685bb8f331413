//! What the leader does about its schedules at one moment: start the run of a time
//! that is due, take over a run an earlier leader left in flight, or record missed
//! times as skipped. Pure: from the registry's schedules, the runs this leader has
//! in flight and the time, to a list of steps; the loop in `schedules.rs` performs
//! them.

use std::collections::{BTreeMap, HashSet};

use crate::registry::schedule::{due, Due, Schedule};

/// One thing to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Record the run of `time_ms` through Raft, then make the call.
    Start { name: String, time_ms: u64, missed: u32 },
    /// Make the call of a run an earlier leader recorded and never finished.
    Resume { name: String, time_ms: u64 },
    /// Record the missed times up to `through_ms` as skipped.
    Skip { name: String, through_ms: u64, missed: u32 },
}

/// The steps for `schedules` at `now_ms`, this leader having calls in flight for
/// the schedules in `in_flight`. A schedule runs one time at a time: while a call
/// is in flight, later times wait (and run late, within the tolerance, or are
/// caught up as the schedule says).
pub fn steps(schedules: &BTreeMap<String, Schedule>, in_flight: &HashSet<String>, now_ms: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, schedule) in schedules {
        if in_flight.contains(name) {
            continue;
        }
        if let Some(run) = schedule.running() {
            steps.push(Step::Resume {
                name: name.clone(),
                time_ms: run.time_ms,
            });
            continue;
        }
        match due(schedule, now_ms) {
            Due::Run { time_ms, missed } => steps.push(Step::Start {
                name: name.clone(),
                time_ms,
                missed,
            }),
            Due::Skip { through_ms, missed } => steps.push(Step::Skip {
                name: name.clone(),
                through_ms,
                missed,
            }),
            Due::Wait { .. } | Due::Never => {}
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::registry::schedule::{CatchUp, RunOutcome, ScheduleRun};

    /// Every 10 s, created at 0.
    fn every_ten_seconds(last_time_ms: Option<u64>, runs: Vec<ScheduleRun>) -> Schedule {
        Schedule {
            name: "tick".into(),
            cron: "*/10 * * * * *".into(),
            time_zone: "UTC".into(),
            service: "cart".into(),
            method: "com.example.shoppingcart.ShoppingCart/AddItem".into(),
            body: "{}".into(),
            catch_up: CatchUp::RunOnce,
            created_at_ms: 0,
            last_time_ms,
            runs: VecDeque::from(runs),
        }
    }

    fn run(time_ms: u64, outcome: RunOutcome) -> ScheduleRun {
        ScheduleRun {
            time_ms,
            started_at_ms: time_ms,
            finished_at_ms: None,
            outcome,
            missed: 0,
        }
    }

    fn one(schedule: Schedule) -> BTreeMap<String, Schedule> {
        BTreeMap::from([(schedule.name.clone(), schedule)])
    }

    #[test]
    fn a_due_time_starts_and_nothing_is_done_before_it() {
        let schedules = one(every_ten_seconds(None, vec![]));
        assert_eq!(steps(&schedules, &HashSet::new(), 9_999), vec![]);
        assert_eq!(
            steps(&schedules, &HashSet::new(), 10_000),
            vec![Step::Start {
                name: "tick".into(),
                time_ms: 10_000,
                missed: 0
            }]
        );
    }

    #[test]
    fn a_run_left_in_flight_by_an_earlier_leader_is_resumed_before_anything_else() {
        let schedules = one(every_ten_seconds(Some(10_000), vec![run(10_000, RunOutcome::Running)]));
        assert_eq!(
            steps(&schedules, &HashSet::new(), 21_000),
            vec![Step::Resume {
                name: "tick".into(),
                time_ms: 10_000
            }]
        );
    }

    #[test]
    fn a_schedule_with_a_call_in_flight_here_waits() {
        let schedules = one(every_ten_seconds(Some(10_000), vec![run(10_000, RunOutcome::Running)]));
        let in_flight = HashSet::from(["tick".to_owned()]);
        assert_eq!(steps(&schedules, &in_flight, 21_000), vec![]);
    }

    #[test]
    fn after_a_finished_run_the_next_time_starts_and_missed_ones_are_skipped_if_asked() {
        let finished = every_ten_seconds(Some(10_000), vec![run(10_000, RunOutcome::Ok)]);
        assert_eq!(
            steps(&one(finished.clone()), &HashSet::new(), 20_500),
            vec![Step::Start {
                name: "tick".into(),
                time_ms: 20_000,
                missed: 0
            }]
        );
        let skipping = Schedule {
            catch_up: CatchUp::Skip,
            ..finished
        };
        assert_eq!(
            steps(&one(skipping), &HashSet::new(), 100_000),
            vec![Step::Skip {
                name: "tick".into(),
                through_ms: 70_000,
                missed: 6
            }]
        );
    }
}
