//! The replicated data types behind CRDT entities, pure: GCounter, PNCounter,
//! GSet, ORSet, LWWRegister, Flag, ORMap and Vote as state-based CRDTs whose
//! replicas are sidecar instances. Owns applying a function's delta as the local
//! replica ([`Crdt::apply`]), merging two states ([`Crdt::merge`]), the plain
//! value the function sees ([`Crdt::view`], [`View`]) with the deltas between
//! two values, and the stored encoding. No I/O and no clock: the caller passes
//! the replica's id and the time. Today one sidecar owns each entity, so merges
//! only run in tests; they are here, law-abiding, for more replicas.

mod counter;
mod dots;
mod encoding;
mod flag;
mod map;
mod register;
mod set;
mod view;
mod vote;

#[cfg(test)]
mod laws_tests;

use prost_types::Any;
use strata_proto::cloudstate::crdt::{crdt_delta::Delta, CrdtDelta};

pub(crate) use self::{
    counter::{GCounter, PnCounter},
    encoding::{decode, encode},
    flag::Flag,
    map::OrMap,
    register::LwwRegister,
    set::{GSet, OrSet},
    view::View,
    vote::{Vote, Voters},
};

/// An element of a set, a map's key or a register's value: a
/// `google.protobuf.Any` compared by its type URL and bytes (the function must
/// encode equal values to equal bytes, as CloudState's protocol says).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Element {
    pub type_url: String,
    pub value: Vec<u8>,
}

impl From<&Any> for Element {
    fn from(any: &Any) -> Self {
        Element {
            type_url: any.type_url.clone(),
            value: any.value.clone(),
        }
    }
}

impl From<&Element> for Any {
    fn from(element: &Element) -> Self {
        Any {
            type_url: element.type_url.clone(),
            value: element.value.clone(),
        }
    }
}

/// The replica a change is made by, and when (milliseconds since the epoch, for
/// a last-writer-wins register's default clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replica<'a> {
    pub id: &'a str,
    pub now_millis: i64,
}

/// Why a delta cannot be applied: the function sent something the entity's
/// CRDT cannot take. Nothing of such a delta is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeltaError {
    #[error("a {got} delta cannot change a {expected}")]
    WrongType { expected: Kind, got: Kind },
    #[error("the delta is empty (it names no CRDT type)")]
    Empty,
    #[error("{0}")]
    Invalid(String),
    #[error("ORMap key {0}")]
    UnsupportedKey(String),
}

/// The eight CRDT types, for messages and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    GCounter,
    PnCounter,
    GSet,
    OrSet,
    LwwRegister,
    Flag,
    OrMap,
    Vote,
}

impl Kind {
    /// The CRDT type a delta is for.
    pub(crate) fn of(delta: &CrdtDelta) -> Result<Kind, DeltaError> {
        Ok(match delta.delta.as_ref().ok_or(DeltaError::Empty)? {
            Delta::Gcounter(_) => Kind::GCounter,
            Delta::Pncounter(_) => Kind::PnCounter,
            Delta::Gset(_) => Kind::GSet,
            Delta::Orset(_) => Kind::OrSet,
            Delta::Lwwregister(_) => Kind::LwwRegister,
            Delta::Flag(_) => Kind::Flag,
            Delta::Ormap(_) => Kind::OrMap,
            Delta::Vote(_) => Kind::Vote,
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::GCounter => "GCounter",
            Kind::PnCounter => "PNCounter",
            Kind::GSet => "GSet",
            Kind::OrSet => "ORSet",
            Kind::LwwRegister => "LWWRegister",
            Kind::Flag => "Flag",
            Kind::OrMap => "ORMap",
            Kind::Vote => "Vote",
        })
    }
}

/// One CRDT's replicated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Crdt {
    GCounter(GCounter),
    PnCounter(PnCounter),
    GSet(GSet),
    OrSet(OrSet),
    LwwRegister(LwwRegister),
    Flag(Flag),
    OrMap(OrMap),
    Vote(Vote),
}

