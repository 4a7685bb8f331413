//! CRDT entities: the model cases (for each of the eight types, what the
//! function answers for a new entity and for one whose `CrdtInit` carries a
//! state, its deltas for changes, the deltas it takes from other replicas,
//! rehydration and deletes; failures) and the proxy cases (the exact messages
//! the proxy exchanges with the function for unary commands: `CrdtInit` empty
//! for a new entity and carrying the stored state for an existing one, deltas
//! persisted, deletes for good, and what the proxy refuses), and streamed
//! commands (`ProcessStreamed`: the open reply, a message after each change,
//! the stream's end, cancellation and its response, side effects).

use futures::future::BoxFuture;
use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::crdt::{
    crdt_delta::Delta, crdt_stream_out, CrdtClock, CrdtDelta, CrdtStreamIn, CrdtStreamOut, CrdtWriteConsistency,
    FlagDelta, GCounterDelta, GSetDelta, LwwRegisterDelta, OrMapDelta, OrMapEntryDelta, OrSetDelta, PnCounterDelta,
    VoteDelta,
};

use super::{expect_eq, grpc_failure};
use crate::{
    intercept::Intercepted,
    kit::{Case, Kit, Pending},
    messages::{any, crdt as m, side_effect, Effects},
    model::crdt::{self as model, request_action::Action, RequestAction},
    probe::Check,
};

pub const GCOUNTER: &str = "cloudstate.tck.model.crdt.GCounterTckModel";
pub const PNCOUNTER: &str = "cloudstate.tck.model.crdt.PNCounterTckModel";
pub const GSET: &str = "cloudstate.tck.model.crdt.GSetTckModel";
pub const ORSET: &str = "cloudstate.tck.model.crdt.ORSetTckModel";
pub const LWWREGISTER: &str = "cloudstate.tck.model.crdt.LWWRegisterTckModel";
pub const FLAG: &str = "cloudstate.tck.model.crdt.FlagTckModel";
pub const ORMAP: &str = "cloudstate.tck.model.crdt.ORMapTckModel";
pub const VOTE: &str = "cloudstate.tck.model.crdt.VoteTckModel";
pub const TWO: &str = "cloudstate.tck.model.crdt.CrdtTwo";
pub const CONFIGURED: &str = "cloudstate.tck.model.crdt.CrdtConfigured";
const SERVICES: [&str; 9] = [GCOUNTER, PNCOUNTER, GSET, ORSET, LWWREGISTER, FLAG, ORMAP, VOTE, TWO];
const PROTOCOL: &str = "cloudstate.crdt.Crdt";

const MODEL_SECTION: &str = "model: CRDT entity";
const PROXY_SECTION: &str = "proxy: CRDT entity";

// --- requests and answers

fn act(action: Action) -> RequestAction {
    RequestAction { action: Some(action) }
}

fn increment(value: i64) -> RequestAction {
    act(Action::Increment(model::Increment { value }))
}

fn decrement(value: i64) -> RequestAction {
    act(Action::Decrement(model::Decrement { value }))
}

fn add(element: &str) -> RequestAction {
    act(Action::Add(model::Add {
        element: element.into(),
    }))
}

fn remove(element: &str) -> RequestAction {
    act(Action::Remove(model::Remove {
        element: element.into(),
    }))
}

fn set(value: &str) -> RequestAction {
    act(Action::Set(model::Set { value: value.into() }))
}

fn enable() -> RequestAction {
    act(Action::Enable(model::Enable {}))
}

fn vote(value: bool) -> RequestAction {
    act(Action::Vote(model::Vote { value }))
}

fn map_increment(key: &str, value: i64) -> RequestAction {
    act(Action::MapIncrement(model::MapIncrement { key: key.into(), value }))
}

fn delete() -> RequestAction {
    act(Action::Delete(model::Delete {}))
}

fn fail_with(message: &str) -> RequestAction {
    act(Action::Fail(model::Fail {
        message: message.into(),
    }))
}

fn forward_to(id: &str) -> RequestAction {
    act(Action::Forward(model::Forward { id: id.into() }))
}

fn effect_to(id: &str, synchronous: bool) -> RequestAction {
    act(Action::Effect(model::Effect {
        id: id.into(),
        synchronous,
    }))
}

/// What the model sends to CrdtTwo for a forward or a side effect.
fn two_call(id: &str) -> Any {
    any(&request(id, vec![]))
}

fn side_effects(ids: &[&str], synchronous: bool) -> Effects {
    Effects::side_effects(ids.iter().map(|id| side_effect(TWO, "Call", two_call(id), synchronous)))
}

fn request(id: &str, actions: Vec<RequestAction>) -> model::Request {
    model::Request { id: id.into(), actions }
}

fn response(state: &str) -> Any {
    any(&model::Response { state: state.into() })
}

fn process(n: i64, id: &str, actions: Vec<RequestAction>) -> CrdtStreamIn {
    m::command(n, id, "Process", any(&request(id, actions)))
}

// --- deltas, as the protocol spells them

fn delta(delta: Delta) -> CrdtDelta {
    CrdtDelta { delta: Some(delta) }
}

/// A string as CloudState's primitive encoding packs it.
fn string(value: &str) -> Any {
    Any {
        type_url: "p.cloudstate.io/string".into(),
        value: value.to_string().encode_to_vec(),
    }
}

fn strings(values: &[&str]) -> Vec<Any> {
    values.iter().map(|v| string(v)).collect()
}

fn gcounter(increment: u64) -> CrdtDelta {
    delta(Delta::Gcounter(GCounterDelta { increment }))
}

fn pncounter(change: i64) -> CrdtDelta {
    delta(Delta::Pncounter(PnCounterDelta { change }))
}

fn gset(added: &[&str]) -> CrdtDelta {
    delta(Delta::Gset(GSetDelta { added: strings(added) }))
}

