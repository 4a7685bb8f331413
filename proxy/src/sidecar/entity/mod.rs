//! Active entities: one single-writer actor per entity, found or started by
//! [`Entities::handle`]. Owns the mailboxes and picks each entity type's
//! protocol session; the actor's life cycle and each protocol live in their own
//! modules, which know nothing of this one.

mod actor;
mod client_stream;
mod conversation;
mod crdt;
mod crdt_session;
mod decision;
mod event_sourced;
#[cfg(test)]
mod limits_tests;
mod pipeline;
mod registry;
mod session;
mod value;

use std::{
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

pub use client_stream::{client_stream, STREAM_BUFFER};
pub use registry::Done;
pub use session::{EntityCommand, SessionContext, DEFAULT_COMMAND_TIMEOUT};

use self::{
    actor::Actor,
    crdt_session::CrdtSession,
    event_sourced::EventSourcedSession,
    registry::{ActorRegistry, Bounds, Started},
    value::ValueSession,
};
use crate::{
    call::{Call, Outcome},
    error::ProxyError,
    model::EntityKind,
    sidecar::action::Outcomes,
};

/// Decodes `bytes` as a hostile function's answer on an event-sourced and on
/// a value-entity stream and decides what each means for command 1 of
/// `method` (for fuzzing: whatever the bytes, a decision and never a panic).
pub(crate) fn decide_untrusted_reply(
    method: &crate::model::MethodModel,
    targets: &dyn crate::model::Targets,
    bytes: &[u8],
) {
    use prost::Message;
    if let Ok(out) = strata_proto::cloudstate::eventsourced::EventSourcedStreamOut::decode(bytes) {
        let _ = event_sourced::decide(method, targets, 1, out);
    }
    if let Ok(out) = strata_proto::cloudstate::valueentity::ValueEntityStreamOut::decode(bytes) {
        let _ = value::decide(method, targets, 1, out);
    }
}

/// Bounds on one sidecar's entities, so a flood of commands or of distinct
/// entity ids costs a clear answer instead of unbounded memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityLimits {
    /// Commands that may wait for one entity; one more is refused at once with
    /// `RESOURCE_EXHAUSTED` (HTTP 429, `Retry-After`), never left blocking.
    pub mailbox: usize,
    /// Entities active at once; admitting one more passivates the least
    /// recently used.
    pub max_active: usize,
    /// Estimated bytes of state the active entities may hold together (what
    /// the sidecar loaded and last sent for each: snapshot and events, value,
    /// CRDT state); past it the least recently used others are passivated.
    /// One entity larger than the budget alone stays active.
    pub max_active_bytes: usize,
}

impl EntityLimits {
    pub const DEFAULT_MAILBOX: usize = 1024;
    pub const DEFAULT_MAX_ACTIVE: usize = 10_000;
    pub const DEFAULT_MAX_ACTIVE_BYTES: usize = 256 * 1024 * 1024;
}

impl Default for EntityLimits {
    fn default() -> Self {
        EntityLimits {
            mailbox: Self::DEFAULT_MAILBOX,
            max_active: Self::DEFAULT_MAX_ACTIVE,
            max_active_bytes: Self::DEFAULT_MAX_ACTIVE_BYTES,
        }
    }
}

/// The registry of active entities of one sidecar.
pub struct Entities {
    ctx: Arc<SessionContext>,
    registry: Arc<ActorRegistry>,
    mailbox: usize,
}

impl Entities {
    #[cfg(test)]
    pub fn new(ctx: SessionContext) -> Self {
        Self::with_limits(ctx, EntityLimits::default())
    }

    pub fn with_limits(ctx: SessionContext, limits: EntityLimits) -> Self {
        Self {
            ctx: Arc::new(ctx),
            registry: Arc::new(ActorRegistry::new(Bounds {
                count: limits.max_active,
                bytes: limits.max_active_bytes,
            })),
            mailbox: limits.mailbox.max(1),
        }
    }

    /// Runs one command on its entity and returns its outcome once any state it
    /// produced is durable. The forward and side effects it asks for are the
    /// caller's to perform.
    pub async fn handle(&self, call: Call) -> Result<Outcome, ProxyError> {
        let deadline = call.context.deadline;
        let (reply, answer) = oneshot::channel();
        self.send(EntityCommand {
            call,
            reply,
            stream: None,
        })?;
        answered(deadline, answer).await
    }

    /// Runs one streamed command (a CRDT entity's server-streamed method): the
    /// outcomes of the function's reply and of every message it streams after
    /// it, each released once the state it depends on is durable. The stream
    /// ends when the function ends it; dropping it cancels the command.
    pub async fn streamed(&self, call: Call) -> Result<Outcomes, ProxyError> {
        let deadline = call.context.deadline;
        let (reply, answer) = oneshot::channel();
        let (stream, later) = client_stream(STREAM_BUFFER);
        self.send(EntityCommand {
            call,
            reply,
            stream: Some(stream),
        })?;
        let first = answered(deadline, answer).await?;
        Ok(futures::stream::once(async { Ok(first) }).chain(later).boxed())
    }

