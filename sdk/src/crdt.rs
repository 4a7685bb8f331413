//! CRDT entities: the replicated data types as a function holds them (each with
//! its own API, recording the delta its changes make), the trait users
//! implement, and the pure step that turns a command into a reply and a state
//! action. The proxy keeps the replicated state and persists every delta before
//! the reply. Streamed commands register callbacks on their context: one run
//! whenever the state changes (its reply goes to the streaming client), one
//! run when the client cancels (it may change the state and ask for side
//! effects). The protocol stream lives in `crdt_session`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::crdt::{
    self as pb, crdt_delta::Delta, CrdtClock, FlagDelta, GCounterDelta, GSetDelta, LwwRegisterDelta, OrMapDelta,
    OrMapEntryDelta, OrSetDelta, PnCounterDelta, VoteDelta,
};

use crate::{Command, EntityError, Failure, Reply, SideEffect};

/// A value a set holds or a register keeps, sent to the proxy as an `Any` that
/// equal values encode to equal bytes.
pub trait CrdtElement: Ord + Clone + Send + 'static {
    fn to_any(&self) -> Any;
    fn from_any(any: &Any) -> Result<Self, EntityError>;
}

fn primitive<T: Message + Default>(any: &Any, type_url: &str) -> Result<T, EntityError> {
    if any.type_url != type_url {
        return Err(EntityError::new(format!(
            "expected a {type_url}, got a {:?}",
            any.type_url
        )));
    }
    T::decode(any.value.as_slice()).map_err(|e| EntityError::new(format!("a malformed {type_url}: {e}")))
}

macro_rules! primitive_element {
    ($type:ty, $url:literal) => {
        /// Encoded as the CloudState primitive
        #[doc = concat!("`", $url, "`.")]
        impl CrdtElement for $type {
            fn to_any(&self) -> Any {
                Any {
                    type_url: $url.into(),
                    value: self.encode_to_vec(),
                }
            }
            fn from_any(any: &Any) -> Result<Self, EntityError> {
                primitive(any, $url)
            }
        }
    };
}

primitive_element!(String, "p.cloudstate.io/string");
primitive_element!(i64, "p.cloudstate.io/int64");
primitive_element!(bool, "p.cloudstate.io/bool");
primitive_element!(Vec<u8>, "p.cloudstate.io/bytes");

mod private {
    /// What the SDK needs of a CRDT: applying the proxy's deltas and taking the
    /// delta of the function's own changes. Sealed: the eight types are the
    /// protocol's.
    pub trait Replicated {
        fn apply(&mut self, delta: &super::pb::CrdtDelta) -> Result<(), crate::EntityError>;
        fn take_delta(&mut self) -> Option<super::pb::CrdtDelta>;
        /// The delta that gives a replica with nothing this value (a map
        /// entry's addition).
        fn full_delta(&self) -> super::pb::CrdtDelta;
    }
}

/// One of the protocol's replicated data types.
pub trait Crdt: private::Replicated + Clone + Default + Send + 'static {}

fn delta(delta: Delta) -> Option<pb::CrdtDelta> {
    Some(pb::CrdtDelta { delta: Some(delta) })
}

fn whole(delta: Delta) -> pb::CrdtDelta {
    pb::CrdtDelta { delta: Some(delta) }
}

fn register_delta<T: CrdtElement>(value: Option<&T>, clock: Clock) -> pb::CrdtDelta {
    let (clock, custom_clock_value) = match clock {
        Clock::Default => (CrdtClock::Default, 0),
        Clock::Reverse => (CrdtClock::Reverse, 0),
        Clock::Custom(v) => (CrdtClock::Custom, v),
        Clock::CustomAutoIncrement(v) => (CrdtClock::CustomAutoIncrement, v),
    };
    whole(Delta::Lwwregister(LwwRegisterDelta {
        value: value.map(T::to_any),
        clock: clock as i32,
        custom_clock_value,
    }))
}

fn wrong(expected: &str, got: &pb::CrdtDelta) -> EntityError {
    EntityError::new(format!("the proxy sent {got:?} to a {expected}"))
}

fn elements<T: CrdtElement>(anys: &[Any]) -> Result<Vec<T>, EntityError> {
    anys.iter().map(T::from_any).collect()
}

/// A counter that only grows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GCounter {
    value: u64,
    pending: u64,
}

