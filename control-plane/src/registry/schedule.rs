//! Schedules: a call made by the control plane's leader at every time of a cron
//! expression in a time zone, kept in the registry (so every node knows when each
//! last ran) with a short history of its runs. Owns the schedule's data, its
//! checks, and the pure decision of what is due ([`due`]); the call's check
//! against the service is `schedule_call.rs`, the leader's loop that makes the
//! calls `runtime/schedules.rs`.
//!
//! A time is recorded (through Raft) before its call, and the registry refuses a
//! second record of a time it already has, so two leaders never both call one
//! time. A run left `running` by a leader that died is resumed by the next one
//! (the loop's choice), so a time is called once, twice only if the old leader's
//! call landed before it died; a run still `running` when a later time starts is
//! marked `interrupted`.

use std::collections::VecDeque;
use std::str::FromStr;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// How many runs each schedule keeps in its history.
pub const RUN_HISTORY: usize = 20;
/// How many schedules the registry keeps.
pub const MAX_SCHEDULES: usize = 1000;
/// How late a time may be run and still count as on time: a leader that was
/// away for less (a failover) runs every time it missed, in order; older times
/// are missed, and the schedule's catch-up rule says what happens to them.
pub const LATE_TOLERANCE_MS: u64 = 30_000;

/// What to do with times missed while nobody could run them (no leader, the
/// control plane down) for longer than [`LATE_TOLERANCE_MS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Run once, for the latest missed time, then go on as usual.
    #[default]
    RunOnce,
    /// Skip every missed time; the next run is the next time to come.
    Skip,
}

/// A schedule as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    /// An IANA time zone name; `None` is UTC.
    pub time_zone: Option<String>,
    /// The deployed service to call.
    pub service: String,
    /// The gRPC method, as `package.Service/Method`.
    pub method: String,
    /// The request, as JSON (proto3 JSON mapping); `None` is `{}`.
    pub body: Option<String>,
    pub catch_up: Option<CatchUp>,
}

/// A schedule as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub service: String,
    pub method: String,
    pub body: String,
    pub catch_up: CatchUp,
    pub created_at_ms: u64,
    /// The latest time run, or skipped: no time up to it runs again.
    pub last_time_ms: Option<u64>,
    /// The latest runs, oldest first.
    pub runs: VecDeque<ScheduleRun>,
}

/// One time of a schedule, and how its call went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// The schedule's time this run is for (milliseconds since the Unix epoch).
    pub time_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub outcome: RunOutcome,
    /// Missed times this run stands for (catch-up `run_once`), or that were skipped.
    #[serde(default)]
    pub missed: u32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RunOutcome {
    /// The call is in flight.
    Running,
    Ok,
    Failed {
        error: String,
    },
    /// The leader changed while the call was in flight: it may or may not have
    /// been made, and it is not made again.
    Interrupted,
    /// Missed times skipped by the catch-up rule `skip` (no call).
    Skipped,
}

/// What the leader should do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Call for `time_ms` (standing for `missed` earlier times too).
    Run { time_ms: u64, missed: u32 },
    /// Record the missed times up to `through_ms` as skipped.
    Skip { through_ms: u64, missed: u32 },
    /// Nothing before `next_ms`.
    Wait { next_ms: u64 },
    /// The expression has no time to come.
    Never,
}

/// Parses a cron expression: five fields (minute granularity) or six (seconds
/// first), with `L`, `W`, `#` and the `@hourly`-style aliases.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    Cron::from_str(expression).map_err(|error| format!("the cron expression {expression:?} does not parse: {error}"))
}

/// Parses an IANA time zone name, e.g. `Europe/Berlin`.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!("{name:?} is not a time zone: use an IANA name such as UTC, Europe/Berlin or America/New_York")
    })
}