    /// Puts a command in its entity's mailbox, starting the entity if needed.
    fn send(&self, command: EntityCommand) -> Result<(), ProxyError> {
        let call = &command.call;
        let (true, Some(entity_id)) = (call.method.entity.kind.is_entity(), call.entity_id.clone()) else {
            return Err(ProxyError::Internal(format!(
                "{} is not an entity's method",
                call.target_name()
            )));
        };
        let key = (call.method.entity.service_name.clone(), entity_id);
        let mut command = Box::new(command);
        // A closed mailbox means the actor passivated after we looked it up:
        // start a fresh one and try again. A full one is refused, not awaited.
        loop {
            let (mailbox, evicted) = self
                .registry
                .mailbox(&key, || self.start(&key, &command))
                .map_err(|full| {
                    ProxyError::Overloaded(format!(
                        "all {} active entities have open streams, so entity {:?} cannot start; retry later",
                        full.active, key.1
                    ))
                })?;
            if !evicted.is_empty() {
                self.ctx.metrics.entity_bytes.set(self.registry.bytes() as i64);
            }
            for (service, entity_id) in evicted {
                tracing::debug!(%service, %entity_id, "too many active entities: passivating the least recently used");
            }
            match mailbox.try_send(command) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(ProxyError::Overloaded(format!(
                        "entity {:?} already has {} commands waiting; retry later",
                        key.1, self.mailbox
                    )))
                }
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    self.registry.forget(&key, &mailbox);
                    command = returned;
                }
            }
        }
    }

    fn start(&self, key: &(String, String), command: &EntityCommand) -> Started {
        let (tx, rx) = mpsc::channel(self.mailbox);
        let streams = Arc::new(AtomicUsize::new(0));
        // Dropped when the actor's task ends, which is how a release learns it has.
        let (alive, done) = watch::channel(());
        let actor = Actor {
            ctx: self.ctx.clone(),
            registry: self.registry.clone(),
            entity: command.call.method.entity.clone(),
            key: key.clone(),
            streams: streams.clone(),
        };
        let own = tx.downgrade();
        match actor.entity.kind {
            EntityKind::EventSourced => tokio::spawn(alive_while(alive, actor.run::<EventSourcedSession>(rx, own))),
            EntityKind::Value => tokio::spawn(alive_while(alive, actor.run::<ValueSession>(rx, own))),
            EntityKind::Crdt => tokio::spawn(alive_while(alive, actor.run::<CrdtSession>(rx, own))),
            EntityKind::Action => unreachable!("actions have no entity actors (checked by handle)"),
        };
        Started {
            mailbox: tx,
            streams,
            done,
        }
    }

    /// Lets go of the entities `which` selects (e.g. of shards this instance lost):
    /// each finishes the commands it already has, then passivates. Returns a
    /// [`Done`] per entity, which closes once its actor has ended.
    pub fn release(&self, which: impl Fn(&str, &str) -> bool) -> Vec<Done> {
        self.registry.release(which)
    }
}

/// Runs `actor`, holding `alive` until it ends.
async fn alive_while(alive: watch::Sender<()>, actor: impl std::future::Future<Output = ()>) {
    actor.await;
    drop(alive);
}

/// How long past the client's deadline [`answered`] waits for the entity's own
/// answer to it. The session enforces the same deadline on the function's reply
/// and answers with what it knows (which command, that the entity restarted);
/// this bound is the backstop for the rest of the command (a slow load or store),
/// and must not win the race against that more precise answer.
const DEADLINE_BACKSTOP_GRACE: Duration = Duration::from_millis(100);

/// The entity's answer to a command. The client's deadline bounds the whole
/// command: waiting for the entity, loading its state, the function, and
/// storing the result (a slow store must not keep a client past the time it
/// gave, beyond [`DEADLINE_BACKSTOP_GRACE`]).
async fn answered(
    deadline: Option<tokio::time::Instant>,
    answer: oneshot::Receiver<Result<Outcome, ProxyError>>,
) -> Result<Outcome, ProxyError> {
    let answered = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline + DEADLINE_BACKSTOP_GRACE, answer)
            .await
            .map_err(|_| {
                ProxyError::DeadlineExceeded(
                    "the client's deadline passed before the entity finished the command (its state loaded, run and \
                 stored); it may or may not have been applied"
                        .into(),
                )
            })?,
        None => answer.await,
    };
    answered.unwrap_or_else(|_| {
        Err(ProxyError::Unavailable(
            "the entity stopped before answering; retry".into(),
        ))
    })
}
