//! Eventing from event logs: the proxy cases of CloudState's kit (an event
//! consumed and answered, an event whose answer is a forward, a JSON event
//! passed through), plus one for a server-streamed subscriber. Each emits
//! through the proxy to one of the model's event-sourced entities, checks the
//! entity's exchange, then the call the proxy made to the subscriber with the
//! event as its input and CloudEvents metadata naming the entity and sequence
//! number.

use futures::future::BoxFuture;
use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::{
    action::{ActionCommand, ActionResponse},
    metadata_entry, Metadata, MetadataEntry,
};

use super::expect_eq;
use crate::{
    kit::{Case, Kit},
    messages::{action as act, any, es, Effects},
    model::ev::{
        self, event_sourced_entity_one_client::EventSourcedEntityOneClient,
        event_sourced_entity_two_client::EventSourcedEntityTwoClient, process_step::Step,
    },
    probe::Check,
    protocol::Shape,
};

pub const SUBSCRIBER: &str = "cloudstate.tck.model.eventlogeventing.EventLogSubscriberModel";
pub const ENTITY_ONE: &str = "cloudstate.tck.model.eventlogeventing.EventSourcedEntityOne";
pub const ENTITY_TWO: &str = "cloudstate.tck.model.eventlogeventing.EventSourcedEntityTwo";

const SECTION: &str = "proxy: eventing";
const ALL: &[&str] = &[SUBSCRIBER, ENTITY_ONE, ENTITY_TWO];

macro_rules! case {
    ($name:expr, $run:expr) => {
        Case {
            section: SECTION,
            name: $name,
            requires: ALL,
            run: |kit| -> BoxFuture<'_, Check> { Box::pin($run(kit)) },
        }
    };
}

pub fn cases() -> Vec<Case> {
    vec![
        case!("consume an event", consume_an_event),
        case!("forward a consumed event", forward_a_consumed_event),
        case!("process json events", process_json_events),
        case!(
            "(Strata: a server-streamed subscriber answers once per step)",
            streamed_subscriber
        ),
    ]
}

fn reply(message: &str) -> ev::ProcessStep {
    ev::ProcessStep {
        step: Some(Step::Reply(ev::Reply {
            message: message.into(),
        })),
    }
}

fn forward(message: &str) -> ev::ProcessStep {
    ev::ProcessStep {
        step: Some(Step::Forward(ev::Forward {
            message: message.into(),
        })),
    }
}

fn response(id: &str, message: &str) -> Any {
    any(&ev::Response {
        id: id.into(),
        message: message.into(),
    })
}

fn effect(id: &str, message: &str) -> Any {
    any(&ev::EffectRequest {
        id: id.into(),
        message: message.into(),
    })
}

/// The CloudEvents metadata of the first event of entity `id` in `log`.
fn first_event_metadata(log: &str, id: &str, event_type: &str) -> Metadata {
    let entries = [
        ("ce-specversion", "1.0".to_string()),
        ("ce-id", format!("{log}/{id}/1")),
        ("ce-source", log.to_string()),
        ("ce-type", event_type.to_string()),
        ("ce-subject", id.to_string()),
        ("ce-sequence", "1".to_string()),
    ];
    Metadata {
        entries: entries
            .into_iter()
            .map(|(key, value)| MetadataEntry {
                key: key.into(),
                value: Some(metadata_entry::Value::StringValue(value)),
            })
            .collect(),
    }
}

fn delivered(method: &str, event: Any, metadata: Metadata) -> ActionCommand {
    ActionCommand {
        service_name: SUBSCRIBER.into(),
        name: method.into(),
        payload: Some(event),
        metadata: Some(metadata),
    }
}

/// Emits `event` on entity one `id` through the proxy and checks the entity's
/// exchange: the event is persisted with the empty answer.
async fn emit_one(kit: &Kit, id: &str, event: ev::emit_event_request::Event) -> Result<Any, String> {
    let request = ev::EmitEventRequest {
        id: id.into(),
        event: Some(event.clone()),
    };
    EventSourcedEntityOneClient::new(kit.grpc.clone())
        .emit_event(request.clone())
        .await
        .map_err(|status| format!("EmitEvent failed: {status:?}"))?;
    let emitted = match event {
        ev::emit_event_request::Event::EventOne(one) => any(&one),
        ev::emit_event_request::Event::EventTwo(two) => any(&two),
    };
    let mut entity = kit.interceptor.event_sourced().await?;
    entity.expect_incoming(es::init(ENTITY_ONE, id)).await?;
    entity
        .expect_incoming(es::command(1, id, "EmitEvent", any(&request)))
        .await?;
    entity
        .expect_outgoing(es::reply(1, any(&()), Effects::events([emitted.clone()])))
        .await?;
    Ok(emitted)
}

