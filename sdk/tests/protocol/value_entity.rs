//! The value-entity protocol: init with and without a stored value, updates and
//! deletions as state actions, failures that discard them, and protocol errors.

use strata_proto::cloudstate::{
    client_action::Action,
    valueentity::{
        value_entity_action, value_entity_client::ValueEntityClient, value_entity_stream_in::Message as In,
        value_entity_stream_out::Message as Out, ValueEntityAction, ValueEntityDelete, ValueEntityInit,
        ValueEntityInitState, ValueEntityReply, ValueEntityStreamIn, ValueEntityStreamOut, ValueEntityUpdate,
    },
    ClientAction, Command, Failure, Reply,
};
use strata_sdk::{pack, Any};

use crate::support::{empty, service, Running, Stream, COUNTER, REGISTER};

type EntityStream = Stream<ValueEntityStreamIn, ValueEntityStreamOut>;

async fn open(running: &Running) -> EntityStream {
    let mut client = ValueEntityClient::new(running.channel.clone());
    Stream::open(|requests| async move { client.handle(requests).await }).await
}

fn init(service_name: &str, value: Option<&str>) -> ValueEntityStreamIn {
    ValueEntityStreamIn {
        message: Some(In::Init(ValueEntityInit {
            service_name: service_name.to_owned(),
            entity_id: "r-1".to_owned(),
            state: value.map(|value| ValueEntityInitState {
                value: Some(pack(&value.to_owned())),
            }),
        })),
    }
}

fn command(id: i64, name: &str, text: &str) -> ValueEntityStreamIn {
    ValueEntityStreamIn {
        message: Some(In::Command(Command {
            entity_id: "r-1".to_owned(),
            id,
            name: name.to_owned(),
            payload: Some(pack(&text.to_owned())),
            ..Default::default()
        })),
    }
}

fn reply(command_id: i64, payload: Any, action: Option<value_entity_action::Action>) -> ValueEntityStreamOut {
    ValueEntityStreamOut {
        message: Some(Out::Reply(ValueEntityReply {
            command_id,
            client_action: Some(ClientAction {
                action: Some(Action::Reply(Reply {
                    payload: Some(payload),
                    metadata: None,
                })),
            }),
            side_effects: vec![],
            state_action: action.map(|action| ValueEntityAction { action: Some(action) }),
        })),
    }
}

fn update(value: &str) -> Option<value_entity_action::Action> {
    Some(value_entity_action::Action::Update(ValueEntityUpdate {
        value: Some(pack(&value.to_owned())),
    }))
}

#[tokio::test]
async fn updates_and_deletes_are_state_actions() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(REGISTER, None)).await;
    stream.send(command(1, "Get", "")).await;
    assert_eq!(stream.recv().await, reply(1, pack(&String::new()), None));
    stream.send(command(2, "Set", "a")).await;
    assert_eq!(stream.recv().await, reply(2, empty(), update("a")));
    stream.send(command(3, "Get", "")).await;
    assert_eq!(stream.recv().await, reply(3, pack(&"a".to_owned()), None));
    stream.send(command(4, "Delete", "")).await;
    assert_eq!(
        stream.recv().await,
        reply(
            4,
            empty(),
            Some(value_entity_action::Action::Delete(ValueEntityDelete {}))
        )
    );
    stream.send(command(5, "Get", "")).await;
    assert_eq!(stream.recv().await, reply(5, pack(&String::new()), None));
}

#[tokio::test]
async fn init_loads_the_stored_value() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(REGISTER, Some("stored"))).await;
    stream.send(command(1, "Get", "")).await;
    assert_eq!(stream.recv().await, reply(1, pack(&"stored".to_owned()), None));
}

#[tokio::test]
async fn a_failed_command_discards_its_update() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(REGISTER, Some("kept"))).await;
    stream.send(command(1, "Fail", "")).await;
    assert_eq!(
        stream.recv().await,
        ValueEntityStreamOut {
            message: Some(Out::Reply(ValueEntityReply {
                command_id: 1,
                client_action: Some(ClientAction {
                    action: Some(Action::Failure(Failure {
                        command_id: 1,
                        description: "no".to_owned(),
                        restart: false,
                    })),
                }),
                ..Default::default()
            })),
        }
    );
    stream.send(command(2, "Get", "")).await;
    assert_eq!(stream.recv().await, reply(2, pack(&"kept".to_owned()), None));
}

#[tokio::test]
async fn a_command_before_init_fails_the_stream() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(command(7, "Get", "")).await;
    assert_eq!(
        stream.recv().await,
        ValueEntityStreamOut {
            message: Some(Out::Failure(Failure {
                command_id: 7,
                description: "protocol error: received a command before init".to_owned(),
                restart: false,
            })),
        }
    );
    stream.assert_closed().await;
}

#[tokio::test]
async fn an_event_sourced_service_is_not_served_as_a_value_entity() {
    let running = Running::start(service()).await;
    let mut stream = open(&running).await;
    stream.send(init(COUNTER, None)).await;
    assert_eq!(
        stream.recv().await,
        ValueEntityStreamOut {
            message: Some(Out::Failure(Failure {
                command_id: 0,
                description: "protocol error: service \"test.Counter\" is served as \
                              cloudstate.eventsourced.EventSourced, not as \
                              cloudstate.valueentity.ValueEntity"
                    .to_owned(),
                restart: false,
            })),
        }
    );
    stream.assert_closed().await;
}
