//! The sidecar's router: entity commands go to their actors (when this instance
//! owns the entity), action calls to the function's action protocol; what the
//! function asks for next (a forward, side effects) is then performed by
//! [`Effects`]. The [`Commands`] a sidecar's ingress serves.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::sync::watch;

use strata_store::Store;

use crate::{
    call::{Answer, Answers, Call, CallContext, Commands, Outcome, StreamedCall},
    error::ProxyError,
    model::MethodModel,
    sidecar::action::Actions,
    sidecar::effects::Effects,
    sidecar::entity::Entities,
    sidecar::membership::Ownership,
    sidecar::timer_scope::{now_ms, TimerScope},
};

/// How long a sidecar waits for its own routes to reach the version a call was
/// routed by before refusing it. A gateway learns of a new instance's shards at
/// the same moment as the instance itself; this closes that race.
const CATCH_UP: Duration = Duration::from_secs(1);

/// How long a call for a shard handed to this sidecar waits for the old owner's
/// release: a little over the control plane's own hand-off timeout, after which
/// it completes the hand-off without the old owner.
const HANDOFF_PATIENCE: Duration = Duration::from_secs(12);

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
    /// Where the timers an outcome still carries are stored (an action's, and a
    /// CRDT entity's; the other entities store theirs with their state).
    pub timers: OutcomeTimers,
}

/// Stores the timer requests left in an outcome, once the command is done and
/// before its reply or side effects go out.
#[derive(Clone)]
pub struct OutcomeTimers {
    pub scope: Arc<TimerScope>,
    pub store: Arc<dyn Store>,
}

impl OutcomeTimers {
    async fn store(
        &self,
        method: &MethodModel,
        entity_id: Option<&str>,
        outcome: &mut Outcome,
    ) -> Result<(), ProxyError> {
        if outcome.timers.is_empty() {
            return Ok(());
        }
        let requests = std::mem::take(&mut outcome.timers);
        let changes = self
            .scope
            .changes(&method.entity.service_name, entity_id, requests, now_ms());
        let store = self
            .store
            .timers()
            .ok_or_else(|| ProxyError::Unavailable("the state store keeps no timers".into()))?;
        store.write_timers(changes).await.map_err(|error| {
            tracing::warn!(%error, "could not store the timers of a call");
            ProxyError::Unavailable("the state store is unavailable; retry".into())
        })?;
        self.scope.stored();
        Ok(())
    }
}

impl Dispatcher {
    /// Refuses a command for a shard this instance does not own, so the gateway
    /// routes it again.
    async fn check_owner(&self, call: &Call) -> Result<(), ProxyError> {
        let (Some(owned), Some(entity_id)) = (&self.owned, &call.entity_id) else {
            return Ok(());
        };
        if owns(&owned.ownership, entity_id, &call.context).await {
            return Ok(());
        }
        Err(ProxyError::NotOwner(format!(
            "instance {} does not own entity {entity_id:?} of {}",
            owned.instance_id, call.method.entity.service_name
        )))
    }
}

/// Whether this instance owns `entity_id`. A call routed by a newer route version
/// than this instance has seen waits (bounded) for that version first, and a call
/// for a shard handed to this instance waits (bounded) until the old owner has
/// released it, so the entity never runs on both.
async fn owns(ownership: &watch::Receiver<Ownership>, entity_id: &str, context: &CallContext) -> bool {
    let (owned, incoming, version) = {
        let current = ownership.borrow();
        let owned = current.owns(entity_id);
        // Only a command this instance does not own asks whether its shard is coming.
        (owned, !owned && current.receives(entity_id), current.version)
    };
    if owned || (!incoming && context.routed_by <= version) {
        return owned;
    }
    let patience = if incoming { HANDOFF_PATIENCE } else { CATCH_UP };
    let mut ownership = ownership.clone();
    let settled = async {
        ownership
            .wait_for(|o| o.version >= context.routed_by && (o.owns(entity_id) || !o.receives(entity_id)))
            .await
            .map(|o| o.owns(entity_id))
            .unwrap_or(false)
    };
    tokio::time::timeout_at(context.deadline_within(patience), settled)
        .await
        .unwrap_or(false)
}