impl GCounter {
    pub fn value(&self) -> u64 {
        self.value
    }

    pub fn increment(&mut self, by: u64) -> u64 {
        self.value = self.value.saturating_add(by);
        self.pending = self.pending.saturating_add(by);
        self.value
    }
}

impl Crdt for GCounter {}
impl private::Replicated for GCounter {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Gcounter(g)) => self.value = self.value.saturating_add(g.increment),
            _ => return Err(wrong("GCounter", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Gcounter(GCounterDelta { increment: self.value }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let increment = std::mem::take(&mut self.pending);
        (increment > 0).then(|| delta(Delta::Gcounter(GCounterDelta { increment })))?
    }
}

/// A counter that goes up and down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnCounter {
    value: i64,
    pending: i64,
}

impl PnCounter {
    pub fn value(&self) -> i64 {
        self.value
    }

    pub fn increment(&mut self, by: i64) -> i64 {
        self.value = self.value.saturating_add(by);
        self.pending = self.pending.saturating_add(by);
        self.value
    }

    pub fn decrement(&mut self, by: i64) -> i64 {
        self.increment(by.saturating_neg())
    }
}

impl Crdt for PnCounter {}
impl private::Replicated for PnCounter {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Pncounter(p)) => self.value = self.value.saturating_add(p.change),
            _ => return Err(wrong("PNCounter", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Pncounter(PnCounterDelta { change: self.value }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let change = std::mem::take(&mut self.pending);
        (change != 0).then(|| delta(Delta::Pncounter(PnCounterDelta { change })))?
    }
}

/// A set that only grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GSet<T: CrdtElement> {
    elements: BTreeSet<T>,
    added: BTreeSet<T>,
}

impl<T: CrdtElement> Default for GSet<T> {
    fn default() -> Self {
        Self {
            elements: BTreeSet::new(),
            added: BTreeSet::new(),
        }
    }
}

