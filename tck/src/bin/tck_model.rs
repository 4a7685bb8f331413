//! The conformance kit's model services written with strata-sdk: every service
//! of `tck/proto`, implemented as each proto file says. `scripts/tck` runs the kit
//! against it; it serves on HOST:PORT like any user function.

#[path = "tck_model/eventing.rs"]
mod eventing;
#[path = "tck_model/timers.rs"]
mod timers;

use std::time::Duration;

use futures::StreamExt;
use strata_sdk::{
    unpack, Action, ActionService, Any, Command, CommandStream, Crdt, CrdtContext, CrdtEntity, CrdtService,
    EntityError, EventContext, EventSourcedEntity, EventSourcedService, Failure, Flag, GCounter, GSet, LwwRegister,
    OrMap, OrSet, PnCounter, Reply, ReplyStream, Service, ServiceCall, SideEffect, ValueContext, ValueEntity,
    ValueEntityService, Vote,
};
use strata_tck::model::{action as act, crdt, es, ve, DESCRIPTORS};

const ES_MODEL: &str = "cloudstate.tck.model.EventSourcedTckModel";
const ES_TWO: &str = "cloudstate.tck.model.EventSourcedTwo";
const ES_CONFIGURED: &str = "cloudstate.tck.model.EventSourcedConfigured";
const VE_MODEL: &str = "cloudstate.tck.model.valueentity.ValueEntityTckModel";
const VE_TWO: &str = "cloudstate.tck.model.valueentity.ValueEntityTwo";
const VE_CONFIGURED: &str = "cloudstate.tck.model.valueentity.ValueEntityConfigured";
const CRDT_GCOUNTER: &str = "cloudstate.tck.model.crdt.GCounterTckModel";
const CRDT_PNCOUNTER: &str = "cloudstate.tck.model.crdt.PNCounterTckModel";
const CRDT_GSET: &str = "cloudstate.tck.model.crdt.GSetTckModel";
const CRDT_ORSET: &str = "cloudstate.tck.model.crdt.ORSetTckModel";
const CRDT_LWWREGISTER: &str = "cloudstate.tck.model.crdt.LWWRegisterTckModel";
const CRDT_FLAG: &str = "cloudstate.tck.model.crdt.FlagTckModel";
const CRDT_ORMAP: &str = "cloudstate.tck.model.crdt.ORMapTckModel";
const CRDT_VOTE: &str = "cloudstate.tck.model.crdt.VoteTckModel";
const CRDT_TWO: &str = "cloudstate.tck.model.crdt.CrdtTwo";
const CRDT_CONFIGURED: &str = "cloudstate.tck.model.crdt.CrdtConfigured";
const ACTION_MODEL: &str = "cloudstate.tck.model.action.ActionTckModel";
const ACTION_TWO: &str = "cloudstate.tck.model.action.ActionTwo";

/// The event-sourced model: the state is the concatenation of its events.
#[derive(Default)]
struct EventSourcedModel {
    state: String,
}

impl EventSourcedEntity for EventSourcedModel {
    type Snapshot = es::Persisted;

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        let request: es::Request = command.decode()?;
        let mut state = self.state.clone();
        let mut forward = None;
        let mut effects = Vec::new();
        for action in request.actions.into_iter().filter_map(|a| a.action) {
            match action {
                es::request_action::Action::Emit(emit) => {
                    state.push_str(&emit.value);
                    ctx.emit(es::Persisted { value: emit.value });
                }
                es::request_action::Action::Forward(to) => {
                    forward = Some(ServiceCall::new(
                        ES_TWO,
                        "Call",
                        &es::Request {
                            id: to.id,
                            actions: vec![],
                        },
                    ))
                }
                es::request_action::Action::Effect(effect) => effects.push(side_effect(
                    ServiceCall::new(
                        ES_TWO,
                        "Call",
                        &es::Request {
                            id: effect.id,
                            actions: vec![],
                        },
                    ),
                    effect.synchronous,
                )),
                es::request_action::Action::Fail(fail) => return Err(Failure::new(fail.message)),
            }
        }
        let reply = match forward {
            Some(call) => Reply::forward(call),
            None => Reply::message(&es::Response { message: state }),
        };
        Ok(reply.with_effects(effects))
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        self.state.push_str(&unpack::<es::Persisted>(event)?.value);
        Ok(())
    }

    fn snapshot(&self) -> Option<es::Persisted> {
        Some(es::Persisted {
            value: self.state.clone(),
        })
    }

    fn restore(&mut self, snapshot: es::Persisted) -> Result<(), EntityError> {
        self.state = snapshot.value;
        Ok(())
    }
}

/// Answers every command with an empty `Response` (the "two" and "configured"
/// services of each entity model, and the CRDT model's CrdtTwo).
struct Quiet;

impl EventSourcedEntity for Quiet {
    type Snapshot = ();

