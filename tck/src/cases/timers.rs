//! Strata's timers (CloudState had none): the proxy cases of the timers model,
//! for a value entity, an event-sourced entity and an action. A command asks the
//! built-in `strata.timers.Timers` for a timer as a side effect or a forward with
//! the published message; the cases check what a user sees: the client's answer,
//! the timer in the proxy's store exactly when the command's state is (none when
//! the command fails or is refused), its call made to the function when due, a
//! second Schedule of the same name replacing the first, Cancel removing one, and
//! the bad inputs refused with what is wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use prost_types::Any;
use strata_proto::cloudstate::{
    self as pb,
    action::{ActionCommand, ActionResponse},
    eventsourced::{event_sourced_stream_in, EventSourcedStreamIn, EventSourcedStreamOut},
    valueentity::{value_entity_stream_in, ValueEntityStreamIn, ValueEntityStreamOut},
};
use strata_store::{StoredTimer, TimerState};

use super::{expect_eq, grpc_failure};
use crate::{
    intercept::Intercepted,
    kit::{Case, Kit},
    messages::{self, any, side_effect, Effects},
    model::published_timers::{schedule_timer::When, CancelTimer, ScheduleTimer, TimerCall},
    model::timers::{
        step::Step, timers_action_client::TimersActionClient, timers_event_sourced_client::TimersEventSourcedClient,
        timers_value_entity_client::TimersValueEntityClient, Persisted, Request, Response,
    },
    probe::{Check, PATIENCE},
    protocol::Shape,
};

pub const VALUE_ENTITY: &str = "strata.tck.model.timers.TimersValueEntity";
pub const EVENT_SOURCED: &str = "strata.tck.model.timers.TimersEventSourced";
pub const ACTION: &str = "strata.tck.model.timers.TimersAction";
const TIMERS: &str = "strata.timers.Timers";
/// The deployment a standalone `strata proxy` keeps its timers under.
const STANDALONE: &str = "standalone";
/// Due so far ahead that no case sees it fire.
const LATER: Duration = Duration::from_secs(3600);

const SECTION: &str = "proxy: timers (Strata)";

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            section: SECTION,
            name: "value entity: Schedule and Cancel as side effects",
            requires: &[VALUE_ENTITY],
            run: |kit| Box::pin(side_effects::<ValueEntity>(kit)),
        },
        Case {
            section: SECTION,
            name: "value entity: Schedule and Cancel as forwards",
            requires: &[VALUE_ENTITY],
            run: |kit| Box::pin(forwards::<ValueEntity>(kit)),
        },
        Case {
            section: SECTION,
            name: "value entity: bad timers are refused and store nothing",
            requires: &[VALUE_ENTITY],
            run: |kit| Box::pin(refusals::<ValueEntity>(kit)),
        },
        Case {
            section: SECTION,
            name: "event-sourced entity: Schedule and Cancel as side effects",
            requires: &[EVENT_SOURCED],
            run: |kit| Box::pin(side_effects::<EventSourced>(kit)),
        },
        Case {
            section: SECTION,
            name: "event-sourced entity: Schedule and Cancel as forwards",
            requires: &[EVENT_SOURCED],
            run: |kit| Box::pin(forwards::<EventSourced>(kit)),
        },
        Case {
            section: SECTION,
            name: "event-sourced entity: bad timers are refused and store nothing",
            requires: &[EVENT_SOURCED],
            run: |kit| Box::pin(refusals::<EventSourced>(kit)),
        },
        Case {
            section: SECTION,
            name: "action: Schedule and Cancel as side effects and forwards",
            requires: &[ACTION],
            run: |kit| Box::pin(action_timers(kit)),
        },
        Case {
            section: SECTION,
            name: "action: bad timers are refused and store nothing",
            requires: &[ACTION],
            run: |kit| Box::pin(action_refusals(kit)),
        },
    ]
}

// --- the steps a case sends

fn step(step: Step) -> crate::model::timers::Step {
    crate::model::timers::Step { step: Some(step) }
}