impl<T: CrdtElement> GSet<T> {
    /// Adds `element`; `false` if it was there already.
    pub fn add(&mut self, element: T) -> bool {
        let new = self.elements.insert(element.clone());
        if new {
            self.added.insert(element);
        }
        new
    }
    pub fn contains(&self, element: &T) -> bool {
        self.elements.contains(element)
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.elements.iter()
    }
    pub fn len(&self) -> usize {
        self.elements.len()
    }
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

impl<T: CrdtElement> Crdt for GSet<T> {}
impl<T: CrdtElement> private::Replicated for GSet<T> {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Gset(g)) => self.elements.extend(elements::<T>(&g.added)?),
            _ => return Err(wrong("GSet", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Gset(GSetDelta {
            added: self.elements.iter().map(T::to_any).collect(),
        }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let added = std::mem::take(&mut self.added);
        (!added.is_empty()).then(|| {
            delta(Delta::Gset(GSetDelta {
                added: added.iter().map(T::to_any).collect(),
            }))
        })?
    }
}

/// A set whose elements can be added and removed (an observed-remove set: an
/// addition concurrent with a removal wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrSet<T: CrdtElement> {
    elements: BTreeSet<T>,
    cleared: bool,
    added: BTreeSet<T>,
    removed: BTreeSet<T>,
}

impl<T: CrdtElement> Default for OrSet<T> {
    fn default() -> Self {
        Self {
            elements: BTreeSet::new(),
            cleared: false,
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }
}

impl<T: CrdtElement> OrSet<T> {
    /// Adds `element`; `false` if it was there already.
    pub fn add(&mut self, element: T) -> bool {
        if !self.elements.insert(element.clone()) {
            return false;
        }
        self.removed.remove(&element);
        self.added.insert(element);
        true
    }
    /// Removes `element`; `false` if it was not there.
    pub fn remove(&mut self, element: &T) -> bool {
        if !self.elements.remove(element) {
            return false;
        }
        if !self.added.remove(element) {
            self.removed.insert(element.clone());
        }
        true
    }
    pub fn clear(&mut self) {
        self.elements.clear();
        self.added.clear();
        self.removed.clear();
        self.cleared = true;
    }
    pub fn contains(&self, element: &T) -> bool {
        self.elements.contains(element)
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.elements.iter()
    }
    pub fn len(&self) -> usize {
        self.elements.len()
    }
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

impl<T: CrdtElement> Crdt for OrSet<T> {}
impl<T: CrdtElement> private::Replicated for OrSet<T> {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        let Some(Delta::Orset(o)) = &d.delta else {
            return Err(wrong("ORSet", d));
        };
        let (removed, added) = (elements::<T>(&o.removed)?, elements::<T>(&o.added)?);
        if o.cleared {
            self.elements.clear();
        }
        for element in &removed {
            self.elements.remove(element);
        }
        self.elements.extend(added);
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Orset(OrSetDelta {
            cleared: false,
            removed: vec![],
            added: self.elements.iter().map(T::to_any).collect(),
        }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let cleared = std::mem::take(&mut self.cleared);
        let (added, removed) = (std::mem::take(&mut self.added), std::mem::take(&mut self.removed));
        (cleared || !added.is_empty() || !removed.is_empty()).then(|| {
            delta(Delta::Orset(OrSetDelta {
                cleared,
                removed: removed.iter().map(T::to_any).collect(),
                added: added.iter().map(T::to_any).collect(),
            }))
        })?
    }
}

/// The clock a register write is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The proxy's wall clock: the latest write wins.
    #[default]
    Default,
    /// The earliest write wins.
    Reverse,
    /// The given value orders writes.
    Custom(i64),
    /// The given value, moved past the current write's if it is not larger.
    CustomAutoIncrement(i64),
}

/// A register that keeps the last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwRegister<T: CrdtElement> {
    value: Option<T>,
    pending: Option<(T, Clock)>,
}

impl<T: CrdtElement> Default for LwwRegister<T> {
    fn default() -> Self {
        Self {
            value: None,
            pending: None,
        }
    }
}

impl<T: CrdtElement> LwwRegister<T> {
    /// The value, `None` if never written.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }
    pub fn set(&mut self, value: T) {
        self.set_with_clock(value, Clock::Default);
    }
    pub fn set_with_clock(&mut self, value: T, clock: Clock) {
        self.value = Some(value.clone());
        self.pending = Some((value, clock));
    }
}

impl<T: CrdtElement> Crdt for LwwRegister<T> {}
impl<T: CrdtElement> private::Replicated for LwwRegister<T> {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Lwwregister(r)) => {
                self.value = r.value.as_ref().map(T::from_any).transpose()?;
            }
            _ => return Err(wrong("LWWRegister", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        let clock = self.pending.as_ref().map_or(Clock::Default, |(_, clock)| *clock);
        register_delta(self.value.as_ref(), clock)
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let (value, clock) = self.pending.take()?;
        Some(register_delta(Some(&value), clock))
    }
}

/// A flag that, once enabled, stays enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flag {
    enabled: bool,
    pending: bool,
}

impl Flag {
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    pub fn enable(&mut self) {
        if !self.enabled {
            self.enabled = true;
            self.pending = true;
        }
    }
}

impl Crdt for Flag {}
impl private::Replicated for Flag {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Flag(f)) => self.enabled |= f.value,
            _ => return Err(wrong("Flag", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Flag(FlagDelta { value: self.enabled }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        std::mem::take(&mut self.pending).then(|| delta(Delta::Flag(FlagDelta { value: true })))?
    }
}

/// A vote: this replica's own vote, and the tally over the replicas serving
/// the entity (one while one sidecar owns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    self_vote: bool,
    votes_for: i32,
    total_voters: i32,
    pending: Option<bool>,
}

impl Default for Vote {
    fn default() -> Self {
        Self {
            self_vote: false,
            votes_for: 0,
            total_voters: 1,
            pending: None,
        }
    }
}

impl Vote {
    pub fn self_vote(&self) -> bool {
        self.self_vote
    }
    pub fn votes_for(&self) -> i32 {
        self.votes_for
    }
    pub fn total_voters(&self) -> i32 {
        self.total_voters
    }
    pub fn at_least_one(&self) -> bool {
        self.votes_for > 0
    }
    pub fn majority(&self) -> bool {
        self.votes_for * 2 > self.total_voters
    }
    pub fn all(&self) -> bool {
        self.votes_for == self.total_voters
    }
    pub fn vote(&mut self, vote: bool) {
        if self.self_vote != vote {
            self.votes_for += if vote { 1 } else { -1 };
            self.self_vote = vote;
            self.pending = Some(vote);
        }
    }
}