/// Checks the subscriber's one unary call for the first event of `id`.
async fn subscriber_call(kit: &Kit, command: ActionCommand, answer: ActionResponse) -> Check {
    let mut call = kit.interceptor.action(Shape::Unary).await?;
    call.expect_incoming(command).await?;
    call.expect_outgoing(answer).await
}

/// The forward to `Effect`, as its own call.
async fn effect_call(kit: &Kit, id: &str, message: &str) -> Check {
    subscriber_call(
        kit,
        act::command(SUBSCRIBER, "Effect", Some(effect(id, message))),
        act::reply(response(id, message), vec![]),
    )
    .await
}

/// Emits an `EventOne` carrying `step` on a new entity, and checks that the
/// subscriber gets it as the log's first event and answers `answer(id)`;
/// returns the entity's id.
async fn deliver_event_one(
    kit: &Kit,
    step: ev::ProcessStep,
    answer: impl FnOnce(&str) -> ActionResponse,
) -> Result<String, String> {
    let id = format!("eventlogeventing:{}", kit.next_id());
    let event = ev::EventOne { step: Some(step) };
    let emitted = emit_one(kit, &id, ev::emit_event_request::Event::EventOne(event)).await?;
    let metadata = first_event_metadata(
        "eventlogeventing-one",
        &id,
        "cloudstate.tck.model.eventlogeventing.EventOne",
    );
    subscriber_call(kit, delivered("ProcessEventOne", emitted, metadata), answer(&id)).await?;
    Ok(id)
}

async fn consume_an_event(kit: &Kit) -> Check {
    deliver_event_one(kit, reply("some message"), |id| {
        act::reply(response(id, "some message"), vec![])
    })
    .await
    .map(drop)
}

async fn forward_a_consumed_event(kit: &Kit) -> Check {
    let id = deliver_event_one(kit, forward("some message"), |id| {
        act::forward(SUBSCRIBER, "Effect", effect(id, "some message"), vec![])
    })
    .await?;
    effect_call(kit, &id, "some message").await
}

/// The wire form of a JSON payload: its text in field 1.
#[derive(Clone, PartialEq, Message)]
struct JsonText {
    #[prost(string, tag = "1")]
    json: String,
}

async fn process_json_events(kit: &Kit) -> Check {
    let id = format!("eventlogeventing:{}", kit.next_id());
    let request = ev::JsonEvent {
        id: id.clone(),
        message: "some json message".into(),
    };
    EventSourcedEntityTwoClient::new(kit.grpc.clone())
        .emit_json_event(request.clone())
        .await
        .map_err(|status| format!("EmitJsonEvent failed: {status:?}"))?;
    let mut entity = kit.interceptor.event_sourced().await?;
    entity.expect_incoming(es::init(ENTITY_TWO, &id)).await?;
    entity
        .expect_incoming(es::command(1, &id, "EmitJsonEvent", any(&request)))
        .await?;
    let reply = match entity.outgoing.message().await?.message {
        Some(strata_proto::cloudstate::eventsourced::event_sourced_stream_out::Message::Reply(reply)) => reply,
        other => return Err(format!("expected the entity's reply, got {other:?}")),
    };
    let [event] = reply.events.as_slice() else {
        return Err(format!("expected one event, got {:?}", reply.events));
    };
    expect_eq(
        "the event's type URL",
        "json.cloudstate.io/JsonEvent",
        event.type_url.as_str(),
    )?;
    let text = JsonText::decode(event.value.as_slice()).map_err(|e| format!("not a JSON payload: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text.json).map_err(|e| format!("not JSON: {e}: {}", text.json))?;
    expect_eq(
        "the JSON event",
        serde_json::json!({"message": "some json message"}),
        json,
    )?;
    // Passed through as it is, to the method that takes any event.
    let metadata = first_event_metadata("eventlogeventing-two", &id, "JsonEvent");
    subscriber_call(
        kit,
        delivered("ProcessAnyEvent", event.clone(), metadata),
        act::reply(response(&id, "some json message"), vec![]),
    )
    .await
}

async fn streamed_subscriber(kit: &Kit) -> Check {
    let id = format!("eventlogeventing:{}", kit.next_id());
    let event = ev::EventTwo {
        step: vec![reply("first"), forward("second")],
    };
    let emitted = emit_one(kit, &id, ev::emit_event_request::Event::EventTwo(event)).await?;
    let metadata = first_event_metadata(
        "eventlogeventing-one",
        &id,
        "cloudstate.tck.model.eventlogeventing.EventTwo",
    );
    let mut call = kit.interceptor.action(Shape::StreamedOut).await?;
    call.expect_incoming(delivered("ProcessEventTwo", emitted, metadata))
        .await?;
    call.expect_outgoing(act::reply(response(&id, "first"), vec![])).await?;
    call.expect_outgoing(act::forward(SUBSCRIBER, "Effect", effect(&id, "second"), vec![]))
        .await?;
    call.outgoing.expect_complete().await?;
    effect_call(kit, &id, "second").await
}
