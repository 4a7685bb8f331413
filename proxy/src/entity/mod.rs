//! Active entities: one single-writer actor per entity, found or started by
//! [`Entities::handle`]. Owns the mailboxes and picks each entity type's
//! protocol session; the actor's life cycle and each protocol live in their own
//! modules, which know nothing of this one.

mod actor;
mod conversation;
mod crdt;
mod crdt_session;
mod event_sourced;
mod pipeline;
mod registry;
mod session;
mod value;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use session::{EntityCommand, SessionContext, DEFAULT_COMMAND_TIMEOUT};

use self::{
    actor::Actor, crdt_session::CrdtSession, event_sourced::EventSourcedSession, registry::ActorRegistry,
    value::ValueSession,
};
use crate::{
    call::{Call, Outcome},
    error::ProxyError,
    model::EntityKind,
};

/// How many commands may wait for one entity before callers wait to enqueue.
const MAILBOX: usize = 1024;

/// The registry of active entities of one sidecar.
pub struct Entities {
    ctx: Arc<SessionContext>,
    registry: Arc<ActorRegistry>,
}

impl Entities {
    pub fn new(ctx: SessionContext) -> Self {
        Self {
            ctx: Arc::new(ctx),
            registry: Arc::default(),
        }
    }

    /// Runs one command on its entity and returns its outcome once any state it
    /// produced is durable. The forward and side effects it asks for are the
    /// caller's to perform.
    pub async fn handle(&self, call: Call) -> Result<Outcome, ProxyError> {
        let (true, Some(entity_id)) = (call.method.entity.kind.is_entity(), call.entity_id.clone()) else {
            return Err(ProxyError::Internal(format!(
                "{} is not an entity's method",
                call.target_name()
            )));
        };
        let key = (call.method.entity.service_name.clone(), entity_id);
        let (reply, answer) = oneshot::channel();
        let mut command = Box::new(EntityCommand { call, reply });
        // A send fails only when the actor passivated after we looked it up: start
        // a fresh one and try again.
        loop {
            let mailbox = self.registry.mailbox(&key, || self.start(&key, &command));
            match mailbox.send(command).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => {
                    self.registry.forget(&key, &mailbox);
                    command = returned;
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ProxyError::Unavailable(
                "the entity stopped before answering; retry".into(),
            ))
        })
    }

    fn start(&self, key: &(String, String), command: &EntityCommand) -> mpsc::Sender<Box<EntityCommand>> {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let actor = Actor {
            ctx: self.ctx.clone(),
            registry: self.registry.clone(),
            entity: command.call.method.entity.clone(),
            key: key.clone(),
        };
        let own = tx.downgrade();
        match actor.entity.kind {
            EntityKind::EventSourced => tokio::spawn(actor.run::<EventSourcedSession>(rx, own)),
            EntityKind::Value => tokio::spawn(actor.run::<ValueSession>(rx, own)),
            EntityKind::Crdt => tokio::spawn(actor.run::<CrdtSession>(rx, own)),
            EntityKind::Action => unreachable!("actions have no entity actors (checked by handle)"),
        };
        tx
    }

    /// Lets go of the entities `which` selects (e.g. of shards this instance lost):
    /// each finishes the commands it already has, then passivates. Returns how many.
    pub fn release(&self, which: impl Fn(&str, &str) -> bool) -> usize {
        self.registry.release(which)
    }

    /// How many entities are active now.
    pub fn active(&self) -> usize {
        self.registry.len()
    }
}