impl Crdt for Vote {}
impl private::Replicated for Vote {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        match &d.delta {
            Some(Delta::Vote(v)) => {
                self.self_vote = v.self_vote;
                self.votes_for = v.votes_for;
                self.total_voters = v.total_voters;
            }
            _ => return Err(wrong("Vote", d)),
        }
        Ok(())
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Vote(VoteDelta {
            self_vote: self.self_vote,
            votes_for: 0,
            total_voters: 0,
        }))
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let self_vote = self.pending.take()?;
        delta(Delta::Vote(VoteDelta {
            self_vote,
            votes_for: 0,
            total_voters: 0,
        }))
    }
}

/// A map from keys to CRDTs of one type (an observed-remove map: a key's
/// value merges the writes of every replica; a removal takes away what it saw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrMap<K: CrdtElement, V: Crdt> {
    entries: BTreeMap<K, V>,
    cleared: bool,
    removed: BTreeSet<K>,
    added: BTreeSet<K>,
}

impl<K: CrdtElement, V: Crdt> Default for OrMap<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            cleared: false,
            removed: BTreeSet::new(),
            added: BTreeSet::new(),
        }
    }
}

impl<K: CrdtElement, V: Crdt> OrMap<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }
    /// The value of `key` to change in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }
    /// The value of `key`, added empty if the map does not hold it.
    pub fn get_or_insert(&mut self, key: K) -> &mut V {
        if !self.entries.contains_key(&key) {
            self.added.insert(key.clone());
        }
        self.entries.entry(key).or_default()
    }
    /// Removes `key`; `false` if the map did not hold it.
    pub fn remove(&mut self, key: &K) -> bool {
        if self.entries.remove(key).is_none() {
            return false;
        }
        if !self.added.remove(key) {
            self.removed.insert(key.clone());
        }
        true
    }
    pub fn clear(&mut self) {
        self.entries.clear();
        self.added.clear();
        self.removed.clear();
        self.cleared = true;
    }
    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn map_entry<K: CrdtElement>(key: &K, delta: pb::CrdtDelta) -> OrMapEntryDelta {
    OrMapEntryDelta {
        key: Some(key.to_any()),
        delta: Some(delta),
    }
}

impl<K: CrdtElement, V: Crdt> Crdt for OrMap<K, V> {}
impl<K: CrdtElement, V: Crdt> private::Replicated for OrMap<K, V> {
    fn apply(&mut self, d: &pb::CrdtDelta) -> Result<(), EntityError> {
        let Some(Delta::Ormap(m)) = &d.delta else {
            return Err(wrong("ORMap", d));
        };
        let mut next = self.entries.clone();
        if m.cleared {
            next.clear();
        }
        for key in &m.removed {
            next.remove(&K::from_any(key)?);
        }
        for entry in m.updated.iter().chain(&m.added) {
            let key = K::from_any(
                entry
                    .key
                    .as_ref()
                    .ok_or_else(|| EntityError::new("an ORMap entry without a key"))?,
            )?;
            let change = entry
                .delta
                .as_ref()
                .ok_or_else(|| EntityError::new("an ORMap entry without a delta"))?;
            next.entry(key).or_default().apply(change)?;
        }
        self.entries = next;
        Ok(())
    }
    fn take_delta(&mut self) -> Option<pb::CrdtDelta> {
        let cleared = std::mem::take(&mut self.cleared);
        let removed = std::mem::take(&mut self.removed);
        let added_keys = std::mem::take(&mut self.added);
        let (mut added, mut updated) = (Vec::new(), Vec::new());
        for (key, value) in &mut self.entries {
            if added_keys.contains(key) {
                value.take_delta();
                added.push(map_entry(key, value.full_delta()));
            } else if let Some(change) = value.take_delta() {
                updated.push(map_entry(key, change));
            }
        }
        (cleared || !removed.is_empty() || !added.is_empty() || !updated.is_empty()).then(|| {
            delta(Delta::Ormap(OrMapDelta {
                cleared,
                removed: removed.iter().map(K::to_any).collect(),
                updated,
                added,
            }))
        })?
    }
    fn full_delta(&self) -> pb::CrdtDelta {
        whole(Delta::Ormap(OrMapDelta {
            cleared: false,
            removed: vec![],
            updated: vec![],
            added: self.entries.iter().map(|(k, v)| map_entry(k, v.full_delta())).collect(),
        }))
    }
}