    fn handle_command(&self, _: &Command, _: &mut EventContext) -> Result<Reply, Failure> {
        Ok(Reply::message(&es::Response::default()))
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        Err(EntityError::unknown_event(event))
    }
}

impl ValueEntity for Quiet {
    type State = ve::Persisted;

    fn handle_command(&self, _: &Command, _: &mut ValueContext<'_, ve::Persisted>) -> Result<Reply, Failure> {
        Ok(Reply::message(&ve::Response::default()))
    }
}

/// The value entity model: the state is one string.
struct ValueModel;

impl ValueEntity for ValueModel {
    type State = ve::Persisted;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, ve::Persisted>) -> Result<Reply, Failure> {
        let request: ve::Request = command.decode()?;
        let mut forward = None;
        let mut effects = Vec::new();
        for action in request.actions.into_iter().filter_map(|a| a.action) {
            match action {
                ve::request_action::Action::Update(update) => ctx.update_state(ve::Persisted { value: update.value }),
                ve::request_action::Action::Delete(_) => ctx.delete_state(),
                ve::request_action::Action::Forward(to) => {
                    forward = Some(ServiceCall::new(
                        VE_TWO,
                        "Call",
                        &ve::Request {
                            id: to.id,
                            actions: vec![],
                        },
                    ))
                }
                ve::request_action::Action::Effect(effect) => effects.push(side_effect(
                    ServiceCall::new(
                        VE_TWO,
                        "Call",
                        &ve::Request {
                            id: effect.id,
                            actions: vec![],
                        },
                    ),
                    effect.synchronous,
                )),
                ve::request_action::Action::Fail(fail) => return Err(Failure::new(fail.message)),
            }
        }
        let reply = match forward {
            Some(call) => Reply::forward(call),
            None => Reply::message(&ve::Response {
                message: ctx.state().map(|s| s.value.clone()).unwrap_or_default(),
            }),
        };
        Ok(reply.with_effects(effects))
    }
}

fn side_effect(call: ServiceCall, synchronous: bool) -> SideEffect {
    if synchronous {
        SideEffect::synchronous(call)
    } else {
        SideEffect::asynchronous(call)
    }
}

/// The action model: steps grouped into responses.
struct ActionModel;

/// One group of steps as one answer: the last reply, forward or failure wins;
/// side effects add up.
fn answer(steps: impl IntoIterator<Item = act::ProcessStep>) -> Result<Reply, Failure> {
    enum Last {
        Nothing,
        Reply(String),
        Forward(String),
        Fail(String),
    }
    let mut last = Last::Nothing;
    let mut effects = Vec::new();
    for step in steps.into_iter().filter_map(|s| s.step) {
        match step {
            act::process_step::Step::Reply(reply) => last = Last::Reply(reply.message),
            act::process_step::Step::Forward(forward) => last = Last::Forward(forward.id),
            act::process_step::Step::Fail(fail) => last = Last::Fail(fail.message),
            act::process_step::Step::Effect(effect) => effects.push(side_effect(
                ServiceCall::new(ACTION_TWO, "Call", &act::OtherRequest { id: effect.id }),
                effect.synchronous,
            )),
        }
    }
    match last {
        Last::Nothing => Ok(Reply::none().with_effects(effects)),
        Last::Reply(message) => Ok(Reply::message(&act::Response { message }).with_effects(effects)),
        Last::Forward(id) => {
            Ok(Reply::forward(ServiceCall::new(ACTION_TWO, "Call", &act::OtherRequest { id })).with_effects(effects))
        }
        Last::Fail(message) => Err(effects
            .into_iter()
            .fold(Failure::new(message), |failure, effect| failure.with_effect(effect))),
    }
}

fn request(command: &Command) -> act::Request {
    command.decode().unwrap_or_default()
}

impl Action for ActionModel {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        if command.name() == "Call" {
            return Ok(Reply::message(&act::Response::default()));
        }
        answer(request(&command).groups.into_iter().flat_map(|g| g.steps))
    }

    async fn handle_streamed_in(&self, _call: Command, requests: CommandStream) -> Result<Reply, Failure> {
        let steps: Vec<act::ProcessStep> = requests
            .flat_map(|command| futures::stream::iter(request(&command).groups.into_iter().flat_map(|g| g.steps)))
            .collect()
            .await;
        answer(steps)
    }

    fn handle_streamed_out(&self, command: Command) -> ReplyStream {
        let answers: Vec<_> = request(&command).groups.into_iter().map(|g| answer(g.steps)).collect();
        futures::stream::iter(answers).boxed()
    }

    fn handle_streamed(&self, _call: Command, requests: CommandStream) -> ReplyStream {
        requests
            .flat_map(|command| futures::stream::iter(request(&command).groups.into_iter().map(|g| answer(g.steps))))
            .boxed()
    }
}

