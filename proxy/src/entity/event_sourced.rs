//! The event-sourced entity protocol from the proxy's side: recover (snapshot plus
//! later events), replay them into the function, then per command hand the emitted
//! events (and snapshot) to the [`WritePipeline`], which releases the reply once
//! they are durable.

use prost_types::Any;
use strata_proto::cloudstate::eventsourced::{
    event_sourced_stream_in, event_sourced_stream_out, EventSourcedEvent, EventSourcedInit, EventSourcedSnapshot,
    EventSourcedStreamIn, EventSourcedStreamOut,
};
use strata_store::EntityKey;

use super::{
    actor::After,
    pipeline::WritePipeline,
    protocol::{client_answer, entity_stream, store_unavailable, stream_failure, violation, Asked, Conversation},
    EntityCommand, Shared,
};
use crate::{error::ProxyError, model::EntityModel};

const EVENT_SOURCED_HANDLE: &str = "/cloudstate.eventsourced.EventSourced/handle";

pub(in crate::entity) struct EventSourcedSession {
    conversation: Conversation<EventSourcedStreamIn, EventSourcedStreamOut>,
    pub(in crate::entity) journal: WritePipeline,
}

/// What the proxy must do with one message from the function: the pure part of
/// the protocol, tested without a function or a store.
#[derive(Debug, PartialEq)]
pub(in crate::entity) enum Decision {
    /// Persist `events` (and `snapshot`), then answer the client with `answer`.
    Persist {
        events: Vec<Any>,
        snapshot: Option<Any>,
        answer: Result<Any, ProxyError>,
        restart: bool,
    },
    /// The function broke the protocol: report it, fail the command, restart.
    Violation(String),
}

pub(in crate::entity) fn decide(command_id: i64, out: EventSourcedStreamOut) -> Decision {
    let reply = match out.message {
        Some(event_sourced_stream_out::Message::Reply(reply)) => reply,
        Some(event_sourced_stream_out::Message::Failure(failure)) => {
            return match stream_failure(command_id, failure) {
                Ok((answer, restart)) => Decision::Persist {
                    events: Vec::new(),
                    snapshot: None,
                    answer,
                    restart,
                },
                Err(what) => Decision::Violation(what),
            };
        }
        None => return Decision::Violation("empty message on the event-sourced stream".into()),
    };
    if reply.command_id != command_id {
        return Decision::Violation(format!(
            "reply for command {} while command {command_id} was in flight",
            reply.command_id
        ));
    }
    if reply.snapshot.is_some() && reply.events.is_empty() {
        return Decision::Violation(format!("reply to command {command_id} has a snapshot but no events"));
    }
    if !reply.side_effects.is_empty() {
        tracing::warn!(
            count = reply.side_effects.len(),
            "side effects are not supported yet and were dropped"
        );
    }
    let Some((answer, restart)) = client_answer(reply.client_action) else {
        return Decision::Violation(format!("reply to command {command_id} has no client action"));
    };
    Decision::Persist {
        events: reply.events,
        snapshot: reply.snapshot,
        answer,
        restart,
    }
}

impl EventSourcedSession {
    pub(in crate::entity) async fn activate(
        shared: &Shared,
        entity: &EntityModel,
        entity_id: &str,
    ) -> Result<Self, ProxyError> {
        let key = EntityKey::new(&entity.persistence_id, entity_id);
        let recovery = shared.store.recover(&key).await.map_err(store_unavailable)?;
        let seq_nr = recovery.last_seq_nr();
        let (to_function, inbound) = entity_stream();
        let send = |message| {
            let _ = to_function.send(Box::new(EventSourcedStreamIn { message: Some(message) }));
        };
        send(event_sourced_stream_in::Message::Init(EventSourcedInit {
            service_name: entity.service_name.clone(),
            entity_id: entity_id.to_string(),
            snapshot: recovery.snapshot.map(|s| EventSourcedSnapshot {
                snapshot_sequence: s.seq_nr,
                snapshot: Some(s.payload),
            }),
        }));
        for event in recovery.events {
            send(event_sourced_stream_in::Message::Event(EventSourcedEvent {
                sequence: event.seq_nr,
                payload: Some(event.payload),
            }));
        }
        let from_function = shared.function.open_entity_stream(EVENT_SOURCED_HANDLE, inbound);
        Ok(Self {
            conversation: Conversation::new(to_function, from_function),
            journal: WritePipeline::new(key, entity.service_name.clone(), seq_nr),
        })
    }