impl Crdt {
    /// The empty CRDT of a kind (what a new entity, or a new map entry, starts
    /// from before its first delta).
    pub(crate) fn empty(kind: Kind) -> Crdt {
        match kind {
            Kind::GCounter => Crdt::GCounter(GCounter::default()),
            Kind::PnCounter => Crdt::PnCounter(PnCounter::default()),
            Kind::GSet => Crdt::GSet(GSet::default()),
            Kind::OrSet => Crdt::OrSet(OrSet::default()),
            Kind::LwwRegister => Crdt::LwwRegister(LwwRegister::default()),
            Kind::Flag => Crdt::Flag(Flag::default()),
            Kind::OrMap => Crdt::OrMap(OrMap::default()),
            Kind::Vote => Crdt::Vote(Vote::default()),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Crdt::GCounter(_) => Kind::GCounter,
            Crdt::PnCounter(_) => Kind::PnCounter,
            Crdt::GSet(_) => Kind::GSet,
            Crdt::OrSet(_) => Kind::OrSet,
            Crdt::LwwRegister(_) => Kind::LwwRegister,
            Crdt::Flag(_) => Kind::Flag,
            Crdt::OrMap(_) => Kind::OrMap,
            Crdt::Vote(_) => Kind::Vote,
        }
    }

    /// A new CRDT of the delta's kind with the delta applied.
    pub(crate) fn from_delta(delta: &CrdtDelta, replica: &Replica<'_>) -> Result<Crdt, DeltaError> {
        let mut crdt = Crdt::empty(Kind::of(delta)?);
        crdt.apply(delta, replica)?;
        Ok(crdt)
    }

    /// Applies a delta the function sent, as the change of `replica`. On error
    /// the state is unchanged.
    pub(crate) fn apply(&mut self, delta: &CrdtDelta, replica: &Replica<'_>) -> Result<(), DeltaError> {
        let got = Kind::of(delta)?;
        let expected = self.kind();
        let wrong = || DeltaError::WrongType { expected, got };
        match (self, delta.delta.as_ref().ok_or(DeltaError::Empty)?) {
            (Crdt::GCounter(c), Delta::Gcounter(d)) => c.increment(replica.id, d.increment),
            (Crdt::PnCounter(c), Delta::Pncounter(d)) => c.change(replica.id, d.change),
            (Crdt::GSet(s), Delta::Gset(d)) => {
                s.add(&d.added);
                Ok(())
            }
            (Crdt::OrSet(s), Delta::Orset(d)) => {
                s.apply(d, replica.id);
                Ok(())
            }
            (Crdt::LwwRegister(r), Delta::Lwwregister(d)) => r.set(d, replica),
            (Crdt::Flag(f), Delta::Flag(d)) => f.set(d.value),
            (Crdt::OrMap(m), Delta::Ormap(d)) => m.apply(d, replica),
            (Crdt::Vote(v), Delta::Vote(d)) => {
                v.vote(replica.id, d.self_vote);
                Ok(())
            }
            _ => Err(wrong()),
        }
    }

    /// Merges another replica's state of the same CRDT into this one.
    pub(crate) fn merge(&mut self, other: &Crdt) -> Result<(), DeltaError> {
        let (expected, got) = (self.kind(), other.kind());
        match (self, other) {
            (Crdt::GCounter(a), Crdt::GCounter(b)) => a.merge(b),
            (Crdt::PnCounter(a), Crdt::PnCounter(b)) => a.merge(b),
            (Crdt::GSet(a), Crdt::GSet(b)) => a.merge(b),
            (Crdt::OrSet(a), Crdt::OrSet(b)) => a.merge(b),
            (Crdt::LwwRegister(a), Crdt::LwwRegister(b)) => a.merge(b),
            (Crdt::Flag(a), Crdt::Flag(b)) => a.merge(b),
            (Crdt::OrMap(a), Crdt::OrMap(b)) => a.merge(b),
            (Crdt::Vote(a), Crdt::Vote(b)) => a.merge(b),
            _ => return Err(DeltaError::WrongType { expected, got }),
        }
        Ok(())
    }

    /// The plain value the function holds, as `voters` see a vote.
    pub(crate) fn view(&self, voters: &Voters) -> View {
        match self {
            Crdt::GCounter(c) => View::GCounter(c.value()),
            Crdt::PnCounter(c) => View::PnCounter(c.value()),
            Crdt::GSet(s) => View::GSet(s.elements().clone()),
            Crdt::OrSet(s) => View::OrSet(s.elements()),
            Crdt::LwwRegister(r) => View::LwwRegister(r.value()),
            Crdt::Flag(f) => View::Flag(f.enabled()),
            Crdt::OrMap(m) => View::OrMap(m.entries().map(|(k, v)| (k.clone(), v.view(voters))).collect()),
            Crdt::Vote(v) => v.view(voters),
        }
    }
}