/// One CRDT type as the CRDT model uses it: the actions it takes and how its
/// state reads in a `Response`.
trait ModelCrdt: Crdt {
    const NAME: &'static str;

    /// Applies a change action; `Err` with the action's name if the type has no
    /// such change.
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str>;

    fn render(&self) -> String;
}

fn action_name(action: &crdt::request_action::Action) -> &'static str {
    use crdt::request_action::Action as A;
    match action {
        A::Increment(_) => "Increment",
        A::Decrement(_) => "Decrement",
        A::Add(_) => "Add",
        A::Remove(_) => "Remove",
        A::Set(_) => "Set",
        A::Enable(_) => "Enable",
        A::Vote(_) => "Vote",
        A::MapIncrement(_) => "MapIncrement",
        A::Delete(_) => "Delete",
        A::Fail(_) => "Fail",
        A::Forward(_) => "Forward",
        A::Effect(_) => "Effect",
    }
}

fn joined<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items.map(String::as_str).collect::<Vec<_>>().join(",")
}

impl ModelCrdt for GCounter {
    const NAME: &'static str = "GCounter";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Increment(by) => {
                self.increment(u64::try_from(by.value).map_err(|_| "Increment (negative)")?);
                Ok(())
            }
            other => Err(action_name(&other)),
        }
    }
    fn render(&self) -> String {
        self.value().to_string()
    }
}

impl ModelCrdt for PnCounter {
    const NAME: &'static str = "PNCounter";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Increment(by) => self.increment(by.value),
            crdt::request_action::Action::Decrement(by) => self.decrement(by.value),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        self.value().to_string()
    }
}

impl ModelCrdt for GSet<String> {
    const NAME: &'static str = "GSet";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Add(add) => self.add(add.element),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        joined(self.iter())
    }
}

impl ModelCrdt for OrSet<String> {
    const NAME: &'static str = "ORSet";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Add(add) => self.add(add.element),
            crdt::request_action::Action::Remove(remove) => self.remove(&remove.element),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        joined(self.iter())
    }
}

impl ModelCrdt for LwwRegister<String> {
    const NAME: &'static str = "LWWRegister";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Set(set) => self.set(set.value),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        self.get().cloned().unwrap_or_default()
    }
}

impl ModelCrdt for Flag {
    const NAME: &'static str = "Flag";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Enable(_) => self.enable(),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        self.is_enabled().to_string()
    }
}

