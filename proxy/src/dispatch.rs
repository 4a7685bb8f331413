//! The sidecar's router: entity commands go to their actors (when this instance
//! owns the entity), action calls to the function's action protocol; what the
//! function asks for next (a forward, side effects) is then performed by
//! [`Effects`]. The [`Commands`] a sidecar's ingress serves.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;

use crate::{
    action::Actions,
    call::{Answer, Answers, Call, Commands, StreamedCall},
    effects::Effects,
    entity::Entities,
    error::ProxyError,
    membership::Ownership,
};

/// The shards a managed sidecar owns; a standalone one owns everything.
pub struct Owned {
    pub ownership: watch::Receiver<Ownership>,
    pub instance_id: String,
}

pub struct Dispatcher {
    pub entities: Arc<Entities>,
    pub actions: Actions,
    pub owned: Option<Owned>,
    pub effects: Effects,
}

impl Dispatcher {
    /// Refuses a command for a shard this instance does not own, so the gateway
    /// routes it again.
    fn check_owner(&self, call: &Call) -> Result<(), ProxyError> {
        let (Some(owned), Some(entity_id)) = (&self.owned, &call.entity_id) else {
            return Ok(());
        };
        if owned.ownership.borrow().owns(entity_id) {
            return Ok(());
        }
        Err(ProxyError::NotOwner(format!(
            "instance {} does not own entity {entity_id:?} of {}",
            owned.instance_id, call.method.entity.service_name
        )))
    }
}

#[async_trait::async_trait]
impl Commands for Dispatcher {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        let method = call.method.clone();
        let context = call.context;
        let outcome = if method.entity.kind.is_entity() {
            self.check_owner(&call)?;
            self.entities.handle(call).await?
        } else {
            self.actions.unary(call).await?
        };
        let answer = self.effects.settle(outcome, &context).await?;
        Ok(answer.unwrap_or_else(|| Answer::empty(&method)))
    }

    async fn streamed(&self, call: StreamedCall) -> Result<Answers, ProxyError> {
        if call.method.entity.kind.is_entity() {
            return Err(ProxyError::Unimplemented(format!(
                "{} is an entity's method, and entity commands are unary",
                call.method.path()
            )));
        }
        let context = call.context;
        let effects = self.effects.clone();
        let outcomes = self.actions.streamed(call).await?;
        // Each response is settled (its effects performed) before the next; a
        // response without a reply sends the client nothing.
        let answers = outcomes
            .then(move |outcome| {
                let effects = effects.clone();
                async move { effects.settle(outcome?, &context).await }
            })
            .filter_map(|answer| std::future::ready(answer.transpose()));
        Ok(answers.boxed())
    }
}
