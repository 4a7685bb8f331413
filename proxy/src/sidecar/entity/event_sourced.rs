//! The event-sourced entity protocol from the proxy's side: recover (snapshot plus
//! later events), replay them into the function, then per command hand the emitted
//! events (and snapshot) to the [`WritePipeline`], which releases the command's
//! outcome once they are durable. A failed command stores nothing.

use prost_types::Any;
use strata_proto::cloudstate::eventsourced::{
    event_sourced_stream_in, event_sourced_stream_out, EventSourcedEvent, EventSourcedInit, EventSourcedReply,
    EventSourcedSnapshot, EventSourcedStreamIn, EventSourcedStreamOut,
};
use strata_store::EntityKey;

use super::{
    conversation::{entity_stream, store_unavailable, taken_timers, Conversation},
    decision::{reply_to, required_client_outcome, Answered, Decision},
    pipeline::WritePipeline,
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{
    error::ProxyError,
    model::{EntityModel, MethodModel, Targets},
};

const EVENT_SOURCED_HANDLE: &str = "/cloudstate.eventsourced.EventSourced/handle";

pub(super) struct EventSourcedSession {
    conversation: Conversation<EventSourcedStreamIn, EventSourcedStreamOut>,
    journal: WritePipeline,
    /// The encoded size of the snapshot and events the function was given or
    /// emitted since its last snapshot.
    bytes: usize,
}

/// The encoded size of `payloads`.
fn size<'a>(payloads: impl IntoIterator<Item = &'a Any>) -> usize {
    payloads.into_iter().map(prost::Message::encoded_len).sum()
}

/// What a command adds to the journal: its events, and a snapshot taken after
/// them (never one without events).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Journal {
    pub events: Vec<Any>,
    pub snapshot: Option<Any>,
}

/// What the proxy must do with one message from the function: the pure part of
/// the protocol, tested without a function or a store.
pub(super) fn decide(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    out: EventSourcedStreamOut,
) -> Decision<Journal> {
    let answered = out.message.map(|message| match message {
        event_sourced_stream_out::Message::Reply(reply) => Answered::Reply(reply),
        event_sourced_stream_out::Message::Failure(failure) => Answered::Failure(failure),
    });
    let reply = match reply_to("event-sourced", command_id, answered, |reply: &EventSourcedReply| {
        reply.command_id
    }) {
        Ok(reply) => reply,
        Err(decision) => return decision,
    };
    if reply.snapshot.is_some() && reply.events.is_empty() {
        return Decision::Violation(format!("reply to command {command_id} has a snapshot but no events"));
    }
    let (answer, restart) =
        match required_client_outcome(from, targets, command_id, reply.client_action, reply.side_effects) {
            Ok(outcome) => outcome,
            Err(decision) => return decision,
        };
    let changes = !reply.events.is_empty();
    let journal = Journal {
        events: reply.events,
        snapshot: reply.snapshot,
    };
    Decision::persist(journal, changes, answer, restart)
}

impl Session for EventSourcedSession {
    type Heard = std::convert::Infallible;

    async fn activate(ctx: &SessionContext, entity: &EntityModel, entity_id: &str) -> Result<Self, ProxyError> {
        let key = EntityKey::new(&entity.persistence_id, entity_id);
        let recovery = ctx.store.recover(&key).await.map_err(store_unavailable)?;
        let seq_nr = recovery.last_seq_nr();
        let activation = tracing::Span::current();
        activation.record("strata.events_read", recovery.events.len());
        activation.record("strata.snapshot", recovery.snapshot.is_some());
        let bytes =
            size(recovery.snapshot.iter().map(|s| &s.payload)) + size(recovery.events.iter().map(|e| &e.payload));
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
        let from_function = ctx.function.open_entity_stream(EVENT_SOURCED_HANDLE, inbound);
        Ok(Self {
            conversation: Conversation::new(to_function, from_function, |command| EventSourcedStreamIn {
                message: Some(event_sourced_stream_in::Message::Command(command)),
            }),
            journal: WritePipeline::new(key, entity.service_name.clone(), seq_nr),
            bytes,
        })
    }

    fn is_closed(&mut self) -> bool {
        self.conversation.is_closed()
    }