impl ModelCrdt for OrMap<String, GCounter> {
    const NAME: &'static str = "ORMap";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::MapIncrement(inc) => {
                let by = u64::try_from(inc.value).map_err(|_| "MapIncrement (negative)")?;
                self.get_or_insert(inc.key).increment(by);
            }
            crdt::request_action::Action::Remove(remove) => {
                self.remove(&remove.element);
            }
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        self.iter()
            .map(|(key, counter)| format!("{key}={}", counter.value()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl ModelCrdt for Vote {
    const NAME: &'static str = "Vote";
    fn change(&mut self, action: crdt::request_action::Action) -> Result<(), &'static str> {
        match action {
            crdt::request_action::Action::Vote(vote) => self.vote(vote.value),
            other => return Err(action_name(&other)),
        };
        Ok(())
    }
    fn render(&self) -> String {
        format!("{}/{}/{}", self.self_vote(), self.votes_for(), self.total_voters())
    }
}

impl CrdtEntity for Quiet {
    type Crdt = GCounter;

    fn handle_command(&self, _: &Command, _: &mut CrdtContext<'_, GCounter>) -> Result<Reply, Failure> {
        Ok(Reply::message(&crdt::Response::default()))
    }
}

/// The CRDT model: Process applies its actions to the entity's CRDT of type `C`.
struct CrdtModel<C>(std::marker::PhantomData<C>);

impl<C: ModelCrdt> CrdtEntity for CrdtModel<C> {
    type Crdt = C;

    fn handle_command(&self, command: &Command, ctx: &mut CrdtContext<'_, C>) -> Result<Reply, Failure> {
        if command.name() == "ProcessStreamed" {
            return streamed(command, ctx);
        }
        let request: crdt::Request = command.decode()?;
        let two = |id: String| ServiceCall::new(CRDT_TWO, "Call", &crdt::Request { id, actions: vec![] });
        let mut forward = None;
        let mut effects = Vec::new();
        for action in request.actions.into_iter().filter_map(|a| a.action) {
            match action {
                crdt::request_action::Action::Delete(_) => ctx.delete(),
                crdt::request_action::Action::Fail(fail) => return Err(Failure::new(fail.message)),
                crdt::request_action::Action::Forward(to) => forward = Some(two(to.id)),
                crdt::request_action::Action::Effect(effect) => {
                    effects.push(side_effect(two(effect.id), effect.synchronous))
                }
                change => ctx
                    .state_mut()
                    .change(change)
                    .map_err(|name| Failure::new(format!("{name} is not a {} change", C::NAME)))?,
            }
        }
        let reply = match forward {
            Some(call) => Reply::forward(call),
            None => Reply::message(&crdt::Response {
                state: ctx.state().render(),
            }),
        };
        Ok(reply.with_effects(effects))
    }
}

/// ProcessStreamed: the initial change, the state now (unless `empty`), then
/// the state after every change until it reads `end_state`; the cancel change.
fn streamed<C: ModelCrdt>(command: &Command, ctx: &mut CrdtContext<'_, C>) -> Result<Reply, Failure> {
    let request: crdt::StreamedRequest = command.decode()?;
    let change = |state: &mut C, actions: Vec<crdt::RequestAction>| {
        for action in actions.into_iter().filter_map(|a| a.action) {
            state
                .change(action)
                .map_err(|name| Failure::new(format!("{name} is not a {} change", C::NAME)))?;
        }
        Ok::<_, Failure>(())
    };
    change(ctx.state_mut(), request.initial)?;
    let two = |effects: &[crdt::Effect]| -> Vec<SideEffect> {
        effects
            .iter()
            .map(|effect| {
                let request = crdt::Request {
                    id: effect.id.clone(),
                    actions: vec![],
                };
                side_effect(ServiceCall::new(CRDT_TWO, "Call", &request), effect.synchronous)
            })
            .collect()
    };
    let effects = two(&request.effects);
    let cancel_effects = two(&request.cancel_effects);
    let end_state = request.end_state;
    ctx.on_change(move |state: &C, stream| {
        let rendered = state.render();
        if !end_state.is_empty() && rendered == end_state {
            stream.end_stream();
        }
        Ok(Reply::message(&crdt::Response { state: rendered }).with_effects(effects.clone()))
    });
    let on_cancel = request.on_cancel;
    if !on_cancel.is_empty() || !cancel_effects.is_empty() {
        ctx.on_cancel(move |cancelled| {
            if let Err(failure) = change(cancelled.state_mut(), on_cancel) {
                tracing::warn!(%failure, "the cancel change does not apply");
            }
            for effect in cancel_effects {
                cancelled.effect(effect);
            }
        });
    }
    if request.empty {
        return Ok(Reply::none());
    }
    Ok(Reply::message(&crdt::Response {
        state: ctx.state().render(),
    }))
}

fn crdt_model<C: ModelCrdt>(service: &str) -> CrdtService<CrdtModel<C>> {
    CrdtService::new(service, |_| CrdtModel(std::marker::PhantomData))
}

#[tokio::main]
async fn main() -> Result<(), strata_sdk::ServeError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let configured = Duration::from_millis(100);
    timers::serve(eventing::serve(Service::new(DESCRIPTORS)))
        .service_name("strata-tck-model")
        .event_sourced(
            EventSourcedService::new(ES_MODEL, "event-sourced-tck-model", |_| EventSourcedModel::default())
                .snapshot_every(5),
        )
        .event_sourced(EventSourcedService::new(ES_TWO, "event-sourced-tck-model-two", |_| {
            Quiet
        }))
        .event_sourced(
            EventSourcedService::new(ES_CONFIGURED, "event-sourced-configured", |_| Quiet)
                .passivation_timeout(configured),
        )
        .value_entity(ValueEntityService::new(VE_MODEL, "value-entity-tck-model", |_| {
            ValueModel
        }))
        .value_entity(ValueEntityService::new(VE_TWO, "value-entity-tck-model-two", |_| Quiet))
        .value_entity(
            ValueEntityService::new(VE_CONFIGURED, "value-entity-configured", |_| Quiet)
                .passivation_timeout(configured),
        )
        .crdt(crdt_model::<GCounter>(CRDT_GCOUNTER))
        .crdt(crdt_model::<PnCounter>(CRDT_PNCOUNTER))
        .crdt(crdt_model::<GSet<String>>(CRDT_GSET))
        .crdt(crdt_model::<OrSet<String>>(CRDT_ORSET))
        .crdt(crdt_model::<LwwRegister<String>>(CRDT_LWWREGISTER))
        .crdt(crdt_model::<Flag>(CRDT_FLAG))
        .crdt(crdt_model::<OrMap<String, GCounter>>(CRDT_ORMAP))
        .crdt(crdt_model::<Vote>(CRDT_VOTE))
        .crdt(CrdtService::new(CRDT_TWO, |_| Quiet))
        .crdt(CrdtService::new(CRDT_CONFIGURED, |_| Quiet).passivation_timeout(configured))
        .action(ActionService::new(ACTION_MODEL, ActionModel))
        .action(ActionService::new(ACTION_TWO, ActionModel))
        .serve()
        .await
}