fn update(value: &str) -> crate::model::timers::Step {
    step(Step::Update(value.into()))
}

fn fail(message: &str) -> crate::model::timers::Step {
    step(Step::Fail(message.into()))
}

fn request(id: &str, steps: Vec<crate::model::timers::Step>) -> Request {
    Request { id: id.into(), steps }
}

/// Timer `name`, due `when`, calling `service/Process` with `steps` for entity `id`.
fn schedule(name: &str, when: When, service: &str, id: &str, steps: Vec<crate::model::timers::Step>) -> ScheduleTimer {
    ScheduleTimer {
        name: name.into(),
        when: Some(when),
        call: Some(TimerCall {
            service_name: service.into(),
            command_name: "Process".into(),
            payload: Some(any(&request(id, steps))),
        }),
        max_attempts: 0,
    }
}

fn after(delay: Duration) -> When {
    When::After(prost_types::Duration {
        seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    })
}

/// A time `ago` in the past.
fn before_now(ago: Duration) -> When {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    When::At(prost_types::Timestamp {
        seconds: i64::try_from(now.saturating_sub(ago).as_secs()).unwrap_or(0),
        nanos: 0,
    })
}

fn cancel(name: &str) -> CancelTimer {
    CancelTimer { name: name.into() }
}

/// The side effect a Schedule step makes.
fn schedule_effect(schedule: &ScheduleTimer) -> pb::SideEffect {
    side_effect(TIMERS, "Schedule", any(schedule), true)
}

fn cancel_effect(cancel: &CancelTimer) -> pb::SideEffect {
    side_effect(TIMERS, "Cancel", any(cancel), true)
}

fn response(state: &str) -> Any {
    any(&Response { state: state.into() })
}

fn persisted(value: &str) -> Any {
    any(&Persisted { value: value.into() })
}

// --- calling the model through the proxy

/// `service/method` (Process or Forward) through the proxy; Process's state, or
/// "" for Forward's google.protobuf.Empty.
async fn call(
    kit: &Kit,
    service: &str,
    method: &str,
    id: &str,
    steps: Vec<crate::model::timers::Step>,
) -> Result<String, tonic::Status> {
    let request = request(id, steps);
    let process = method == "Process";
    let answer = match service {
        VALUE_ENTITY => {
            let mut client = TimersValueEntityClient::new(kit.grpc.clone());
            if process {
                client.process(request).await?.into_inner().state
            } else {
                client.forward(request).await?;
                String::new()
            }
        }
        EVENT_SOURCED => {
            let mut client = TimersEventSourcedClient::new(kit.grpc.clone());
            if process {
                client.process(request).await?.into_inner().state
            } else {
                client.forward(request).await?;
                String::new()
            }
        }
        _ => {
            let mut client = TimersActionClient::new(kit.grpc.clone());
            if process {
                client.process(request).await?.into_inner().state
            } else {
                client.forward(request).await?;
                String::new()
            }
        }
    };
    Ok(answer)
}

async fn call_ok(
    kit: &Kit,
    service: &str,
    method: &str,
    id: &str,
    steps: Vec<crate::model::timers::Step>,
    expected: &str,
) -> Check {
    let answer = call(kit, service, method, id, steps)
        .await
        .map_err(|status| format!("{method} failed: {status:?}"))?;
    expect_eq(&format!("{method} answered"), expected, answer.as_str())
}

/// A command the proxy refuses for its timer: INTERNAL, naming what is wrong.
async fn call_refused(
    kit: &Kit,
    service: &str,
    method: &str,
    id: &str,
    steps: Vec<crate::model::timers::Step>,
    why: &str,
) -> Check {
    match call(kit, service, method, id, steps).await {
        Err(status) if status.code() == tonic::Code::Internal && status.message().contains(why) => Ok(()),
        other => Err(format!(
            "expected {method} to be refused with INTERNAL saying {why:?}, got {other:?}"
        )),
    }
}

// --- what the store holds

