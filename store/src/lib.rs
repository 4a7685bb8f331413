//! Persistence of entity state: event journals with snapshots, values, and
//! CRDT states; the event log that orders every persistence id's journal writes
//! for subscribers, and the subscribers' offsets in it; durable timers, stored
//! with the command that scheduled them.
//!
//! One trait, [`Store`], with two real implementations: SQLite (the embedded
//! default) and PostgreSQL. Both batch concurrent writes into one transaction
//! (group commit) and both pass the conformance suite in `conformance.rs`.
//! This module owns durability and fencing; it knows nothing of the protocol.

#[cfg(test)]
mod conformance;
mod group_commit;
mod opening;
mod postgres;
mod postgres_timers;
mod postgres_tls;
#[cfg(test)]
mod postgres_tls_tests;
mod postgres_url;
mod sqlite;
mod sqlite_timers;
mod timers;

use async_trait::async_trait;
use prost_types::Any;

pub use self::opening::{check_url, open, open_when_up};
pub use self::postgres::PostgresStore;
pub use self::postgres_tls::UntrustedServer;
pub use self::postgres_url::{PostgresOptions, Roots, TlsMode, DEFAULT_POOL_SIZE};
pub use self::sqlite::SqliteStore;
pub use self::timers::{
    AttemptEnd, StoredTimer, Timer, TimerAttempt, TimerCall, TimerChange, TimerCounts, TimerKey, TimerState, TimerStore,
};

/// The identity of one entity's state: `(persistence_id, entity_id)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityKey {
    pub persistence_id: String,
    pub entity_id: String,
}

impl EntityKey {
    pub fn new(persistence_id: impl Into<String>, entity_id: impl Into<String>) -> Self {
        Self {
            persistence_id: persistence_id.into(),
            entity_id: entity_id.into(),
        }
    }
}

/// One persisted event.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEvent {
    pub seq_nr: i64,
    pub payload: Any,
}

/// A persisted snapshot: the state with every event up to `seq_nr` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub seq_nr: i64,
    pub payload: Any,
}

/// What an event-sourced entity needs to recover: the latest snapshot and the
/// events after it, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recovery {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<JournalEvent>,
}

impl Recovery {
    /// The sequence number of the last event, 0 for a new entity.
    pub fn last_seq_nr(&self) -> i64 {
        self.events
            .last()
            .map(|e| e.seq_nr)
            .or(self.snapshot.as_ref().map(|s| s.seq_nr))
            .unwrap_or(0)
    }
}

/// An atomic append to one entity's journal: events numbered from `first_seq_nr`,
/// and optionally a snapshot taken at one of them (not necessarily the last: a
/// write may carry the events of several commands, and the snapshot came with one),
/// and the timer changes of those commands, stored only if the events are.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalWrite {
    pub key: EntityKey,
    pub first_seq_nr: i64,
    pub events: Vec<Any>,
    pub snapshot: Option<Snapshot>,
    pub timers: Vec<TimerChange>,
}

impl JournalWrite {
    /// The sequence number of the last event in this write.
    pub fn last_seq_nr(&self) -> i64 {
        self.first_seq_nr + self.events.len() as i64 - 1
    }

    /// Whether the write has anything to store (`Ok(false)`: nothing, done), after
    /// checking it: a snapshot must be taken at one of the write's own events, and
    /// nothing of a write that breaks this is stored. Every store applies this
    /// rule before queueing a write.
    fn needs_storing(&self) -> Result<bool, StoreError> {
        self.check()?;
        Ok(!(self.events.is_empty() && self.snapshot.is_none() && self.timers.is_empty()))
    }

