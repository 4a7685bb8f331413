//! Event-sourced entities: the model cases (init, events, snapshots every 5,
//! forwards, side effects, failures) and the proxy cases (what the proxy sends
//! for client calls over gRPC and HTTP, forwards as new streams, restarts,
//! passivation).

use futures::future::BoxFuture;
use prost_types::Any;
use strata_proto::cloudstate::eventsourced::{event_sourced_stream_out, EventSourcedStreamOut};

use super::{expect_eq, grpc_failure, http_post, Expected};
use crate::{
    kit::{Case, Kit},
    messages::{any, es as m, side_effect, Effects},
    model::es::{
        self, event_sourced_configured_client::EventSourcedConfiguredClient,
        event_sourced_tck_model_client::EventSourcedTckModelClient, request_action::Action, RequestAction,
    },
    probe::Check,
};

pub const MODEL: &str = "cloudstate.tck.model.EventSourcedTckModel";
pub const TWO: &str = "cloudstate.tck.model.EventSourcedTwo";
pub const CONFIGURED: &str = "cloudstate.tck.model.EventSourcedConfigured";
const PROTOCOL: &str = "cloudstate.eventsourced.EventSourced";

const MODEL_SECTION: &str = "model: event sourced entity";
const PROXY_SECTION: &str = "proxy: event sourced entity";
const BOTH: &[&str] = &[MODEL, TWO];

fn emit(value: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Emit(es::Emit { value: value.into() })),
    }
}

fn emits(values: &[&str]) -> Vec<RequestAction> {
    values.iter().map(|v| emit(v)).collect()
}

fn forward_to(id: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Forward(es::Forward { id: id.into() })),
    }
}

fn effect_to(id: &str, synchronous: bool) -> RequestAction {
    RequestAction {
        action: Some(Action::Effect(es::Effect {
            id: id.into(),
            synchronous,
        })),
    }
}

fn fail_with(message: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Fail(es::Fail {
            message: message.into(),
        })),
    }
}

fn request(id: &str, actions: Vec<RequestAction>) -> es::Request {
    es::Request { id: id.into(), actions }
}

fn response(message: &str) -> Any {
    any(&es::Response {
        message: message.into(),
    })
}

fn persisted(value: &str) -> Any {
    any(&es::Persisted { value: value.into() })
}

fn events(values: &[&str]) -> Effects {
    Effects::events(values.iter().map(|v| persisted(v)))
}

fn snapshot_and_events(snapshot: &str, values: &[&str]) -> Effects {
    events(values).with_snapshot(persisted(snapshot))
}

fn side_effects(ids: &[&str], synchronous: bool) -> Effects {
    Effects::side_effects(
        ids.iter()
            .map(|id| side_effect(TWO, "Call", any(&request(id, vec![])), synchronous)),
    )
}

fn process(
    n: i64,
    id: &str,
    actions: Vec<RequestAction>,
) -> strata_proto::cloudstate::eventsourced::EventSourcedStreamIn {
    m::command(n, id, "Process", any(&request(id, actions)))
}

fn call(n: i64, id: &str) -> strata_proto::cloudstate::eventsourced::EventSourcedStreamIn {
    m::command(n, id, "Call", any(&request(id, vec![])))
}

/// A model case: a fresh entity id and a stream to the function.
macro_rules! model_case {
    ($name:expr, $requires:expr, |$kit:ident, $id:ident, $c:ident| $body:block) => {
        Case {
            section: MODEL_SECTION,
            name: $name,
            requires: $requires,
            run: |$kit| -> BoxFuture<'_, Check> {
                Box::pin(async move {
                    let $id = $kit.next_id();
                    let mut $c = $kit.protocol.event_sourced();
                    let $id = $id.as_str();
                    $body
                })
            },
        }
    };
}

pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            section: MODEL_SECTION,
            name: "verify event sourced entity discovery",
            requires: BOTH,
            run: |kit| Box::pin(discovery(kit)),
        },
        Case {
            section: MODEL_SECTION,
            name: "verify event sourced configured entity",
            requires: &[CONFIGURED],
            run: |kit| Box::pin(configured(kit)),
        },
        model_case!("verify initial empty state", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(process(1, id, vec![]), m::reply(1, response(""), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify single emitted event", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A"])),
                m::reply(1, response("A"), events(&["A"])),
            )
            .await?;
            c.exchange(process(2, id, vec![]), m::reply(2, response("A"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify multiple emitted events", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A", "B", "C"])),
                m::reply(1, response("ABC"), events(&["A", "B", "C"])),
            )
            .await?;
            c.exchange(process(2, id, vec![]), m::reply(2, response("ABC"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify multiple emitted events and snapshots", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            let steps: [(&[&str], &str, Effects); 8] = [
                (&["A"], "A", events(&["A"])),
                (&["B"], "AB", events(&["B"])),
                (&["C"], "ABC", events(&["C"])),
                (&["D"], "ABCD", events(&["D"])),
                (&["E"], "ABCDE", snapshot_and_events("ABCDE", &["E"])),
                (&["F", "G", "H"], "ABCDEFGH", events(&["F", "G", "H"])),
                (
                    &["I", "J"],
                    "ABCDEFGHIJ",
                    snapshot_and_events("ABCDEFGHIJ", &["I", "J"]),
                ),
                (&["K"], "ABCDEFGHIJK", events(&["K"])),
            ];
            for (n, (emitted, state, effects)) in (1..).zip(steps) {
                c.exchange(process(n, id, emits(emitted)), m::reply(n, response(state), effects))
                    .await?;
            }
            c.exchange(
                process(9, id, vec![]),
                m::reply(9, response("ABCDEFGHIJK"), Effects::none()),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify initial snapshot", BOTH, |kit, id, c| {
            c.send(m::init_with_snapshot(MODEL, id, 5, persisted("ABCDE")))?;
            c.exchange(process(1, id, vec![]), m::reply(1, response("ABCDE"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify initial snapshot and events", BOTH, |kit, id, c| {
            c.send(m::init_with_snapshot(MODEL, id, 5, persisted("ABCDE")))?;
            c.send(m::event(6, persisted("F")))?;
            c.send(m::event(7, persisted("G")))?;
            c.exchange(
                process(1, id, vec![]),
                m::reply(1, response("ABCDEFG"), Effects::none()),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify rehydration after passivation", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A", "B", "C"])),
                m::reply(1, response("ABC"), events(&["A", "B", "C"])),
            )
            .await?;
            c.exchange(
                process(2, id, emits(&["D", "E"])),
                m::reply(2, response("ABCDE"), snapshot_and_events("ABCDE", &["D", "E"])),
            )
            .await?;
            c.exchange(
                process(3, id, emits(&["F"])),
                m::reply(3, response("ABCDEF"), events(&["F"])),
            )
            .await?;
            c.exchange(
                process(4, id, emits(&["G"])),
                m::reply(4, response("ABCDEFG"), events(&["G"])),
            )
            .await?;
            c.passivate().await?;
            let mut c = kit.protocol.event_sourced();
            c.send(m::init_with_snapshot(MODEL, id, 5, persisted("ABCDE")))?;
            c.send(m::event(6, persisted("F")))?;
            c.send(m::event(7, persisted("G")))?;
            c.exchange(
                process(1, id, vec![]),
                m::reply(1, response("ABCDEFG"), Effects::none()),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify forward to second service", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A", "B", "C"])),
                m::reply(1, response("ABC"), events(&["A", "B", "C"])),
            )
            .await?;
            c.exchange(
                process(2, id, vec![forward_to(id)]),
                m::forward(2, TWO, "Call", any(&request(id, vec![])), Effects::none()),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("ABC"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify forward with emitted events", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, vec![emit("A"), forward_to(id)]),
                m::forward(1, TWO, "Call", any(&request(id, vec![])), events(&["A"])),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify forward with emitted events and snapshot", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A", "B", "C"])),
                m::reply(1, response("ABC"), events(&["A", "B", "C"])),
            )
            .await?;
            c.exchange(
                process(2, id, vec![emit("D"), emit("E"), forward_to(id)]),
                m::forward(
                    2,
                    TWO,
                    "Call",
                    any(&request(id, vec![])),
                    snapshot_and_events("ABCDE", &["D", "E"]),
                ),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify reply with side effect to second service", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A", "B", "C"])),
                m::reply(1, response("ABC"), events(&["A", "B", "C"])),
            )
            .await?;
            c.exchange(
                process(2, id, vec![effect_to(id, false)]),
                m::reply(2, response("ABC"), side_effects(&[id], false)),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("ABC"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "verify synchronous side effect to second service",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, vec![effect_to(id, true)]),
                    m::reply(1, response(""), side_effects(&[id], true)),
                )
                .await?;
                c.passivate().await
            }
        ),
        model_case!(
            "verify forward and side effect to second service",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, vec![effect_to(id, false), forward_to(id)]),
                    m::forward(1, TWO, "Call", any(&request(id, vec![])), side_effects(&[id], false)),
                )
                .await?;
                c.passivate().await
            }
        ),
        model_case!("verify reply with multiple side effects", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            let effects = ["1", "2", "3"].iter().map(|i| effect_to(i, false)).collect();
            c.exchange(
                process(1, id, effects),
                m::reply(1, response(""), side_effects(&["1", "2", "3"], false)),
            )
            .await?;
            c.passivate().await
        }),
        model_case!(
            "verify reply with multiple side effects, events, and snapshot",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                let mut actions = emits(&["A", "B", "C", "D", "E"]);
                actions.extend(["1", "2", "3"].iter().map(|i| effect_to(i, false)));
                let effects =
                    snapshot_and_events("ABCDE", &["A", "B", "C", "D", "E"]).and(side_effects(&["1", "2", "3"], false));
                c.exchange(process(1, id, actions), m::reply(1, response("ABCDE"), effects))
                    .await?;
                c.passivate().await
            }
        ),
        model_case!("verify failure action", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, vec![fail_with("expected failure")]),
                m::action_failure(1, "expected failure", false),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify connection after failure action", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, emits(&["A"])),
                m::reply(1, response("A"), events(&["A"])),
            )
            .await?;
            c.exchange(
                process(2, id, vec![fail_with("expected failure")]),
                m::action_failure(2, "expected failure", false),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("A"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "verify failure actions do not retain emitted events (may request entity restart)",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, emits(&["A", "B", "C"])),
                    m::reply(1, response("ABC"), events(&["A", "B", "C"])),
                )
                .await?;
                c.send(process(2, id, vec![emit("4"), emit("5"), fail_with("failure 1")]))?;
                let restart = failure_of(c.answers.message().await?, 2, "failure 1")?;
                if restart {
                    c.passivate().await?;
                    let mut c = kit.protocol.event_sourced();
                    c.send(m::init(MODEL, id))?;
                    for (n, value) in [(1, "A"), (2, "B"), (3, "C")] {
                        c.send(m::event(n, persisted(value)))?;
                    }
                    c.exchange(
                        process(1, id, emits(&["D"])),
                        m::reply(1, response("ABCD"), events(&["D"])),
                    )
                    .await?;
                    c.exchange(
                        process(2, id, vec![emit("6"), fail_with("failure 2"), emit("7")]),
                        m::action_failure(2, "failure 2", true),
                    )
                    .await?;
                    c.passivate().await
                } else {
                    c.exchange(
                        process(3, id, emits(&["D"])),
                        m::reply(3, response("ABCD"), events(&["D"])),
                    )
                    .await?;
                    c.exchange(
                        process(4, id, vec![emit("6"), fail_with("failure 2"), emit("7")]),
                        m::action_failure(4, "failure 2", false),
                    )
                    .await?;
                    c.exchange(
                        process(5, id, emits(&["E"])),
                        m::reply(5, response("ABCDE"), snapshot_and_events("ABCDE", &["E"])),
                    )
                    .await?;
                    c.passivate().await
                }
            }
        ),
        model_case!(
            "verify failure actions do not allow side effects",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, vec![effect_to(id, false), fail_with("expected failure")]),
                    m::action_failure(1, "expected failure", false),
                )
                .await?;
                c.passivate().await
            }
        ),
    ];
    cases.extend(proxy_cases());
    cases
}

