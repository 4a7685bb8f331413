//! What a side effect or forward to `strata.timers.Timers` resolves to, and every
//! way it is refused before anything is stored, asserted word for word.

use std::time::Duration;

use prost::Message;
use prost_types::{Duration as ProtoDuration, Timestamp};
use strata_proto::cloudstate::Forward;
use strata_proto::strata::timers::{schedule_timer, CancelTimer, ScheduleTimer, TimerCall};

use super::*;
use crate::{
    call::When,
    fixtures,
    timer_request::{retry_delay, schedule_payload, DEFAULT_MAX_ATTEMPTS, MAX_RETRY_DELAY, TIMERS_SERVICE},
};

fn record_call(shelf: &str) -> TimerCall {
    TimerCall {
        service_name: "test.things.Auditor".into(),
        command_name: "Record".into(),
        payload: Some(fixtures::thing_ref(shelf, 1)),
    }
}

fn schedule(name: &str, after_secs: i64, call: TimerCall) -> ScheduleTimer {
    ScheduleTimer {
        name: name.into(),
        when: Some(schedule_timer::When::After(ProtoDuration {
            seconds: after_secs,
            nanos: 0,
        })),
        call: Some(call),
        max_attempts: 0,
    }
}

fn side_effect(method: &str, payload: Any) -> SideEffect {
    SideEffect {
        service_name: TIMERS_SERVICE.into(),
        command_name: method.into(),
        payload: Some(payload),
        synchronous: false,
        metadata: None,
    }
}

fn cancel(name: &str) -> Any {
    Any {
        type_url: "type.googleapis.com/strata.timers.CancelTimer".into(),
        value: CancelTimer { name: name.into() }.encode_to_vec(),
    }
}

