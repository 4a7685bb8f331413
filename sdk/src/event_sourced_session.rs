//! The event-sourced protocol for one entity: `Init` (maybe with a snapshot), replayed
//! events, then commands answered with their events and due snapshots. A state machine
//! from message to step; user errors become command failures, protocol errors end it.

use std::{collections::BTreeSet, sync::Arc};

use strata_proto::cloudstate::{
    self as pb,
    eventsourced::{
        event_sourced_stream_in::Message as In, event_sourced_stream_out::Message as Out, EventSourcedEvent,
        EventSourcedInit, EventSourcedReply, EventSourcedStreamIn, EventSourcedStreamOut,
    },
};
use tracing::{debug, error, Span};

use crate::{
    entity_stream::{protocol_error, stream_failure, FailureMessage, Session, Step},
    event_sourced::{run_command, DynEventSourced},
    registry::Registry,
    Command,
};

/// One event-sourced entity stream.
pub(crate) struct EventSourcedSession {
    registry: Arc<Registry>,
    active: Option<Active>,
    /// The command being handled, so a panic can name it.
    current_command: i64,
}

/// An initialized entity.
struct Active {
    entity: Box<dyn DynEventSourced>,
    service_name: String,
    snapshot_every: u64,
    commands: Arc<BTreeSet<String>>,
    /// The sequence number of the last event applied.
    sequence: i64,
}

impl EventSourcedSession {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            active: None,
            current_command: 0,
        }
    }

    fn init(&mut self, init: EventSourcedInit) -> Step<EventSourcedStreamOut> {
        let span = Span::current();
        span.record("service", init.service_name.as_str());
        span.record("entity_id", init.entity_id.as_str());
        let opened = match self.registry.open_event_sourced(&init.service_name, &init.entity_id) {
            Ok(opened) => opened,
            Err(description) => return protocol_error(0, description),
        };
        let mut active = Active {
            entity: opened.entity,
            service_name: init.service_name,
            snapshot_every: opened.snapshot_every,
            commands: opened.commands,
            sequence: 0,
        };
        if let Some(snapshot) = init.snapshot {
            active.sequence = snapshot.snapshot_sequence;
            if let Some(payload) = snapshot.snapshot {
                if let Err(error) = active.entity.restore(&payload) {
                    return entity_error(
                        0,
                        format!("cannot restore the snapshot at sequence {}: {error}", active.sequence),
                    );
                }
            }
        }
        debug!(sequence = active.sequence, "entity initialized");
        self.active = Some(active);
        Step::Nothing
    }
}

impl Active {
    fn replay(&mut self, event: EventSourcedEvent) -> Step<EventSourcedStreamOut> {
        let Some(payload) = event.payload else {
            return protocol_error(0, format!("event {} has no payload", event.sequence));
        };
        if let Err(error) = self.entity.apply_event(&payload) {
            return entity_error(0, format!("cannot apply event {}: {error}", event.sequence));
        }
        self.sequence = event.sequence;
        Step::Nothing
    }

    fn command(&mut self, command: pb::Command) -> Step<EventSourcedStreamOut> {
        let command_id = command.id;
        if !self.commands.contains(&command.name) {
            return protocol_error(
                command_id,
                format!("unknown command {:?} for service {:?}", command.name, self.service_name),
            );
        }
        let command = Command::from_proto(command);
        let outcome = run_command(self.entity.as_mut(), &command, &mut self.sequence, self.snapshot_every);
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
}

impl Session for EventSourcedSession {
    type In = EventSourcedStreamIn;
    type Out = EventSourcedStreamOut;

    fn on_message(&mut self, message: EventSourcedStreamIn) -> Step<EventSourcedStreamOut> {
        self.current_command = 0;
        match (message.message, self.active.as_mut()) {
            (Some(In::Init(init)), None) => self.init(init),
            (Some(In::Init(_)), Some(_)) => protocol_error(0, "received a second init"),
            (Some(In::Event(event)), Some(active)) => active.replay(event),
            (Some(In::Event(event)), None) => {
                protocol_error(0, format!("received event {} before init", event.sequence))
            }
            (Some(In::Command(command)), Some(active)) => {
                self.current_command = command.id;
                active.command(command)
            }
            (Some(In::Command(command)), None) => protocol_error(command.id, "received a command before init"),
            (None, _) => protocol_error(0, "received an empty message"),
        }
    }

    fn on_panic(&mut self, description: String) -> EventSourcedStreamOut {
        stream_failure(self.current_command, format!("entity panicked: {description}"), true)
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