/// The `restart` flag of a failure for command `id` with `description`; any
/// other message is an error.
fn failure_of(out: EventSourcedStreamOut, id: i64, description: &str) -> Result<bool, String> {
    use strata_proto::cloudstate::client_action::Action;
    let Some(event_sourced_stream_out::Message::Reply(reply)) = &out.message else {
        return Err(format!("expected a reply with a failure, got {out:?}"));
    };
    match reply.client_action.as_ref().and_then(|a| a.action.as_ref()) {
        Some(Action::Failure(failure)) if failure.command_id == id && failure.description == description => {
            Ok(failure.restart)
        }
        _ => Err(format!(
            "expected failure {description:?} for command {id}, got {out:?}"
        )),
    }
}

async fn discovery(kit: &Kit) -> Check {
    let discovered = kit.discovered_services();
    for service in [MODEL, TWO] {
        if !discovered.iter().any(|s| s == service) {
            return Err(format!("the descriptors do not define {service}: {discovered:?}"));
        }
        expect_eq(
            "entity type",
            PROTOCOL,
            kit.entity(service).map_or("", |e| e.entity_type.as_str()),
        )?;
    }
    expect_eq(
        "persistence id",
        "event-sourced-tck-model",
        kit.entity(MODEL).map_or("", |e| e.persistence_id.as_str()),
    )
}