/// The message of the error a side effect to the timers service gets from Warehouse.Create.
fn refused(effect: SideEffect) -> String {
    let (model, method) = fixtures::method("/test.things.Warehouse/Create");
    match resolve_effects(&method, &model, vec![effect]) {
        Err(ProxyError::Internal(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn schedule_and_cancel_side_effects_become_timer_requests_not_calls() {
    let (model, method) = fixtures::method("/test.things.Warehouse/Create");
    let other = SideEffect {
        service_name: "test.things.Auditor".into(),
        command_name: "Record".into(),
        payload: Some(fixtures::thing_ref("s", 1)),
        synchronous: true,
        metadata: None,
    };
    let (effects, timers) = resolve_effects(
        &method,
        &model,
        vec![
            side_effect("Schedule", schedule_payload(&schedule("expire", 30, record_call("s")))),
            other,
            side_effect("Cancel", cancel("reminder")),
        ],
    )
    .unwrap();
    assert_eq!(effects.len(), 1, "only the real side effect is a call");
    assert_eq!(
        timers,
        vec![
            TimerRequest::Schedule {
                name: "expire".into(),
                when: When::After(Duration::from_secs(30)),
                service_name: "test.things.Auditor".into(),
                method: "Record".into(),
                payload: fixtures::thing_ref("s", 1),
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            },
            TimerRequest::Cancel {
                name: "reminder".into()
            },
        ]
    );
}

#[test]
fn an_absolute_time_is_kept_in_milliseconds() {
    let (model, method) = fixtures::method("/test.things.Warehouse/Create");
    let mut at = schedule("at", 0, record_call("s"));
    at.when = Some(schedule_timer::When::At(Timestamp {
        seconds: 1_700_000_000,
        nanos: 250_000_000,
    }));
    at.max_attempts = 3;
    let (_, timers) = resolve_effects(&method, &model, vec![side_effect("Schedule", schedule_payload(&at))]).unwrap();
    let TimerRequest::Schedule { when, max_attempts, .. } = &timers[0] else {
        panic!("expected a schedule")
    };
    assert_eq!((*when, *max_attempts), (When::At(1_700_000_000_250), 3));
    assert_eq!(When::After(Duration::from_millis(1500)).due_ms(10_000), 11_500);
    assert_eq!(When::At(42).due_ms(10_000), 42);
    // A time more than 365 days ahead is refused, as a delay that long is.
    let mut far = schedule("far", 0, record_call("s"));
    far.when = Some(schedule_timer::When::At(Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    }));
    let refused = resolve_effects(&method, &model, vec![side_effect("Schedule", schedule_payload(&far))]).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("more than the limit of 31536000s (365 days) ahead"),
        "{refused}"
    );
}

#[test]
fn a_forward_to_the_timers_service_answers_empty_to_a_client_that_expects_it() {
    let (model, method) = fixtures::method("/test.things.Warehouse/Remove");
    let forward = Forward {
        service_name: TIMERS_SERVICE.into(),
        command_name: "Cancel".into(),
        payload: Some(cancel("expire")),
        metadata: None,
    };
    let (next, timer) = resolve_forward(&model, &method, forward.clone()).unwrap();
    assert_eq!(
        next,
        Next::Reply(Answer::new(Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: vec![]
        }))
    );
    assert_eq!(timer, Some(TimerRequest::Cancel { name: "expire".into() }));

    // Create answers a Thing: the forward's Empty does not fit.
    let (model, create) = fixtures::method("/test.things.Warehouse/Create");
    assert_eq!(
        resolve_forward(&model, &create, forward).unwrap_err(),
        ProxyError::Internal(
            "test.things.Warehouse.Create asked strata.timers.Timers.Cancel as a forward, which answers with a \
             google.protobuf.Empty, but the client expects a test.things.Thing"
                .into()
        )
    );
}

#[test]
fn a_timer_calling_what_does_not_fit_is_refused_naming_why() {
    let mut unknown = record_call("s");
    unknown.command_name = "Shred".into();
    assert_eq!(
        refused(side_effect("Schedule", schedule_payload(&schedule("t", 1, unknown)))),
        "test.things.Warehouse.Create asked strata.timers.Timers.Schedule to schedule timer \"t\" calling \
         test.things.Auditor.Shred, which is not a method of any known service"
    );
    let mut wrong_type = record_call("s");
    wrong_type.payload = Some(fixtures::thing("s", 1));
    assert_eq!(
        refused(side_effect("Schedule", schedule_payload(&schedule("t", 1, wrong_type)))),
        "test.things.Warehouse.Create asked strata.timers.Timers.Schedule to schedule timer \"t\" calling \
         test.things.Auditor.Record, with a test.things.Thing payload, but the method takes a test.things.ThingRef"
    );
    let streamed = TimerCall {
        service_name: "test.things.Clerk".into(),
        command_name: "Watch".into(),
        payload: Some(fixtures::thing_ref("s", 1)),
    };
    assert_eq!(
        refused(side_effect("Schedule", schedule_payload(&schedule("t", 1, streamed)))),
        "test.things.Warehouse.Create asked strata.timers.Timers.Schedule to schedule timer \"t\" calling \
         test.things.Clerk.Watch, which is streamed: only unary methods can be called"
    );
}

#[test]
fn bad_names_times_limits_and_messages_are_refused() {
    let prefix = "test.things.Warehouse.Create asked strata.timers.Timers.";
    let cases: Vec<(SideEffect, String)> = vec![
        (
            side_effect("Schedule", schedule_payload(&schedule("", 1, record_call("s")))),
            "Schedule for a timer with an empty name".into(),
        ),
        (
            side_effect(
                "Schedule",
                schedule_payload(&schedule(&"n".repeat(201), 1, record_call("s"))),
            ),
            "Schedule for a timer whose name is 201 bytes, more than the limit of 200".into(),
        ),
        (
            side_effect(
                "Schedule",
                schedule_payload(&schedule("far", 366 * 24 * 3600, record_call("s"))),
            ),
            "Schedule to schedule timer \"far\" after 31622400s, more than the limit of 31536000s (365 days)".into(),
        ),
        (
            side_effect("Schedule", schedule_payload(&schedule("neg", -5, record_call("s")))),
            "Schedule to schedule timer \"neg\" after a negative or invalid duration".into(),
        ),
        (
            side_effect(
                "Schedule",
                schedule_payload(&ScheduleTimer {
                    when: None,
                    ..schedule("never", 1, record_call("s"))
                }),
            ),
            "Schedule to schedule timer \"never\" with neither `after` nor `at`".into(),
        ),
        (
            side_effect(
                "Schedule",
                schedule_payload(&ScheduleTimer {
                    max_attempts: 101,
                    ..schedule("many", 1, record_call("s"))
                }),
            ),
            "Schedule to schedule timer \"many\" with 101 attempts, more than the limit of 100".into(),
        ),
        (
            side_effect(
                "Schedule",
                schedule_payload(&ScheduleTimer {
                    call: None,
                    ..schedule("idle", 1, record_call("s"))
                }),
            ),
            "Schedule to schedule timer \"idle\" with no call to make".into(),
        ),
        (
            side_effect("Schedule", cancel("x")),
            "Schedule with a \"strata.timers.CancelTimer\" payload, but it takes a strata.timers.ScheduleTimer".into(),
        ),
        (
            side_effect("Snooze", cancel("x")),
            "Snooze for \"Snooze\", which it does not have (it has Schedule and Cancel)".into(),
        ),
    ];
    for (effect, expected) in cases {
        assert_eq!(refused(effect), format!("{prefix}{expected}"));
    }
}

#[test]
fn retries_back_off_doubling_to_a_minute() {
    let delays: Vec<u64> = (1..=10).map(|n| retry_delay(n).as_millis() as u64).collect();
    assert_eq!(
        delays,
        [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
    assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
}