/// The pending timers of `owner` (a gRPC service) for entity `id`, by name.
async fn pending(kit: &Kit, owner: &str, id: &str) -> Result<Vec<StoredTimer>, String> {
    let timers = kit.store.timers().ok_or("the kit's store keeps no timers")?;
    let listed = timers
        .list_timers(STANDALONE, TimerState::Pending, 1000)
        .await
        .map_err(|e| format!("listing the store's timers: {e}"))?;
    let mut mine: Vec<StoredTimer> = listed
        .into_iter()
        .filter(|t| t.key.owner == owner && t.key.entity_id == id)
        .collect();
    mine.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    Ok(mine)
}

async fn pending_names(kit: &Kit, owner: &str, id: &str) -> Result<Vec<String>, String> {
    Ok(pending(kit, owner, id).await?.into_iter().map(|t| t.key.name).collect())
}

async fn expect_pending(kit: &Kit, owner: &str, id: &str, names: &[&str]) -> Check {
    expect_eq(
        "the pending timers in the store",
        names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        pending_names(kit, owner, id).await?,
    )
}

/// Waits until the store holds exactly `names` pending (a fired timer is removed
/// once its call succeeded, just after the call's answer).
async fn await_pending(kit: &Kit, owner: &str, id: &str, names: &[&str]) -> Check {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let held = pending_names(kit, owner, id).await?;
        if held.iter().map(String::as_str).eq(names.iter().copied()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the store still holds timers {held:?}, expected {names:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A timer's call carries `strata-timer: NAME`.
fn expect_timer_metadata(metadata: Option<pb::Metadata>, name: &str) -> Check {
    let entries = metadata.map(|m| m.entries).unwrap_or_default();
    let named = entries.iter().any(|entry| {
        entry.key == "strata-timer" && entry.value == Some(pb::metadata_entry::Value::StringValue(name.to_string()))
    });
    if named {
        Ok(())
    } else {
        Err(format!(
            "the timer's call carries no `strata-timer: {name}`: {entries:?}"
        ))
    }
}

// --- the two entity protocols, as these cases see them

/// The next entity stream of an [`Entity`]'s protocol, as the interceptor gives it.
type StreamTaken<'a, E> = BoxFuture<'a, Result<Intercepted<<E as Entity>::In, <E as Entity>::Out>, String>>;

/// An entity protocol: the messages of one entity's stream.
trait Entity {
    const SERVICE: &'static str;
    type In: std::fmt::Debug + PartialEq + Send;
    type Out: std::fmt::Debug + PartialEq + Send;

    fn stream(kit: &Kit) -> StreamTaken<'_, Self>;
    fn init(id: &str) -> Self::In;
    /// What the proxy sends a restarted entity whose state came from `updates`.
    fn rehydrate(id: &str, updates: &[&str]) -> Vec<Self::In>;
    fn command(n: i64, id: &str, method: &str, steps: Vec<crate::model::timers::Step>) -> Self::In;
    /// A command with its metadata taken out.
    fn without_metadata(message: Self::In) -> (Self::In, Option<pb::Metadata>);
    /// A reply answering `answer`, having set the state with `update`.
    fn reply(n: i64, answer: Any, update: Option<&str>, effects: Vec<pb::SideEffect>) -> Self::Out;
    fn forward(n: i64, method: &str, payload: Any, update: Option<&str>) -> Self::Out;
    fn failure(n: i64, description: &str) -> Self::Out;
    /// The state after `updates`, as Process answers it.
    fn state(updates: &[&str]) -> String;
}

struct ValueEntity;

impl Entity for ValueEntity {
    const SERVICE: &'static str = VALUE_ENTITY;
    type In = ValueEntityStreamIn;
    type Out = ValueEntityStreamOut;

    fn stream(kit: &Kit) -> StreamTaken<'_, Self> {
        Box::pin(kit.interceptor.value_entity())
    }
    fn init(id: &str) -> Self::In {
        messages::ve::init(VALUE_ENTITY, id)
    }
    fn rehydrate(id: &str, updates: &[&str]) -> Vec<Self::In> {
        let state = updates.last().map(|value| persisted(value));
        vec![messages::ve::init_with(VALUE_ENTITY, id, state)]
    }
    fn command(n: i64, id: &str, method: &str, steps: Vec<crate::model::timers::Step>) -> Self::In {
        messages::ve::command(n, id, method, any(&request(id, steps)))
    }
    fn without_metadata(mut message: Self::In) -> (Self::In, Option<pb::Metadata>) {
        let metadata = match &mut message.message {
            Some(value_entity_stream_in::Message::Command(command)) => command.metadata.take(),
            _ => None,
        };
        (message, metadata)
    }
    fn reply(n: i64, answer: Any, update: Option<&str>, effects: Vec<pb::SideEffect>) -> Self::Out {
        let state = update.map_or_else(Effects::none, |value| Effects::update(persisted(value)));
        messages::ve::reply(n, answer, state.and(Effects::side_effects(effects)))
    }
    fn forward(n: i64, method: &str, payload: Any, update: Option<&str>) -> Self::Out {
        let state = update.map_or_else(Effects::none, |value| Effects::update(persisted(value)));
        messages::ve::forward(n, TIMERS, method, payload, state)
    }
    fn failure(n: i64, description: &str) -> Self::Out {
        messages::ve::action_failure(n, description)
    }
    fn state(updates: &[&str]) -> String {
        updates.last().copied().unwrap_or_default().to_string()
    }
}

struct EventSourced;

impl Entity for EventSourced {
    const SERVICE: &'static str = EVENT_SOURCED;
    type In = EventSourcedStreamIn;
    type Out = EventSourcedStreamOut;

    fn stream(kit: &Kit) -> StreamTaken<'_, Self> {
        Box::pin(kit.interceptor.event_sourced())
    }
    fn init(id: &str) -> Self::In {
        messages::es::init(EVENT_SOURCED, id)
    }
    fn rehydrate(id: &str, updates: &[&str]) -> Vec<Self::In> {
        let events = (1..)
            .zip(updates)
            .map(|(n, value)| messages::es::event(n, persisted(value)));
        std::iter::once(Self::init(id)).chain(events).collect()
    }
    fn command(n: i64, id: &str, method: &str, steps: Vec<crate::model::timers::Step>) -> Self::In {
        messages::es::command(n, id, method, any(&request(id, steps)))
    }
    fn without_metadata(mut message: Self::In) -> (Self::In, Option<pb::Metadata>) {
        let metadata = match &mut message.message {
            Some(event_sourced_stream_in::Message::Command(command)) => command.metadata.take(),
            _ => None,
        };
        (message, metadata)
    }
    fn reply(n: i64, answer: Any, update: Option<&str>, effects: Vec<pb::SideEffect>) -> Self::Out {
        let events = Effects::events(update.map(persisted));
        messages::es::reply(n, answer, events.and(Effects::side_effects(effects)))
    }
    fn forward(n: i64, method: &str, payload: Any, update: Option<&str>) -> Self::Out {
        messages::es::forward(n, TIMERS, method, payload, Effects::events(update.map(persisted)))
    }
    fn failure(n: i64, description: &str) -> Self::Out {
        messages::es::action_failure(n, description, false)
    }
    fn state(updates: &[&str]) -> String {
        updates.concat()
    }
}

/// One entity's stream as a case walks it, numbering its commands.
struct Walk<E: Entity> {
    id: String,
    stream: Intercepted<E::In, E::Out>,
    n: i64,
}

impl<E: Entity> Walk<E> {
    /// The entity's first command, `steps` to Process, answered `expected`.
    async fn start(kit: &Kit, steps: Vec<crate::model::timers::Step>, expected: &str) -> Result<Self, String> {
        let id = kit.next_id();
        call_ok(kit, E::SERVICE, "Process", &id, steps.clone(), expected).await?;
        let mut stream = E::stream(kit).await?;
        stream.expect_incoming(E::init(&id)).await?;
        stream.expect_incoming(E::command(1, &id, "Process", steps)).await?;
        Ok(Self { id, stream, n: 1 })
    }

    /// The entity's stream after a restart, its state rehydrated from `updates`.
    async fn resume(kit: &Kit, id: &str, updates: &[&str]) -> Result<Self, String> {
        let mut stream = E::stream(kit).await?;
        for message in E::rehydrate(id, updates) {
            stream.expect_incoming(message).await?;
        }
        Ok(Self {
            id: id.to_string(),
            stream,
            n: 0,
        })
    }

    /// The next command the proxy passes on: `method` with `steps`.
    async fn command(&mut self, method: &str, steps: Vec<crate::model::timers::Step>) -> Check {
        self.n += 1;
        self.stream
            .expect_incoming(E::command(self.n, &self.id, method, steps))
            .await
    }

    /// The function's answer to the latest command.
    async fn answer(&mut self, answer: E::Out) -> Check {
        self.stream.expect_outgoing(answer).await
    }

    /// The call of timer `name`: Process with `steps`, carrying its name.
    async fn timer_call(&mut self, name: &str, steps: Vec<crate::model::timers::Step>) -> Check {
        self.n += 1;
        let (command, metadata) = E::without_metadata(self.stream.incoming.message().await?);
        expect_eq(
            "the timer's call",
            E::command(self.n, &self.id, "Process", steps),
            command,
        )?;
        expect_timer_metadata(metadata, name)
    }
}

// --- entities

/// Schedule stored with the command's state and seen in the store; a second
/// Schedule of that name (due in the past: at once) replaces it and fires; a
/// failed command stores none; Cancel removes one, and cancelling a name with
/// none is no error.
async fn side_effects<E: Entity>(kit: &Kit) -> Check {
    // --- schedule "expire" for later, with a state change
    let id = kit.next_id();
    let later = |id: &str| schedule("expire", after(LATER), E::SERVICE, id, vec![update("late")]);
    let steps = |id: &str| vec![update("a"), step(Step::Schedule(later(id)))];
    call_ok(kit, E::SERVICE, "Process", &id, steps(&id), &E::state(&["a"])).await?;
    let mut c = E::stream(kit).await?;
    c.expect_incoming(E::init(&id)).await?;
    c.expect_incoming(E::command(1, &id, "Process", steps(&id))).await?;
    c.expect_outgoing(E::reply(
        1,
        response(&E::state(&["a"])),
        Some("a"),
        vec![schedule_effect(&later(&id))],
    ))
    .await?;
    let mut walk = Walk::<E> { id, stream: c, n: 1 };
    let id = walk.id.clone();
    let stored = pending(kit, E::SERVICE, &id).await?;
    let [timer] = stored.as_slice() else {
        return Err(format!(
            "expected timer \"expire\" alone in the store, found {stored:?}"
        ));
    };
    expect_eq("the stored timer's name", "expire", timer.key.name.as_str())?;
    expect_eq(
        "the stored timer's call",
        (E::SERVICE, "Process"),
        (timer.call.service_name.as_str(), timer.call.method.as_str()),
    )?;

    // --- schedule "expire" again, due a minute ago: it replaces the first and fires
    let now = schedule(
        "expire",
        before_now(Duration::from_secs(60)),
        E::SERVICE,
        &id,
        vec![update("fired")],
    );
    let steps = vec![step(Step::Schedule(now.clone()))];
    call_ok(kit, E::SERVICE, "Process", &id, steps.clone(), &E::state(&["a"])).await?;
    walk.command("Process", steps).await?;
    walk.answer(E::reply(
        2,
        response(&E::state(&["a"])),
        None,
        vec![schedule_effect(&now)],
    ))
    .await?;
    walk.timer_call("expire", vec![update("fired")]).await?;
    let fired = E::state(&["a", "fired"]);
    walk.answer(E::reply(3, response(&fired), Some("fired"), vec![]))
        .await?;
    await_pending(kit, E::SERVICE, &id, &[]).await?;

    // --- a failed command stores no timer
    let steps = vec![
        step(Step::Schedule(schedule("lost", after(LATER), E::SERVICE, &id, vec![]))),
        fail("expected failure"),
    ];
    grpc_failure(
        call(kit, E::SERVICE, "Process", &id, steps.clone()).await,
        "expected failure",
    )?;
    walk.command("Process", steps).await?;
    walk.answer(E::failure(4, "expected failure")).await?;
    expect_pending(kit, E::SERVICE, &id, &[]).await?;

    // --- cancel removes one; cancelling a name with no timer is no error
    let kept = schedule("kept", after(LATER), E::SERVICE, &id, vec![]);
    let gone = schedule("gone", after(LATER), E::SERVICE, &id, vec![]);
    let steps = vec![step(Step::Schedule(kept.clone())), step(Step::Schedule(gone.clone()))];
    call_ok(kit, E::SERVICE, "Process", &id, steps.clone(), &fired).await?;
    walk.command("Process", steps).await?;
    walk.answer(E::reply(
        5,
        response(&fired),
        None,
        vec![schedule_effect(&kept), schedule_effect(&gone)],
    ))
    .await?;
    expect_pending(kit, E::SERVICE, &id, &["gone", "kept"]).await?;
    let steps = vec![step(Step::Cancel(cancel("gone"))), step(Step::Cancel(cancel("never")))];
    call_ok(kit, E::SERVICE, "Process", &id, steps.clone(), &fired).await?;
    walk.command("Process", steps).await?;
    walk.answer(E::reply(
        6,
        response(&fired),
        None,
        vec![cancel_effect(&cancel("gone")), cancel_effect(&cancel("never"))],
    ))
    .await?;
    expect_pending(kit, E::SERVICE, &id, &["kept"]).await
}

/// A forward to Timers answers the client google.protobuf.Empty, stores the
/// timer with the command's state, and the timer fires; a forward Cancel
/// removes one.
async fn forwards<E: Entity>(kit: &Kit) -> Check {
    // --- a forward Schedule, due at once, with a state change
    let id = kit.next_id();
    let now = |id: &str| schedule("soon", after(Duration::ZERO), E::SERVICE, id, vec![update("fired")]);
    let steps = |id: &str| vec![update("b"), step(Step::ForwardSchedule(now(id)))];
    call_ok(kit, E::SERVICE, "Forward", &id, steps(&id), "").await?;
    let mut c = E::stream(kit).await?;
    c.expect_incoming(E::init(&id)).await?;
    c.expect_incoming(E::command(1, &id, "Forward", steps(&id))).await?;
    c.expect_outgoing(E::forward(1, "Schedule", any(&now(&id)), Some("b")))
        .await?;
    let mut walk = Walk::<E> { id, stream: c, n: 1 };
    let id = walk.id.clone();
    walk.timer_call("soon", vec![update("fired")]).await?;
    let fired = E::state(&["b", "fired"]);
    walk.answer(E::reply(2, response(&fired), Some("fired"), vec![]))
        .await?;
    await_pending(kit, E::SERVICE, &id, &[]).await?;

    // --- a forward Schedule for later, then a forward Cancel
    let later = schedule("later", after(LATER), E::SERVICE, &id, vec![]);
    let steps = vec![step(Step::ForwardSchedule(later.clone()))];
    call_ok(kit, E::SERVICE, "Forward", &id, steps.clone(), "").await?;
    walk.command("Forward", steps).await?;
    walk.answer(E::forward(3, "Schedule", any(&later), None)).await?;
    expect_pending(kit, E::SERVICE, &id, &["later"]).await?;
    let steps = vec![step(Step::ForwardCancel(cancel("later")))];
    call_ok(kit, E::SERVICE, "Forward", &id, steps.clone(), "").await?;
    walk.command("Forward", steps).await?;
    walk.answer(E::forward(4, "Cancel", any(&cancel("later")), None))
        .await?;
    expect_pending(kit, E::SERVICE, &id, &[]).await?;
    call_ok(kit, E::SERVICE, "Process", &id, vec![], &fired).await?;
    walk.command("Process", vec![]).await?;
    walk.answer(E::reply(5, response(&fired), None, vec![])).await
}

/// What each bad timer is refused with.
fn bad_timers(service: &str, id: &str) -> Vec<(Step, &'static str)> {
    let target = |service: &str, method: &str| ScheduleTimer {
        call: Some(TimerCall {
            service_name: service.into(),
            command_name: method.into(),
            payload: Some(any(&request(id, vec![]))),
        }),
        ..schedule("bad", after(LATER), "", id, vec![])
    };
    let wrong_payload = ScheduleTimer {
        call: Some(TimerCall {
            service_name: service.into(),
            command_name: "Process".into(),
            payload: Some(persisted("not a Request")),
        }),
        ..schedule("bad", after(LATER), service, id, vec![])
    };
    let negative = ScheduleTimer {
        when: Some(When::After(prost_types::Duration { seconds: -5, nanos: 0 })),
        ..schedule("bad", after(LATER), service, id, vec![])
    };
    let beyond = schedule("bad", after(Duration::from_secs(366 * 24 * 3600)), service, id, vec![]);
    let long_name = ScheduleTimer {
        name: "n".repeat(201),
        ..schedule("bad", after(LATER), service, id, vec![])
    };
    vec![
        (Step::Schedule(target("no.such.Service", "Process")), "no.such.Service"),
        (Step::Schedule(target(service, "NoSuchMethod")), "NoSuchMethod"),
        (Step::Schedule(wrong_payload), "strata.tck.model.timers.Persisted"),
        (Step::Schedule(negative), "negative"),
        (Step::Schedule(beyond), "more than the limit"),
        (Step::Schedule(long_name), "201 bytes"),
        (Step::Cancel(cancel(&"n".repeat(201))), "201 bytes"),
        (
            Step::ForwardSchedule(schedule("bad", after(LATER), service, id, vec![])),
            "as a forward",
        ),
    ]
}

/// Each bad timer fails its command at once, naming what is wrong; neither the
/// timer nor the command's state change is stored, and the proxy restarts the
/// entity (its stream ends; the next command finds the state as it was stored).
async fn refusals<E: Entity>(kit: &Kit) -> Check {
    let mut walk = Walk::<E>::start(kit, vec![update("kept")], &E::state(&["kept"])).await?;
    walk.answer(E::reply(1, response(&E::state(&["kept"])), Some("kept"), vec![]))
        .await?;
    let id = walk.id.clone();
    let lost = E::state(&["kept", "lost"]);
    let mut restarted = false;
    for (bad, why) in bad_timers(E::SERVICE, &id) {
        let steps = vec![update("lost"), step(bad.clone())];
        call_refused(kit, E::SERVICE, "Process", &id, steps.clone(), why).await?;
        if restarted {
            walk = Walk::resume(kit, &id, &["kept"]).await?;
        }
        walk.command("Process", steps).await?;
        let n = walk.n;
        walk.answer(match bad {
            Step::Schedule(schedule) => E::reply(n, response(&lost), Some("lost"), vec![schedule_effect(&schedule)]),
            Step::Cancel(cancel) => E::reply(n, response(&lost), Some("lost"), vec![cancel_effect(&cancel)]),
            Step::ForwardSchedule(schedule) => E::forward(n, "Schedule", any(&schedule), Some("lost")),
            other => return Err(format!("no bad timer is a {other:?}")),
        })
        .await?;
        walk.stream.expect_closed().await?;
        restarted = true;
        expect_pending(kit, E::SERVICE, &id, &[]).await?;
    }
    call_ok(kit, E::SERVICE, "Process", &id, vec![], &E::state(&["kept"])).await?;
    let mut walk = Walk::<E>::resume(kit, &id, &["kept"]).await?;
    walk.command("Process", vec![]).await?;
    walk.answer(E::reply(1, response(&E::state(&["kept"])), None, vec![]))
        .await
}

// --- an action

fn action_command(method: &str, steps: Vec<crate::model::timers::Step>) -> ActionCommand {
    messages::action::command(ACTION, method, Some(any(&request("", steps))))
}

/// The next unary action call: `method` with `steps`, answered `answer`.
async fn action_call(kit: &Kit, method: &str, steps: Vec<crate::model::timers::Step>, answer: ActionResponse) -> Check {
    let mut call = kit.interceptor.action(Shape::Unary).await?;
    call.expect_incoming(action_command(method, steps)).await?;
    call.expect_outgoing(answer).await
}

/// An action's timers: stored per action service (no entity), by side effect
/// and by forward, replaced, fired and cancelled.
async fn action_timers(kit: &Kit) -> Check {
    // --- a side effect Schedule for later
    let later = schedule("digest", after(LATER), ACTION, "", vec![]);
    let steps = vec![step(Step::Schedule(later.clone()))];
    call_ok(kit, ACTION, "Process", "", steps.clone(), "").await?;
    action_call(
        kit,
        "Process",
        steps,
        messages::action::reply(response(""), vec![schedule_effect(&later)]),
    )
    .await?;
    expect_pending(kit, ACTION, "", &["digest"]).await?;

    // --- a forward Schedule of the same name, due at once: replaced, then fired
    let now = schedule("digest", after(Duration::ZERO), ACTION, "", vec![update("fired")]);
    let steps = vec![step(Step::ForwardSchedule(now.clone()))];
    call_ok(kit, ACTION, "Forward", "", steps.clone(), "").await?;
    action_call(
        kit,
        "Forward",
        steps,
        messages::action::forward(TIMERS, "Schedule", any(&now), vec![]),
    )
    .await?;
    let mut fired = kit.interceptor.action(Shape::Unary).await?;
    let mut command = fired.incoming.message().await?;
    let metadata = command.metadata.take();
    expect_eq(
        "the timer's call",
        action_command("Process", vec![update("fired")]),
        command,
    )?;
    expect_timer_metadata(metadata, "digest")?;
    fired
        .expect_outgoing(messages::action::reply(response(""), vec![]))
        .await?;
    await_pending(kit, ACTION, "", &[]).await?;

    // --- a failed call stores no timer; Cancel removes one
    let lost = schedule("lost", after(LATER), ACTION, "", vec![]);
    let steps = vec![step(Step::Schedule(lost.clone())), fail("expected failure")];
    grpc_failure(
        call(kit, ACTION, "Process", "", steps.clone()).await,
        "expected failure",
    )?;
    action_call(
        kit,
        "Process",
        steps,
        messages::action::failure("expected failure", vec![]),
    )
    .await?;
    expect_pending(kit, ACTION, "", &[]).await?;
    let steps = vec![step(Step::Schedule(later.clone()))];
    call_ok(kit, ACTION, "Process", "", steps.clone(), "").await?;
    action_call(
        kit,
        "Process",
        steps,
        messages::action::reply(response(""), vec![schedule_effect(&later)]),
    )
    .await?;
    expect_pending(kit, ACTION, "", &["digest"]).await?;
    let steps = vec![step(Step::Cancel(cancel("digest")))];
    call_ok(kit, ACTION, "Process", "", steps.clone(), "").await?;
    action_call(
        kit,
        "Process",
        steps,
        messages::action::reply(response(""), vec![cancel_effect(&cancel("digest"))]),
    )
    .await?;
    expect_pending(kit, ACTION, "", &[]).await
}

/// Each bad timer fails the action's call at once, naming what is wrong, and
/// stores nothing.
async fn action_refusals(kit: &Kit) -> Check {
    for (bad, why) in bad_timers(ACTION, "") {
        let steps = vec![step(bad.clone())];
        call_refused(kit, ACTION, "Process", "", steps.clone(), why).await?;
        let answer = match bad {
            Step::Schedule(schedule) => messages::action::reply(response(""), vec![schedule_effect(&schedule)]),
            Step::Cancel(cancel) => messages::action::reply(response(""), vec![cancel_effect(&cancel)]),
            Step::ForwardSchedule(schedule) => messages::action::forward(TIMERS, "Schedule", any(&schedule), vec![]),
            other => return Err(format!("no bad timer is a {other:?}")),
        };
        action_call(kit, "Process", steps, answer).await?;
        expect_pending(kit, ACTION, "", &[]).await?;
    }
    Ok(())
}
