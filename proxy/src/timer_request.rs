//! The built-in `strata.timers.Timers` service as a command's outcome sees it: a
//! side effect or a forward to it is not a call but a [`TimerRequest`], checked
//! (name, time, and the call it will make: it exists, is unary and takes the
//! payload's type) before anything is stored, exactly as a forward's target is.
//! Pure but for reading the clock to bound an absolute time: the limits, the
//! checks and the retry delays; storing and firing timers are the sidecar's.

use std::time::Duration;

use prost::Message;
use prost_types::Any;
use strata_proto::strata::timers::{schedule_timer::When as When_, CancelTimer, ScheduleTimer};

pub use crate::call::{TimerRequest, When};
use crate::{
    call::{target_call, type_name, TargetKind},
    error::ProxyError,
    model::{MethodModel, Targets},
};

/// The built-in service's gRPC name.
pub const TIMERS_SERVICE: &str = "strata.timers.Timers";
/// How far ahead a timer may be scheduled.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The longest timer name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Calls made before a timer is kept as failed, unless it says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// The most calls a timer may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// The first retry's delay; each next one doubles, up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Whether a forward or side effect goes to the built-in timers service.
pub fn is_timers(service: &str) -> bool {
    service == TIMERS_SERVICE
}

/// Checks a side effect or forward to `strata.timers.Timers/method` asked for by
/// a command of `from`: the message, the timer's name and time, and the call it
/// will make (which must fit as a side effect's target would). `forward`: the
/// client gets the service's answer (google.protobuf.Empty), so `from` must
/// answer that type.
pub fn resolve_timer(
    targets: &dyn Targets,
    from: &MethodModel,
    method: &str,
    payload: Option<Any>,
    forward: bool,
) -> Result<TimerRequest, ProxyError> {
    let refuse = |reason: String| {
        ProxyError::Internal(format!(
            "{}.{} asked {TIMERS_SERVICE}.{method} {reason}",
            from.entity.service_name,
            from.name()
        ))
    };
    if forward && from.output().full_name() != "google.protobuf.Empty" {
        return Err(refuse(format!(
            "as a forward, which answers with a google.protobuf.Empty, but the client expects a {}",
            from.output().full_name()
        )));
    }
    let payload = payload.unwrap_or_default();
    let expect = |message: &str| -> Result<(), ProxyError> {
        let given = type_name(&payload.type_url);
        if given == message {
            return Ok(());
        }
        Err(refuse(format!("with a {given:?} payload, but it takes a {message}")))
    };
    let request = match method {
        "Schedule" => {
            expect("strata.timers.ScheduleTimer")?;
            let schedule = ScheduleTimer::decode(payload.value.as_slice())
                .map_err(|e| refuse(format!("with a ScheduleTimer that cannot be decoded ({e})")))?;
            schedule_request(targets, from, schedule).map_err(refuse)?
        }
        "Cancel" => {
            expect("strata.timers.CancelTimer")?;
            let cancel = CancelTimer::decode(payload.value.as_slice())
                .map_err(|e| refuse(format!("with a CancelTimer that cannot be decoded ({e})")))?;
            TimerRequest::Cancel {
                name: checked_name(cancel.name).map_err(refuse)?,
            }
        }
        other => {
            return Err(refuse(format!(
                "for {other:?}, which it does not have (it has Schedule and Cancel)"
            )))
        }
    };
    Ok(request)
}

fn schedule_request(
    targets: &dyn Targets,
    from: &MethodModel,
    schedule: ScheduleTimer,
) -> Result<TimerRequest, String> {
    let name = checked_name(schedule.name)?;
    let when = match schedule.when {
        None => return Err(format!("to schedule timer {name:?} with neither `after` nor `at`")),
        Some(When_::After(after)) => {
            let delay = Duration::try_from(after)
                .map_err(|_| format!("to schedule timer {name:?} after a negative or invalid duration"))?;
            if delay > MAX_DELAY {
                return Err(format!(
                    "to schedule timer {name:?} after {}s, more than the limit of {}s (365 days)",
                    delay.as_secs(),
                    MAX_DELAY.as_secs()
                ));
            }
            When::After(delay)
        }
        Some(When_::At(at)) => {
            let millis = at
                .seconds
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(i64::from(at.nanos / 1_000_000)))
                .filter(|_| (0..1_000_000_000).contains(&at.nanos))
                .ok_or_else(|| format!("to schedule timer {name:?} at an invalid time"))?;
            let limit_ms = i64::try_from(MAX_DELAY.as_millis()).unwrap_or(i64::MAX);
            if millis.saturating_sub(wall_clock_ms()) > limit_ms {
                return Err(format!(
                    "to schedule timer {name:?} at a time more than the limit of {}s (365 days) ahead",
                    MAX_DELAY.as_secs()
                ));
            }
            When::At(millis)
        }
    };
    if schedule.max_attempts > MAX_ATTEMPTS {
        return Err(format!(
            "to schedule timer {name:?} with {} attempts, more than the limit of {MAX_ATTEMPTS}",
            schedule.max_attempts
        ));
    }
    let Some(call) = schedule.call else {
        return Err(format!("to schedule timer {name:?} with no call to make"));
    };
    let target = target_call(
        targets,
        from,
        TargetKind::Timer,
        &call.service_name,
        &call.command_name,
        call.payload.clone(),
        None,
    )
    .map_err(|reason| {
        format!(
            "to schedule timer {name:?} calling {}.{}, {reason}",
            call.service_name, call.command_name
        )
    })?;
    Ok(TimerRequest::Schedule {
        name,
        when,
        service_name: target.method.entity.service_name.clone(),
        method: target.method.name().to_string(),
        payload: call.payload.unwrap_or_else(|| Any {
            type_url: target.method.input_type_url().to_string(),
            value: Vec::new(),
        }),
        max_attempts: if schedule.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            schedule.max_attempts
        },
    })
}

/// Milliseconds since the Unix epoch, now: only to bound an absolute time.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn checked_name(name: String) -> Result<String, String> {
    if name.is_empty() {
        return Err("for a timer with an empty name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "for a timer whose name is {} bytes, more than the limit of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(name)
}

/// How long to wait before the next call after `attempts` failed ones: 0.5 s,
/// doubling, at most a minute.
pub fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

/// The payload of a `Schedule` side effect.
#[cfg(test)]
pub fn schedule_payload(schedule: &ScheduleTimer) -> Any {
    Any {
        type_url: "type.googleapis.com/strata.timers.ScheduleTimer".into(),
        value: schedule.encode_to_vec(),
    }
}