fn orset(removed: &[&str], added: &[&str]) -> CrdtDelta {
    delta(Delta::Orset(OrSetDelta {
        cleared: false,
        removed: strings(removed),
        added: strings(added),
    }))
}

fn lwwregister(value: &str) -> CrdtDelta {
    delta(Delta::Lwwregister(LwwRegisterDelta {
        value: Some(string(value)),
        clock: CrdtClock::Default as i32,
        custom_clock_value: 0,
    }))
}

fn flag(value: bool) -> CrdtDelta {
    delta(Delta::Flag(FlagDelta { value }))
}

fn entries(entries: &[(&str, u64)]) -> Vec<OrMapEntryDelta> {
    entries
        .iter()
        .map(|(key, value)| OrMapEntryDelta {
            key: Some(string(key)),
            delta: Some(gcounter(*value)),
        })
        .collect()
}

/// An ORMap of GCounters: keys removed, counters incremented, keys added.
fn ormap(removed: &[&str], updated: &[(&str, u64)], added: &[(&str, u64)]) -> CrdtDelta {
    delta(Delta::Ormap(OrMapDelta {
        cleared: false,
        removed: strings(removed),
        updated: entries(updated),
        added: entries(added),
    }))
}

fn vote_delta(self_vote: bool, votes_for: i32, total_voters: i32) -> CrdtDelta {
    delta(Delta::Vote(VoteDelta {
        self_vote,
        votes_for,
        total_voters,
    }))
}

// --- the eight types, each described once

/// A change a command makes: its actions, the delta the function must send for
/// them, and the state it must answer.
struct Change {
    actions: Vec<RequestAction>,
    delta: Option<CrdtDelta>,
    state: &'static str,
}