/// An entity whose state is a CRDT that the proxy replicates and persists.
pub trait CrdtEntity: Send + 'static {
    /// The entity's CRDT: [`GCounter`], [`PnCounter`], [`GSet`], [`OrSet`],
    /// [`LwwRegister`], [`Flag`], [`OrMap`] or [`Vote`].
    type Crdt: Crdt;

    /// Handles one command: reads and changes `ctx.state()`, or deletes the
    /// entity, and answers. On `Err` the changes are discarded.
    fn handle_command(&self, command: &Command, ctx: &mut CrdtContext<'_, Self::Crdt>) -> Result<Reply, Failure>;
}

/// How many replicas must hold a change before the client hears of it. With
/// one sidecar owning the entity all three mean the same: the change is durable
/// in the store before the reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteConsistency {
    #[default]
    Local,
    Majority,
    All,
}

impl WriteConsistency {
    fn into_proto(self) -> pb::CrdtWriteConsistency {
        match self {
            WriteConsistency::Local => pb::CrdtWriteConsistency::Local,
            WriteConsistency::Majority => pb::CrdtWriteConsistency::Majority,
            WriteConsistency::All => pb::CrdtWriteConsistency::All,
        }
    }
}

/// Runs when the state of an entity with a streamed command changes; its reply
/// goes to that command's client ([`Reply::none`]: nothing this time).
pub type OnChange<C> = Box<dyn FnMut(&C, &mut StreamContext) -> Result<Reply, Failure> + Send>;

/// Runs when a streamed command's client cancels.
pub type OnCancel<C> = Box<dyn FnOnce(&mut CancelContext<'_, C>) + Send>;

/// A streamed command's stream, while a change callback runs.
#[derive(Debug, Default)]
pub struct StreamContext {
    end: bool,
}

impl StreamContext {
    /// Ends the stream after this message (or now, with [`Reply::none`]).
    pub fn end_stream(&mut self) {
        self.end = true;
    }
}

/// The entity's CRDT while a cancelled stream's callback runs.
pub struct CancelContext<'a, C> {
    state: &'a mut C,
    effects: Vec<SideEffect>,
}

impl<C> CancelContext<'_, C> {
    pub fn state(&self) -> &C {
        self.state
    }

    /// The CRDT to change; the proxy persists the change.
    pub fn state_mut(&mut self) -> &mut C {
        self.state
    }

    /// Asks the proxy to perform a side effect.
    pub fn effect(&mut self, effect: SideEffect) {
        self.effects.push(effect);
    }
}

/// The entity's CRDT during one command.
pub struct CrdtContext<'a, C> {
    state: &'a mut C,
    delete: bool,
    consistency: WriteConsistency,
    streamed: bool,
    on_change: Option<OnChange<C>>,
    on_cancel: Option<OnCancel<C>>,
}

impl<C> std::fmt::Debug for CrdtContext<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdtContext")
            .field("delete", &self.delete)
            .field("consistency", &self.consistency)
            .field("streamed", &self.streamed)
            .finish_non_exhaustive()
    }
}

impl<'a, C> CrdtContext<'a, C> {
    fn new(state: &'a mut C, streamed: bool) -> Self {
        Self {
            state,
            delete: false,
            consistency: WriteConsistency::Local,
            streamed,
            on_change: None,
            on_cancel: None,
        }
    }

    pub fn state(&self) -> &C {
        self.state
    }

    /// The CRDT to change; the changes go to the proxy as one delta when the
    /// command succeeds.
    pub fn state_mut(&mut self) -> &mut C {
        self.state
    }

    /// Deletes the entity for good once the command succeeds.
    pub fn delete(&mut self) {
        self.delete = true;
    }

    /// How many replicas must hold this command's change before the reply.
    pub fn write_consistency(&mut self, consistency: WriteConsistency) {
        self.consistency = consistency;
    }

    /// Whether the client asked for a stream (a server-streamed method).
    pub fn is_streamed(&self) -> bool {
        self.streamed
    }

    /// Keeps a streamed command open: `callback` runs every time the state
    /// changes afterwards, and its reply goes to the client. Ignored for a
    /// command that is not streamed.
    pub fn on_change(
        &mut self,
        callback: impl FnMut(&C, &mut StreamContext) -> Result<Reply, Failure> + Send + 'static,
    ) {
        self.on_change = Some(Box::new(callback));
    }

