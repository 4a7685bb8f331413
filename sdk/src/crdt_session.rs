//! The CRDT protocol for one entity: `CrdtInit` with the state as a delta, the
//! proxy's deltas and deletes, then commands answered with a reply and the
//! delta or delete they made. A state machine from message to step; user
//! errors become command failures, protocol errors end it.

use std::{collections::BTreeSet, sync::Arc};

use strata_proto::cloudstate::{
    self as pb,
    crdt::{
        crdt_stream_in::Message as In, crdt_stream_out::Message as Out, CrdtInit, CrdtReply, CrdtStreamIn,
        CrdtStreamOut,
    },
};
use tracing::{debug, error, Span};

use crate::{
    crdt::DynCrdtEntity,
    entity_stream::{protocol_error, stream_failure, FailureMessage, Session, Step},
    registry::Registry,
    Command,
};

/// One CRDT entity stream.
pub(crate) struct CrdtSession {
    registry: Arc<Registry>,
    active: Option<Active>,
    current_command: i64,
}

struct Active {
    entity: Box<dyn DynCrdtEntity>,
    service_name: String,
    commands: Arc<BTreeSet<String>>,
}

impl CrdtSession {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            active: None,
            current_command: 0,
        }
    }

    fn init(&mut self, init: CrdtInit) -> Step<CrdtStreamOut> {
        let span = Span::current();
        span.record("service", init.service_name.as_str());
        span.record("entity_id", init.entity_id.as_str());
        let mut opened = match self.registry.open_crdt(&init.service_name, &init.entity_id) {
            Ok(opened) => opened,
            Err(description) => return protocol_error(0, description),
        };
        if let Some(delta) = &init.delta {
            if let Err(error) = opened.entity.apply(delta) {
                error!(%error, "cannot load the CRDT's state");
                return Step::Close(stream_failure(
                    0,
                    format!("cannot load the CRDT's state: {error}"),
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
    fn command(&mut self, command: pb::Command) -> Step<CrdtStreamOut> {
        let command_id = command.id;
        if !self.commands.contains(&command.name) {
            return protocol_error(
                command_id,
                format!("unknown command {:?} for service {:?}", command.name, self.service_name),
            );
        }
        if command.streamed {
            return protocol_error(command_id, "streamed CRDT commands are not supported by this SDK yet");
        }
        let command = Command::from_proto(command);
        let reply = match self.entity.handle_command(&command) {
            Ok(handled) => {
                let (action, side_effects) = handled.reply.into_proto();
                CrdtReply {
                    command_id,
                    client_action: Some(pb::ClientAction { action }),
                    side_effects,
                    state_action: handled.state_action,
                    streamed: false,
                }
            }
            Err(failure) => {
                debug!(command = command.name(), %failure, "command failed");
                CrdtReply {
                    command_id,
                    client_action: Some(failure.into_client_action(command_id)),
                    ..Default::default()
                }
            }
        };
        Step::Send(CrdtStreamOut {
            message: Some(Out::Reply(reply)),
        })
    }
}

impl Session for CrdtSession {
    type In = CrdtStreamIn;
    type Out = CrdtStreamOut;

    fn on_message(&mut self, message: CrdtStreamIn) -> Step<CrdtStreamOut> {
        self.current_command = 0;
        match (message.message, self.active.as_mut()) {
            (Some(In::Init(init)), None) => self.init(init),
            (Some(In::Init(_)), Some(_)) => protocol_error(0, "received a second init"),
            (Some(In::Command(command)), Some(active)) => {
                self.current_command = command.id;
                active.command(command)
            }
            (Some(In::Delta(delta)), Some(active)) => match active.entity.apply(&delta) {
                Ok(()) => Step::Nothing,
                Err(error) => protocol_error(0, format!("cannot apply the proxy's delta: {error}")),
            },
            (Some(In::Delete(_)), Some(active)) => {
                active.entity.deleted();
                Step::Nothing
            }
            // No streamed commands are open, so there is nothing to cancel.
            (Some(In::StreamCancelled(_)), Some(_)) => Step::Nothing,
            (Some(In::Command(command)), None) => protocol_error(command.id, "received a command before init"),
            (Some(_), None) => protocol_error(0, "received a message before init"),
            (None, _) => protocol_error(0, "received an empty message"),
        }
    }

    fn on_panic(&mut self, description: String) -> CrdtStreamOut {
        stream_failure(self.current_command, format!("entity panicked: {description}"), true)
    }
}

impl FailureMessage for CrdtStreamOut {
    fn failure(failure: pb::Failure) -> Self {
        CrdtStreamOut {
            message: Some(Out::Failure(failure)),
        }
    }
}
