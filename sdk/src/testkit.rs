//! Runs an event-sourced entity's commands in process, the way the protocol session
//! does (events applied only on success, snapshots on cadence), so entity logic can be
//! unit tested without a proxy or a socket; and builds the commands an action's
//! handlers get. Test tooling: it panics on broken entities.

use prost::{Message, Name};
use prost_types::Any;

use crate::{
    event_sourced::{run_command, DEFAULT_SNAPSHOT_EVERY},
    payload, Command, EntityError, EventSourcedEntity, Failure, Metadata, Reply, ServiceCall, SideEffect,
};

/// A command for an action's handler, as the SDK hands it over: the method `name`
/// called with `message` (and no entity).
pub fn action_command<M: Message + Name>(name: &str, message: &M) -> Command {
    Command::new(String::new(), 0, name.to_owned(), payload::pack(message))
}

/// An event-sourced entity under test.
///
/// ```
/// # use strata_sdk::{testkit::EventSourcedTestKit, *};
/// # #[derive(Default)] struct Counter(i64);
/// # impl EventSourcedEntity for Counter {
/// #     type Snapshot = ();
/// #     fn handle_command(&self, c: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
/// #         ctx.emit(c.decode::<i64>()?); Ok(Reply::message(&(self.0 + c.decode::<i64>()?)))
/// #     }
/// #     fn apply_event(&mut self, e: &prost_types::Any) -> Result<(), EntityError> { self.0 += unpack::<i64>(e)?; Ok(()) }
/// # }
/// let mut counter = EventSourcedTestKit::new("c-1", Counter::default());
/// let effects = counter.handle("Increase", &5_i64).unwrap();
/// assert_eq!(effects.reply::<i64>(), 5);
/// assert_eq!(effects.event::<i64>(0), 5);
/// assert_eq!(counter.entity().0, 5);
/// ```
pub struct EventSourcedTestKit<E> {
    entity: E,
    entity_id: String,
    next_command_id: i64,
    sequence: i64,
    snapshot_every: u64,
}

impl<E: EventSourcedEntity> EventSourcedTestKit<E> {
    /// Wraps `entity`, which has id `entity_id`, with no events yet.
    pub fn new(entity_id: impl Into<String>, entity: E) -> Self {
        Self {
            entity,
            entity_id: entity_id.into(),
            next_command_id: 1,
            sequence: 0,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }

    /// Takes snapshots every `events` events, as
    /// [`EventSourcedService::snapshot_every`](crate::EventSourcedService::snapshot_every).
    #[must_use]
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Applies a journal event, as on replay.
    pub fn replay<M: Message + Name>(&mut self, event: &M) -> Result<(), EntityError> {
        self.entity.apply_event(&payload::pack(event))?;
        self.sequence += 1;
        Ok(())
    }

    /// Runs the command `name` with input `message`.
    ///
    /// # Panics
    ///
    /// If the entity cannot apply an event it emitted: in production that fails the
    /// entity's stream, in a test it is a bug to see at once.
    pub fn handle<M: Message + Name>(&mut self, name: &str, message: &M) -> Result<Effects, Failure> {
        let command = Command::new(
            self.entity_id.clone(),
            self.next_command_id,
            name.to_owned(),
            payload::pack(message),
        );
        self.next_command_id += 1;
        match run_command(&mut self.entity, &command, &mut self.sequence, self.snapshot_every) {
            Ok(Ok(handled)) => Ok(Effects {
                reply: handled.reply,
                events: handled.events,
                snapshot: handled.snapshot,
            }),
            Ok(Err(failure)) => Err(failure),
            Err(error) => panic!("command {name}: the entity cannot apply its own event: {error}"),
        }
    }

    /// The entity, with every successful command's events applied.
    pub fn entity(&self) -> &E {
        &self.entity
    }

    /// The sequence number of the last event applied.
    pub fn sequence(&self) -> i64 {
        self.sequence
    }
}

/// What one successful command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    reply: Reply,
    events: Vec<Any>,
    snapshot: Option<Any>,
}

impl Effects {
    /// The reply, decoded as `M`.
    ///
    /// # Panics
    ///
    /// If the reply is not an `M` (or is a forward).
    pub fn reply<M: Message + Name + Default>(&self) -> M {
        payload::unpack(self.reply_payload()).unwrap_or_else(|error| panic!("reply: {error}"))
    }

    /// The reply, packed.
    ///
    /// # Panics
    ///
    /// If the command forwarded instead of replying.
    pub fn reply_payload(&self) -> &Any {
        self.reply
            .payload()
            .unwrap_or_else(|| panic!("the command did not reply with a message: {:?}", self.reply))
    }

    /// The forward the command answered with, if it did.
    pub fn forward(&self) -> Option<&ServiceCall> {
        self.reply.forwarded()
    }

    /// The side effects the command asked for, in order.
    pub fn side_effects(&self) -> &[SideEffect] {
        self.reply.effects()
    }

    /// The metadata sent with the reply.
    pub fn reply_metadata(&self) -> &Metadata {
        self.reply.metadata()
    }

    /// The events emitted, in order, packed.
    pub fn events(&self) -> &[Any] {
        &self.events
    }

    /// Event number `index`, decoded as `M`.
    ///
    /// # Panics
    ///
    /// If there is no such event or it is not an `M`.
    pub fn event<M: Message + Name + Default>(&self, index: usize) -> M {
        let event = self
            .events
            .get(index)
            .unwrap_or_else(|| panic!("no event {index}: {} emitted", self.events.len()));
        payload::unpack(event).unwrap_or_else(|error| panic!("event {index}: {error}"))
    }

    /// The snapshot attached to this reply, if one was due.
    pub fn snapshot(&self) -> Option<&Any> {
        self.snapshot.as_ref()
    }
}
