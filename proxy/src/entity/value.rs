//! The value entity protocol from the proxy's side: load the stored value into
//! Init, then per command persist the update or delete before the reply is
//! released.

use prost_types::Any;
use strata_proto::cloudstate::valueentity::{
    value_entity_action, value_entity_stream_in, value_entity_stream_out, ValueEntityInit, ValueEntityInitState,
    ValueEntityStreamIn, ValueEntityStreamOut,
};
use strata_store::EntityKey;

use super::{
    actor::After,
    protocol::{
        client_answer, entity_stream, persist_timed, store_failed, store_unavailable, stream_failure, violation, Asked,
        Conversation,
    },
    EntityCommand, Shared,
};
use crate::{error::ProxyError, model::EntityModel};

const VALUE_ENTITY_HANDLE: &str = "/cloudstate.valueentity.ValueEntity/handle";

pub(in crate::entity) struct ValueSession {
    key: EntityKey,
    conversation: Conversation<ValueEntityStreamIn, ValueEntityStreamOut>,
}

/// What to do with the stored value after a command.
#[derive(Debug, PartialEq)]
pub(in crate::entity) enum StateChange {
    Keep,
    Update(Any),
    Delete,
}

#[derive(Debug, PartialEq)]
pub(in crate::entity) enum Decision {
    Persist {
        change: StateChange,
        answer: Result<Any, ProxyError>,
        restart: bool,
    },
    Violation(String),
}

pub(in crate::entity) fn decide(command_id: i64, out: ValueEntityStreamOut) -> Decision {
    let reply = match out.message {
        Some(value_entity_stream_out::Message::Reply(reply)) => reply,
        Some(value_entity_stream_out::Message::Failure(failure)) => {
            return match stream_failure(command_id, failure) {
                Ok((answer, restart)) => Decision::Persist {
                    change: StateChange::Keep,
                    answer,
                    restart,
                },
                Err(what) => Decision::Violation(what),
            };
        }
        None => return Decision::Violation("empty message on the value entity stream".into()),
    };
    if reply.command_id != command_id {
        return Decision::Violation(format!(
            "reply for command {} while command {command_id} was in flight",
            reply.command_id
        ));
    }
    let change = match reply.state_action.and_then(|a| a.action) {
        None => StateChange::Keep,
        Some(value_entity_action::Action::Update(update)) => match update.value {
            Some(value) => StateChange::Update(value),
            None => return Decision::Violation(format!("reply to command {command_id} updates the state to nothing")),
        },
        Some(value_entity_action::Action::Delete(_)) => StateChange::Delete,
    };
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
        change,
        answer,
        restart,
    }
}

impl ValueSession {
    pub(in crate::entity) async fn activate(
        shared: &Shared,
        entity: &EntityModel,
        entity_id: &str,
    ) -> Result<Self, ProxyError> {
        let key = EntityKey::new(&entity.persistence_id, entity_id);
        let value = shared.store.load_value(&key).await.map_err(store_unavailable)?;
        let (to_function, inbound) = entity_stream();
        let _ = to_function.send(Box::new(ValueEntityStreamIn {
            message: Some(value_entity_stream_in::Message::Init(ValueEntityInit {
                service_name: entity.service_name.clone(),
                entity_id: entity_id.to_string(),
                state: value.map(|v| ValueEntityInitState { value: Some(v) }),
            })),
        }));
        let from_function = shared.function.open_entity_stream(VALUE_ENTITY_HANDLE, inbound);
        Ok(Self {
            key,
            conversation: Conversation::new(to_function, from_function),
        })
    }

    pub(in crate::entity) fn is_closed(&mut self) -> bool {
        self.conversation.is_closed()
    }

    pub(in crate::entity) async fn run(&mut self, shared: &Shared, command: EntityCommand, entity_id: &str) -> After {
        let wrap = |command| ValueEntityStreamIn {
            message: Some(value_entity_stream_in::Message::Command(command)),
        };
        let Some(Asked { method, reply, id, out }) = self.conversation.ask(shared, command, entity_id, wrap).await
        else {
            return After::Restart;
        };
        match decide(id, out) {
            Decision::Violation(what) => violation(shared, (&method, reply), entity_id, &what),
            Decision::Persist {
                change,
                answer,
                restart,
            } => {
                let value = match change {
                    StateChange::Keep => None,
                    StateChange::Update(value) => Some(Some(value)),
                    StateChange::Delete => Some(None),
                };
                let saved = match value {
                    None => Ok(()),
                    Some(value) => {
                        let service = method.entity.service_name.as_str();
                        persist_timed(shared, service, shared.store.save_value(&self.key, value)).await
                    }
                };
                if let Err(error) = saved {
                    let _ = reply.send(Err(store_failed(error)));
                    return After::Restart;
                }
                let _ = reply.send(answer);
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
        client_action::Action,
        valueentity::{ValueEntityAction, ValueEntityDelete, ValueEntityReply, ValueEntityUpdate},
        ClientAction, Reply,
    };

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: vec![7],
        }
    }

    fn reply(command_id: i64, state: Option<value_entity_action::Action>) -> ValueEntityStreamOut {
        ValueEntityStreamOut {
            message: Some(value_entity_stream_out::Message::Reply(ValueEntityReply {
                command_id,
                client_action: Some(ClientAction {
                    action: Some(Action::Reply(Reply {
                        payload: Some(any("Empty")),
                        metadata: None,
                    })),
                }),
                side_effects: vec![],
                state_action: state.map(|a| ValueEntityAction { action: Some(a) }),
            })),
        }
    }

    #[test]
    fn update_delete_and_keep() {
        let update = value_entity_action::Action::Update(ValueEntityUpdate { value: Some(any("V")) });
        assert_eq!(
            decide(1, reply(1, Some(update))),
            Decision::Persist {
                change: StateChange::Update(any("V")),
                answer: Ok(any("Empty")),
                restart: false
            }
        );
        let delete = value_entity_action::Action::Delete(ValueEntityDelete {});
        assert!(matches!(
            decide(2, reply(2, Some(delete))),
            Decision::Persist {
                change: StateChange::Delete,
                ..
            }
        ));
        assert!(matches!(
            decide(3, reply(3, None)),
            Decision::Persist {
                change: StateChange::Keep,
                ..
            }
        ));
    }

    #[test]
    fn wrong_command_id_is_a_violation() {
        assert!(matches!(decide(2, reply(5, None)), Decision::Violation(_)));
    }
}
