//! The CRDT protocol for one entity: `CrdtInit` with the state as a delta, the
//! proxy's deltas and deletes, then commands answered with a reply and the
//! delta or delete they made. A streamed command stays open while it has
//! callbacks: after every change of the state (a command's, the proxy's) each
//! open stream's change callback may send a `CrdtStreamedMessage`, and a
//! `StreamCancelled` runs its cancel callback and is always answered with a
//! `CrdtStreamCancelledResponse`. A state machine from message to step; user
//! errors become command failures, protocol errors end it.

use std::{collections::BTreeSet, sync::Arc};

use strata_proto::cloudstate::{
    self as pb,
    crdt::{
        crdt_state_action, crdt_stream_in::Message as In, crdt_stream_out::Message as Out, CrdtInit, CrdtReply,
        CrdtStreamIn, CrdtStreamOut, CrdtStreamedMessage,
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
        let streamed = command.streamed;
        let command = Command::from_proto(command);
        let (reply, changed) = match self.entity.handle_command(&command, streamed) {
            Ok(handled) => {
                let changed = handled
                    .state_action
                    .as_ref()
                    .is_some_and(|a| matches!(a.action, Some(crdt_state_action::Action::Update(_))));
                let (action, side_effects) = handled.reply.into_proto();
                let reply = CrdtReply {
                    command_id,
                    client_action: action.map(|action| pb::ClientAction { action: Some(action) }),
                    side_effects,
                    state_action: handled.state_action,
                    streamed: handled.streamed,
                };
                (reply, changed)
            }
            Err(failure) => {
                debug!(command = command.name(), %failure, "command failed");
                let reply = CrdtReply {
                    command_id,
                    client_action: Some(failure.into_client_action(command_id)),
                    ..Default::default()
                };
                (reply, false)
            }
        };
        let mut out = vec![CrdtStreamOut {
            message: Some(Out::Reply(reply)),
        }];
        if changed {
            out.extend(streamed_messages(self.entity.changed(Some(command_id))));
        }
        Step::SendAll(out)
    }

    /// The proxy changed the state: the open streams hear of it.
    fn delta(&mut self, delta: &pb::crdt::CrdtDelta) -> Step<CrdtStreamOut> {
        match self.entity.apply(delta) {
            Ok(()) => Step::SendAll(streamed_messages(self.entity.changed(None)).collect()),
            Err(error) => protocol_error(0, format!("cannot apply the proxy's delta: {error}")),
        }
    }

    fn cancelled(&mut self, command_id: i64) -> Step<CrdtStreamOut> {
        let response = self.entity.cancelled(command_id);
        let changed = response.state_action.is_some();
        let mut out = vec![CrdtStreamOut {
            message: Some(Out::StreamCancelledResponse(response)),
        }];
        if changed {
            out.extend(streamed_messages(self.entity.changed(None)));
        }
        Step::SendAll(out)
    }
}

fn streamed_messages(messages: Vec<CrdtStreamedMessage>) -> impl Iterator<Item = CrdtStreamOut> {
    messages.into_iter().map(|message| CrdtStreamOut {
        message: Some(Out::StreamedMessage(message)),
    })
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
            (Some(In::Delta(delta)), Some(active)) => active.delta(&delta),
            (Some(In::Delete(_)), Some(active)) => {
                active.entity.deleted();
                Step::Nothing
            }
            (Some(In::StreamCancelled(cancelled)), Some(active)) => active.cancelled(cancelled.id),
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
