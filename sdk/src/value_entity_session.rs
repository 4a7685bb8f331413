//! The value-entity protocol for one entity: `Init` with the stored value, then commands
//! answered with a reply and an update, a deletion or nothing. A state machine from
//! message to step; user errors become command failures, protocol errors end it.

use std::{collections::BTreeSet, sync::Arc};

use strata_proto::cloudstate::{
    self as pb,
    valueentity::{
        value_entity_stream_in::Message as In, value_entity_stream_out::Message as Out, ValueEntityInit,
        ValueEntityReply, ValueEntityStreamIn, ValueEntityStreamOut,
    },
};
use tracing::{debug, error, Span};

use crate::{
    entity_stream::{protocol_error, stream_failure, FailureMessage, Session, Step},
    registry::Registry,
    value_entity::DynValueEntity,
    Command,
};

/// One value-entity stream.
pub(crate) struct ValueEntitySession {
    registry: Arc<Registry>,
    active: Option<Active>,
    current_command: i64,
}

struct Active {
    entity: Box<dyn DynValueEntity>,
    service_name: String,
    commands: Arc<BTreeSet<String>>,
}

impl ValueEntitySession {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            active: None,
            current_command: 0,
        }
    }

    fn init(&mut self, init: ValueEntityInit) -> Step<ValueEntityStreamOut> {
        let span = Span::current();
        span.record("service", init.service_name.as_str());
        span.record("entity_id", init.entity_id.as_str());
        let mut opened = match self.registry.open_value(&init.service_name, &init.entity_id) {
            Ok(opened) => opened,
            Err(description) => return protocol_error(0, description),
        };
        if let Some(value) = init.state.and_then(|state| state.value) {
            if let Err(error) = opened.entity.restore(&value) {
                error!(%error, "cannot load the stored value");
                return Step::Close(stream_failure(
                    0,
                    format!("cannot load the stored value: {error}"),
                    true,
                ));
            }
        }
        debug!("entity initialized");
        self.active = Some(Active {
            entity: opened.entity,
            service_name: init.service_name,
            commands: opened.commands,
        });
        Step::Nothing
    }
}

impl Active {
    fn command(&mut self, command: pb::Command) -> Step<ValueEntityStreamOut> {
        let command_id = command.id;
        if !self.commands.contains(&command.name) {
            return protocol_error(
                command_id,
                format!("unknown command {:?} for service {:?}", command.name, self.service_name),
            );
        }
        let command = Command::from_proto(command);
        let reply = match self.entity.handle_command(&command) {
            Ok(handled) => {
                let (action, side_effects) = handled.reply.into_proto();
                ValueEntityReply {
                    command_id,
                    client_action: Some(pb::ClientAction { action }),
                    side_effects,
                    state_action: handled.state_action,
                }
            }
            Err(failure) => {
                debug!(command = command.name(), %failure, "command failed");
                ValueEntityReply {
                    command_id,
                    client_action: Some(failure.into_client_action(command_id)),
                    ..Default::default()
                }
            }
        };
        Step::Send(ValueEntityStreamOut {
            message: Some(Out::Reply(reply)),
        })
    }
}

impl Session for ValueEntitySession {
    type In = ValueEntityStreamIn;
    type Out = ValueEntityStreamOut;

    fn on_message(&mut self, message: ValueEntityStreamIn) -> Step<ValueEntityStreamOut> {
        self.current_command = 0;
        match (message.message, self.active.as_mut()) {
            (Some(In::Init(init)), None) => self.init(init),
            (Some(In::Init(_)), Some(_)) => protocol_error(0, "received a second init"),
            (Some(In::Command(command)), Some(active)) => {
                self.current_command = command.id;
                active.command(command)
            }
            (Some(In::Command(command)), None) => protocol_error(command.id, "received a command before init"),
            (None, _) => protocol_error(0, "received an empty message"),
        }
    }

    fn on_panic(&mut self, description: String) -> ValueEntityStreamOut {
        stream_failure(self.current_command, format!("entity panicked: {description}"), true)
    }
}

impl FailureMessage for ValueEntityStreamOut {
    fn failure(failure: pb::Failure) -> Self {
        ValueEntityStreamOut {
            message: Some(Out::Failure(failure)),
        }
    }
}