/// One CRDT type as the cases exercise it.
struct TypeCase {
    service: &'static str,
    /// The state of a new entity, as `Response.state` reads.
    empty: &'static str,
    /// A first change of a new entity.
    first: fn() -> Change,
    /// A second change, after `first`.
    second: fn() -> Change,
    /// The whole state after `first`, as a proxy hands it back in `CrdtInit`.
    stored: fn() -> CrdtDelta,
    /// Another replica's state, in `CrdtInit` or as a `CrdtDelta` for a new
    /// entity, and how it reads.
    replicated: fn() -> (CrdtDelta, &'static str),
    /// Another replica's change after `first`, and how the state reads then.
    mixed: fn() -> (CrdtDelta, &'static str),
    /// A delta of another type, which the proxy must refuse.
    wrong: fn() -> CrdtDelta,
}

fn not_a_flag() -> CrdtDelta {
    flag(true)
}

fn not_a_counter() -> CrdtDelta {
    gcounter(1)
}

const GCOUNTER_CASE: TypeCase = TypeCase {
    service: GCOUNTER,
    empty: "0",
    first: || Change {
        actions: vec![increment(42)],
        delta: Some(gcounter(42)),
        state: "42",
    },
    second: || Change {
        actions: vec![increment(1), increment(2), increment(3)],
        delta: Some(gcounter(6)),
        state: "48",
    },
    stored: || gcounter(42),
    replicated: || (gcounter(7), "7"),
    mixed: || (gcounter(5), "47"),
    wrong: not_a_flag,
};

const PNCOUNTER_CASE: TypeCase = TypeCase {
    service: PNCOUNTER,
    empty: "0",
    first: || Change {
        actions: vec![increment(1), decrement(2), increment(3)],
        delta: Some(pncounter(2)),
        state: "2",
    },
    second: || Change {
        actions: vec![decrement(10)],
        delta: Some(pncounter(-10)),
        state: "-8",
    },
    stored: || pncounter(2),
    replicated: || (pncounter(-4), "-4"),
    mixed: || (pncounter(5), "7"),
    wrong: not_a_flag,
};

const GSET_CASE: TypeCase = TypeCase {
    service: GSET,
    empty: "",
    first: || Change {
        actions: vec![add("b"), add("a")],
        delta: Some(gset(&["a", "b"])),
        state: "a,b",
    },
    second: || Change {
        actions: vec![add("c"), add("a")],
        delta: Some(gset(&["c"])),
        state: "a,b,c",
    },
    stored: || gset(&["a", "b"]),
    replicated: || (gset(&["x", "y"]), "x,y"),
    mixed: || (gset(&["b", "x"]), "a,b,x"),
    wrong: not_a_flag,
};

const ORSET_CASE: TypeCase = TypeCase {
    service: ORSET,
    empty: "",
    first: || Change {
        actions: vec![add("b"), add("a")],
        delta: Some(orset(&[], &["a", "b"])),
        state: "a,b",
    },
    second: || Change {
        actions: vec![remove("a"), add("c")],
        delta: Some(orset(&["a"], &["c"])),
        state: "b,c",
    },
    stored: || orset(&[], &["a", "b"]),
    replicated: || (orset(&[], &["x"]), "x"),
    mixed: || (orset(&["a"], &["x"]), "b,x"),
    wrong: not_a_flag,
};

const LWWREGISTER_CASE: TypeCase = TypeCase {
    service: LWWREGISTER,
    empty: "",
    first: || Change {
        actions: vec![set("one")],
        delta: Some(lwwregister("one")),
        state: "one",
    },
    second: || Change {
        actions: vec![set("two"), set("three")],
        delta: Some(lwwregister("three")),
        state: "three",
    },
    stored: || lwwregister("one"),
    replicated: || (lwwregister("other"), "other"),
    mixed: || (lwwregister("later"), "later"),
    wrong: not_a_flag,
};

const FLAG_CASE: TypeCase = TypeCase {
    service: FLAG,
    empty: "false",
    first: || Change {
        actions: vec![enable()],
        delta: Some(flag(true)),
        state: "true",
    },
    // Enabling an enabled flag changes nothing: no delta.
    second: || Change {
        actions: vec![enable()],
        delta: None,
        state: "true",
    },
    stored: || flag(true),
    replicated: || (flag(true), "true"),
    mixed: || (flag(true), "true"),
    wrong: not_a_counter,
};

const ORMAP_CASE: TypeCase = TypeCase {
    service: ORMAP,
    empty: "",
    first: || Change {
        actions: vec![map_increment("b", 2), map_increment("a", 1)],
        delta: Some(ormap(&[], &[], &[("a", 1), ("b", 2)])),
        state: "a=1,b=2",
    },
    second: || Change {
        actions: vec![map_increment("a", 3), remove("b")],
        delta: Some(ormap(&["b"], &[("a", 3)], &[])),
        state: "a=4",
    },
    stored: || ormap(&[], &[], &[("a", 1), ("b", 2)]),
    replicated: || (ormap(&[], &[], &[("x", 5)]), "x=5"),
    mixed: || (ormap(&["b"], &[("a", 2)], &[("x", 5)]), "a=3,x=5"),
    wrong: not_a_flag,
};

const VOTE_CASE: TypeCase = TypeCase {
    service: VOTE,
    empty: "false/0/1",
    first: || Change {
        actions: vec![vote(true)],
        delta: Some(vote_delta(true, 0, 0)),
        state: "true/1/1",
    },
    second: || Change {
        actions: vec![vote(false)],
        delta: Some(vote_delta(false, 0, 0)),
        state: "false/0/1",
    },
    stored: || vote_delta(true, 1, 1),
    replicated: || (vote_delta(false, 2, 3), "false/2/3"),
    mixed: || (vote_delta(true, 3, 4), "true/3/4"),
    wrong: not_a_flag,
};

// --- model cases, for every type

async fn initial_empty_state(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    c.exchange(process(1, id, vec![]), m::reply(1, response(t.empty), None))
        .await?;
    c.passivate().await
}

async fn state_changes(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    for (n, change) in [(1, (t.first)()), (2, (t.second)())] {
        c.exchange(
            process(n, id, change.actions),
            m::reply(n, response(change.state), change.delta.and_then(m::update)),
        )
        .await?;
    }
    c.passivate().await
}

async fn initial_delta_in_init(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let (replicated, state) = (t.replicated)();
    let mut c = kit.protocol.crdt();
    c.send(m::init_with(t.service, id, Some(replicated)))?;
    c.exchange(process(1, id, vec![]), m::reply(1, response(state), None))
        .await?;
    c.passivate().await
}

async fn replicated_initial_delta(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let (replicated, state) = (t.replicated)();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    c.send(m::delta(replicated))?;
    c.exchange(process(1, id, vec![]), m::reply(1, response(state), None))
        .await?;
    c.passivate().await
}

async fn local_and_replicated(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let first = (t.first)();
    let (mixed, state) = (t.mixed)();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    c.exchange(
        process(1, id, first.actions),
        m::reply(1, response(first.state), first.delta.and_then(m::update)),
    )
    .await?;
    c.send(m::delta(mixed))?;
    c.exchange(process(2, id, vec![]), m::reply(2, response(state), None))
        .await?;
    c.passivate().await
}

async fn rehydration(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let first = (t.first)();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    c.exchange(
        process(1, id, first.actions),
        m::reply(1, response(first.state), first.delta.and_then(m::update)),
    )
    .await?;
    c.passivate().await?;
    let mut c = kit.protocol.crdt();
    c.send(m::init_with(t.service, id, Some((t.stored)())))?;
    c.exchange(process(1, id, vec![]), m::reply(1, response(first.state), None))
        .await?;
    c.passivate().await
}

async fn delete_from_entity(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let first = (t.first)();
    let mut c = kit.protocol.crdt();
    c.send(m::init(t.service, id))?;
    c.exchange(
        process(1, id, first.actions),
        m::reply(1, response(first.state), first.delta.and_then(m::update)),
    )
    .await?;
    c.exchange(
        process(2, id, vec![delete()]),
        m::reply(2, response(first.state), m::deleted()),
    )
    .await?;
    c.passivate().await
}

async fn delete_to_entity(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let (replicated, _) = (t.replicated)();
    let mut c = kit.protocol.crdt();
    c.send(m::init_with(t.service, id, Some(replicated)))?;
    c.send(m::delete())?;
    c.passivate().await
}

/// The model cases of CloudState's kit for one type, named as there.
macro_rules! type_cases {
    ($kind:literal, $t:ident) => {
        vec![
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " initial empty state"),
                requires: &[$t.service],
                run: |kit| Box::pin(initial_empty_state(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " state changes"),
                requires: &[$t.service],
                run: |kit| Box::pin(state_changes(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " initial delta in init"),
                requires: &[$t.service],
                run: |kit| Box::pin(initial_delta_in_init(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " initial empty state with replicated initial delta"),
                requires: &[$t.service],
                run: |kit| Box::pin(replicated_initial_delta(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " mix of local and replicated state changes"),
                requires: &[$t.service],
                run: |kit| Box::pin(local_and_replicated(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " rehydration after passivation"),
                requires: &[$t.service],
                run: |kit| Box::pin(rehydration(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " delete action received from entity"),
                requires: &[$t.service],
                run: |kit| Box::pin(delete_from_entity(kit, &$t)),
            },
            Case {
                section: MODEL_SECTION,
                name: concat!("verify ", $kind, " delete action sent to entity"),
                requires: &[$t.service],
                run: |kit| Box::pin(delete_to_entity(kit, &$t)),
            },
            Case {
                section: PROXY_SECTION,
                name: concat!(
                    "verify ",
                    $kind,
                    " init for a new and an existing entity (Strata: a wrong-type delta is refused and stores nothing)"
                ),
                requires: &[$t.service],
                run: |kit| Box::pin(new_and_existing(kit, &$t)),
            },
        ]
    };
}

macro_rules! model_case {
    ($name:expr, |$kit:ident, $id:ident, $c:ident| $body:block) => {
        Case {
            section: MODEL_SECTION,
            name: $name,
            requires: &[GCOUNTER, TWO],
            run: |$kit| -> BoxFuture<'_, Check> {
                Box::pin(async move {
                    let $id = $kit.next_id();
                    let mut $c = $kit.protocol.crdt();
                    let $id = $id.as_str();
                    $c.send(m::init(GCOUNTER, $id))?;
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
            name: "verify CRDT entity discovery",
            requires: &SERVICES,
            run: |kit| Box::pin(discovery(kit)),
        },
        Case {
            section: MODEL_SECTION,
            name: "verify CRDT configured entity",
            requires: &[CONFIGURED],
            run: |kit| Box::pin(async move { super::configured_entity(kit, CONFIGURED, PROTOCOL, None) }),
        },
    ];
    // The type cases' proxy case runs with the model cases of its type.
    let (mut model, mut proxy): (Vec<Case>, Vec<Case>) = [
        type_cases!("GCounter", GCOUNTER_CASE),
        type_cases!("PNCounter", PNCOUNTER_CASE),
        type_cases!("GSet", GSET_CASE),
        type_cases!("ORSet", ORSET_CASE),
        type_cases!("LWWRegister", LWWREGISTER_CASE),
        type_cases!("Flag", FLAG_CASE),
        type_cases!("ORMap", ORMAP_CASE),
        type_cases!("Vote", VOTE_CASE),
    ]
    .into_iter()
    .flatten()
    .partition(|case| case.section == MODEL_SECTION);
    cases.append(&mut model);
    cases.extend(streamed_cases());
    cases.extend([
        model_case!("verify forward to second service", |kit, id, c| {
            c.exchange(
                process(1, id, vec![increment(1)]),
                m::reply(1, response("1"), m::update(gcounter(1))),
            )
            .await?;
            c.exchange(
                process(2, id, vec![forward_to(id)]),
                m::forward(2, TWO, "Call", two_call(id), None, Effects::none()),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify forward with state changes", |kit, id, c| {
            c.exchange(
                process(1, id, vec![increment(1), forward_to(id)]),
                m::forward(1, TWO, "Call", two_call(id), m::update(gcounter(1)), Effects::none()),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify reply with side effect to second service", |kit, id, c| {
            c.exchange(
                process(1, id, vec![effect_to(id, false)]),
                m::reply_effects(1, response("0"), None, side_effects(&[id], false)),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify synchronous side effect to second service", |kit, id, c| {
            c.exchange(
                process(1, id, vec![effect_to(id, true)]),
                m::reply_effects(1, response("0"), None, side_effects(&[id], true)),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify forward and side effect to second service", |kit, id, c| {
            c.exchange(
                process(1, id, vec![effect_to(id, false), forward_to(id)]),
                m::forward(1, TWO, "Call", two_call(id), None, side_effects(&[id], false)),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify reply with multiple side effects", |kit, id, c| {
            let effects = ["1", "2", "3"].iter().map(|i| effect_to(i, false)).collect();
            c.exchange(
                process(1, id, effects),
                m::reply_effects(1, response("0"), None, side_effects(&["1", "2", "3"], false)),
            )
            .await?;
            c.passivate().await
        }),
        model_case!(
            "verify reply with multiple side effects and state changes",
            |kit, id, c| {
                let mut actions = vec![increment(1), increment(2), increment(3)];
                actions.extend(["1", "2", "3"].iter().map(|i| effect_to(i, false)));
                c.exchange(
                    process(1, id, actions),
                    m::reply_effects(
                        1,
                        response("6"),
                        m::update(gcounter(6)),
                        side_effects(&["1", "2", "3"], false),
                    ),
                )
                .await?;
                c.passivate().await
            }
        ),
        model_case!("verify failure action", |kit, id, c| {
            c.exchange(
                process(1, id, vec![increment(1), fail_with("expected failure")]),
                m::action_failure(1, "expected failure"),
            )
            .await?;
            c.passivate().await
        }),
        model_case!("verify connection after failure action", |kit, id, c| {
            c.exchange(
                process(1, id, vec![increment(1)]),
                m::reply(1, response("1"), m::update(gcounter(1))),
            )
            .await?;
            c.exchange(
                process(2, id, vec![increment(2), fail_with("expected failure")]),
                m::action_failure(2, "expected failure"),
            )
            .await?;
            // The failed command's change is gone.
            c.exchange(process(3, id, vec![]), m::reply(3, response("1"), None))
                .await?;
            c.passivate().await
        }),
        model_case!(
            "an action the type has no meaning for fails the command (Strata)",
            |kit, id, c| {
                c.exchange(
                    process(1, id, vec![increment(1), add("a")]),
                    m::action_failure(1, "Add is not a GCounter change"),
                )
                .await?;
                c.exchange(process(2, id, vec![]), m::reply(2, response("0"), None))
                    .await?;
                c.passivate().await
            }
        ),
    ]);
    cases.append(&mut proxy);
    cases.extend([
        Case {
            section: PROXY_SECTION,
            name: "verify streamed responses for connection tracking",
            requires: &[VOTE],
            run: |kit| Box::pin(connection_tracking(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify the side effects of a cancelled stream's response are performed (Strata)",
            requires: &[GCOUNTER, TWO],
            run: |kit| Box::pin(cancelled_side_effects(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify state changes",
            requires: &[PNCOUNTER],
            run: |kit| Box::pin(proxy_state_changes(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify forwards and side effects",
            requires: &[GCOUNTER, TWO],
            run: |kit| Box::pin(forwards_and_side_effects(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify passivation timeout",
            requires: &[CONFIGURED],
            run: |kit| Box::pin(passivation(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify failures",
            requires: &[GCOUNTER],
            run: |kit| Box::pin(proxy_failures(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "verify write consistency values are accepted (Strata: set by the interceptor)",
            requires: &[GCOUNTER],
            run: |kit| Box::pin(write_consistency(kit)),
        },
        Case {
            section: PROXY_SECTION,
            name: "an ORMap delta with a float key is refused and stores nothing (Strata)",
            requires: &[ORMAP],
            run: |kit| Box::pin(float_key(kit)),
        },
    ]);
    cases
}

/// Every CRDT case is written; nothing is pending.
pub fn pending() -> Vec<Pending> {
    Vec::new()
}

// --- streamed commands

fn streamed_request(id: &str) -> model::StreamedRequest {
    model::StreamedRequest {
        id: id.into(),
        ..Default::default()
    }
}

fn process_streamed(n: i64, request: &model::StreamedRequest) -> CrdtStreamIn {
    m::streamed_command(n, &request.id, "ProcessStreamed", any(request))
}

macro_rules! streamed_case {
    ($name:expr, $service:expr, |$kit:ident, $id:ident, $c:ident| $body:block) => {
        Case {
            section: MODEL_SECTION,
            name: $name,
            requires: &[$service, TWO],
            run: |$kit| -> BoxFuture<'_, Check> {
                Box::pin(async move {
                    let $id = $kit.next_id();
                    let mut $c = $kit.protocol.crdt();
                    let $id = $id.as_str();
                    $c.send(m::init($service, $id))?;
                    $body
                })
            },
        }
    };
}

fn streamed_cases() -> Vec<Case> {
    vec![
        streamed_case!("verify streamed responses", GCOUNTER, |kit, id, c| {
            c.exchange(
                process_streamed(1, &streamed_request(id)),
                m::streamed_reply(1, Some(response("0")), None),
            )
            .await?;
            for (n, by, state) in [(2, 1, "1"), (3, 2, "3"), (4, 3, "6")] {
                c.exchange(
                    process(n, id, vec![increment(by)]),
                    m::reply(n, response(state), m::update(gcounter(by as u64))),
                )
                .await?;
                c.expect(m::streamed(1, response(state), Effects::none(), false))
                    .await?;
            }
            c.passivate().await
        }),
        streamed_case!(
            "verify streamed responses with stream ending action",
            GCOUNTER,
            |kit, id, c| {
                let request = model::StreamedRequest {
                    end_state: "3".into(),
                    ..streamed_request(id)
                };
                c.exchange(
                    process_streamed(1, &request),
                    m::streamed_reply(1, Some(response("0")), None),
                )
                .await?;
                c.exchange(
                    process(2, id, vec![increment(1)]),
                    m::reply(2, response("1"), m::update(gcounter(1))),
                )
                .await?;
                c.expect(m::streamed(1, response("1"), Effects::none(), false)).await?;
                c.exchange(
                    process(3, id, vec![increment(2)]),
                    m::reply(3, response("3"), m::update(gcounter(2))),
                )
                .await?;
                c.expect(m::streamed(1, response("3"), Effects::none(), true)).await?;
                // The stream is over: the next change sends it nothing.
                c.exchange(
                    process(4, id, vec![increment(3)]),
                    m::reply(4, response("6"), m::update(gcounter(3))),
                )
                .await?;
                c.passivate().await
            }
        ),
        streamed_case!(
            "verify streamed responses with cancellation",
            PNCOUNTER,
            |kit, id, c| {
                let request = model::StreamedRequest {
                    on_cancel: vec![decrement(42)],
                    ..streamed_request(id)
                };
                c.exchange(
                    process_streamed(1, &request),
                    m::streamed_reply(1, Some(response("0")), None),
                )
                .await?;
                for (n, by, state) in [(2, 10, "10"), (3, 20, "30")] {
                    c.exchange(
                        process(n, id, vec![increment(by)]),
                        m::reply(n, response(state), m::update(pncounter(by))),
                    )
                    .await?;
                    c.expect(m::streamed(1, response(state), Effects::none(), false))
                        .await?;
                }
                c.exchange(
                    m::stream_cancelled(1, id),
                    m::stream_cancelled_response(1, m::update(pncounter(-42))),
                )
                .await?;
                c.exchange(process(4, id, vec![]), m::reply(4, response("-12"), None))
                    .await?;
                c.exchange(
                    process(5, id, vec![increment(30)]),
                    m::reply(5, response("18"), m::update(pncounter(30))),
                )
                .await?;
                c.passivate().await
            }
        ),
        streamed_case!(
            "verify empty streamed responses with cancellation",
            PNCOUNTER,
            |kit, id, c| {
                c.exchange(
                    process(1, id, vec![increment(10)]),
                    m::reply(1, response("10"), m::update(pncounter(10))),
                )
                .await?;
                let request = model::StreamedRequest {
                    on_cancel: vec![decrement(42)],
                    empty: true,
                    ..streamed_request(id)
                };
                c.exchange(process_streamed(2, &request), m::streamed_reply(2, None, None))
                    .await?;
                c.exchange(
                    m::stream_cancelled(2, id),
                    m::stream_cancelled_response(2, m::update(pncounter(-42))),
                )
                .await?;
                c.exchange(process(3, id, vec![]), m::reply(3, response("-32"), None))
                    .await?;
                c.passivate().await
            }
        ),
        streamed_case!("verify streamed responses with side effects", GSET, |kit, id, c| {
            let request = model::StreamedRequest {
                effects: vec![
                    model::Effect {
                        id: "one".into(),
                        synchronous: false,
                    },
                    model::Effect {
                        id: "two".into(),
                        synchronous: true,
                    },
                ],
                ..streamed_request(id)
            };
            let effects = || {
                Effects::side_effects(
                    side_effects(&["one"], false)
                        .side_effects
                        .into_iter()
                        .chain(side_effects(&["two"], true).side_effects),
                )
            };
            c.exchange(
                process_streamed(1, &request),
                m::streamed_reply(1, Some(response("")), None),
            )
            .await?;
            c.exchange(
                process(2, id, vec![add("a")]),
                m::reply(2, response("a"), m::update(gset(&["a"]))),
            )
            .await?;
            c.expect(m::streamed(1, response("a"), effects(), false)).await?;
            c.exchange(
                process(3, id, vec![add("b")]),
                m::reply(3, response("a,b"), m::update(gset(&["b"]))),
            )
            .await?;
            c.expect(m::streamed(1, response("a,b"), effects(), false)).await?;
            c.passivate().await
        }),
    ]
}

async fn discovery(kit: &Kit) -> Check {
    let discovered = kit.discovered_services();
    for service in SERVICES {
        if !discovered.iter().any(|s| s == service) {
            return Err(format!("the descriptors do not define {service}: {discovered:?}"));
        }
        let entity = kit.entity(service).ok_or_else(|| format!("no entity for {service}"))?;
        expect_eq("entity type", PROTOCOL, entity.entity_type.as_str())?;
    }
    Ok(())
}

// --- proxy cases

async fn call(kit: &Kit, service: &str, id: &str, actions: Vec<RequestAction>) -> Result<String, tonic::Status> {
    call_method(kit, service, "Process", id, actions).await
}

/// `service`'s `method` through the proxy; the answer's state.
async fn call_method(
    kit: &Kit,
    service: &str,
    method: &str,
    id: &str,
    actions: Vec<RequestAction>,
) -> Result<String, tonic::Status> {
    let path = format!("/{service}/{method}");
    let mut client = tonic::client::Grpc::new(kit.grpc.clone());
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<model::Request, model::Response>::default();
    let answer = client
        .unary(
            tonic::Request::new(request(id, actions)),
            path.parse().map_err(|_| tonic::Status::internal("bad path"))?,
            codec,
        )
        .await?;
    Ok(answer.into_inner().state)
}

async fn call_ok(kit: &Kit, service: &str, id: &str, actions: Vec<RequestAction>, expected: &str) -> Check {
    let state = call(kit, service, id, actions)
        .await
        .map_err(|status| format!("Process failed: {status:?}"))?;
    expect_eq("Process answer", expected, state.as_str())
}

/// A call that the proxy must refuse with `code`.
async fn call_refused(kit: &Kit, service: &str, id: &str, actions: Vec<RequestAction>, code: tonic::Code) -> Check {
    match call(kit, service, id, actions).await {
        Err(status) if status.code() == code => Ok(()),
        other => Err(format!("expected the call to fail with {code:?}, got {other:?}")),
    }
}

/// Replaces the state action of the function's next reply with an update by
/// `replacement` (the interceptor passes the
/// proxy this instead of what the function sent).
fn replace_delta(kit: &Kit, replacement: CrdtDelta) {
    kit.interceptor
        .tamper_next_crdt_answer(Box::new(move |mut out: CrdtStreamOut| {
            if let Some(crdt_stream_out::Message::Reply(reply)) = &mut out.message {
                reply.state_action = m::update(replacement);
            }
            out
        }));
}

/// The first change through the proxy shows an empty `CrdtInit`; a delta of
/// another type for the second change is refused with INTERNAL and the entity
/// restarts; the next call's `CrdtInit` carries the state stored by the first
/// change, nothing of the refused one.
async fn new_and_existing(kit: &Kit, t: &TypeCase) -> Check {
    let id = &kit.next_id();
    let first = (t.first)();
    let second = (t.second)();
    call_ok(kit, t.service, id, first.actions.clone(), first.state).await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(t.service, id)).await?;
    c.expect_incoming(process(1, id, first.actions)).await?;
    c.expect_outgoing(m::reply(1, response(first.state), first.delta.and_then(m::update)))
        .await?;

    let wrong = (t.wrong)();
    replace_delta(kit, wrong.clone());
    call_refused(kit, t.service, id, second.actions.clone(), tonic::Code::Internal).await?;
    c.expect_incoming(process(2, id, second.actions)).await?;
    c.expect_outgoing(m::reply(2, response(second.state), m::update(wrong)))
        .await?;
    c.expect_closed().await?;

    let mut c = reopened(kit, t.service, id, Some((t.stored)())).await?;
    call_ok(kit, t.service, id, vec![], first.state).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response(first.state), None)).await?;
    stop(kit, t.service, id, 2, c).await
}

/// `ProcessStreamed` of `service` through the proxy: its answers as they come.
async fn watch(
    kit: &Kit,
    service: &str,
    request: model::StreamedRequest,
) -> Result<tonic::codec::Streaming<model::Response>, String> {
    let path = format!("/{service}/ProcessStreamed");
    let mut client = tonic::client::Grpc::new(kit.grpc.clone());
    client.ready().await.map_err(|e| e.to_string())?;
    let codec = tonic_prost::ProstCodec::<model::StreamedRequest, model::Response>::default();
    client
        .server_streaming(tonic::Request::new(request), path.parse().expect("a path"), codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("ProcessStreamed failed: {status:?}"))
}

async fn next_state(stream: &mut tonic::codec::Streaming<model::Response>, expected: &str) -> Check {
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| format!("no streamed answer (expected {expected:?})"))?
        .map_err(|status| format!("the stream failed: {status:?}"))?
        .ok_or_else(|| format!("the stream ended (expected {expected:?})"))?;
    expect_eq("streamed answer", expected, message.state.as_str())
}

/// A watcher of a vote sees a second client's vote while that client is
/// connected, and its withdrawal when the client goes: the cancel's change is
/// the function's, applied and passed on by the proxy.
async fn connection_tracking(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let (state0, state1) = ("false/0/1", "true/1/1");
    let mut monitor = watch(kit, VOTE, streamed_request(id)).await?;
    next_state(&mut monitor, state0).await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(VOTE, id)).await?;
    c.expect_incoming(process_streamed(1, &streamed_request(id))).await?;
    c.expect_outgoing(m::streamed_reply(1, Some(response(state0)), None))
        .await?;

    let connect_request = model::StreamedRequest {
        initial: vec![vote(true)],
        on_cancel: vec![vote(false)],
        empty: true,
        ..streamed_request(id)
    };
    let connect = watch(kit, VOTE, connect_request.clone()).await?;
    next_state(&mut monitor, state1).await?;
    c.expect_incoming(process_streamed(2, &connect_request)).await?;
    c.expect_outgoing(m::streamed_reply(2, None, m::update(vote_delta(true, 0, 0))))
        .await?;
    c.expect_outgoing(m::streamed(1, response(state1), Effects::none(), false))
        .await?;

    drop(connect);
    next_state(&mut monitor, state0).await?;
    c.expect_incoming(m::stream_cancelled(2, id)).await?;
    c.expect_outgoing(m::stream_cancelled_response(2, m::update(vote_delta(false, 0, 0))))
        .await?;
    c.expect_outgoing(m::streamed(1, response(state0), Effects::none(), false))
        .await?;

    drop(monitor);
    c.expect_incoming(m::stream_cancelled(1, id)).await?;
    c.expect_outgoing(m::stream_cancelled_response(1, None)).await?;
    stop(kit, VOTE, id, 3, c).await
}

/// Strata: the side effects of a cancelled stream's response are performed
/// (no client waits for them).
async fn cancelled_side_effects(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let request = model::StreamedRequest {
        cancel_effects: vec![model::Effect {
            id: id.to_string(),
            synchronous: false,
        }],
        ..streamed_request(id)
    };
    let mut watching = watch(kit, GCOUNTER, request.clone()).await?;
    next_state(&mut watching, "0").await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(GCOUNTER, id)).await?;
    c.expect_incoming(process_streamed(1, &request)).await?;
    c.expect_outgoing(m::streamed_reply(1, Some(response("0")), None))
        .await?;
    drop(watching);
    c.expect_incoming(m::stream_cancelled(1, id)).await?;
    c.expect_outgoing(m::stream_cancelled_effects(1, None, side_effects(&[id], false)))
        .await?;
    let mut two = kit.interceptor.crdt().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(m::command(1, id, "Call", two_call(id))).await?;
    two.expect_outgoing(m::reply(1, response(""), None)).await?;
    stop(kit, GCOUNTER, id, 2, c).await
}

async fn proxy_state_changes(kit: &Kit) -> Check {
    let id = &kit.next_id();
    call_ok(kit, PNCOUNTER, id, vec![], "0").await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(PNCOUNTER, id)).await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response("0"), None)).await?;

    let changes = || vec![increment(1), decrement(2), increment(3)];
    call_ok(kit, PNCOUNTER, id, changes(), "2").await?;
    c.expect_incoming(process(2, id, changes())).await?;
    c.expect_outgoing(m::reply(2, response("2"), m::update(pncounter(2))))
        .await?;

    let changes = || vec![increment(4), decrement(5), increment(6)];
    call_ok(kit, PNCOUNTER, id, changes(), "7").await?;
    c.expect_incoming(process(3, id, changes())).await?;
    c.expect_outgoing(m::reply(3, response("7"), m::update(pncounter(5))))
        .await?;

    call_ok(kit, PNCOUNTER, id, vec![delete()], "7").await?;
    c.expect_incoming(process(4, id, vec![delete()])).await?;
    c.expect_outgoing(m::reply(4, response("7"), m::deleted())).await?;
    c.expect_closed().await?;

    // Strata: deleted for good. The entity restarts from nothing, a change is
    // refused with NOT_FOUND and the function starts over once more.
    let mut c = reopened(kit, PNCOUNTER, id, None).await?;
    call_refused(kit, PNCOUNTER, id, vec![increment(1)], tonic::Code::NotFound).await?;
    c.expect_incoming(process(1, id, vec![increment(1)])).await?;
    c.expect_outgoing(m::reply(1, response("1"), m::update(pncounter(1))))
        .await?;
    c.expect_closed().await?;
    reopened(kit, PNCOUNTER, id, None).await.map(drop)
}

async fn forwards_and_side_effects(kit: &Kit) -> Check {
    let id = &kit.next_id();
    call_ok(kit, GCOUNTER, id, vec![increment(1)], "1").await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(GCOUNTER, id)).await?;
    c.expect_incoming(process(1, id, vec![increment(1)])).await?;
    c.expect_outgoing(m::reply(1, response("1"), m::update(gcounter(1))))
        .await?;

    // CrdtTwo's answer is the client's.
    call_ok(kit, GCOUNTER, id, vec![forward_to(id)], "").await?;
    c.expect_incoming(process(2, id, vec![forward_to(id)])).await?;
    c.expect_outgoing(m::forward(2, TWO, "Call", two_call(id), None, Effects::none()))
        .await?;
    let mut two = kit.interceptor.crdt().await?;
    two.expect_incoming(m::init(TWO, id)).await?;
    two.expect_incoming(m::command(1, id, "Call", two_call(id))).await?;
    two.expect_outgoing(m::reply(1, response(""), None)).await?;

    call_ok(kit, GCOUNTER, id, vec![effect_to(id, false)], "1").await?;
    c.expect_incoming(process(3, id, vec![effect_to(id, false)])).await?;
    c.expect_outgoing(m::reply_effects(3, response("1"), None, side_effects(&[id], false)))
        .await?;
    two.expect_incoming(m::command(2, id, "Call", two_call(id))).await?;
    two.expect_outgoing(m::reply(2, response(""), None)).await?;
    stop(kit, GCOUNTER, id, 4, c).await
}

async fn proxy_failures(kit: &Kit) -> Check {
    let id = &kit.next_id();
    call_ok(kit, GCOUNTER, id, vec![increment(3)], "3").await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(GCOUNTER, id)).await?;
    c.expect_incoming(process(1, id, vec![increment(3)])).await?;
    c.expect_outgoing(m::reply(1, response("3"), m::update(gcounter(3))))
        .await?;

    let failing = || vec![increment(1), fail_with("expected failure")];
    grpc_failure(call(kit, GCOUNTER, id, failing()).await, "expected failure")?;
    c.expect_incoming(process(2, id, failing())).await?;
    c.expect_outgoing(m::action_failure(2, "expected failure")).await?;

    call_ok(kit, GCOUNTER, id, vec![], "3").await?;
    c.expect_incoming(process(3, id, vec![])).await?;
    c.expect_outgoing(m::reply(3, response("3"), None)).await?;
    stop(kit, GCOUNTER, id, 4, c).await
}

/// Deletes the entity (its stream has taken `n - 1` commands), so no case
/// meets it again: the stream ends and the proxy opens the next at once.
async fn stop(kit: &Kit, service: &str, id: &str, n: i64, mut c: Intercepted<CrdtStreamIn, CrdtStreamOut>) -> Check {
    let _ = call(kit, service, id, vec![delete()]).await;
    c.expect_incoming(process(n, id, vec![delete()])).await?;
    c.outgoing.message().await?;
    c.expect_closed().await?;
    reopened(kit, service, id, None).await.map(drop)
}

/// Strata's proxy restarts an entity whose stream it ended (after a delete or
/// a refused answer) at once: the next stream, its `CrdtInit` carrying `state`.
async fn reopened(
    kit: &Kit,
    service: &str,
    id: &str,
    state: Option<CrdtDelta>,
) -> Result<Intercepted<CrdtStreamIn, CrdtStreamOut>, String> {
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init_with(service, id, state)).await?;
    Ok(c)
}

async fn write_consistency(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let mut total = 0;
    let mut c = None;
    for (n, consistency) in [
        (1, CrdtWriteConsistency::Local),
        (2, CrdtWriteConsistency::Majority),
        (3, CrdtWriteConsistency::All),
    ] {
        total += n;
        kit.interceptor
            .tamper_next_crdt_answer(Box::new(move |mut out: CrdtStreamOut| {
                if let Some(crdt_stream_out::Message::Reply(reply)) = &mut out.message {
                    if let Some(action) = &mut reply.state_action {
                        action.write_consistency = consistency as i32;
                    }
                }
                out
            }));
        call_ok(kit, GCOUNTER, id, vec![increment(n)], &total.to_string()).await?;
        if c.is_none() {
            let mut first = kit.interceptor.crdt().await?;
            first.expect_incoming(m::init(GCOUNTER, id)).await?;
            c = Some(first);
        }
        let c = c.as_mut().ok_or("no stream")?;
        c.expect_incoming(process(n, id, vec![increment(n)])).await?;
        let mut expected = m::update(gcounter(n as u64));
        if let Some(action) = &mut expected {
            action.write_consistency = consistency as i32;
        }
        c.expect_outgoing(m::reply(n, response(&total.to_string()), expected))
            .await?;
    }
    let c = c.ok_or("no stream")?;
    stop(kit, GCOUNTER, id, 4, c).await
}

async fn float_key(kit: &Kit) -> Check {
    let id = &kit.next_id();
    call_ok(kit, ORMAP, id, vec![map_increment("a", 1)], "a=1").await?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(ORMAP, id)).await?;
    c.expect_incoming(process(1, id, vec![map_increment("a", 1)])).await?;
    c.expect_outgoing(m::reply(1, response("a=1"), m::update(ormap(&[], &[], &[("a", 1)]))))
        .await?;

    let float = Any {
        type_url: "p.cloudstate.io/float".into(),
        value: 1.5f32.encode_to_vec(),
    };
    let bad = delta(Delta::Ormap(OrMapDelta {
        cleared: false,
        removed: vec![],
        updated: vec![],
        added: vec![OrMapEntryDelta {
            key: Some(float),
            delta: Some(gcounter(1)),
        }],
    }));
    replace_delta(kit, bad.clone());
    call_refused(kit, ORMAP, id, vec![map_increment("b", 1)], tonic::Code::Internal).await?;
    c.expect_incoming(process(2, id, vec![map_increment("b", 1)])).await?;
    c.expect_outgoing(m::reply(2, response("a=1,b=1"), m::update(bad)))
        .await?;
    c.expect_closed().await?;

    let mut c = reopened(kit, ORMAP, id, Some(ormap(&[], &[], &[("a", 1)]))).await?;
    call_ok(kit, ORMAP, id, vec![], "a=1").await?;
    c.expect_incoming(process(1, id, vec![])).await?;
    c.expect_outgoing(m::reply(1, response("a=1"), None)).await?;
    stop(kit, ORMAP, id, 2, c).await
}

async fn passivation(kit: &Kit) -> Check {
    let id = &kit.next_id();
    let state = call_method(kit, CONFIGURED, "Call", id, vec![])
        .await
        .map_err(|status| format!("Call failed: {status:?}"))?;
    expect_eq("Call answer", "", state.as_str())?;
    let mut c = kit.interceptor.crdt().await?;
    c.expect_incoming(m::init(CONFIGURED, id)).await?;
    c.expect_incoming(m::command(1, id, "Call", any(&request(id, vec![]))))
        .await?;
    c.expect_outgoing(m::reply(1, response(""), None)).await?;
    c.expect_closed_within(std::time::Duration::from_secs(2)).await
}
