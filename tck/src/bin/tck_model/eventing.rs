//! The event log eventing model (`eventlogeventing.proto`): two event-sourced
//! entities that emit what they are told (a protobuf event, a JSON event) and
//! the subscriber action that answers, or forwards, per event.

use futures::StreamExt;
use strata_sdk::{
    eventing::{pack_json, unpack_json},
    Action, ActionService, Any, Command, EntityError, EventContext, EventSource, EventSourcedEntity,
    EventSourcedService, Failure, Reply, ReplyStream, Service, ServiceCall,
};
use strata_tck::model::ev;

const SUBSCRIBER: &str = "cloudstate.tck.model.eventlogeventing.EventLogSubscriberModel";
const ENTITY_ONE: &str = "cloudstate.tck.model.eventlogeventing.EventSourcedEntityOne";
const ENTITY_TWO: &str = "cloudstate.tck.model.eventlogeventing.EventSourcedEntityTwo";

/// Adds the eventing model's services to the model function.
pub fn serve(service: Service) -> Service {
    service
        .event_sourced(EventSourcedService::new(ENTITY_ONE, "eventlogeventing-one", |_| {
            Emitter
        }))
        .event_sourced(EventSourcedService::new(ENTITY_TWO, "eventlogeventing-two", |_| {
            Emitter
        }))
        .action(ActionService::new(SUBSCRIBER, Subscriber))
}

/// Both entities: emit the event the command carries; keep no state.
struct Emitter;

impl EventSourcedEntity for Emitter {
    type Snapshot = ();

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        match command.name() {
            "EmitEvent" => match command.decode::<ev::EmitEventRequest>()?.event {
                Some(ev::emit_event_request::Event::EventOne(one)) => ctx.emit(one),
                Some(ev::emit_event_request::Event::EventTwo(two)) => ctx.emit(two),
                None => return Err(Failure::new("EmitEvent needs an event")),
            },
            "EmitJsonEvent" => {
                let event: ev::JsonEvent = command.decode()?;
                let json = serde_json::json!({ "message": event.message }).to_string();
                ctx.emit_any(pack_json("JsonEvent", &json));
            }
            other => return Err(Failure::new(format!("unknown command {other}"))),
        }
        Ok(Reply::empty())
    }

    fn apply_event(&mut self, _: &Any) -> Result<(), EntityError> {
        Ok(())
    }
}

struct Subscriber;

/// The id of the entity whose event `command` delivers.
fn entity_of(command: &Command) -> Result<String, Failure> {
    EventSource::of(command)
        .map(|source| source.entity_id)
        .ok_or_else(|| Failure::new(format!("{} takes events, and this is no event", command.name())))
}

/// What one step answers for the event of entity `id`.
fn step_reply(id: &str, step: Option<ev::ProcessStep>) -> Result<Reply, Failure> {
    match step.and_then(|s| s.step) {
        Some(ev::process_step::Step::Reply(reply)) => Ok(Reply::message(&ev::Response {
            id: id.into(),
            message: reply.message,
        })),
        Some(ev::process_step::Step::Forward(forward)) => Ok(Reply::forward(ServiceCall::new(
            SUBSCRIBER,
            "Effect",
            &ev::EffectRequest {
                id: id.into(),
                message: forward.message,
            },
        ))),
        None => Err(Failure::new("a step must reply or forward")),
    }
}

impl Action for Subscriber {
    async fn handle_unary(&self, command: Command) -> Result<Reply, Failure> {
        match command.name() {
            "ProcessEventOne" => {
                let event: ev::EventOne = command.decode()?;
                step_reply(&entity_of(&command)?, event.step)
            }
            "ProcessAnyEvent" => {
                let json = unpack_json(command.payload()).map_err(|e| Failure::new(e.to_string()))?;
                let value: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| Failure::new(format!("not JSON: {e}")))?;
                let message = value["message"].as_str().unwrap_or_default().to_string();
                Ok(Reply::message(&ev::Response {
                    id: entity_of(&command)?,
                    message,
                }))
            }
            "Effect" => {
                let request: ev::EffectRequest = command.decode()?;
                Ok(Reply::message(&ev::Response {
                    id: request.id,
                    message: request.message,
                }))
            }
            other => Err(Failure::new(format!("unknown method {other}"))),
        }
    }

    fn handle_streamed_out(&self, command: Command) -> ReplyStream {
        let replies = match (command.decode::<ev::EventTwo>(), entity_of(&command)) {
            (Ok(event), Ok(id)) => event.step.into_iter().map(|step| step_reply(&id, Some(step))).collect(),
            (Err(failure), _) | (_, Err(failure)) => vec![Err(failure)],
        };
        futures::stream::iter(replies).boxed()
    }
}
