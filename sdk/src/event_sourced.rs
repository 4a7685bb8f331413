//! Event-sourced entities: the trait users implement, the context through which a
//! command emits events, and the pure step that turns one command into a reply, events
//! and maybe a snapshot. The protocol stream around it lives in `event_sourced_session`.

use std::{sync::Arc, time::Duration};

use prost::{Message, Name};
use prost_types::Any;

use crate::{payload, Command, EntityError, Failure, Reply};

/// The default number of events between two snapshots, as in CloudState's SDKs.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;

/// An entity whose state is the result of applying its events in order.
///
/// Command handlers only read the state (`&self`) and emit events; the state changes
/// only in [`apply_event`](Self::apply_event), both when the SDK replays the journal
/// and right after a command succeeds. So a failed command can never leave a half
/// changed entity behind.
///
/// Entities are created per entity id by the factory given to
/// [`EventSourcedService::new`]; see the crate documentation for a complete example.
pub trait EventSourcedEntity: Send + 'static {
    /// The message a snapshot of the state is stored as; `()` if the entity never
    /// takes snapshots.
    type Snapshot: Message + Name + Default;

    /// Handles one command: reads the state, emits events through `ctx`, and answers.
    ///
    /// On `Err`, the events emitted so far are discarded and the client gets the
    /// failure.
    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure>;

    /// Applies one event to the state. Use [`unpack_if`](crate::unpack_if) to try each
    /// event type the entity knows.
    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError>;

    /// The state as a snapshot, or `None` to skip this snapshot.
    fn snapshot(&self) -> Option<Self::Snapshot> {
        None
    }

    /// Replaces the state with a snapshot, before the events that follow it are replayed.
    fn restore(&mut self, snapshot: Self::Snapshot) -> Result<(), EntityError> {
        let _ = snapshot;
        Err(EntityError::new(
            "received a snapshot but this entity does not implement restore",
        ))
    }
}

/// What a command handler can do besides answering: emit events.
#[derive(Debug, Default)]
pub struct EventContext {
    events: Vec<Any>,
}

impl EventContext {
    /// Emits an event. It is applied to the entity, and persisted by the proxy, only if
    /// the handler returns `Ok`.
    pub fn emit<M: Message + Name>(&mut self, event: M) {
        self.events.push(payload::pack(&event));
    }

    /// Emits an already packed event.
    pub fn emit_any(&mut self, event: Any) {
        self.events.push(event);
    }
}

/// An event-sourced entity type bound to one gRPC service of the user function.
pub struct EventSourcedService<E> {
    pub(crate) service_name: String,
    pub(crate) persistence_id: String,
    pub(crate) snapshot_every: u64,
    pub(crate) passivation_timeout: Option<Duration>,
    pub(crate) factory: Arc<dyn Fn(&str) -> E + Send + Sync>,
}

impl<E: EventSourcedEntity> EventSourcedService<E> {
    /// Serves the gRPC service `service_name` (fully qualified, e.g.
    /// `com.example.shoppingcart.ShoppingCart`) with entities made by `factory` from
    /// their entity id, stored under `persistence_id`.
    pub fn new(
        service_name: impl Into<String>,
        persistence_id: impl Into<String>,
        factory: impl Fn(&str) -> E + Send + Sync + 'static,
    ) -> Self {
        Self {
            service_name: service_name.into(),
            persistence_id: persistence_id.into(),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            passivation_timeout: None,
            factory: Arc::new(factory),
        }
    }

    /// Attaches a snapshot to the reply whose events reach a multiple of `events`
    /// (default 100); 0 never snapshots.
    #[must_use]
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Asks the proxy to passivate an entity idle for `timeout` (the proxy's default
    /// otherwise).
    #[must_use]
    pub fn passivation_timeout(mut self, timeout: Duration) -> Self {
        self.passivation_timeout = Some(timeout);
        self
    }
}

/// [`EventSourcedEntity`] without its snapshot type, so one stream handler serves them all.
pub(crate) trait DynEventSourced: Send {
    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure>;
    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError>;
    fn snapshot(&self) -> Option<Any>;
    fn restore(&mut self, snapshot: &Any) -> Result<(), EntityError>;
}

impl<E: EventSourcedEntity> DynEventSourced for E {
    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        EventSourcedEntity::handle_command(self, command, ctx)
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        EventSourcedEntity::apply_event(self, event)
    }

    fn snapshot(&self) -> Option<Any> {
        EventSourcedEntity::snapshot(self).map(|snapshot| payload::pack(&snapshot))
    }

    fn restore(&mut self, snapshot: &Any) -> Result<(), EntityError> {
        EventSourcedEntity::restore(self, payload::unpack(snapshot)?)
    }
}

/// What a command that succeeded produced, with its events already applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Handled {
    pub reply: Reply,
    pub events: Vec<Any>,
    pub snapshot: Option<Any>,
}

/// Runs one command against `entity`: on success applies its events, advancing
/// `sequence` by one per event, and takes a snapshot if an event's sequence number is a
/// multiple of `snapshot_every`.
///
/// `Ok(Err(failure))` is the command's own failure (nothing applied); `Err` means an
/// event could not be applied and the entity is broken.
pub(crate) fn run_command(
    entity: &mut dyn DynEventSourced,
    command: &Command,
    sequence: &mut i64,
    snapshot_every: u64,
) -> Result<Result<Handled, Failure>, EntityError> {
    let mut ctx = EventContext::default();
    let reply = match entity.handle_command(command, &mut ctx) {
        Ok(reply) if reply.is_none() => return Ok(Err(Reply::entities_must_answer(command.name()))),
        Ok(reply) => reply,
        Err(failure) => return Ok(Err(failure)),
    };
    let mut snapshot_due = false;
    for event in &ctx.events {
        entity.apply_event(event)?;
        *sequence += 1;
        snapshot_due |= snapshot_every > 0 && sequence.unsigned_abs() % snapshot_every == 0;
    }
    // The snapshot must include every event of this reply, so take it after all of them.
    let snapshot = if snapshot_due { entity.snapshot() } else { None };
    Ok(Ok(Handled {
        reply,
        events: ctx.events,
        snapshot,
    }))
}
