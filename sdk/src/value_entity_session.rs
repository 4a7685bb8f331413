//! The value-entity protocol for one entity: `Init` with the stored value, then commands
//! answered with a reply and an update, a deletion or nothing: the kind's part of the
//! session shell (`entity_session`, which keeps the messages in order). User errors
//! become command failures, protocol errors end the stream.

use strata_proto::cloudstate::{
    self as pb,
    valueentity::{
        value_entity_stream_in::Message as In, value_entity_stream_out::Message as Out, ValueEntityInit,
        ValueEntityReply, ValueEntityStreamIn, ValueEntityStreamOut,
    },
};
use tracing::{debug, error};

use crate::{
    entity_session::{Inbound, Opened, Protocol},
    entity_stream::{protocol_error, stream_failure, FailureMessage, Step},
    registry::Registry,
    value_entity::DynValueEntity,
    Command,
};

/// The value-entity kind of [`crate::entity_session::EntitySession`].
pub(crate) struct ValueKind;

impl Protocol for ValueKind {
    type In = ValueEntityStreamIn;
    type Out = ValueEntityStreamOut;
    type Init = ValueEntityInit;
    type Other = std::convert::Infallible;
    type Entity = Box<dyn DynValueEntity>;

    fn inbound(message: ValueEntityStreamIn) -> Option<Inbound<ValueEntityInit, Self::Other>> {
        Some(match message.message? {
            In::Init(init) => Inbound::Init(init),
            In::Command(command) => Inbound::Command(command),
        })
    }

    fn names(init: &ValueEntityInit) -> (&str, &str) {
        (&init.service_name, &init.entity_id)
    }

    fn open(registry: &Registry, init: ValueEntityInit) -> Result<Opened<Self::Entity>, Step<ValueEntityStreamOut>> {
        let mut opened = registry
            .open_value(&init.service_name, &init.entity_id)
            .map_err(|description| protocol_error(0, description))?;
        if let Some(value) = init.state.and_then(|state| state.value) {
            if let Err(error) = opened.entity.restore(&value) {
                error!(%error, "cannot load the stored value");
                return Err(Step::Close(stream_failure(
                    0,
                    format!("cannot load the stored value: {error}"),
                    true,
                )));
            }
        }
        Ok(Opened {
            entity: opened.entity,
            commands: opened.commands,
        })
    }

    fn command(entity: &mut Self::Entity, command: pb::Command) -> Step<ValueEntityStreamOut> {
        let command_id = command.id;
        let command = Command::from_proto(command);
        let _span = crate::trace::command_span(&command).entered();
        let reply = match entity.handle_command(&command) {
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

    fn other(_: Option<&mut Self::Entity>, other: Self::Other) -> Step<ValueEntityStreamOut> {
        match other {}
    }
}

impl FailureMessage for ValueEntityStreamOut {
    fn failure(failure: pb::Failure) -> Self {
        ValueEntityStreamOut {
            message: Some(Out::Failure(failure)),
        }
    }
}
