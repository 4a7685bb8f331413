//! Value entities: the trait users implement, the context through which a command reads
//! and replaces the entity's one stored value, and the pure step that turns a command
//! into a reply and a state action. The protocol stream lives in `value_entity_session`.

use std::{sync::Arc, time::Duration};

use prost::{Message, Name};
use prost_types::Any;
use strata_proto::cloudstate::valueentity as pb;

use crate::{payload, Command, EntityError, Failure, Reply};

/// An entity whose state is one value, read and replaced as a whole.
///
/// The SDK holds the value and hands it to each command through [`ValueContext`]; the
/// proxy persists an update or deletion before the reply reaches the client.
pub trait ValueEntity: Send + 'static {
    /// The message the value is stored as.
    type State: Message + Name + Default;

    /// Handles one command: reads `ctx.state()`, maybe updates or deletes it, and
    /// answers. On `Err` the update or deletion is discarded.
    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, Self::State>) -> Result<Reply, Failure>;
}

/// The entity's value during one command, and what the command does to it.
#[derive(Debug)]
pub struct ValueContext<'a, S> {
    stored: Option<&'a S>,
    change: Option<Change<S>>,
}

#[derive(Debug)]
enum Change<S> {
    Update(S),
    Delete,
}

impl<'a, S> ValueContext<'a, S> {
    fn new(stored: Option<&'a S>) -> Self {
        Self { stored, change: None }
    }

    /// The value, including an update or deletion made earlier in this command;
    /// `None` if the entity has no value.
    pub fn state(&self) -> Option<&S> {
        match &self.change {
            Some(Change::Update(state)) => Some(state),
            Some(Change::Delete) => None,
            None => self.stored,
        }
    }

    /// Replaces the value once the command succeeds.
    pub fn update_state(&mut self, state: S) {
        self.change = Some(Change::Update(state));
    }

    /// Deletes the value once the command succeeds.
    pub fn delete_state(&mut self) {
        self.change = Some(Change::Delete);
    }
}

/// A value entity type bound to one gRPC service of the user function.
pub struct ValueEntityService<E> {
    pub(crate) service_name: String,
    pub(crate) persistence_id: String,
    pub(crate) passivation_timeout: Option<Duration>,
    pub(crate) factory: Arc<dyn Fn(&str) -> E + Send + Sync>,
}

impl<E: ValueEntity> ValueEntityService<E> {
    /// Serves the gRPC service `service_name` (fully qualified) with entities made by
    /// `factory` from their entity id, stored under `persistence_id`.
    pub fn new(
        service_name: impl Into<String>,
        persistence_id: impl Into<String>,
        factory: impl Fn(&str) -> E + Send + Sync + 'static,
    ) -> Self {
        Self {
            service_name: service_name.into(),
            persistence_id: persistence_id.into(),
            passivation_timeout: None,
            factory: Arc::new(factory),
        }
    }

    /// Asks the proxy to passivate an entity idle for `timeout`.
    #[must_use]
    pub fn passivation_timeout(mut self, timeout: Duration) -> Self {
        self.passivation_timeout = Some(timeout);
        self
    }
}

/// A value entity together with its value, without the value's type.
pub(crate) trait DynValueEntity: Send {
    /// Loads the stored value sent with `Init`.
    fn restore(&mut self, value: &Any) -> Result<(), EntityError>;
    /// Runs one command; on success the entity's value already reflects the action.
    fn handle_command(&mut self, command: &Command) -> Result<ValueHandled, Failure>;
}

/// What a value-entity command that succeeded produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueHandled {
    pub reply: Reply,
    pub state_action: Option<pb::ValueEntityAction>,
}

/// An entity and the value the SDK keeps for it.
pub(crate) struct Hosted<E: ValueEntity> {
    entity: E,
    state: Option<E::State>,
}

impl<E: ValueEntity> Hosted<E> {
    pub(crate) fn new(entity: E) -> Self {
        Self { entity, state: None }
    }
}

impl<E: ValueEntity> DynValueEntity for Hosted<E> {
    fn restore(&mut self, value: &Any) -> Result<(), EntityError> {
        self.state = Some(payload::unpack(value)?);
        Ok(())
    }

    fn handle_command(&mut self, command: &Command) -> Result<ValueHandled, Failure> {
        let mut ctx = ValueContext::new(self.state.as_ref());
        let reply = self.entity.handle_command(command, &mut ctx)?;
        if reply.is_none() {
            return Err(Reply::entities_must_answer(command.name()));
        }
        let action = match ctx.change {
            None => None,
            Some(Change::Update(state)) => {
                let value = payload::pack(&state);
                self.state = Some(state);
                Some(pb::value_entity_action::Action::Update(pb::ValueEntityUpdate {
                    value: Some(value),
                }))
            }
            Some(Change::Delete) => {
                self.state = None;
                Some(pb::value_entity_action::Action::Delete(pb::ValueEntityDelete {}))
            }
        };
        Ok(ValueHandled {
            reply,
            state_action: action.map(|action| pb::ValueEntityAction { action: Some(action) }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_reflects_changes_made_in_the_same_command() {
        let stored = 1_i32;
        let mut ctx = ValueContext::new(Some(&stored));
        assert_eq!(ctx.state(), Some(&1));
        ctx.update_state(2);
        assert_eq!(ctx.state(), Some(&2));
        ctx.delete_state();
        assert_eq!(ctx.state(), None);
    }
}
