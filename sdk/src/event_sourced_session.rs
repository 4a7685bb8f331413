//! The event-sourced protocol for one entity: `Init` (maybe with a snapshot), replayed
//! events, then commands answered with their events and due snapshots: the kind's part
//! of the session shell (`entity_session`, which keeps the messages in order). User
//! errors become command failures, protocol errors end the stream.

use strata_proto::cloudstate::{
    self as pb,
    eventsourced::{
        event_sourced_stream_in::Message as In, event_sourced_stream_out::Message as Out, EventSourcedEvent,
        EventSourcedInit, EventSourcedReply, EventSourcedStreamIn, EventSourcedStreamOut,
    },
};
use tracing::{debug, error};

use crate::{
    entity_session::{Inbound, Opened, Protocol},
    entity_stream::{protocol_error, stream_failure, FailureMessage, Step},
    event_sourced::{run_command, DynEventSourced},
    registry::Registry,
    Command,
};

/// The event-sourced kind of [`crate::entity_session::EntitySession`].
pub(crate) struct EventSourcedKind;

/// An open event-sourced entity.
pub(crate) struct Entity {
    entity: Box<dyn DynEventSourced>,
    snapshot_every: u64,
    /// The sequence number of the last event applied.
    sequence: i64,
}

impl Protocol for EventSourcedKind {
    type In = EventSourcedStreamIn;
    type Out = EventSourcedStreamOut;
    type Init = EventSourcedInit;
    type Other = EventSourcedEvent;
    type Entity = Entity;

    fn inbound(message: EventSourcedStreamIn) -> Option<Inbound<EventSourcedInit, EventSourcedEvent>> {
        Some(match message.message? {
            In::Init(init) => Inbound::Init(init),
            In::Command(command) => Inbound::Command(command),
            In::Event(event) => Inbound::Other(event),
        })
    }

    fn names(init: &EventSourcedInit) -> (&str, &str) {
        (&init.service_name, &init.entity_id)
    }

    fn open(registry: &Registry, init: EventSourcedInit) -> Result<Opened<Entity>, Step<EventSourcedStreamOut>> {
        let opened = registry
            .open_event_sourced(&init.service_name, &init.entity_id)
            .map_err(|description| protocol_error(0, description))?;
        let mut entity = Entity {
            entity: opened.entity,
            snapshot_every: opened.snapshot_every,
            sequence: 0,
        };
        if let Some(snapshot) = init.snapshot {
            entity.sequence = snapshot.snapshot_sequence;
            if let Some(payload) = snapshot.snapshot {
                if let Err(error) = entity.entity.restore(&payload) {
                    return Err(entity_error(
                        0,
                        format!("cannot restore the snapshot at sequence {}: {error}", entity.sequence),
                    ));
                }
                debug!(sequence = entity.sequence, "snapshot restored");
            }
        }
        Ok(Opened {
            entity,
            commands: opened.commands,
        })
    }

    fn command(entity: &mut Entity, command: pb::Command) -> Step<EventSourcedStreamOut> {
        let command_id = command.id;
        let command = Command::from_proto(command);
        let _span = crate::trace::command_span(&command).entered();
        let outcome = run_command(
            entity.entity.as_mut(),
            &command,
            &mut entity.sequence,
            entity.snapshot_every,
        );
        let reply = match outcome {
            Ok(Ok(handled)) => {
                let (action, side_effects) = handled.reply.into_proto();
                EventSourcedReply {
                    command_id,
                    client_action: Some(pb::ClientAction { action }),
                    side_effects,
                    events: handled.events,
                    snapshot: handled.snapshot,
                }
            }
            Ok(Err(failure)) => {
                debug!(command = command.name(), %failure, "command failed");
                EventSourcedReply {
                    command_id,
                    client_action: Some(failure.into_client_action(command_id)),
                    ..Default::default()
                }
            }
            Err(error) => {
                return entity_error(
                    command_id,
                    format!("cannot apply an event emitted by command {}: {error}", command.name()),
                )
            }
        };
        Step::Send(EventSourcedStreamOut {
            message: Some(Out::Reply(reply)),
        })
    }

    /// A replayed event.
    fn other(entity: Option<&mut Entity>, event: EventSourcedEvent) -> Step<EventSourcedStreamOut> {
        let Some(entity) = entity else {
            return protocol_error(0, format!("received event {} before init", event.sequence));
        };
        let Some(payload) = event.payload else {
            return protocol_error(0, format!("event {} has no payload", event.sequence));
        };
        if let Err(error) = entity.entity.apply_event(&payload) {
            return entity_error(0, format!("cannot apply event {}: {error}", event.sequence));
        }
        entity.sequence = event.sequence;
        Step::Nothing
    }
}

/// The entity cannot go on: end the stream so the proxy restarts it from its journal.
fn entity_error(command_id: i64, description: String) -> Step<EventSourcedStreamOut> {
    error!(command_id, %description, "failing the entity stream");
    Step::Close(stream_failure(command_id, description, true))
}

impl FailureMessage for EventSourcedStreamOut {
    fn failure(failure: pb::Failure) -> Self {
        EventSourcedStreamOut {
            message: Some(Out::Failure(failure)),
        }
    }
}
