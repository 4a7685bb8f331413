//! The event-sourced protocol: init, replay, replies with events, command failures,
//! snapshot cadence, and the stream failures that end a broken or misused stream.

use strata_proto::cloudstate::{
    client_action::Action,
    eventsourced::{
        event_sourced_client::EventSourcedClient, event_sourced_stream_in::Message as In,
        event_sourced_stream_out::Message as Out, EventSourcedEvent, EventSourcedInit, EventSourcedReply,
        EventSourcedSnapshot, EventSourcedStreamIn, EventSourcedStreamOut,
    },
    ClientAction, Command, Failure, Reply,
};
use strata_sdk::{pack, Any};

use crate::support::{empty, int, service, Running, Stream, COUNTER, REGISTER};

type EntityStream = Stream<EventSourcedStreamIn, EventSourcedStreamOut>;

async fn open(running: &Running) -> EntityStream {
    let mut client = EventSourcedClient::new(running.channel.clone());
    Stream::open(|requests| async move { client.handle(requests).await }).await
}

fn init(service_name: &str, snapshot: Option<(i64, i64)>) -> EventSourcedStreamIn {
    EventSourcedStreamIn {
        message: Some(In::Init(EventSourcedInit {
            service_name: service_name.to_owned(),
            entity_id: "c-1".to_owned(),
            snapshot: snapshot.map(|(sequence, value)| EventSourcedSnapshot {
                snapshot_sequence: sequence,
                snapshot: Some(pack(&value)),
            }),
        })),
    }
}

fn event(sequence: i64, amount: i64) -> EventSourcedStreamIn {
    EventSourcedStreamIn {
        message: Some(In::Event(EventSourcedEvent {
            sequence,
            payload: Some(pack(&amount)),
        })),
    }
}

fn command(id: i64, name: &str, amount: i64) -> EventSourcedStreamIn {
    EventSourcedStreamIn {
        message: Some(In::Command(Command {
            entity_id: "c-1".to_owned(),
            id,
            name: name.to_owned(),
            payload: Some(pack(&amount)),
            ..Default::default()
        })),
    }
}

fn reply(command_id: i64, payload: Any, events: Vec<Any>, snapshot: Option<Any>) -> EventSourcedStreamOut {
    EventSourcedStreamOut {
        message: Some(Out::Reply(EventSourcedReply {
            command_id,
            client_action: Some(ClientAction {
                action: Some(Action::Reply(Reply {
                    payload: Some(payload),
                    metadata: None,
                })),
            }),
            side_effects: vec![],
            events,
            snapshot,
        })),
    }
}

fn stream_failure(command_id: i64, description: &str, restart: bool) -> EventSourcedStreamOut {
    EventSourcedStreamOut {
        message: Some(Out::Failure(Failure {
            command_id,
            description: description.to_owned(),
            restart,
        })),
    }
}

/// Sends `Get` and returns the counter's value.
async fn get(stream: &mut EntityStream, id: i64) -> i64 {
    stream.send(command(id, "Get", 0)).await;
    match stream.recv().await.message {
        Some(Out::Reply(EventSourcedReply {
            command_id,
            client_action: Some(ClientAction {
                action: Some(Action::Reply(reply)),
            }),
            events,
            ..
        })) if command_id == id && events.is_empty() => int(&reply.payload),
        other => panic!("unexpected answer to Get: {other:?}"),
    }
}

#[tokio::test]
async fn a_command_replies_with_its_events_and_applies_them() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(command(1, "Increase", 5)).await;
    assert_eq!(stream.recv().await, reply(1, empty(), vec![pack(&5_i64)], None));
    stream.send(command(2, "Get", 0)).await;
    assert_eq!(stream.recv().await, reply(2, pack(&5_i64), vec![], None));
    stream.close();
    stream.assert_closed().await;
}

#[tokio::test]
async fn init_restores_the_snapshot_then_replays_events() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, Some((10, 100)))).await;
    stream.send(event(11, 1)).await;
    stream.send(event(12, 2)).await;
    assert_eq!(get(&mut stream, 1).await, 103);
}

#[tokio::test]
async fn a_failed_command_sends_a_failure_without_events_and_changes_nothing() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(command(1, "Increase", 5)).await;
    stream.recv().await;

    stream.send(command(2, "Fail", 0)).await;
    let failed = |restart| EventSourcedStreamOut {
        message: Some(Out::Reply(EventSourcedReply {
            command_id: 2,
            client_action: Some(ClientAction {
                action: Some(Action::Failure(Failure {
                    command_id: 2,
                    description: "counting is hard".to_owned(),
                    restart,
                })),
            }),
            ..Default::default()
        })),
    };
    assert_eq!(stream.recv().await, failed(false));
    assert_eq!(get(&mut stream, 3).await, 5);

    // With restart the failure says so; the stream stays open for the proxy to end.
    stream.send(command(2, "Fail", -1)).await;
    assert_eq!(stream.recv().await, failed(true));
}

#[tokio::test]
async fn a_payload_of_the_wrong_type_fails_the_command() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    let mut wrong = command(1, "Increase", 0);
    if let Some(In::Command(command)) = &mut wrong.message {
        command.payload = Some(pack(&"five".to_owned()));
    }
    stream.send(wrong).await;
    let Some(Out::Reply(reply)) = stream.recv().await.message else {
        panic!("expected a reply");
    };
    assert!(reply.events.is_empty());
    assert_eq!(
        reply.client_action.unwrap().action,
        Some(Action::Failure(Failure {
            command_id: 1,
            description: "command Increase: expected a google.protobuf.Int64Value message, \
                          got type URL \"type.googleapis.com/google.protobuf.StringValue\""
                .to_owned(),
            restart: false,
        }))
    );
}