    pub(in crate::entity) fn is_closed(&mut self) -> bool {
        self.conversation.is_closed()
    }

    pub(in crate::entity) async fn run(&mut self, shared: &Shared, command: EntityCommand, entity_id: &str) -> After {
        let wrap = |command| EventSourcedStreamIn {
            message: Some(event_sourced_stream_in::Message::Command(command)),
        };
        let Some(Asked { method, reply, id, out }) = self.conversation.ask(shared, command, entity_id, wrap).await
        else {
            return After::Restart;
        };
        match decide(id, out) {
            Decision::Violation(what) => violation(shared, (&method, reply), entity_id, &what),
            Decision::Persist {
                events,
                snapshot,
                answer,
                restart,
            } => {
                self.journal.push(shared, reply, answer, events, snapshot);
                if restart {
                    After::Restart
                } else {
                    After::Continue
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::cloudstate::{
        client_action::Action, eventsourced::EventSourcedReply, ClientAction, Failure, Reply,
    };

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: vec![1, 2, 3],
        }
    }

    fn reply(command_id: i64, action: Action, events: Vec<Any>, snapshot: Option<Any>) -> EventSourcedStreamOut {
        EventSourcedStreamOut {
            message: Some(event_sourced_stream_out::Message::Reply(EventSourcedReply {
                command_id,
                client_action: Some(ClientAction { action: Some(action) }),
                side_effects: vec![],
                events,
                snapshot,
            })),
        }
    }

    fn ok(payload: Any) -> Action {
        Action::Reply(Reply {
            payload: Some(payload),
            metadata: None,
        })
    }

    #[test]
    fn reply_with_events_and_snapshot_is_persisted_then_answered() {
        let decision = decide(3, reply(3, ok(any("Empty")), vec![any("ItemAdded")], Some(any("Cart"))));
        assert_eq!(
            decision,
            Decision::Persist {
                events: vec![any("ItemAdded")],
                snapshot: Some(any("Cart")),
                answer: Ok(any("Empty")),
                restart: false,
            }
        );
    }

    #[test]
    fn failure_action_reaches_the_client_and_may_restart() {
        let failure = Action::Failure(Failure {
            command_id: 1,
            description: "Quantity must be positive".into(),
            restart: true,
        });
        assert_eq!(
            decide(1, reply(1, failure, vec![], None)),
            Decision::Persist {
                events: vec![],
                snapshot: None,
                answer: Err(ProxyError::Failure("Quantity must be positive".into())),
                restart: true,
            }
        );
    }

    #[test]
    fn protocol_violations() {
        assert!(matches!(
            decide(2, reply(1, ok(any("E")), vec![], None)),
            Decision::Violation(_)
        ));
        assert!(matches!(
            decide(1, reply(1, ok(any("E")), vec![], Some(any("S")))),
            Decision::Violation(_)
        ));
        assert!(matches!(
            decide(1, EventSourcedStreamOut { message: None }),
            Decision::Violation(_)
        ));
        let stray_failure = EventSourcedStreamOut {
            message: Some(event_sourced_stream_out::Message::Failure(Failure {
                command_id: 9,
                description: "x".into(),
                restart: false,
            })),
        };
        assert!(matches!(decide(1, stray_failure), Decision::Violation(_)));
    }

    #[test]
    fn stream_failure_for_the_command_fails_it_and_restarts() {
        let failure = EventSourcedStreamOut {
            message: Some(event_sourced_stream_out::Message::Failure(Failure {
                command_id: 4,
                description: "boom".into(),
                restart: false,
            })),
        };
        assert_eq!(
            decide(4, failure),
            Decision::Persist {
                events: vec![],
                snapshot: None,
                answer: Err(ProxyError::Failure("boom".into())),
                restart: true,
            }
        );
    }
}
