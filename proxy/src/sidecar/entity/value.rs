//! The value entity protocol from the proxy's side: load the stored value into
//! `Init` (always with a state, empty when nothing is stored), then per command
//! persist the update or delete before the outcome is released. A failed command
//! changes nothing.

use prost_types::Any;
use strata_proto::cloudstate::valueentity::{
    value_entity_action, value_entity_stream_in, value_entity_stream_out, ValueEntityInit, ValueEntityInitState,
    ValueEntityStreamIn, ValueEntityStreamOut,
};
use strata_store::EntityKey;

use super::{
    conversation::{
        client_outcome, entity_stream, fail_stream, persist_timed, report_refused, store_failed, store_unavailable,
        stream_failure, violation, Asked, Conversation,
    },
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{
    call::{Outcome, Targets},
    error::ProxyError,
    model::{EntityModel, MethodModel},
};

const VALUE_ENTITY_HANDLE: &str = "/cloudstate.valueentity.ValueEntity/handle";

pub(super) struct ValueSession {
    key: EntityKey,
    /// The encoded size of the value the function holds.
    bytes: usize,
    conversation: Conversation<ValueEntityStreamIn, ValueEntityStreamOut>,
}

/// What to do with the stored value after a command.
#[derive(Debug, PartialEq)]
pub(super) enum StateChange {
    Keep,
    Update(Any),
    Delete,
}

#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    Persist {
        change: StateChange,
        answer: Result<Outcome, ProxyError>,
        restart: bool,
    },
    StreamFailure(String),
    Violation(String),
}

pub(super) fn decide(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    out: ValueEntityStreamOut,
) -> Decision {
    let reply = match out.message {
        Some(value_entity_stream_out::Message::Reply(reply)) => reply,
        Some(value_entity_stream_out::Message::Failure(failure)) => {
            return match stream_failure(command_id, failure) {
                Ok(description) => Decision::StreamFailure(description),
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
    let Some((answer, restart)) = client_outcome(from, targets, reply.client_action, reply.side_effects) else {
        return Decision::Violation(format!("reply to command {command_id} has no client action"));
    };
    if answer.is_err() {
        // A function that changed its value for a failed command holds a value
        // the store lacks, so it starts over from the store.
        return Decision::Persist {
            restart: restart || change != StateChange::Keep,
            change: StateChange::Keep,
            answer,
        };
    }
    Decision::Persist {
        change,
        answer,
        restart,
    }
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
            conversation: Conversation::new(to_function, from_function),
        })
    }

    fn is_closed(&mut self) -> bool {
        self.conversation.is_closed()
    }

    async fn run(&mut self, ctx: &SessionContext, command: EntityCommand) -> After {
        let wrap = |command| ValueEntityStreamIn {
            message: Some(value_entity_stream_in::Message::Command(command)),
        };
        let Asked {
            call, reply, id, out, ..
        } = match self.conversation.ask(ctx, command, wrap).await {
            Ok(asked) => asked,
            Err(after) => return after,
        };
        let (change, answer, restart) = match decide(&call.method, ctx.targets.as_ref(), id, out) {
            Decision::Violation(what) => return violation(ctx, &call, reply, &what),
            Decision::StreamFailure(description) => return fail_stream(reply, description),
            Decision::Persist {
                change,
                answer,
                restart,
            } => (change, answer, restart),
        };
        report_refused(ctx, &answer);
        let value = match change {
            StateChange::Keep => None,
            StateChange::Update(value) => Some(Some(value)),
            StateChange::Delete => Some(None),
        };
        if let Some(value) = value {
            let service = call.method.entity.service_name.as_str();
            let bytes = value.as_ref().map_or(0, prost::Message::encoded_len);
            if let Err(error) = persist_timed(ctx, service, ctx.store.save_value(&self.key, value)).await {
                let _ = reply.send(Err(store_failed(error)));
                return After::Restart;
            }
            self.bytes = bytes;
        }
        let _ = reply.send(answer);
        if restart {
            After::Restart
        } else {
            After::Continue
        }
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
            Decision::Persist {
                change: StateChange::Update(any("V")),
                answer: Ok(Outcome::reply(Answer::new(any("test.things.Thing")))),
                restart: false
            }
        );
        let delete = value_entity_action::Action::Delete(ValueEntityDelete {});
        assert!(matches!(
            decide(2, reply(2, ok(), Some(delete))),
            Decision::Persist {
                change: StateChange::Delete,
                ..
            }
        ));
        assert!(matches!(
            decide(3, reply(3, ok(), None)),
            Decision::Persist {
                change: StateChange::Keep,
                ..
            }
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
            Decision::Persist {
                change: StateChange::Keep,
                answer: Err(ProxyError::Failure("no".into())),
                restart: true,
            }
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