/// Checks a schedule as requested and fills in its defaults.
pub fn validate(spec: ScheduleSpec, now_ms: u64) -> Result<Schedule, RegistryError> {
    super::validate_name(&spec.name).map_err(|_| {
        RegistryError::invalid(
            "name",
            format!(
                "invalid schedule name {:?}: use 1 to 63 lowercase letters, digits or '-', starting and ending \
                 with a letter or digit",
                spec.name
            ),
        )
    })?;
    parse_cron(&spec.cron).map_err(|message| RegistryError::invalid("cron", message))?;
    let time_zone = spec
        .time_zone
        .filter(|zone| !zone.trim().is_empty())
        .unwrap_or_else(|| "UTC".into());
    parse_time_zone(&time_zone).map_err(|message| RegistryError::invalid("time_zone", message))?;
    if spec.service.trim().is_empty() {
        return Err(RegistryError::invalid(
            "call",
            "the call names no service: use SERVICE/package.Service/Method",
        ));
    }
    let method_ok = spec
        .method
        .split_once('/')
        .is_some_and(|(service, method)| service.contains('.') && !method.is_empty() && !method.contains('/'));
    if !method_ok {
        return Err(RegistryError::invalid(
            "call",
            format!(
                "{:?} is not a gRPC method: write it as package.Service/Method",
                spec.method
            ),
        ));
    }
    let body = spec
        .body
        .filter(|body| !body.trim().is_empty())
        .unwrap_or_else(|| "{}".into());
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => return Err(RegistryError::invalid("body", "the body must be a JSON object")),
    }
    Ok(Schedule {
        name: spec.name,
        cron: spec.cron,
        time_zone,
        service: spec.service,
        method: spec.method,
        body,
        catch_up: spec.catch_up.unwrap_or_default(),
        created_at_ms: now_ms,
        last_time_ms: None,
        runs: VecDeque::new(),
    })
}

impl Schedule {
    /// The first time strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let (cron, zone) = self.parsed()?;
        let after = zone.timestamp_millis_opt(i64::try_from(after_ms).ok()?).single()?;
        let next = cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The latest time at or before `at_ms`.
    fn latest_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let (cron, zone) = self.parsed()?;
        let at = zone.timestamp_millis_opt(i64::try_from(at_ms).ok()?).single()?;
        let previous = cron.find_previous_occurrence(&at, true).ok()?;
        u64::try_from(previous.timestamp_millis()).ok()
    }

    /// How many times fall in `(after_ms, through_ms]` (counted up to a bound).
    fn times_between(&self, after_ms: u64, through_ms: u64) -> u32 {
        let mut count = 0u32;
        let mut at = after_ms;
        while let Some(next) = self.next_after(at).filter(|&next| next <= through_ms) {
            count += 1;
            if count >= 10_000 {
                break;
            }
            at = next;
        }
        count
    }

    fn parsed(&self) -> Option<(Cron, Tz)> {
        Some((parse_cron(&self.cron).ok()?, parse_time_zone(&self.time_zone).ok()?))
    }

    /// The next time to come after `now_ms`, for display.
    pub fn next_run_ms(&self, now_ms: u64) -> Option<u64> {
        match due(self, now_ms) {
            Due::Run { time_ms, .. } => Some(time_ms),
            Due::Skip { .. } => self.next_after(now_ms),
            Due::Wait { next_ms } => Some(next_ms),
            Due::Never => None,
        }
    }

    /// The run in flight, if one is.
    pub fn running(&self) -> Option<&ScheduleRun> {
        self.runs.iter().rev().find(|run| run.outcome == RunOutcome::Running)
    }
}

/// What is due for `schedule` at `now_ms`: the first time after the last one
/// runs if it is at most [`LATE_TOLERANCE_MS`] late (so a failover loses no
/// time); older ones were missed, and are run once (for the latest time due)
/// or skipped, as the schedule's catch-up rule says.
pub fn due(schedule: &Schedule, now_ms: u64) -> Due {
    let base = schedule.last_time_ms.unwrap_or(schedule.created_at_ms);
    let Some(first) = schedule.next_after(base) else {
        return Due::Never;
    };
    if first > now_ms {
        return Due::Wait { next_ms: first };
    }
    if now_ms - first <= LATE_TOLERANCE_MS {
        return Due::Run {
            time_ms: first,
            missed: 0,
        };
    }
    match schedule.catch_up {
        CatchUp::RunOnce => {
            let latest = schedule.latest_at_or_before(now_ms).unwrap_or(first).max(first);
            Due::Run {
                time_ms: latest,
                missed: schedule.times_between(base, latest).saturating_sub(1),
            }
        }
        CatchUp::Skip => {
            let through = schedule
                .latest_at_or_before(now_ms - LATE_TOLERANCE_MS)
                .unwrap_or(first)
                .max(first);
            Due::Skip {
                through_ms: through,
                missed: schedule.times_between(base, through),
            }
        }
    }
}

/// A time for messages, in UTC.
pub fn display_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or_else(|| ms.to_string(), |time| time.to_rfc3339())
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
