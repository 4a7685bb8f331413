//! Durable timers: a command asks the proxy's built-in `strata.timers.Timers`
//! service to make a call later, by a side effect on its reply. The side effect
//! is stored with the command's state (events or value), so a failed command
//! stores no timer; scheduling a name again replaces the timer.
//!
//! ```
//! use std::time::Duration;
//! use strata_sdk::{timer, Reply, ServiceCall};
//!
//! let expire = ServiceCall::new("example.Cart", "Expire", &());
//! let reply = Reply::empty().with_effect(timer::schedule("expire", Duration::from_secs(3600), expire));
//! assert_eq!(reply.effects()[0].call().service(), timer::TIMERS_SERVICE);
//! ```

use std::time::Duration;

use prost::Message;
use prost_types::Any;
use strata_proto::strata::timers::{schedule_timer::When, CancelTimer, ScheduleTimer, TimerCall};

use crate::reply::{ServiceCall, SideEffect};

/// The proxy's built-in timers service.
pub const TIMERS_SERVICE: &str = "strata.timers.Timers";

/// A side effect that schedules (or replaces) timer `name`, due `after` from
/// when the command's state is stored, to make `call` (a unary method taking the
/// call's payload type; the proxy checks it before anything is stored). Its
/// metadata is not kept: a timer's call carries `strata-timer: NAME`.
pub fn schedule(name: impl Into<String>, after: Duration, call: ServiceCall) -> SideEffect {
    schedule_with(name, After(after), call, 0)
}

/// As [`schedule`], with at most `max_attempts` calls before the timer is kept
/// as failed (0: the proxy's default of 10).
pub fn schedule_attempts(name: impl Into<String>, after: Duration, call: ServiceCall, max_attempts: u32) -> SideEffect {
    schedule_with(name, After(after), call, max_attempts)
}

/// A side effect that removes timer `name` (pending or failed); none by that
/// name is not an error.
pub fn cancel(name: impl Into<String>) -> SideEffect {
    let message = CancelTimer { name: name.into() };
    timers_call("Cancel", "strata.timers.CancelTimer", message.encode_to_vec())
}

struct After(Duration);

fn schedule_with(name: impl Into<String>, after: After, call: ServiceCall, max_attempts: u32) -> SideEffect {
    let after = prost_types::Duration {
        seconds: i64::try_from(after.0.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(after.0.subsec_nanos()).unwrap_or(0),
    };
    let message = ScheduleTimer {
        name: name.into(),
        when: Some(When::After(after)),
        call: Some(TimerCall {
            service_name: call.service().to_string(),
            command_name: call.method().to_string(),
            payload: Some(call.payload().clone()),
        }),
        max_attempts,
    };
    timers_call("Schedule", "strata.timers.ScheduleTimer", message.encode_to_vec())
}

fn timers_call(method: &str, message: &str, value: Vec<u8>) -> SideEffect {
    let payload = Any {
        type_url: format!("type.googleapis.com/{message}"),
        value,
    };
    // Synchronous: the timer is stored before the client has its answer.
    SideEffect::synchronous(ServiceCall::any(TIMERS_SERVICE, method, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_cancel_are_side_effects_on_the_timers_service_with_the_published_messages() {
        let call = ServiceCall::new("example.Cart", "Expire", &());
        let effect = schedule_attempts("expire", Duration::from_millis(1500), call, 3);
        assert_eq!(effect.call().service(), TIMERS_SERVICE);
        assert_eq!(effect.call().method(), "Schedule");
        let sent = ScheduleTimer::decode(effect.call().payload().value.as_slice()).unwrap();
        assert_eq!(sent.name, "expire");
        assert_eq!(
            sent.when,
            Some(When::After(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }))
        );
        let target = sent.call.unwrap();
        assert_eq!(
            (target.service_name.as_str(), target.command_name.as_str()),
            ("example.Cart", "Expire")
        );
        assert_eq!(
            target.payload.unwrap().type_url,
            "type.googleapis.com/google.protobuf.Empty"
        );
        assert_eq!(sent.max_attempts, 3);

        let effect = cancel("expire");
        assert_eq!(effect.call().method(), "Cancel");
        assert_eq!(
            effect.call().payload().type_url,
            "type.googleapis.com/strata.timers.CancelTimer"
        );
        assert_eq!(
            CancelTimer::decode(effect.call().payload().value.as_slice())
                .unwrap()
                .name,
            "expire"
        );
    }
}
