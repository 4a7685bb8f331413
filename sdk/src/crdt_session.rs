//! The CRDT protocol for one entity: `CrdtInit` with the state as a delta, the
//! proxy's deltas and deletes, then commands answered with a reply and the
//! delta or delete they made. A streamed command stays open while it has
//! callbacks: after every change of the state (a command's, the proxy's) each
//! open stream's change callback may send a `CrdtStreamedMessage`, and a
//! `StreamCancelled` runs its cancel callback and is always answered with a
//! `CrdtStreamCancelledResponse`. The kind's part of the session shell
//! (`entity_session`, which keeps the messages in order); user errors become
//! command failures, protocol errors end the stream.

use strata_proto::cloudstate::{
    self as pb,
    crdt::{
        crdt_state_action, crdt_stream_in::Message as In, crdt_stream_out::Message as Out, CrdtDelta, CrdtInit,
        CrdtReply, CrdtStreamIn, CrdtStreamOut, CrdtStreamedMessage,
    },
};
use tracing::{debug, error};

use crate::{
    crdt::DynCrdtEntity,
    entity_session::{Inbound, Opened, Protocol},
    entity_stream::{protocol_error, stream_failure, FailureMessage, Step},
    registry::Registry,
    Command,
};

/// The CRDT kind of [`crate::entity_session::EntitySession`].
pub(crate) struct CrdtKind;

/// What the proxy sends a CRDT entity besides `Init` and commands.
pub(crate) enum Other {
    Delta(CrdtDelta),
    Delete,
    StreamCancelled(i64),
}

impl Protocol for CrdtKind {
    type In = CrdtStreamIn;
    type Out = CrdtStreamOut;
    type Init = CrdtInit;
    type Other = Other;
    type Entity = Box<dyn DynCrdtEntity>;

    fn inbound(message: CrdtStreamIn) -> Option<Inbound<CrdtInit, Other>> {
        Some(match message.message? {
            In::Init(init) => Inbound::Init(init),
            In::Command(command) => Inbound::Command(command),
            In::Delta(delta) => Inbound::Other(Other::Delta(delta)),
            In::Delete(_) => Inbound::Other(Other::Delete),
            In::StreamCancelled(cancelled) => Inbound::Other(Other::StreamCancelled(cancelled.id)),
        })
    }

    fn names(init: &CrdtInit) -> (&str, &str) {
        (&init.service_name, &init.entity_id)
    }

    fn open(registry: &Registry, init: CrdtInit) -> Result<Opened<Self::Entity>, Step<CrdtStreamOut>> {
        let mut opened = registry
            .open_crdt(&init.service_name, &init.entity_id)
            .map_err(|description| protocol_error(0, description))?;
        if let Some(delta) = &init.delta {
            if let Err(error) = opened.entity.apply(delta) {
                error!(%error, "cannot load the CRDT's state");
                return Err(Step::Close(stream_failure(
                    0,
                    format!("cannot load the CRDT's state: {error}"),
                    true,
                )));
            }
        }
        Ok(Opened {
            entity: opened.entity,
            commands: opened.commands,
        })
    }

    fn command(entity: &mut Self::Entity, command: pb::Command) -> Step<CrdtStreamOut> {
        let command_id = command.id;
        let streamed = command.streamed;
        let command = Command::from_proto(command);
        let _span = crate::trace::command_span(&command).entered();
        let (reply, changed) = match entity.handle_command(&command, streamed) {
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
            out.extend(streamed_messages(entity.changed(Some(command_id))));
        }
        Step::SendAll(out)
    }

    fn other(entity: Option<&mut Self::Entity>, other: Other) -> Step<CrdtStreamOut> {
        let Some(entity) = entity else {
            return protocol_error(0, "received a message before init");
        };
        match other {
            // The proxy changed the state: the open streams hear of it.
            Other::Delta(delta) => match entity.apply(&delta) {
                Ok(()) => Step::SendAll(streamed_messages(entity.changed(None)).collect()),
                Err(error) => protocol_error(0, format!("cannot apply the proxy's delta: {error}")),
            },
            Other::Delete => {
                entity.deleted();
                Step::Nothing
            }
            Other::StreamCancelled(command_id) => {
                let response = entity.cancelled(command_id);
                let changed = response.state_action.is_some();
                let mut out = vec![CrdtStreamOut {
                    message: Some(Out::StreamCancelledResponse(response)),
                }];
                if changed {
                    out.extend(streamed_messages(entity.changed(None)));
                }
                Step::SendAll(out)
            }
        }
    }
}

fn streamed_messages(messages: Vec<CrdtStreamedMessage>) -> impl Iterator<Item = CrdtStreamOut> {
    messages.into_iter().map(|message| CrdtStreamOut {
        message: Some(Out::StreamedMessage(message)),
    })
}

impl FailureMessage for CrdtStreamOut {
    fn failure(failure: pb::Failure) -> Self {
        CrdtStreamOut {
            message: Some(Out::Failure(failure)),
        }
    }
}
