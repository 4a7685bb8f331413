//! The timers model (`strata/tck/model/timers.proto`): a value entity, an
//! event-sourced entity and an action whose steps ask the proxy's built-in
//! `strata.timers.Timers` for timers, as a function in any language does: a side
//! effect or a forward to that service, with the published message as payload.
//! It uses no strata-sdk timer helper, so the kit checks the wire shape itself.

use strata_sdk::{
    unpack, Action, ActionService, Any, Command, EntityError, EventContext, EventSourcedEntity, EventSourcedService,
    Failure, Reply, Service, ServiceCall, SideEffect, ValueContext, ValueEntity, ValueEntityService,
};
use strata_tck::model::timers::{step::Step, Persisted, Request, Response};

const VALUE_ENTITY: &str = "strata.tck.model.timers.TimersValueEntity";
const EVENT_SOURCED: &str = "strata.tck.model.timers.TimersEventSourced";
const ACTION: &str = "strata.tck.model.timers.TimersAction";
const TIMERS: &str = "strata.timers.Timers";

/// Adds the timers model's services to the model function.
pub fn serve(service: Service) -> Service {
    service
        .value_entity(ValueEntityService::new(VALUE_ENTITY, "timers-value-entity", |_| {
            ValueModel
        }))
        .event_sourced(EventSourcedService::new(EVENT_SOURCED, "timers-event-sourced", |_| {
            EventSourcedModel::default()
        }))
        .action(ActionService::new(ACTION, ActionModel))
}

/// A call to `strata.timers.Timers/method` carrying the published `message`.
fn timers_call<M: prost::Message + prost::Name>(method: &str, message: &M) -> ServiceCall {
    ServiceCall::new(TIMERS, method, message)
}

/// What a command's steps come to, apart from state changes.
#[derive(Default)]
struct Outcome {
    effects: Vec<SideEffect>,
    forward: Option<ServiceCall>,
}

impl Outcome {
    /// Takes a timer step; `Some(step)` back if it is not one.
    fn take(&mut self, step: Step) -> Option<Step> {
        match step {
            Step::Schedule(schedule) => self
                .effects
                .push(SideEffect::synchronous(timers_call("Schedule", &schedule))),
            Step::Cancel(cancel) => self
                .effects
                .push(SideEffect::synchronous(timers_call("Cancel", &cancel))),
            Step::ForwardSchedule(schedule) => self.forward = Some(timers_call("Schedule", &schedule)),
            Step::ForwardCancel(cancel) => self.forward = Some(timers_call("Cancel", &cancel)),
            other => return Some(other),
        }
        None
    }

    /// The answer: the forward if there is one, else the state (as a `Response`
    /// from Process, as google.protobuf.Empty from Forward).
    fn reply(self, command: &Command, state: String) -> Reply {
        let reply = match self.forward {
            Some(call) => Reply::forward(call),
            None if command.name() == "Forward" => Reply::empty(),
            None => Reply::message(&Response { state }),
        };
        reply.with_effects(self.effects)
    }
}

struct ValueModel;

impl ValueEntity for ValueModel {
    type State = Persisted;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, Persisted>) -> Result<Reply, Failure> {
        let request: Request = command.decode()?;
        let mut outcome = Outcome::default();
        for step in request.steps.into_iter().filter_map(|s| s.step) {
            match outcome.take(step) {
                Some(Step::Update(value)) => ctx.update_state(Persisted { value }),
                Some(Step::Fail(message)) => return Err(Failure::new(message)),
                _ => {}
            }
        }
        let state = ctx.state().map(|s| s.value.clone()).unwrap_or_default();
        Ok(outcome.reply(command, state))
    }
}

#[derive(Default)]
struct EventSourcedModel {
    state: String,
}

impl EventSourcedEntity for EventSourcedModel {
    type Snapshot = ();

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        let request: Request = command.decode()?;
        let mut state = self.state.clone();
        let mut outcome = Outcome::default();
        for step in request.steps.into_iter().filter_map(|s| s.step) {
            match outcome.take(step) {
                Some(Step::Update(value)) => {
                    state.push_str(&value);
                    ctx.emit(Persisted { value });
                }
                Some(Step::Fail(message)) => return Err(Failure::new(message)),
                _ => {}
            }
        }
        Ok(outcome.reply(command, state))
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        self.state.push_str(&unpack::<Persisted>(event)?.value);
        Ok(())
    }
}

struct ActionModel;

impl Action for ActionModel {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        let request: Request = command.decode()?;
        let mut outcome = Outcome::default();
        for step in request.steps.into_iter().filter_map(|s| s.step) {
            if let Some(Step::Fail(message)) = outcome.take(step) {
                return Err(Failure::new(message));
            }
        }
        Ok(outcome.reply(&command, String::new()))
    }
}