    fn check(&self) -> Result<(), StoreError> {
        match &self.snapshot {
            Some(snapshot)
                if !self.events.is_empty() && !(self.first_seq_nr..=self.last_seq_nr()).contains(&snapshot.seq_nr) =>
            {
                Err(StoreError::Config(format!(
                    "snapshot at {} is outside the write's events {}..={}",
                    snapshot.seq_nr,
                    self.first_seq_nr,
                    self.last_seq_nr()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The stored state of a CRDT entity: its latest state (`None` once the entity
/// was deleted) at a sequence number that every save moves on by one.
#[derive(Debug, Clone, PartialEq)]
pub struct CrdtRecord {
    pub seq_nr: i64,
    pub state: Option<Any>,
}

/// Replaces a CRDT entity's state, fenced like a journal append: `seq_nr` must
/// be one past the stored one (1 for an entity with none), else the save fails
/// with [`StoreError::Conflict`] and stores nothing, so two owners of one
/// entity can never both write on from the same state. `state: None` deletes
/// (the entity's sequence number stays, so a deletion is fenced too).
#[derive(Debug, Clone, PartialEq)]
pub struct CrdtWrite {
    pub key: EntityKey,
    pub seq_nr: i64,
    pub state: Option<Any>,
}

impl CrdtWrite {
    fn check(&self) -> Result<(), StoreError> {
        if self.seq_nr < 1 {
            return Err(StoreError::Config(format!(
                "a CRDT state's sequence number starts at 1, not {}",
                self.seq_nr
            )));
        }
        Ok(())
    }
}

/// A position in a persistence id's event log: one per journal write, in the
/// order the writes committed, so a subscriber that has seen a position never
/// meets an earlier one later. Opaque apart from its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogOffset {
    pub tx: i64,
    pub ord: i64,
}

impl LogOffset {
    /// Before every write.
    pub const START: LogOffset = LogOffset { tx: 0, ord: 0 };
}

/// One event as the event log hands it to a subscriber: where its write sits in
/// the log, and the event with its entity and sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub offset: LogOffset,
    pub entity_id: String,
    pub seq_nr: i64,
    pub payload: Any,
}

/// Counters of a store's group-commit writer, for metrics and tests. Every
/// counter only grows for the life of the store handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Writes (appends and value saves) handed to the writer.
    pub writes_queued: u64,
    /// Writes stored by a committed transaction.
    pub writes_committed: u64,
    /// Writes refused with [`StoreError::Conflict`].
    pub conflicts: u64,
    /// Transactions committed; each carries one batch of writes.
    pub transactions: u64,
    /// Batches whose transaction failed: every write in them got
    /// [`StoreError::Unavailable`].
    pub failed_transactions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A sequence number already taken: another writer appended to this entity.
    /// Nothing of the write was stored.
    #[error("sequence number {seq_nr} of entity {entity_id} is already taken")]
    Conflict { entity_id: String, seq_nr: i64 },
    /// The store cannot be reached or failed; nothing of the write is known to be stored.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A store URL or setting that cannot work.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A timer write for something that changed since it was read: the timer was
    /// replaced or cancelled, or its shard is held at a newer epoch. Nothing of
    /// the write was stored.
    #[error("stale: {0}")]
    Stale(String),
}

/// Durable storage of entity state. Every method returns only once its effect is
/// durable (committed and synced).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest snapshot of the entity and every event after it.
    async fn recover(&self, key: &EntityKey) -> Result<Recovery, StoreError>;

    /// Every event of the entity with `seq_nr >= from_seq_nr`, in order (for
    /// inspection; recovery uses [`Store::recover`]).
    async fn events(&self, key: &EntityKey, from_seq_nr: i64) -> Result<Vec<JournalEvent>, StoreError>;

    /// Up to `limit` events with `seq_nr < before_seq_nr`, newest first: one page of the
    /// journal for inspection (the dashboard's entity inspector), bounded however long
    /// the journal is. Both real stores answer with one bounded query; the default
    /// reads the whole journal and is only for test stores.
    async fn events_before(
        &self,
        key: &EntityKey,
        before_seq_nr: i64,
        limit: u32,
    ) -> Result<Vec<JournalEvent>, StoreError> {
        let mut events = self.events(key, i64::MIN).await?;
        events.retain(|event| event.seq_nr < before_seq_nr);
        events.reverse();
        events.truncate(limit as usize);
        Ok(events)
    }

    /// The latest snapshot, if any.
    async fn latest_snapshot(&self, key: &EntityKey) -> Result<Option<Snapshot>, StoreError>;

    /// Appends events (and a snapshot) atomically. Fails with
    /// [`StoreError::Conflict`] and stores nothing if any sequence number is taken.
    async fn append(&self, write: JournalWrite) -> Result<(), StoreError>;

    /// The stored value of a value entity.
    async fn load_value(&self, key: &EntityKey) -> Result<Option<Any>, StoreError>;

    /// Replaces the value of a value entity; `None` deletes it.
    async fn save_value(&self, key: &EntityKey, value: Option<Any>) -> Result<(), StoreError>;

    /// The stored state of a CRDT entity (`None`: never saved). The default is
    /// for test stores that keep no CRDTs.
    async fn load_crdt(&self, key: &EntityKey) -> Result<Option<CrdtRecord>, StoreError> {
        let _ = key;
        Err(unsupported("CRDT states"))
    }

    /// Replaces a CRDT entity's state; see [`CrdtWrite`] for the fencing.
    async fn save_crdt(&self, write: CrdtWrite) -> Result<(), StoreError> {
        let _ = write;
        Err(unsupported("CRDT states"))
    }

    /// The events of up to `limit` journal writes of `persistence_id` after
    /// `after`, in log order (each write's events in sequence order). A write
    /// whose transaction may still commit before an earlier one is not handed
    /// out yet, so positions only ever grow.
    async fn event_log(
        &self,
        persistence_id: &str,
        after: LogOffset,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let _ = (persistence_id, after, limit);
        Err(unsupported("an event log"))
    }

    /// How far `subscriber` has handled the event log of `persistence_id`
    /// ([`LogOffset::START`] if it has not begun).
    async fn load_offset(&self, subscriber: &str, persistence_id: &str) -> Result<LogOffset, StoreError> {
        let _ = (subscriber, persistence_id);
        Err(unsupported("subscriber offsets"))
    }

    /// Records that `subscriber` has handled the event log of `persistence_id`
    /// up to `offset`. An offset only moves forward: saving an earlier one (a
    /// second runner that lagged) leaves the later one.
    async fn save_offset(&self, subscriber: &str, persistence_id: &str, offset: LogOffset) -> Result<(), StoreError> {
        let _ = (subscriber, persistence_id, offset);
        Err(unsupported("subscriber offsets"))
    }

    /// Counters of the group-commit writer (all zero for a store that keeps none).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// The store's timers (`None`: a test store that keeps none).
    fn timers(&self) -> Option<&dyn TimerStore> {
        None
    }
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Config(format!("this store keeps no {what}"))
}
