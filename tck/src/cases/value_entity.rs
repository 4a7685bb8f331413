//! Value entities: the model cases (updates, deletes, forwards, side effects,
//! failures, rehydration) and the proxy cases (what the proxy sends for client
//! calls over gRPC and HTTP, `Init` always with a state, passivation).

use futures::future::BoxFuture;
use prost_types::Any;
use strata_proto::cloudstate::valueentity::ValueEntityStreamIn;

use super::{expect_eq, grpc_failure, http_post, Expected};
use crate::{
    kit::{Case, Kit},
    messages::{any, side_effect, ve as m, Effects},
    model::ve::{
        self, request_action::Action, value_entity_configured_client::ValueEntityConfiguredClient,
        value_entity_tck_model_client::ValueEntityTckModelClient, RequestAction,
    },
    probe::Check,
};

pub const MODEL: &str = "cloudstate.tck.model.valueentity.ValueEntityTckModel";
pub const TWO: &str = "cloudstate.tck.model.valueentity.ValueEntityTwo";
pub const CONFIGURED: &str = "cloudstate.tck.model.valueentity.ValueEntityConfigured";
const PROTOCOL: &str = "cloudstate.valueentity.ValueEntity";

const MODEL_SECTION: &str = "model: value entity";
const PROXY_SECTION: &str = "proxy: value entity";
const BOTH: &[&str] = &[MODEL, TWO];

fn update(value: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Update(ve::Update { value: value.into() })),
    }
}

fn updates(values: &[&str]) -> Vec<RequestAction> {
    values.iter().map(|v| update(v)).collect()
}

fn delete() -> RequestAction {
    RequestAction {
        action: Some(Action::Delete(ve::Delete {})),
    }
}

fn forward_to(id: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Forward(ve::Forward { id: id.into() })),
    }
}

fn effect_to(id: &str, synchronous: bool) -> RequestAction {
    RequestAction {
        action: Some(Action::Effect(ve::Effect {
            id: id.into(),
            synchronous,
        })),
    }
}

fn fail_with(message: &str) -> RequestAction {
    RequestAction {
        action: Some(Action::Fail(ve::Fail {
            message: message.into(),
        })),
    }
}

fn request(id: &str, actions: Vec<RequestAction>) -> ve::Request {
    ve::Request { id: id.into(), actions }
}

fn response(message: &str) -> Any {
    any(&ve::Response {
        message: message.into(),
    })
}

fn persisted(value: &str) -> Any {
    any(&ve::Persisted { value: value.into() })
}

fn updated(value: &str) -> Effects {
    Effects::update(persisted(value))
}

fn side_effects(ids: &[&str], synchronous: bool) -> Effects {
    Effects::side_effects(
        ids.iter()
            .map(|id| side_effect(TWO, "Call", any(&request(id, vec![])), synchronous)),
    )
}

fn process(n: i64, id: &str, actions: Vec<RequestAction>) -> ValueEntityStreamIn {
    m::command(n, id, "Process", any(&request(id, actions)))
}

fn call(n: i64, id: &str) -> ValueEntityStreamIn {
    m::command(n, id, "Call", any(&request(id, vec![])))
}

