//! Schedules: the checks of a request (each refusal word for word), what is due
//! at a time (on time, late within the tolerance, missed and caught up once or
//! skipped, in a time zone across a DST change), the call checked against the
//! service's descriptors, and the registry commands that start each time once.

use chrono::TimeZone;

use super::*;
use crate::registry::{apply, Command, Outcome, Registry};

/// Milliseconds of a UTC time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
    chrono::Utc
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis() as u64
}

fn spec(cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: "digest".into(),
        cron: cron.into(),
        time_zone: None,
        service: "cart".into(),
        method: "com.example.shoppingcart.ShoppingCart/AddItem".into(),
        body: Some(r#"{"userId": "cron"}"#.into()),
        catch_up: None,
    }
}

fn invalid(spec: ScheduleSpec) -> (String, String) {
    match validate(spec, 0) {
        Err(RegistryError::Invalid { field, message }) => (field, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_request_is_checked_and_completed() {
    let schedule = validate(spec("*/5 * * * *"), 42).unwrap();
    assert_eq!(
        (schedule.time_zone.as_str(), schedule.catch_up, schedule.created_at_ms),
        ("UTC", CatchUp::RunOnce, 42)
    );
    let berlin = validate(
        ScheduleSpec {
            time_zone: Some("Europe/Berlin".into()),
            body: None,
            catch_up: Some(CatchUp::Skip),
            ..spec("0 7 * * MON-FRI")
        },
        0,
    )
    .unwrap();
    assert_eq!((berlin.body.as_str(), berlin.catch_up), ("{}", CatchUp::Skip));
}

#[test]
fn bad_requests_are_refused_naming_what_is_wrong() {
    assert_eq!(
        invalid(spec("*/5 * * *")).0,
        "cron",
        "four fields are not a cron expression"
    );
    let (field, message) = invalid(spec("61 * * * *"));
    assert_eq!(field, "cron");
    assert!(
        message.starts_with("the cron expression \"61 * * * *\" does not parse: "),
        "{message}"
    );
    assert_eq!(
        invalid(ScheduleSpec {
            time_zone: Some("Mars/Olympus".into()),
            ..spec("* * * * *")
        }),
        (
            "time_zone".into(),
            "\"Mars/Olympus\" is not a time zone: use an IANA name such as UTC, Europe/Berlin or America/New_York"
                .into()
        )
    );
    assert_eq!(
        invalid(ScheduleSpec {
            method: "AddItem".into(),
            ..spec("* * * * *")
        }),
        (
            "call".into(),
            "\"AddItem\" is not a gRPC method: write it as package.Service/Method".into()
        )
    );
    assert_eq!(
        invalid(ScheduleSpec {
            body: Some("[1]".into()),
            ..spec("* * * * *")
        }),
        ("body".into(), "the body must be a JSON object".into())
    );
    assert_eq!(
        invalid(ScheduleSpec {
            name: "Digest!".into(),
            ..spec("* * * * *")
        })
        .0,
        "name"
    );
}

fn every_five_seconds(created_at_ms: u64) -> Schedule {
    validate(spec("*/5 * * * * *"), created_at_ms).unwrap()
}

#[test]
fn each_time_is_due_once_after_the_last_and_a_late_one_still_runs() {
    let start = utc(2024, 3, 1, 12, 0, 1);
    let mut schedule = every_five_seconds(start);
    assert_eq!(
        due(&schedule, start),
        Due::Wait {
            next_ms: utc(2024, 3, 1, 12, 0, 5)
        }
    );
    assert_eq!(
        due(&schedule, utc(2024, 3, 1, 12, 0, 5)),
        Due::Run {
            time_ms: utc(2024, 3, 1, 12, 0, 5),
            missed: 0
        }
    );
    // --- a failover of 12 s: every time it spanned still runs, in order
    schedule.last_time_ms = Some(utc(2024, 3, 1, 12, 0, 5));
    let after_failover = utc(2024, 3, 1, 12, 0, 17);
    assert_eq!(
        due(&schedule, after_failover),
        Due::Run {
            time_ms: utc(2024, 3, 1, 12, 0, 10),
            missed: 0
        }
    );
    schedule.last_time_ms = Some(utc(2024, 3, 1, 12, 0, 10));
    assert_eq!(
        due(&schedule, after_failover),
        Due::Run {
            time_ms: utc(2024, 3, 1, 12, 0, 15),
            missed: 0
        }
    );
    assert_eq!(schedule.next_run_ms(after_failover), Some(utc(2024, 3, 1, 12, 0, 15)));
}

#[test]
fn missed_times_run_once_or_are_skipped() {
    let start = utc(2024, 3, 1, 12, 0, 0);
    let mut schedule = every_five_seconds(start);
    schedule.last_time_ms = Some(start);
    // --- down for a minute: 12 times passed, the first 6 beyond the tolerance
    let back = utc(2024, 3, 1, 12, 1, 2);
    assert_eq!(
        due(&schedule, back),
        Due::Run {
            time_ms: utc(2024, 3, 1, 12, 1, 0),
            missed: 11
        }
    );
    schedule.catch_up = CatchUp::Skip;
    assert_eq!(
        due(&schedule, back),
        Due::Skip {
            through_ms: utc(2024, 3, 1, 12, 0, 30),
            missed: 6
        }
    );
    // After the skip, the times within the tolerance run.
    schedule.last_time_ms = Some(utc(2024, 3, 1, 12, 0, 30));
    assert_eq!(
        due(&schedule, back),
        Due::Run {
            time_ms: utc(2024, 3, 1, 12, 0, 35),
            missed: 0
        }
    );
}

#[test]
fn times_follow_the_time_zone_across_a_dst_change() {
    // 07:00 in Berlin: 06:00 UTC in winter, 05:00 UTC after the change on 31 March 2024.
    let mut schedule = validate(
        ScheduleSpec {
            time_zone: Some("Europe/Berlin".into()),
            ..spec("0 7 * * *")
        },
        utc(2024, 3, 30, 12, 0, 0),
    )
    .unwrap();
    assert_eq!(
        schedule.next_after(schedule.created_at_ms),
        Some(utc(2024, 3, 31, 5, 0, 0))
    );
    schedule.created_at_ms = utc(2024, 3, 29, 12, 0, 0);
    assert_eq!(
        schedule.next_after(schedule.created_at_ms),
        Some(utc(2024, 3, 30, 6, 0, 0))
    );
}

/// The shopping cart's descriptors, compiled like the example compiles them.
fn cart_descriptors() -> String {
    use base64::Engine;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut compiler = protox::Compiler::new([root.join("examples/shopping-cart/proto"), root.join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["shoppingcart.proto"]).unwrap();
    base64::engine::general_purpose::STANDARD.encode(compiler.encode_file_descriptor_set())
}

/// A registry with the cart deployed, its descriptors reported (`None`: not yet).
fn registry_with_cart(descriptors: Option<String>) -> Registry {
    let mut registry = Registry::default();
    let created = apply(
        &mut registry,
        Command::CreateService(crate::registry::ServiceSpec {
            name: "cart".into(),
            runs: crate::registry::RevisionSpec::command("./cart"),
            ..Default::default()
        }),
        1,
    );
    assert!(created.response.is_ok(), "{:?}", created.response);
    registry.services.get_mut("cart").unwrap().descriptor_set = descriptors;
    registry
}

#[test]
fn the_call_must_be_a_method_of_a_deployed_service_and_the_body_its_input() {
    let refusal = |registry: &mut Registry, spec: ScheduleSpec| {
        let error = apply(registry, Command::CreateSchedule(spec), 5).response.unwrap_err();
        (error.http_status(), error.to_string())
    };
    let mut registry = registry_with_cart(Some(cart_descriptors()));
    assert_eq!(
        refusal(
            &mut registry,
            ScheduleSpec {
                service: "basket".into(),
                ..spec("* * * * *")
            }
        ),
        (404, "service \"basket\" not found".into())
    );
    assert_eq!(
        refusal(
            &mut registry,
            ScheduleSpec {
                method: "com.example.shoppingcart.ShoppingCart/Checkout".into(),
                ..spec("* * * * *")
            }
        ),
        (
            404,
            "method of service \"cart\" \"com.example.shoppingcart.ShoppingCart/Checkout\" not found".into()
        )
    );
    let (status, message) = refusal(
        &mut registry,
        ScheduleSpec {
            body: Some(r#"{"userId": "cron", "quantity": "many"}"#.into()),
            ..spec("* * * * *")
        },
    );
    assert_eq!(status, 400);
    assert!(
        message.starts_with(
            "the body is not a com.example.shoppingcart.AddLineItem (the input of com.example.shoppingcart.ShoppingCart/AddItem):"
        ),
        "{message}"
    );
    assert!(registry.schedules.is_empty(), "a refused schedule is not kept");
    // A service that has not reported its methods cannot be checked yet.
    let mut undiscovered = registry_with_cart(None);
    assert_eq!(refusal(&mut undiscovered, spec("* * * * *")).0, 409);
    // The same call with a good body is kept.
    assert!(apply(&mut registry, Command::CreateSchedule(spec("* * * * *")), 5)
        .response
        .is_ok());
}

#[test]
fn the_registry_runs_each_time_at_most_once() {
    let mut registry = registry_with_cart(Some(cart_descriptors()));
    let start = utc(2024, 3, 1, 12, 0, 1);
    let created = apply(&mut registry, Command::CreateSchedule(spec("*/5 * * * * *")), start);
    assert!(matches!(created.response, Ok(Outcome::Schedule(_))));
    assert!(created.effects.is_empty());
    let again = apply(&mut registry, Command::CreateSchedule(spec("* * * * *")), start);
    assert_eq!(
        again.response.unwrap_err().to_string(),
        "schedule \"digest\" already exists"
    );
    let time = utc(2024, 3, 1, 12, 0, 5);
    let start_run = |registry: &mut Registry, time_ms: u64| {
        apply(
            registry,
            Command::StartScheduleRun {
                name: "digest".into(),
                time_ms,
                missed: 0,
            },
            time_ms + 3,
        )
        .response
    };
    // --- a leader starts the run; a second leader (or a retry) cannot start it again
    assert_eq!(start_run(&mut registry, time), Ok(Outcome::Recorded));
    assert_eq!(
        start_run(&mut registry, time).unwrap_err().to_string(),
        "schedule \"digest\" has run its time 2024-03-01T12:00:05+00:00 already"
    );
    // --- the next time starts while the first is still marked in flight: the old leader died
    let next = utc(2024, 3, 1, 12, 0, 10);
    assert_eq!(start_run(&mut registry, next), Ok(Outcome::Recorded));
    let finished = apply(
        &mut registry,
        Command::FinishScheduleRun {
            name: "digest".into(),
            time_ms: next,
            outcome: RunOutcome::Ok,
        },
        next + 20,
    );
    assert_eq!(finished.response, Ok(Outcome::Recorded));
    let runs: Vec<(u64, RunOutcome)> = registry.schedules["digest"]
        .runs
        .iter()
        .map(|run| (run.time_ms, run.outcome.clone()))
        .collect();
    assert_eq!(runs, vec![(time, RunOutcome::Interrupted), (next, RunOutcome::Ok)]);
    // Finishing the interrupted run (its old leader, late) is refused.
    let late = apply(
        &mut registry,
        Command::FinishScheduleRun {
            name: "digest".into(),
            time_ms: time,
            outcome: RunOutcome::Ok,
        },
        next + 30,
    );
    assert!(late.response.is_err());
    // --- deleting
    assert_eq!(
        apply(&mut registry, Command::DeleteSchedule { name: "digest".into() }, next).response,
        Ok(Outcome::Deleted)
    );
    assert!(registry.schedules.is_empty());
}