    async fn run(&mut self, ctx: &SessionContext, command: EntityCommand) -> After {
        let (call, reply, mut persist) = match self.conversation.ask_and_decide(ctx, command, decide).await {
            Ok(decided) => decided,
            Err(after) => return after,
        };
        let Journal { events, snapshot } = persist.change;
        self.bytes = match &snapshot {
            Some(snapshot) => size([snapshot]),
            None => self.bytes + size(&events),
        };
        // The command's timers go in the same write as its events.
        let timers = taken_timers(ctx, &call, &mut persist.answer);
        self.journal.traced(&call.context);
        self.journal.push(ctx, reply, persist.answer, events, snapshot, timers);
        After::restarting_if(persist.restart)
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn busy(&self) -> bool {
        self.journal.writing()
    }

    async fn settle(&mut self, ctx: &SessionContext) -> bool {
        let result = self.journal.written().await;
        self.journal.complete(ctx, result)
    }

    async fn close(mut self, ctx: &SessionContext) {
        self.journal.drain(ctx).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        call::{Answer, Next, Outcome},
        fixtures,
        sidecar::entity::decision::Persist,
    };
    use strata_proto::cloudstate::{
        client_action::Action, eventsourced::EventSourcedReply, ClientAction, Failure, Forward, Reply, SideEffect,
    };

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: vec![],
        }
    }

    fn reply(command_id: i64, action: Action, events: Vec<Any>, snapshot: Option<Any>) -> EventSourcedStreamOut {
        reply_with_effects(command_id, action, events, snapshot, vec![])
    }

    fn reply_with_effects(
        command_id: i64,
        action: Action,
        events: Vec<Any>,
        snapshot: Option<Any>,
        side_effects: Vec<SideEffect>,
    ) -> EventSourcedStreamOut {
        EventSourcedStreamOut {
            message: Some(event_sourced_stream_out::Message::Reply(EventSourcedReply {
                command_id,
                client_action: Some(ClientAction { action: Some(action) }),
                side_effects,
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

    fn thing() -> Any {
        any("test.things.Thing")
    }

    #[test]
    fn reply_with_events_and_snapshot_is_persisted_then_answered() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let decision = decide(
            &method,
            &model,
            3,
            reply(3, ok(thing()), vec![any("Added")], Some(any("Snap"))),
        );
        assert_eq!(
            decision,
            Decision::Persist(Persist {
                change: Journal {
                    events: vec![any("Added")],
                    snapshot: Some(any("Snap"))
                },
                answer: Ok(Outcome::reply(Answer::new(thing()))),
                restart: false
            })
        );
    }

    #[test]
    fn a_failure_stores_nothing_and_may_restart() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let failure = Action::Failure(Failure {
            command_id: 1,
            description: "Quantity must be positive".into(),
            restart: true,
        });
        assert_eq!(
            decide(&method, &model, 1, reply(1, failure, vec![], None)),
            Decision::Persist(Persist {
                change: Journal {
                    events: vec![],
                    snapshot: None
                },
                answer: Err(ProxyError::Failure("Quantity must be positive".into())),
                restart: true
            })
        );
        // Events sent with a failure are dropped, and the function starts over.
        let failure = Action::Failure(Failure {
            command_id: 2,
            description: "no".into(),
            restart: false,
        });
        let effect = SideEffect {
            service_name: "test.things.Auditor".into(),
            command_name: "Record".into(),
            payload: None,
            synchronous: true,
            metadata: None,
        };
        assert_eq!(
            decide(
                &method,
                &model,
                2,
                reply_with_effects(2, failure, vec![any("E")], Some(any("S")), vec![effect])
            ),
            Decision::Persist(Persist {
                change: Journal {
                    events: vec![],
                    snapshot: None
                },
                answer: Err(ProxyError::Failure("no".into())),
                restart: true
            })
        );
    }

    #[test]
    fn forwards_and_effects_are_resolved_before_anything_is_stored() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let forward = Action::Forward(Forward {
            service_name: "test.things.Auditor".into(),
            command_name: "Copy".into(),
            payload: Some(fixtures::thing("top", 7)),
            metadata: None,
        });
        let effect = SideEffect {
            service_name: "test.things.Auditor".into(),
            command_name: "Record".into(),
            payload: Some(fixtures::thing_ref("top", 7)),
            synchronous: true,
            metadata: None,
        };
        let Decision::Persist(Persist {
            change: Journal { events, .. },
            answer: Ok(outcome),
            ..
        }) = decide(
            &method,
            &model,
            1,
            reply_with_effects(1, forward, vec![any("E")], None, vec![effect]),
        )
        else {
            panic!("expected a persisted forward")
        };
        assert_eq!(events, vec![any("E")]);
        let Next::Forward(call) = outcome.next else {
            panic!("expected a forward")
        };
        assert_eq!(call.target_name(), "test.things.Auditor.Copy");
        assert_eq!(call.entity_id.as_deref(), Some("top-7"));
        assert_eq!(outcome.effects.len(), 1);
        assert!(outcome.effects[0].synchronous);
        assert_eq!(outcome.effects[0].call.target_name(), "test.things.Auditor.Record");

        // --- an unknown target fails the command; its events are not stored
        let forward = Action::Forward(Forward {
            service_name: "test.things.Nowhere".into(),
            command_name: "Call".into(),
            payload: None,
            metadata: None,
        });
        let Decision::Persist(Persist {
            change: Journal { events, snapshot: None },
            answer: Err(ProxyError::Internal(message)),
            restart: true,
        }) = decide(&method, &model, 1, reply(1, forward, vec![any("E")], None))
        else {
            panic!("expected a refused forward")
        };
        assert!(events.is_empty());
        assert_eq!(
            message,
            "test.things.Warehouse.Create forwarded to test.things.Nowhere.Call, which is not a method of any known service"
        );
    }

    #[test]
    fn protocol_violations() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let decide = |id, out| decide(&method, &model, id, out);
        assert!(matches!(
            decide(2, reply(1, ok(thing()), vec![], None)),
            Decision::Violation(_)
        ));
        assert!(matches!(
            decide(1, reply(1, ok(thing()), vec![], Some(any("S")))),
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
    fn a_stream_failure_for_the_command_fails_the_stream() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let failure = EventSourcedStreamOut {
            message: Some(event_sourced_stream_out::Message::Failure(Failure {
                command_id: 4,
                description: "boom".into(),
                restart: false,
            })),
        };
        assert_eq!(
            decide(&method, &model, 4, failure),
            Decision::StreamFailure("boom".into())
        );
    }
}