macro_rules! model_case {
    ($name:expr, $requires:expr, |$kit:ident, $id:ident, $c:ident| $body:block) => {
        Case {
            section: MODEL_SECTION,
            name: $name,
            requires: $requires,
            run: |$kit| -> BoxFuture<'_, Check> {
                Box::pin(async move {
                    let $id = $kit.next_id();
                    let mut $c = $kit.protocol.value_entity();
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
            name: "verify entity discovery",
            requires: BOTH,
            run: |kit| Box::pin(discovery(kit)),
        },
        Case {
            section: MODEL_SECTION,
            name: "verify configured entity",
            requires: &[CONFIGURED],
            run: |kit| {
                Box::pin(
                    async move { super::configured_entity(kit, CONFIGURED, PROTOCOL, Some("value-entity-configured")) },
                )
            },
        },
        model_case!("verify initial empty state", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(process(1, id, vec![]), m::reply(1, response(""), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify update state", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, updates(&["A"])),
                m::reply(1, response("A"), updated("A")),
            )
            .await?;
            c.exchange(process(2, id, vec![]), m::reply(2, response("A"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify delete state", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, updates(&["A"])),
                m::reply(1, response("A"), updated("A")),
            )
            .await?;
            c.exchange(
                process(2, id, vec![delete()]),
                m::reply(2, response(""), Effects::delete()),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response(""), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "verify sub invocations with multiple update states",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, updates(&["A", "B", "C"])),
                    m::reply(1, response("C"), updated("C")),
                )
                .await?;
                c.exchange(process(2, id, vec![]), m::reply(2, response("C"), Effects::none()))
                    .await?;
                c.passivate().await
            }
        ),
        model_case!(
            "verify sub invocations with multiple update states and delete states",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                let mut actions = updates(&["A", "B"]);
                actions.push(delete());
                c.exchange(process(1, id, actions), m::reply(1, response(""), Effects::delete()))
                    .await?;
                c.exchange(process(2, id, vec![]), m::reply(2, response(""), Effects::none()))
                    .await?;
                c.passivate().await
            }
        ),
        model_case!(
            "verify sub invocations with update, delete and update states",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, vec![update("A"), delete(), update("B")]),
                    m::reply(1, response("B"), updated("B")),
                )
                .await?;
                c.exchange(process(2, id, vec![]), m::reply(2, response("B"), Effects::none()))
                    .await?;
                c.passivate().await
            }
        ),
        model_case!("verify rehydration after passivation", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            for (n, value) in [(1, "A"), (2, "B"), (3, "C"), (4, "D")] {
                c.exchange(
                    process(n, id, updates(&[value])),
                    m::reply(n, response(value), updated(value)),
                )
                .await?;
            }
            c.passivate().await?;
            let mut c = kit.protocol.value_entity();
            c.send(m::init_with(MODEL, id, Some(persisted("D"))))?;
            c.exchange(
                process(1, id, updates(&["E"])),
                m::reply(1, response("E"), updated("E")),
            )
            .await?;
            c.exchange(process(2, id, vec![]), m::reply(2, response("E"), Effects::none()))
                .await?;
            c.passivate().await
        }),
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
        model_case!("verify reply with side effect to second service", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, updates(&["X"])),
                m::reply(1, response("X"), updated("X")),
            )
            .await?;
            c.exchange(
                process(2, id, vec![effect_to(id, false)]),
                m::reply(2, response("X"), side_effects(&[id], false)),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("X"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "verify reply with multiple side effects and state",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                let mut actions = updates(&["A", "B", "C", "D", "E"]);
                actions.extend(["1", "2", "3"].iter().map(|i| effect_to(i, false)));
                let effects = side_effects(&["1", "2", "3"], false).and(updated("E"));
                c.exchange(process(1, id, actions), m::reply(1, response("E"), effects))
                    .await?;
                c.passivate().await
            }
        ),
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
        model_case!("verify forward to second service", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, updates(&["X"])),
                m::reply(1, response("X"), updated("X")),
            )
            .await?;
            c.exchange(
                process(2, id, vec![forward_to(id)]),
                m::forward(2, TWO, "Call", any(&request(id, vec![])), Effects::none()),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("X"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "verify forward with updated state to second service",
            BOTH,
            |kit, id, c| {
                c.send(m::init(MODEL, id))?;
                c.exchange(
                    process(1, id, vec![update("A"), forward_to(id)]),
                    m::forward(1, TWO, "Call", any(&request(id, vec![])), updated("A")),
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
        model_case!("verify failure action", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, vec![fail_with("expected failure")]),
                m::action_failure(1, "expected failure"),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify connection after failure action", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, updates(&["A"])),
                m::reply(1, response("A"), updated("A")),
            )
            .await?;
            c.exchange(
                process(2, id, vec![fail_with("expected failure")]),
                m::action_failure(2, "expected failure"),
            )
            .await?;
            c.exchange(process(3, id, vec![]), m::reply(3, response("A"), Effects::none()))
                .await?;
            c.passivate().await
        }),
        model_case!("verify failure action do not allow side effects", BOTH, |kit, id, c| {
            c.send(m::init(MODEL, id))?;
            c.exchange(
                process(1, id, vec![effect_to(id, false), fail_with("expected failure")]),
                m::action_failure(1, "expected failure"),
            )
            .await?;
            c.passivate().await
        }),
    ];
    cases.extend(proxy_cases());
    cases
}

async fn discovery(kit: &Kit) -> Check {
    let discovered = kit.discovered_services();
    for (service, persistence_id) in [(MODEL, "value-entity-tck-model"), (TWO, "value-entity-tck-model-two")] {
        if !discovered.iter().any(|s| s == service) {
            return Err(format!("the descriptors do not define {service}: {discovered:?}"));
        }
        let entity = kit.entity(service).ok_or_else(|| format!("no entity for {service}"))?;
        expect_eq("entity type", PROTOCOL, entity.entity_type.as_str())?;
        expect_eq("persistence id", persistence_id, entity.persistence_id.as_str())?;
    }
    Ok(())
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

async fn call_process(kit: &Kit, id: &str, actions: Vec<RequestAction>) -> Result<String, tonic::Status> {
    let mut client = ValueEntityTckModelClient::new(kit.grpc.clone());
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
    let mut c = kit.interceptor.value_entity().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response(""), Effects::none())).await?;
    let steps: [(Vec<RequestAction>, &str, Effects); 7] = [
        (updates(&["one"]), "one", updated("one")),
        (updates(&["two"]), "two", updated("two")),
        (vec![], "two", Effects::none()),
        (vec![delete()], "", Effects::delete()),
        (vec![], "", Effects::none()),
        (updates(&["foo"]), "foo", updated("foo")),
        (vec![delete()], "", Effects::delete()),
    ];
    for (n, (actions, state, effects)) in (2..).zip(steps) {
        process_ok(kit, id, actions.clone(), state).await?;
        c.expect_incoming(process(n, id, actions)).await?;
        c.expect_outgoing(m::reply(n, response(state), effects)).await?;
    }
    Ok(())
}