#[tokio::test]
async fn snapshots_are_attached_every_five_events() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    for id in 1..=12 {
        stream.send(command(id, "Increase", 1)).await;
        let snapshot = match id {
            5 => Some(pack(&5_i64)),
            10 => Some(pack(&10_i64)),
            _ => None,
        };
        assert_eq!(
            stream.recv().await,
            reply(id, empty(), vec![pack(&1_i64)], snapshot),
            "command {id}"
        );
    }
}

#[tokio::test]
async fn the_snapshot_cadence_counts_from_the_restored_sequence() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    // Snapshot at 3, event 4: the next two events are 5 and 6, and 5 is due.
    stream.send(init(COUNTER, Some((3, 30)))).await;
    stream.send(event(4, 4)).await;
    stream.send(command(1, "IncreaseTwice", 1)).await;
    // The snapshot includes both events of the reply.
    assert_eq!(
        stream.recv().await,
        reply(1, empty(), vec![pack(&1_i64), pack(&1_i64)], Some(pack(&36_i64)))
    );
    stream.send(command(2, "Increase", 1)).await;
    assert_eq!(stream.recv().await, reply(2, empty(), vec![pack(&1_i64)], None));
}

#[tokio::test]
async fn a_command_before_init_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(command(1, "Get", 0)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(1, "protocol error: received a command before init", false)
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_second_init_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(init(COUNTER, None)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(0, "protocol error: received a second init", false)
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn an_unknown_service_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init("test.Nope", None)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(
            0,
            "protocol error: unknown service \"test.Nope\": this user function serves \
             cloudstate.eventsourced.EventSourced for [test.Counter]",
            false
        )
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_value_entity_service_is_not_served_as_event_sourced() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(REGISTER, None)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(
            0,
            "protocol error: service \"test.Register\" is served as \
             cloudstate.valueentity.ValueEntity, not as cloudstate.eventsourced.EventSourced",
            false
        )
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn an_unknown_command_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(command(1, "Decrease", 1)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(
            1,
            "protocol error: unknown command \"Decrease\" for service \"test.Counter\"",
            false
        )
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_the_stream_and_asks_for_a_restart() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(command(1, "Panic", 0)).await;
    assert_eq!(stream.recv().await, stream_failure(1, "entity panicked: boom", true));
    stream.assert_closed().await;

    // Other entities are unaffected.
    let mut other = open(&running).await;
    other.send(init(COUNTER, None)).await;
    assert_eq!(get(&mut other, 1).await, 0);
}

#[tokio::test]
async fn an_event_the_entity_cannot_apply_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream.send(command(1, "EmitJunk", 0)).await;
    assert_eq!(
        stream.recv().await,
        stream_failure(
            1,
            "cannot apply an event emitted by command EmitJunk: unknown event type \
             \"type.googleapis.com/google.protobuf.StringValue\"",
            true
        )
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_replayed_event_the_entity_cannot_apply_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    stream
        .send(EventSourcedStreamIn {
            message: Some(In::Event(EventSourcedEvent {
                sequence: 1,
                payload: Some(pack(&"junk".to_owned())),
            })),
        })
        .await;
    assert_eq!(
        stream.recv().await,
        stream_failure(
            0,
            "cannot apply event 1: unknown event type \
             \"type.googleapis.com/google.protobuf.StringValue\"",
            true
        )
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_reply_carries_metadata_and_side_effects_and_entities_must_answer() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    let mut notify = command(1, "Notify", 3);
    if let Some(In::Command(command)) = &mut notify.message {
        command.metadata = Some(strata_proto::cloudstate::Metadata {
            entries: vec![strata_proto::cloudstate::MetadataEntry {
                key: "x-trace".into(),
                value: Some(strata_proto::cloudstate::metadata_entry::Value::StringValue(
                    "t-9".into(),
                )),
            }],
        });
    }
    stream.send(notify).await;
    let Some(Out::Reply(answer)) = stream.recv().await.message else {
        panic!("expected a reply")
    };
    assert_eq!(answer.events, vec![pack(&3_i64)]);
    let Some(Action::Reply(reply)) = answer.client_action.and_then(|a| a.action) else {
        panic!("expected a reply action")
    };
    let metadata = reply.metadata.expect("reply metadata");
    assert_eq!(
        metadata.entries[0].value,
        Some(strata_proto::cloudstate::metadata_entry::Value::StringValue(
            "t-9".into()
        ))
    );
    assert_eq!(answer.side_effects.len(), 1);
    let effect = &answer.side_effects[0];
    assert_eq!(
        (effect.service_name.as_str(), effect.command_name.as_str()),
        (REGISTER, "Set")
    );
    assert!(effect.synchronous);

    // --- Reply::none is for actions: the command fails and its event is not applied
    stream.send(command(2, "Nothing", 0)).await;
    let Some(Out::Reply(answer)) = stream.recv().await.message else {
        panic!("expected a reply")
    };
    assert!(answer.events.is_empty());
    assert!(matches!(
        answer.client_action.and_then(|a| a.action),
        Some(Action::Failure(f)) if f.description.contains("must reply, forward or fail")
    ));
    assert_eq!(get(&mut stream, 3).await, 3);
}