#[async_trait::async_trait]
impl Commands for Dispatcher {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        let method = call.method.clone();
        let context = call.context;
        let entity_id = call.entity_id.clone();
        let mut outcome = if method.entity.kind.is_entity() {
            self.check_owner(&call).await?;
            self.entities.handle(call).await?
        } else {
            self.actions.unary(call).await?
        };
        self.timers.store(&method, entity_id.as_deref(), &mut outcome).await?;
        let answer = self.effects.settle(outcome, &context).await?;
        Ok(answer.unwrap_or_else(|| Answer::empty(&method)))
    }

    async fn streamed(&self, call: StreamedCall) -> Result<Answers, ProxyError> {
        let context = call.context;
        let effects = self.effects.clone();
        let timers = self.timers.clone();
        let method = call.method.clone();
        let (outcomes, entity_id) = if call.method.entity.kind.is_entity() {
            let call = call.into_entity_call().await?;
            self.check_owner(&call).await?;
            let entity_id = call.entity_id.clone();
            // The stream lasts until the client's deadline, if it gave one.
            let outcomes = self.entities.streamed(call).await?;
            (
                crate::sidecar::action::within(outcomes, context, method.clone()),
                entity_id,
            )
        } else {
            (self.actions.streamed(call).await?, None)
        };
        // Each response is settled (its timers stored, its effects performed)
        // before the next; a response without a reply sends the client nothing.
        let answers = outcomes
            .then(move |outcome| {
                let (effects, timers, method, entity_id) =
                    (effects.clone(), timers.clone(), method.clone(), entity_id.clone());
                async move {
                    let mut outcome = outcome?;
                    timers.store(&method, entity_id.as_deref(), &mut outcome).await?;
                    effects.settle(outcome, &context).await
                }
            })
            .filter_map(|answer| std::future::ready(answer.transpose()));
        Ok(answers.boxed())
    }
}

/// Performs the side effects of outcomes no client waits for (a cancelled
/// stream's last word), until the sending side goes away.
pub fn perform_detached(
    effects: Effects,
    mut detached: tokio::sync::mpsc::UnboundedReceiver<(crate::call::Outcome, CallContext)>,
) {
    tokio::spawn(async move {
        while let Some((outcome, context)) = detached.recv().await {
            if let Err(error) = effects.settle(outcome, &context.next_hop(false)).await {
                tracing::warn!(%error, "side effects of a cancelled stream failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::shard_of;

    fn owning(version: u64, entity_id: &str) -> Ownership {
        Ownership {
            version,
            shard_count: 64,
            owned: [shard_of(entity_id, 64)].into(),
            epochs: Default::default(),
            ..Ownership::default()
        }
    }

    fn routed_by(version: u64) -> CallContext {
        CallContext {
            routed_by: version,
            ..CallContext::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_routed_by_newer_routes_waits_for_them() {
        let (tx, rx) = watch::channel(Ownership::default());
        // --- the gateway routed by version 7; this sidecar has seen nothing yet
        let waiting = tokio::spawn({
            let rx = rx.clone();
            async move { owns(&rx, "z1", &routed_by(7)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "it waits for version 7");
        // --- an older snapshot is not enough; version 7 with the shard is
        tx.send_replace(owning(6, "z1"));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tx.send_replace(owning(7, "z1"));
        assert!(waiting.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn not_owning_at_the_routed_version_is_refused_at_once_and_waits_are_bounded() {
        let (tx, rx) = watch::channel(owning(9, "z1"));
        // Caught up, and another entity's shard: no wait.
        assert!(!owns(&rx, "someone-else", &routed_by(9)).await);
        assert!(!owns(&rx, "someone-else", &CallContext::default()).await);
        assert!(owns(&rx, "z1", &routed_by(3)).await);
        // A version that never comes: refused after the bounded wait.
        let started = tokio::time::Instant::now();
        assert!(!owns(&rx, "someone-else", &routed_by(12)).await);
        assert_eq!(started.elapsed(), CATCH_UP);
        drop(tx);
    }
}
