//! The value entity protocol from the proxy's side: load the stored value into
//! `Init` (always with a state, empty when nothing is stored), then per command
//! persist the update or delete before the outcome is released. A failed command
//! changes nothing.

use prost_types::Any;
use strata_proto::cloudstate::valueentity::{
    value_entity_action, value_entity_stream_in, value_entity_stream_out, ValueEntityInit, ValueEntityInitState,
    ValueEntityReply, ValueEntityStreamIn, ValueEntityStreamOut,
};
use strata_store::{EntityKey, StoreError};

use super::{
    conversation::{entity_stream, persist_timed, store_failed, store_unavailable, taken_timers, Conversation},
    decision::{reply_to, required_client_outcome, Answered, Decision},
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{
    error::ProxyError,
    model::{EntityModel, MethodModel, Targets},
    trace,
};

const VALUE_ENTITY_HANDLE: &str = "/cloudstate.valueentity.ValueEntity/handle";

pub(super) struct ValueSession {
    key: EntityKey,
    /// The encoded size of the value the function holds.
    bytes: usize,
    conversation: Conversation<ValueEntityStreamIn, ValueEntityStreamOut>,
}

/// What to do with the stored value after a command.
#[derive(Debug, Default, PartialEq)]
pub(super) enum StateChange {
    #[default]
    Keep,
    Update(Any),
    Delete,
}

/// What the proxy must do with one message from the function: the pure part of
/// the protocol, tested without a function or a store.
pub(super) fn decide(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    out: ValueEntityStreamOut,
) -> Decision<StateChange> {
    let answered = out.message.map(|message| match message {
        value_entity_stream_out::Message::Reply(reply) => Answered::Reply(reply),
        value_entity_stream_out::Message::Failure(failure) => Answered::Failure(failure),
    });
    let reply = match reply_to("value entity", command_id, answered, |reply: &ValueEntityReply| {
        reply.command_id
    }) {
        Ok(reply) => reply,
        Err(decision) => return decision,
    };
    let change = match reply.state_action.and_then(|a| a.action) {
        None => StateChange::Keep,
        Some(value_entity_action::Action::Update(update)) => match update.value {
            Some(value) => StateChange::Update(value),
            None => return Decision::Violation(format!("reply to command {command_id} updates the state to nothing")),
        },
        Some(value_entity_action::Action::Delete(_)) => StateChange::Delete,
    };
    let (answer, restart) =
        match required_client_outcome(from, targets, command_id, reply.client_action, reply.side_effects) {
            Ok(outcome) => outcome,
            Err(decision) => return decision,
        };
    let changes = change != StateChange::Keep;
    Decision::persist(change, changes, answer, restart)
}

impl Session for ValueSession {
    type Heard = std::convert::Infallible;

    async fn activate(ctx: &SessionContext, entity: &EntityModel, entity_id: &str) -> Result<Self, ProxyError> {
        let key = EntityKey::new(&entity.persistence_id, entity_id);
        let value = ctx.store.load_value(&key).await.map_err(store_unavailable)?;
        let bytes = value.as_ref().map_or(0, prost::Message::encoded_len);
        let (to_function, inbound) = entity_stream();
        let _ = to_function.send(Box::new(ValueEntityStreamIn {
            message: Some(value_entity_stream_in::Message::Init(ValueEntityInit {
                service_name: entity.service_name.clone(),
                entity_id: entity_id.to_string(),
                // Always set, as CloudState's proxy does: SDKs read the state
                // from it without checking that it is there.
                state: Some(ValueEntityInitState { value }),
            })),
        }));
        let from_function = ctx.function.open_entity_stream(VALUE_ENTITY_HANDLE, inbound);
        Ok(Self {
            key,
            bytes,
            conversation: Conversation::new(to_function, from_function, |command| ValueEntityStreamIn {
                message: Some(value_entity_stream_in::Message::Command(command)),
            }),
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
        let value = match persist.change {
            StateChange::Keep => None,
            StateChange::Update(value) => Some(Some(value)),
            StateChange::Delete => Some(None),
        };
        // The command's timers go in the same write as its value.
        let timers = taken_timers(ctx, &call, &mut persist.answer);
        let service = call.method.entity.service_name.as_str();
        let with_timers = !timers.is_empty();
        let bytes = value
            .as_ref()
            .map(|v| v.as_ref().map_or(0, prost::Message::encoded_len));
        // A value entity's write (or delete, or timers) is a `store write` step
        // of the command's trace.
        let span = || {
            trace::leaf(&call.context, || {
                trace::store_write(&self.key.entity_id, bytes.unwrap_or(0))
            })
        };
        let written = match (value, with_timers) {
            (None, false) => Ok(()),
            (Some(value), false) => persist_timed(ctx, service, span(), ctx.store.save_value(&self.key, value)).await,
            (value, true) => match ctx.store.timers() {
                Some(store) => {
                    let write = async {
                        match value {
                            Some(value) => store.save_value_with_timers(&self.key, value, timers).await,
                            None => store.write_timers(timers).await,
                        }
                    };
                    persist_timed(ctx, service, span(), write).await
                }
                None => Err(StoreError::Config("this store keeps no timers".into())),
            },
        };
        if let Err(error) = written {
            let _ = reply.send(Err(store_failed(error)));
            return After::Restart;
        }
        if with_timers {
            ctx.timers.stored();
        }
        if let Some(bytes) = bytes {
            self.bytes = bytes;
        }
        let _ = reply.send(persist.answer);
        After::restarting_if(persist.restart)
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    async fn close(self, _ctx: &SessionContext) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        call::{Answer, Outcome},
        fixtures,
        sidecar::entity::decision::Persist,
    };
    use strata_proto::cloudstate::{
        client_action::Action,
        valueentity::{ValueEntityAction, ValueEntityDelete, ValueEntityReply, ValueEntityUpdate},
        ClientAction, Failure, Reply,
    };

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: vec![],
        }
    }

    fn reply(command_id: i64, action: Action, state: Option<value_entity_action::Action>) -> ValueEntityStreamOut {
        ValueEntityStreamOut {
            message: Some(value_entity_stream_out::Message::Reply(ValueEntityReply {
                command_id,
                client_action: Some(ClientAction { action: Some(action) }),
                side_effects: vec![],
                state_action: state.map(|a| ValueEntityAction { action: Some(a) }),
            })),
        }
    }

    fn ok() -> Action {
        Action::Reply(Reply {
            payload: Some(any("test.things.Thing")),
            metadata: None,
        })
    }

    #[test]
    fn update_delete_and_keep() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let decide = |id, out| decide(&method, &model, id, out);
        let update = value_entity_action::Action::Update(ValueEntityUpdate { value: Some(any("V")) });
        assert_eq!(
            decide(1, reply(1, ok(), Some(update))),
            Decision::Persist(Persist {
                change: StateChange::Update(any("V")),
                answer: Ok(Outcome::reply(Answer::new(any("test.things.Thing")))),
                restart: false
            })
        );
        let delete = value_entity_action::Action::Delete(ValueEntityDelete {});
        assert!(matches!(
            decide(2, reply(2, ok(), Some(delete))),
            Decision::Persist(Persist {
                change: StateChange::Delete,
                ..
            })
        ));
        assert!(matches!(
            decide(3, reply(3, ok(), None)),
            Decision::Persist(Persist {
                change: StateChange::Keep,
                ..
            })
        ));
    }

    #[test]
    fn a_failure_changes_nothing() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        let failure = Action::Failure(Failure {
            command_id: 1,
            description: "no".into(),
            restart: false,
        });
        let update = value_entity_action::Action::Update(ValueEntityUpdate { value: Some(any("V")) });
        assert_eq!(
            decide(&method, &model, 1, reply(1, failure, Some(update))),
            Decision::Persist(Persist {
                change: StateChange::Keep,
                answer: Err(ProxyError::Failure("no".into())),
                restart: true
            })
        );
    }

    #[test]
    fn wrong_command_id_is_a_violation() {
        let (model, method) = fixtures::method("/test.things.Warehouse/Create");
        assert!(matches!(
            decide(&method, &model, 2, reply(5, ok(), None)),
            Decision::Violation(_)
        ));
    }
}