async fn forwards_and_side_effects(kit: &Kit) -> Check {
    let id = &kit.next_id();
    process_ok(kit, id, updates(&["one"]), "one").await?;
    let mut c = kit.interceptor.value_entity().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, updates(&["one"]))).await?;
    c.expect_outgoing(m::reply(1, response("one"), updated("one"))).await?;

    process_ok(kit, id, vec![forward_to(id)], "").await?;
    c.expect_incoming(process(2, id, vec![forward_to(id)])).await?;
    c.expect_outgoing(m::forward(2, TWO, "Call", any(&request(id, vec![])), Effects::none()))
        .await?;
    let mut two = kit.interceptor.value_entity().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(call(1, id)).await?;
    two.expect_outgoing(m::reply(1, any(&ve::Response::default()), Effects::none()))
        .await?;

    process_ok(kit, id, vec![effect_to(id, false)], "one").await?;
    c.expect_incoming(process(3, id, vec![effect_to(id, false)])).await?;
    c.expect_outgoing(m::reply(3, response("one"), side_effects(&[id], false)))
        .await?;
    two.expect_incoming(call(2, id)).await?;
    two.expect_outgoing(m::reply(2, any(&ve::Response::default()), Effects::none()))
        .await?;

    process_ok(kit, id, vec![], "one").await?;
    c.expect_incoming(process(4, id, vec![])).await?;
    c.expect_outgoing(m::reply(4, response("one"), Effects::none())).await
}

async fn failures(kit: &Kit) -> Check {
    let id = &kit.next_id();
    process_ok(kit, id, updates(&["one"]), "one").await?;
    let mut c = kit.interceptor.value_entity().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, updates(&["one"]))).await?;
    c.expect_outgoing(m::reply(1, response("one"), updated("one"))).await?;

    grpc_failure(
        call_process(kit, id, vec![fail_with("expected failure")]).await,
        "expected failure",
    )?;
    c.expect_incoming(process(2, id, vec![fail_with("expected failure")]))
        .await?;
    c.expect_outgoing(m::action_failure(2, "expected failure")).await?;

    process_ok(kit, id, vec![], "one").await?;
    c.expect_incoming(process(3, id, vec![])).await?;
    c.expect_outgoing(m::reply(3, response("one"), Effects::none())).await
}

async fn http_api(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let path = format!("tck/model/entity/{id}");
    http_post(kit, &path, "{}", Expected::Json(r#"{"message":""}"#)).await?;
    let mut c = kit.interceptor.value_entity().await?;
    c.expect_incoming(m::init(MODEL, id)).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response(""), Effects::none())).await?;

    http_post(
        kit,
        "cloudstate.tck.model.valueentity.ValueEntityTwo/Call",
        &format!(r#"{{"id": "{id}"}}"#),
        Expected::Json(r#"{"message":""}"#),
    )
    .await?;
    let mut two = kit.interceptor.value_entity().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(call(1, id)).await?;
    two.expect_outgoing(m::reply(1, any(&ve::Response::default()), Effects::none()))
        .await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"update": {"value": "one"}}]}"#,
        Expected::Json(r#"{"message":"one"}"#),
    )
    .await?;
    c.expect_incoming(process(2, id, updates(&["one"]))).await?;
    c.expect_outgoing(m::reply(2, response("one"), updated("one"))).await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"fail": {"message": "expected failure"}}]}"#,
        Expected::Failure("expected failure"),
    )
    .await?;
    c.expect_incoming(process(3, id, vec![fail_with("expected failure")]))
        .await?;
    c.expect_outgoing(m::action_failure(3, "expected failure")).await?;

    http_post(
        kit,
        &path,
        r#"{"actions": [{"update": {"value": "two"}}]}"#,
        Expected::Json(r#"{"message":"two"}"#),
    )
    .await?;
    c.expect_incoming(process(4, id, updates(&["two"]))).await?;
    c.expect_outgoing(m::reply(4, response("two"), updated("two"))).await?;

    http_post(kit, &path, "{}", Expected::Json(r#"{"message":"two"}"#)).await?;
    c.expect_incoming(process(5, id, vec![])).await?;
    c.expect_outgoing(m::reply(5, response("two"), Effects::none())).await
}

async fn passivation(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let mut client = ValueEntityConfiguredClient::new(kit.grpc.clone());
    client
        .call(request(id, vec![]))
        .await
        .map_err(|status| format!("Call failed: {status:?}"))?;
    let mut c = kit.interceptor.value_entity().await?;
    c.expect_incoming(m::init(CONFIGURED, id)).await?;
    c.expect_incoming(call(1, id)).await?;
    c.expect_outgoing(m::reply(1, any(&ve::Response::default()), Effects::none()))
        .await?;
    c.expect_closed_within(std::time::Duration::from_secs(2)).await
}
