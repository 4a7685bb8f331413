//! The protocol messages the cases expect and send, built the way the cases read:
//! `es::reply(2, response("AB"), Effects::events(["B"]))`. Owns construction only.

use prost::{Message, Name};
use prost_types::Any;
use strata_proto::cloudstate::{self as pb, client_action::Action};

/// `message` packed as the SDKs and proxies pack it.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{}", M::full_name()),
        value: message.encode_to_vec(),
    }
}

pub fn side_effect(service: &str, command: &str, payload: Any, synchronous: bool) -> pb::SideEffect {
    pb::SideEffect {
        service_name: service.into(),
        command_name: command.into(),
        payload: Some(payload),
        synchronous,
        metadata: None,
    }
}

/// What a reply carries besides its client action: events and a snapshot (event
/// sourced), a state action (value entity), side effects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub events: Vec<Any>,
    pub snapshot: Option<Any>,
    pub state: Option<pb::valueentity::ValueEntityAction>,
    pub side_effects: Vec<pb::SideEffect>,
}

impl Effects {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn events(events: impl IntoIterator<Item = Any>) -> Self {
        Self {
            events: events.into_iter().collect(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn with_snapshot(mut self, snapshot: Any) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    pub fn update(value: Any) -> Self {
        Self {
            state: Some(pb::valueentity::ValueEntityAction {
                action: Some(pb::valueentity::value_entity_action::Action::Update(
                    pb::valueentity::ValueEntityUpdate { value: Some(value) },
                )),
            }),
            ..Self::default()
        }
    }

    pub fn delete() -> Self {
        Self {
            state: Some(pb::valueentity::ValueEntityAction {
                action: Some(pb::valueentity::value_entity_action::Action::Delete(
                    pb::valueentity::ValueEntityDelete {},
                )),
            }),
            ..Self::default()
        }
    }

    pub fn side_effects(effects: impl IntoIterator<Item = pb::SideEffect>) -> Self {
        Self {
            side_effects: effects.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Both: events and effects in order, the first snapshot and state action.
    #[must_use]
    pub fn and(mut self, other: Effects) -> Self {
        self.events.extend(other.events);
        self.snapshot = self.snapshot.or(other.snapshot);
        self.state = self.state.or(other.state);
        self.side_effects.extend(other.side_effects);
        self
    }
}

fn reply_action(payload: Any) -> Option<pb::ClientAction> {
    Some(pb::ClientAction {
        action: Some(Action::Reply(pb::Reply {
            payload: Some(payload),
            metadata: None,
        })),
    })
}

fn forward_action(service: &str, command: &str, payload: Any) -> Option<pb::ClientAction> {
    Some(pb::ClientAction {
        action: Some(Action::Forward(pb::Forward {
            service_name: service.into(),
            command_name: command.into(),
            payload: Some(payload),
            metadata: None,
        })),
    })
}

fn failure_action(command_id: i64, description: &str, restart: bool) -> Option<pb::ClientAction> {
    Some(pb::ClientAction {
        action: Some(Action::Failure(pb::Failure {
            command_id,
            description: description.into(),
            restart,
        })),
    })
}

fn command(id: i64, entity_id: &str, name: &str, payload: Any) -> pb::Command {
    pb::Command {
        entity_id: entity_id.into(),
        id,
        name: name.into(),
        payload: Some(payload),
        streamed: false,
        metadata: None,
    }
}

/// The event-sourced protocol.
pub mod es {
    use super::*;
    use pb::eventsourced::{
        event_sourced_stream_in::Message as In, event_sourced_stream_out::Message as Out, EventSourcedEvent,
        EventSourcedInit, EventSourcedReply, EventSourcedSnapshot, EventSourcedStreamIn, EventSourcedStreamOut,
    };

    pub fn init(service: &str, entity_id: &str) -> EventSourcedStreamIn {
        init_at(service, entity_id, None)
    }

    pub fn init_with_snapshot(service: &str, entity_id: &str, sequence: i64, snapshot: Any) -> EventSourcedStreamIn {
        init_at(
            service,
            entity_id,
            Some(EventSourcedSnapshot {
                snapshot_sequence: sequence,
                snapshot: Some(snapshot),
            }),
        )
    }

    fn init_at(service: &str, entity_id: &str, snapshot: Option<EventSourcedSnapshot>) -> EventSourcedStreamIn {
        EventSourcedStreamIn {
            message: Some(In::Init(EventSourcedInit {
                service_name: service.into(),
                entity_id: entity_id.into(),
                snapshot,
            })),
        }
    }

    pub fn event(sequence: i64, payload: Any) -> EventSourcedStreamIn {
        EventSourcedStreamIn {
            message: Some(In::Event(EventSourcedEvent {
                sequence,
                payload: Some(payload),
            })),
        }
    }

    pub fn command(id: i64, entity_id: &str, name: &str, payload: Any) -> EventSourcedStreamIn {
        EventSourcedStreamIn {
            message: Some(In::Command(super::command(id, entity_id, name, payload))),
        }
    }

    fn reply_with(command_id: i64, client_action: Option<pb::ClientAction>, effects: Effects) -> EventSourcedStreamOut {
        EventSourcedStreamOut {
            message: Some(Out::Reply(EventSourcedReply {
                command_id,
                client_action,
                side_effects: effects.side_effects,
                events: effects.events,
                snapshot: effects.snapshot,
            })),
        }
    }

    pub fn reply(command_id: i64, payload: Any, effects: Effects) -> EventSourcedStreamOut {
        reply_with(command_id, reply_action(payload), effects)
    }

    pub fn forward(
        command_id: i64,
        service: &str,
        name: &str,
        payload: Any,
        effects: Effects,
    ) -> EventSourcedStreamOut {
        reply_with(command_id, forward_action(service, name, payload), effects)
    }

    pub fn action_failure(command_id: i64, description: &str, restart: bool) -> EventSourcedStreamOut {
        reply_with(
            command_id,
            failure_action(command_id, description, restart),
            Effects::none(),
        )
    }
}

/// The value entity protocol.
pub mod ve {
    use super::*;
    use pb::valueentity::{
        value_entity_stream_in::Message as In, value_entity_stream_out::Message as Out, ValueEntityInit,
        ValueEntityInitState, ValueEntityReply, ValueEntityStreamIn, ValueEntityStreamOut,
    };

    /// `Init` with an empty state, as proxies send for an entity with none stored.
    pub fn init(service: &str, entity_id: &str) -> ValueEntityStreamIn {
        init_with(service, entity_id, None)
    }

    pub fn init_with(service: &str, entity_id: &str, state: Option<Any>) -> ValueEntityStreamIn {
        ValueEntityStreamIn {
            message: Some(In::Init(ValueEntityInit {
                service_name: service.into(),
                entity_id: entity_id.into(),
                state: Some(ValueEntityInitState { value: state }),
            })),
        }
    }

    pub fn command(id: i64, entity_id: &str, name: &str, payload: Any) -> ValueEntityStreamIn {
        ValueEntityStreamIn {
            message: Some(In::Command(super::command(id, entity_id, name, payload))),
        }
    }

    fn reply_with(command_id: i64, client_action: Option<pb::ClientAction>, effects: Effects) -> ValueEntityStreamOut {
        ValueEntityStreamOut {
            message: Some(Out::Reply(ValueEntityReply {
                command_id,
                client_action,
                side_effects: effects.side_effects,
                state_action: effects.state,
            })),
        }
    }

    pub fn reply(command_id: i64, payload: Any, effects: Effects) -> ValueEntityStreamOut {
        reply_with(command_id, reply_action(payload), effects)
    }

    pub fn forward(command_id: i64, service: &str, name: &str, payload: Any, effects: Effects) -> ValueEntityStreamOut {
        reply_with(command_id, forward_action(service, name, payload), effects)
    }

    pub fn action_failure(command_id: i64, description: &str) -> ValueEntityStreamOut {
        reply_with(
            command_id,
            failure_action(command_id, description, false),
            Effects::none(),
        )
    }
}

/// The CRDT protocol.
pub mod crdt {
    use super::*;
    use pb::crdt::{
        crdt_state_action::Action as StateAction, crdt_stream_in::Message as In, crdt_stream_out::Message as Out,
        CrdtDelete, CrdtDelta, CrdtInit, CrdtReply, CrdtStateAction, CrdtStreamIn, CrdtStreamOut, CrdtWriteConsistency,
    };

    /// `CrdtInit` for an entity with no state stored.
    pub fn init(service: &str, entity_id: &str) -> CrdtStreamIn {
        init_with(service, entity_id, None)
    }

    /// `CrdtInit` carrying the stored state as a delta.
    pub fn init_with(service: &str, entity_id: &str, delta: Option<CrdtDelta>) -> CrdtStreamIn {
        CrdtStreamIn {
            message: Some(In::Init(CrdtInit {
                service_name: service.into(),
                entity_id: entity_id.into(),
                delta,
            })),
        }
    }

    /// A change another replica made, as the proxy passes it on.
    pub fn delta(delta: CrdtDelta) -> CrdtStreamIn {
        CrdtStreamIn {
            message: Some(In::Delta(delta)),
        }
    }

    /// The entity was deleted (by another replica).
    pub fn delete() -> CrdtStreamIn {
        CrdtStreamIn {
            message: Some(In::Delete(CrdtDelete {})),
        }
    }

    pub fn command(id: i64, entity_id: &str, name: &str, payload: Any) -> CrdtStreamIn {
        CrdtStreamIn {
            message: Some(In::Command(super::command(id, entity_id, name, payload))),
        }
    }

    /// A streamed command (the client asked for a stream).
    pub fn streamed_command(id: i64, entity_id: &str, name: &str, payload: Any) -> CrdtStreamIn {
        let mut command = super::command(id, entity_id, name, payload);
        command.streamed = true;
        CrdtStreamIn {
            message: Some(In::Command(command)),
        }
    }

    /// The client of streamed command `id` cancelled.
    pub fn stream_cancelled(id: i64, entity_id: &str) -> CrdtStreamIn {
        CrdtStreamIn {
            message: Some(In::StreamCancelled(pb::StreamCancelled {
                entity_id: entity_id.into(),
                id,
            })),
        }
    }

    /// The reply that keeps a streamed command open (`None`: no message yet).
    pub fn streamed_reply(
        command_id: i64,
        payload: Option<Any>,
        state_action: Option<CrdtStateAction>,
    ) -> CrdtStreamOut {
        let mut out = reply_with(command_id, payload.and_then(reply_action), state_action, vec![]);
        if let Some(Out::Reply(reply)) = &mut out.message {
            reply.streamed = true;
        }
        out
    }

    /// A later message of a streamed command.
    pub fn streamed(command_id: i64, payload: Any, effects: Effects, end_stream: bool) -> CrdtStreamOut {
        CrdtStreamOut {
            message: Some(Out::StreamedMessage(pb::crdt::CrdtStreamedMessage {
                command_id,
                client_action: reply_action(payload),
                side_effects: effects.side_effects,
                end_stream,
            })),
        }
    }

    /// The function's answer to a cancelled stream.
    pub fn stream_cancelled_response(command_id: i64, state_action: Option<CrdtStateAction>) -> CrdtStreamOut {
        stream_cancelled_effects(command_id, state_action, Effects::none())
    }

    /// The function's answer to a cancelled stream, with side effects.
    pub fn stream_cancelled_effects(
        command_id: i64,
        state_action: Option<CrdtStateAction>,
        effects: Effects,
    ) -> CrdtStreamOut {
        CrdtStreamOut {
            message: Some(Out::StreamCancelledResponse(pb::crdt::CrdtStreamCancelledResponse {
                command_id,
                side_effects: effects.side_effects,
                state_action,
            })),
        }
    }

    /// The function's change of the state, with local write consistency (what
    /// strata-sdk sends).
    pub fn update(delta: CrdtDelta) -> Option<CrdtStateAction> {
        Some(CrdtStateAction {
            action: Some(StateAction::Update(delta)),
            write_consistency: CrdtWriteConsistency::Local as i32,
        })
    }

    /// The function deletes the entity, with local write consistency.
    pub fn deleted() -> Option<CrdtStateAction> {
        Some(CrdtStateAction {
            action: Some(StateAction::Delete(CrdtDelete {})),
            write_consistency: CrdtWriteConsistency::Local as i32,
        })
    }

    fn reply_with(
        command_id: i64,
        client_action: Option<pb::ClientAction>,
        state_action: Option<CrdtStateAction>,
        side_effects: Vec<pb::SideEffect>,
    ) -> CrdtStreamOut {
        CrdtStreamOut {
            message: Some(Out::Reply(CrdtReply {
                command_id,
                client_action,
                side_effects,
                state_action,
                streamed: false,
            })),
        }
    }

    pub fn reply(command_id: i64, payload: Any, state_action: Option<CrdtStateAction>) -> CrdtStreamOut {
        reply_with(command_id, reply_action(payload), state_action, vec![])
    }

    /// A reply with side effects (an `Effects`' state action is a value
    /// entity's; the CRDT's is `state_action`).
    pub fn reply_effects(
        command_id: i64,
        payload: Any,
        state_action: Option<CrdtStateAction>,
        effects: Effects,
    ) -> CrdtStreamOut {
        reply_with(command_id, reply_action(payload), state_action, effects.side_effects)
    }

    pub fn forward(
        command_id: i64,
        service: &str,
        name: &str,
        payload: Any,
        state_action: Option<CrdtStateAction>,
        effects: Effects,
    ) -> CrdtStreamOut {
        reply_with(
            command_id,
            forward_action(service, name, payload),
            state_action,
            effects.side_effects,
        )
    }

    pub fn action_failure(command_id: i64, description: &str) -> CrdtStreamOut {
        reply_with(command_id, failure_action(command_id, description, false), None, vec![])
    }
}

/// The action protocol.
pub mod action {
    use super::*;
    use pb::action::{action_response::Response, ActionCommand, ActionResponse};

    /// The first command of a call (no payload), or a unary call's command.
    pub fn command(service: &str, name: &str, payload: Option<Any>) -> ActionCommand {
        ActionCommand {
            service_name: service.into(),
            name: name.into(),
            payload,
            metadata: None,
        }
    }

    /// A command after the first of a streamed call: only the message.
    pub fn message(payload: Any) -> ActionCommand {
        ActionCommand {
            payload: Some(payload),
            ..Default::default()
        }
    }

    pub fn reply(payload: Any, side_effects: Vec<pb::SideEffect>) -> ActionResponse {
        ActionResponse {
            response: Some(Response::Reply(pb::Reply {
                payload: Some(payload),
                metadata: None,
            })),
            side_effects,
        }
    }

    pub fn no_reply(side_effects: Vec<pb::SideEffect>) -> ActionResponse {
        ActionResponse {
            response: None,
            side_effects,
        }
    }

    pub fn forward(service: &str, name: &str, payload: Any, side_effects: Vec<pb::SideEffect>) -> ActionResponse {
        ActionResponse {
            response: Some(Response::Forward(pb::Forward {
                service_name: service.into(),
                command_name: name.into(),
                payload: Some(payload),
                metadata: None,
            })),
            side_effects,
        }
    }

    pub fn failure(description: &str, side_effects: Vec<pb::SideEffect>) -> ActionResponse {
        ActionResponse {
            response: Some(Response::Failure(pb::Failure {
                command_id: 0,
                description: description.into(),
                restart: false,
            })),
            side_effects,
        }
    }
}