    /// Keeps a streamed command open and runs `callback` when its client
    /// cancels. Ignored for a command that is not streamed.
    pub fn on_cancel(&mut self, callback: impl FnOnce(&mut CancelContext<'_, C>) + Send + 'static) {
        self.on_cancel = Some(Box::new(callback));
    }
}

/// A CRDT entity type bound to one gRPC service of the user function.
pub struct CrdtService<E> {
    pub(crate) service_name: String,
    pub(crate) passivation_timeout: Option<Duration>,
    pub(crate) factory: Arc<dyn Fn(&str) -> E + Send + Sync>,
}

impl<E: CrdtEntity> CrdtService<E> {
    /// Serves the gRPC service `service_name` (fully qualified) with entities
    /// made by `factory` from their entity id.
    pub fn new(service_name: impl Into<String>, factory: impl Fn(&str) -> E + Send + Sync + 'static) -> Self {
        Self {
            service_name: service_name.into(),
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

/// What a CRDT command that succeeded produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CrdtHandled {
    pub reply: Reply,
    pub state_action: Option<pb::CrdtStateAction>,
    /// The command is streamed and stays open.
    pub streamed: bool,
}

/// A CRDT entity together with its CRDT, without the CRDT's type.
pub(crate) trait DynCrdtEntity: Send {
    /// Applies a delta from the proxy (the state in `CrdtInit`, or a change).
    fn apply(&mut self, delta: &pb::CrdtDelta) -> Result<(), EntityError>;
    /// The proxy deleted the entity.
    fn deleted(&mut self);
    fn handle_command(&mut self, command: &Command, streamed: bool) -> Result<CrdtHandled, Failure>;
    /// Runs the change callbacks of the open streams (except `skip`'s), after
    /// the state changed.
    fn changed(&mut self, skip: Option<i64>) -> Vec<pb::CrdtStreamedMessage>;
    /// The client of streamed command `command_id` cancelled.
    fn cancelled(&mut self, command_id: i64) -> pb::CrdtStreamCancelledResponse;
}

/// An open streamed command's callbacks.
struct Subscription<C> {
    on_change: Option<OnChange<C>>,
    on_cancel: Option<OnCancel<C>>,
}

pub(crate) struct Hosted<E: CrdtEntity> {
    entity: E,
    state: E::Crdt,
    subscriptions: BTreeMap<i64, Subscription<E::Crdt>>,
}

impl<E: CrdtEntity> Hosted<E> {
    pub(crate) fn new(entity: E) -> Self {
        Self {
            entity,
            state: E::Crdt::default(),
            subscriptions: BTreeMap::new(),
        }
    }
}

fn state_action(
    action: Option<pb::crdt_state_action::Action>,
    consistency: WriteConsistency,
) -> Option<pb::CrdtStateAction> {
    action.map(|action| pb::CrdtStateAction {
        action: Some(action),
        write_consistency: consistency.into_proto() as i32,
    })
}

impl<E: CrdtEntity> DynCrdtEntity for Hosted<E> {
    fn apply(&mut self, delta: &pb::CrdtDelta) -> Result<(), EntityError> {
        private::Replicated::apply(&mut self.state, delta)
    }

    fn deleted(&mut self) {
        self.state = E::Crdt::default();
    }

    fn handle_command(&mut self, command: &Command, streamed: bool) -> Result<CrdtHandled, Failure> {
        let before = self.state.clone();
        let mut ctx = CrdtContext::new(&mut self.state, streamed);
        let result = self.entity.handle_command(command, &mut ctx);
        let CrdtContext {
            delete,
            consistency,
            on_change,
            on_cancel,
            ..
        } = ctx;
        let keeps_open = streamed && (on_change.is_some() || on_cancel.is_some());
        let reply = match result {
            // A streamed command may send nothing yet.
            Ok(reply) if !reply.is_none() || keeps_open => reply,
            Ok(_) => {
                self.state = before;
                return Err(Reply::entities_must_answer(command.name()));
            }
            Err(failure) => {
                self.state = before;
                return Err(failure);
            }
        };
        let action = if delete {
            self.state = E::Crdt::default();
            Some(pb::crdt_state_action::Action::Delete(pb::CrdtDelete {}))
        } else {
            private::Replicated::take_delta(&mut self.state).map(pb::crdt_state_action::Action::Update)
        };
        if keeps_open {
            self.subscriptions
                .insert(command.id(), Subscription { on_change, on_cancel });
        }
        Ok(CrdtHandled {
            reply,
            state_action: state_action(action, consistency),
            streamed: keeps_open,
        })
    }

    fn changed(&mut self, skip: Option<i64>) -> Vec<pb::CrdtStreamedMessage> {
        let mut messages = Vec::new();
        let mut ended = Vec::new();
        for (&command_id, subscription) in &mut self.subscriptions {
            let Some(on_change) = subscription.on_change.as_mut().filter(|_| Some(command_id) != skip) else {
                continue;
            };
            let mut stream = StreamContext::default();
            let (client_action, side_effects) = match on_change(&self.state, &mut stream) {
                Ok(reply) => {
                    let (action, side_effects) = reply.into_proto();
                    (action.map(|action| pb_client_action(Some(action))), side_effects)
                }
                Err(failure) => {
                    // A failed change callback ends its stream with the failure.
                    stream.end = true;
                    (Some(failure.into_client_action(command_id)), Vec::new())
                }
            };
            if stream.end {
                ended.push(command_id);
            }
            if client_action.is_some() || !side_effects.is_empty() || stream.end {
                messages.push(pb::CrdtStreamedMessage {
                    command_id,
                    client_action,
                    side_effects,
                    end_stream: stream.end,
                });
            }
        }
        for command_id in ended {
            self.subscriptions.remove(&command_id);
        }
        messages
    }

    fn cancelled(&mut self, command_id: i64) -> pb::CrdtStreamCancelledResponse {
        let on_cancel = self.subscriptions.remove(&command_id).and_then(|s| s.on_cancel);
        let mut effects = Vec::new();
        if let Some(on_cancel) = on_cancel {
            let mut ctx = CancelContext {
                state: &mut self.state,
                effects: Vec::new(),
            };
            on_cancel(&mut ctx);
            effects = ctx.effects;
        }
        let action = private::Replicated::take_delta(&mut self.state).map(pb::crdt_state_action::Action::Update);
        pb::CrdtStreamCancelledResponse {
            command_id,
            side_effects: effects.into_iter().map(SideEffect::into_proto).collect(),
            state_action: state_action(action, WriteConsistency::Local),
        }
    }
}

fn pb_client_action(
    action: Option<strata_proto::cloudstate::client_action::Action>,
) -> strata_proto::cloudstate::ClientAction {
    strata_proto::cloudstate::ClientAction { action }
}

#[cfg(test)]
mod tests {
    use super::{private::Replicated, *};

    #[test]
    fn counters_record_their_net_change() {
        let mut c = PnCounter::default();
        c.increment(3);
        c.decrement(5);
        assert_eq!(c.value(), -2);
        assert_eq!(c.take_delta(), delta(Delta::Pncounter(PnCounterDelta { change: -2 })));
        assert_eq!(c.take_delta(), None);
        c.apply(&delta(Delta::Pncounter(PnCounterDelta { change: 10 })).unwrap())
            .unwrap();
        assert_eq!(c.value(), 8);
        assert!(c
            .apply(&delta(Delta::Flag(FlagDelta { value: true })).unwrap())
            .is_err());
    }

    #[test]
    fn an_orset_delta_nets_out_what_a_command_undid() {
        let mut s = OrSet::<String>::default();
        s.apply(
            &delta(Delta::Orset(OrSetDelta {
                cleared: false,
                removed: vec![],
                added: vec!["ann".to_string().to_any()],
            }))
            .unwrap(),
        )
        .unwrap();
        assert!(s.add("bob".into()));
        assert!(!s.add("bob".into()));
        assert!(s.remove(&"bob".into()));
        assert!(s.remove(&"ann".into()));
        assert_eq!(
            s.take_delta(),
            delta(Delta::Orset(OrSetDelta {
                cleared: false,
                removed: vec!["ann".to_string().to_any()],
                added: vec![],
            }))
        );
        assert!(s.is_empty());
    }

    #[test]
    fn an_ormap_adds_new_keys_whole_and_updates_known_ones() {
        let mut m = OrMap::<String, PnCounter>::default();
        m.apply(&whole(Delta::Ormap(OrMapDelta {
            added: vec![map_entry(
                &"a".to_string(),
                whole(Delta::Pncounter(PnCounterDelta { change: 2 })),
            )],
            ..Default::default()
        })))
        .unwrap();
        assert_eq!(m.get(&"a".into()).unwrap().value(), 2);
        m.get_mut(&"a".into()).unwrap().increment(1);
        m.get_or_insert("b".into()).increment(5);
        m.get_or_insert("c".into());
        assert!(m.remove(&"c".into()));
        assert_eq!(
            m.take_delta(),
            delta(Delta::Ormap(OrMapDelta {
                cleared: false,
                removed: vec![],
                updated: vec![map_entry(
                    &"a".to_string(),
                    whole(Delta::Pncounter(PnCounterDelta { change: 1 }))
                )],
                added: vec![map_entry(
                    &"b".to_string(),
                    whole(Delta::Pncounter(PnCounterDelta { change: 5 }))
                )],
            }))
        );
        assert_eq!(m.take_delta(), None);
        assert!(m.remove(&"a".into()));
        assert_eq!(
            m.take_delta(),
            delta(Delta::Ormap(OrMapDelta {
                removed: vec!["a".to_string().to_any()],
                ..Default::default()
            }))
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn elements_round_trip_as_cloudstate_primitives() {
        let any = "x".to_string().to_any();
        assert_eq!(any.type_url, "p.cloudstate.io/string");
        assert_eq!(String::from_any(&any).unwrap(), "x");
        assert!(i64::from_any(&any).is_err());
    }

    /// Watches a counter: streams its value, ends at 9, and takes 1 off when
    /// the client cancels.
    struct Watcher;

    impl CrdtEntity for Watcher {
        type Crdt = PnCounter;

        fn handle_command(&self, command: &Command, ctx: &mut CrdtContext<'_, PnCounter>) -> Result<Reply, Failure> {
            if command.name() == "Watch" && ctx.is_streamed() {
                ctx.state_mut().increment(1);
                ctx.on_change(|counter, stream| {
                    if counter.value() >= 9 {
                        stream.end_stream();
                    }
                    Ok(Reply::any(counter.value().to_any()))
                });
                ctx.on_cancel(|gone| {
                    gone.state_mut().decrement(1);
                });
                ctx.write_consistency(WriteConsistency::All);
                return Ok(Reply::none());
            }
            ctx.state_mut().increment(4);
            Ok(Reply::any(ctx.state().value().to_any()))
        }
    }

    fn command(id: i64, name: &str) -> Command {
        Command::new("e".into(), id, name.into(), Any::default())
    }

    #[test]
    fn a_streamed_command_hears_every_change_until_it_ends_or_its_client_cancels() {
        let mut hosted = Hosted::new(Watcher);
        // --- the watch opens (no message yet) with its own change, at the consistency asked for
        let opened = hosted.handle_command(&command(1, "Watch"), true).unwrap();
        assert!(opened.streamed && opened.reply.is_none());
        let action = opened.state_action.unwrap();
        assert_eq!(action.write_consistency, pb::CrdtWriteConsistency::All as i32);
        // --- not streamed, the same method keeps nothing open
        let unary = hosted.handle_command(&command(2, "Add"), false).unwrap();
        assert!(!unary.streamed);
        // --- a change: the open stream hears the value; the command that made it is skipped
        assert!(hosted.changed(Some(1)).is_empty());
        let heard = hosted.changed(None);
        assert_eq!(heard.len(), 1);
        assert_eq!((heard[0].command_id, heard[0].end_stream), (1, false));
        // --- a second watcher, cancelled: its change comes back with the response
        hosted.handle_command(&command(3, "Watch"), true).unwrap();
        let response = hosted.cancelled(3);
        assert_eq!(response.command_id, 3);
        assert_eq!(
            response.state_action.unwrap().action,
            Some(pb::crdt_state_action::Action::Update(pb::CrdtDelta {
                delta: Some(Delta::Pncounter(PnCounterDelta { change: -1 }))
            }))
        );
        // --- at 9 the first stream ends, and hears nothing after
        hosted.handle_command(&command(4, "Add"), false).unwrap();
        let last = hosted.changed(None);
        assert_eq!((last[0].command_id, last[0].end_stream), (1, true));
        hosted.handle_command(&command(5, "Add"), false).unwrap();
        assert!(hosted.changed(None).is_empty());
        // --- a cancel for a stream that is over is still answered, with no change
        assert_eq!(hosted.cancelled(1).state_action, None);
    }
}