async fn configured(kit: &Kit) -> Check {
    super::configured_entity(kit, CONFIGURED, PROTOCOL, Some("event-sourced-configured"))
}

fn proxy_cases() -> Vec<Case> {
    vec![
        Case {
            section: PROXY_SECTION,
            name: "verify state changes",
            requires: BOTH,
            run: |kit| Box::pin(state_changes(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify forwards and side effects",
            requires: BOTH,
            run: |kit| Box::pin(forwards_and_side_effects(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify failures",
            requires: BOTH,
            run: |kit| Box::pin(failures(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify HTTP API (Strata: failures are JSON error bodies)",
            requires: BOTH,
            run: |kit| Box::pin(http_api(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify passivation timeout",
            requires: &[CONFIGURED],
            run: |kit| Box::pin(passivation(kit)),
        },
    ]
}

/// Calls Process through the proxy over gRPC.
async fn call_process(kit: &Kit, id: &str, actions: Vec<RequestAction>) -> Result<String, tonic::Status> {
    let mut client = EventSourcedTckModelClient::new(kit.grpc.clone());
    Ok(client.process(request(id, actions)).await?.into_inner().message)
}

async fn process_ok(kit: &Kit, id: &str, actions: Vec<RequestAction>, expected: &str) -> Check {
    let answer = call_process(kit, id, actions)
        .await
        .map_err(|status| format!("Process failed: {status:?}"))?;
    expect_eq("Process answered", expected, answer.as_str())
}

async fn state_changes(kit: &Kit) -> Check {
    let id = &kit.next_id();
    process_ok(kit, id, vec![], "").await?;
    let mut c = kit.interceptor.event_sourced().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response(""), Effects::none())).await?;
    let steps: [(&[&str], &str, Effects); 5] = [
        (&["A"], "A", events(&["A"])),
        (&["B", "C", "D"], "ABCD", events(&["B", "C", "D"])),
        (&["E"], "ABCDE", snapshot_and_events("ABCDE", &["E"])),
        (&["F", "G", "H", "I"], "ABCDEFGHI", events(&["F", "G", "H", "I"])),
        (
            &["J", "K"],
            "ABCDEFGHIJK",
            snapshot_and_events("ABCDEFGHIJK", &["J", "K"]),
        ),
    ];
    for (n, (emitted, state, effects)) in (2..).zip(steps) {
        process_ok(kit, id, emits(emitted), state).await?;
        c.expect_incoming(process(n, id, emits(emitted))).await?;
        c.expect_outgoing(m::reply(n, response(state), effects)).await?;
    }
    Ok(())
}

async fn forwards_and_side_effects(kit: &Kit) -> Check {
    let id = &kit.next_id();
    process_ok(kit, id, emits(&["one"]), "one").await?;
    let mut c = kit.interceptor.event_sourced().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, emits(&["one"]))).await?;
    c.expect_outgoing(m::reply(1, response("one"), events(&["one"])))
        .await?;

    // --- a forward's reply is the client's, from a new stream to the second entity
    process_ok(kit, id, vec![forward_to(id)], "").await?;
    c.expect_incoming(process(2, id, vec![forward_to(id)])).await?;
    c.expect_outgoing(m::forward(2, TWO, "Call", any(&request(id, vec![])), Effects::none()))
        .await?;
    let mut two = kit.interceptor.event_sourced().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(call(1, id)).await?;
    two.expect_outgoing(m::reply(1, any(&es::Response::default()), Effects::none()))
        .await?;

    // --- a side effect runs on the second entity
    process_ok(kit, id, vec![effect_to(id, false)], "one").await?;
    c.expect_incoming(process(3, id, vec![effect_to(id, false)])).await?;
    c.expect_outgoing(m::reply(3, response("one"), side_effects(&[id], false)))
        .await?;
    two.expect_incoming(call(2, id)).await?;
    two.expect_outgoing(m::reply(2, any(&es::Response::default()), Effects::none()))
        .await?;

    process_ok(kit, id, vec![], "one").await?;
    c.expect_incoming(process(4, id, vec![])).await?;
    c.expect_outgoing(m::reply(4, response("one"), Effects::none())).await
}

async fn failures(kit: &Kit) -> Check {
    let id = &kit.next_id();
    process_ok(kit, id, emits(&["1", "2", "3"]), "123").await?;
    let mut c = kit.interceptor.event_sourced().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, emits(&["1", "2", "3"]))).await?;
    c.expect_outgoing(m::reply(1, response("123"), events(&["1", "2", "3"])))
        .await?;

    grpc_failure(
        call_process(kit, id, vec![fail_with("expected failure")]).await,
        "expected failure",
    )?;
    c.expect_incoming(process(2, id, vec![fail_with("expected failure")]))
        .await?;
    c.expect_outgoing(m::action_failure(2, "expected failure", false))
        .await?;

    process_ok(kit, id, vec![], "123").await?;
    c.expect_incoming(process(3, id, vec![])).await?;
    c.expect_outgoing(m::reply(3, response("123"), Effects::none())).await?;

    let emit_and_fail = vec![emit("4"), fail_with("another failure"), emit("5")];
    grpc_failure(call_process(kit, id, emit_and_fail.clone()).await, "another failure")?;
    c.expect_incoming(process(4, id, emit_and_fail)).await?;
    let restart = failure_of(c.outgoing.message().await?, 4, "another failure")?;
    if restart {
        // The proxy restarts the entity at once: a new stream replays the journal.
        c.expect_closed().await?;
        let mut c = kit.interceptor.event_sourced().await?;
        c.expect_incoming(m::init(MODEL, id)).await?;
        for (n, value) in [(1, "1"), (2, "2"), (3, "3")] {
            c.expect_incoming(m::event(n, persisted(value))).await?;
        }
        process_ok(kit, id, emits(&["4", "5"]), "12345").await?;
        c.expect_incoming(process(1, id, emits(&["4", "5"]))).await?;
        c.expect_outgoing(m::reply(
            1,
            response("12345"),
            snapshot_and_events("12345", &["4", "5"]),
        ))
        .await
    } else {
        process_ok(kit, id, emits(&["4", "5"]), "12345").await?;
        c.expect_incoming(process(5, id, emits(&["4", "5"]))).await?;
        c.expect_outgoing(m::reply(
            5,
            response("12345"),
            snapshot_and_events("12345", &["4", "5"]),
        ))
        .await
    }
}

async fn http_api(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let path = format!("tck/model/eventsourced/{id}");
    http_post(kit, &path, "{}", Expected::Json(r#"{"message":""}"#)).await?;
    let mut c = kit.interceptor.event_sourced().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response(""), Effects::none())).await?;

    // --- the default route of a method without an HTTP option
    http_post(
        kit,
        "cloudstate.tck.model.EventSourcedTwo/Call",
        &format!(r#"{{"id": "{id}"}}"#),
        Expected::Json(r#"{"message":""}"#),
    )
    .await?;
    let mut two = kit.interceptor.event_sourced().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(call(1, id)).await?;
    two.expect_outgoing(m::reply(1, any(&es::Response::default()), Effects::none()))
        .await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"emit": {"value": "x"}}]}"#,
        Expected::Json(r#"{"message":"x"}"#),
    )
    .await?;
    c.expect_incoming(process(2, id, emits(&["x"]))).await?;
    c.expect_outgoing(m::reply(2, response("x"), events(&["x"]))).await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"fail": {"message": "expected failure"}}]}"#,
        Expected::Failure("expected failure"),
    )
    .await?;
    c.expect_incoming(process(3, id, vec![fail_with("expected failure")]))
        .await?;
    c.expect_outgoing(m::action_failure(3, "expected failure", false))
        .await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"emit": {"value": "y"}}]}"#,
        Expected::Json(r#"{"message":"xy"}"#),
    )
    .await?;
    c.expect_incoming(process(4, id, emits(&["y"]))).await?;
    c.expect_outgoing(m::reply(4, response("xy"), events(&["y"]))).await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"emit": {"value": "z"}}, {"fail": {"message": "emit then fail"}}]}"#,
        Expected::Failure("emit then fail"),
    )
    .await?;
    c.expect_incoming(process(5, id, vec![emit("z"), fail_with("emit then fail")]))
        .await?;
    let restart = failure_of(c.outgoing.message().await?, 5, "emit then fail")?;
    let z = r#"{"actions": [{"emit": {"value": "z"}}]}"#;
    if restart {
        c.expect_closed().await?;
        let mut c = kit.interceptor.event_sourced().await?;
        c.expect_incoming(m::init(MODEL, id)).await?;
        c.expect_incoming(m::event(1, persisted("x"))).await?;
        c.expect_incoming(m::event(2, persisted("y"))).await?;
        http_post(kit, &path, z, Expected::Json(r#"{"message":"xyz"}"#)).await?;
        c.expect_incoming(process(1, id, emits(&["z"]))).await?;
        c.expect_outgoing(m::reply(1, response("xyz"), events(&["z"]))).await
    } else {
        http_post(kit, &path, z, Expected::Json(r#"{"message":"xyz"}"#)).await?;
        c.expect_incoming(process(6, id, emits(&["z"]))).await?;
        c.expect_outgoing(m::reply(6, response("xyz"), events(&["z"]))).await
    }
}

async fn passivation(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let mut client = EventSourcedConfiguredClient::new(kit.grpc.clone());
    client
        .call(request(id, vec![]))
        .await
        .map_err(|status| format!("Call failed: {status:?}"))?;
    let mut c = kit.interceptor.event_sourced().await?;
    c.expect_incoming(m::init(CONFIGURED, id)).await?;
    c.expect_incoming(call(1, id)).await?;
    c.expect_outgoing(m::reply(1, any(&es::Response::default()), Effects::none()))
        .await?;
    // Passivated after its 100 ms of idleness.
    c.expect_closed_within(std::time::Duration::from_secs(2)).await
}
