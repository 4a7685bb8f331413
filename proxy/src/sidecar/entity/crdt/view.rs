//! What the function sees of a CRDT: its plain value ([`View`]), the delta that
//! gives a function with no value this one (`CrdtInit`), the delta between two
//! values (sent when the value changes other than by the function's own delta),
//! and applying a delta to a value as the function does.

use std::collections::{BTreeMap, BTreeSet};

use prost_types::Any;
use strata_proto::cloudstate::crdt::{
    crdt_delta::Delta, CrdtDelta, FlagDelta, GCounterDelta, GSetDelta, LwwRegisterDelta, OrMapDelta, OrMapEntryDelta,
    OrSetDelta, PnCounterDelta, VoteDelta,
};

use super::{map::key, DeltaError, Element, Kind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    GCounter(u64),
    PnCounter(i64),
    GSet(BTreeSet<Element>),
    OrSet(BTreeSet<Element>),
    LwwRegister(Element),
    Flag(bool),
    OrMap(BTreeMap<Element, View>),
    Vote {
        self_vote: bool,
        votes_for: i32,
        total_voters: i32,
    },
}

fn anys(elements: impl IntoIterator<Item = Element>) -> Vec<Any> {
    elements.into_iter().map(|e| Any::from(&e)).collect()
}

fn delta(delta: Delta) -> CrdtDelta {
    CrdtDelta { delta: Some(delta) }
}

impl View {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            View::GCounter(_) => Kind::GCounter,
            View::PnCounter(_) => Kind::PnCounter,
            View::GSet(_) => Kind::GSet,
            View::OrSet(_) => Kind::OrSet,
            View::LwwRegister(_) => Kind::LwwRegister,
            View::Flag(_) => Kind::Flag,
            View::OrMap(_) => Kind::OrMap,
            View::Vote { .. } => Kind::Vote,
        }
    }

    /// The delta that turns nothing into this value (how `CrdtInit` carries it).
    pub(crate) fn as_delta(&self) -> CrdtDelta {
        delta(match self {
            View::GCounter(value) => Delta::Gcounter(GCounterDelta { increment: *value }),
            View::PnCounter(value) => Delta::Pncounter(PnCounterDelta { change: *value }),
            View::GSet(elements) => Delta::Gset(GSetDelta {
                added: anys(elements.iter().cloned()),
            }),
            View::OrSet(elements) => Delta::Orset(OrSetDelta {
                cleared: false,
                removed: vec![],
                added: anys(elements.iter().cloned()),
            }),
            View::LwwRegister(value) => Delta::Lwwregister(LwwRegisterDelta {
                value: Some(Any::from(value)),
                clock: 0,
                custom_clock_value: 0,
            }),
            View::Flag(value) => Delta::Flag(FlagDelta { value: *value }),
            View::OrMap(entries) => Delta::Ormap(OrMapDelta {
                cleared: false,
                removed: vec![],
                updated: vec![],
                added: entries
                    .iter()
                    .map(|(k, v)| OrMapEntryDelta {
                        key: Some(Any::from(k)),
                        delta: Some(v.as_delta()),
                    })
                    .collect(),
            }),
            View::Vote {
                self_vote,
                votes_for,
                total_voters,
            } => Delta::Vote(VoteDelta {
                self_vote: *self_vote,
                votes_for: *votes_for,
                total_voters: *total_voters,
            }),
        })
    }

    /// The delta that turns `old` into `new` (`None`: no change). A counter that
    /// went down or a flag that went off cannot be expressed (a CRDT never
    /// does that) and is `None` too; values of different kinds have no delta.
    pub(crate) fn diff(old: &View, new: &View) -> Option<CrdtDelta> {
        if old == new {
            return None;
        }
        Some(delta(match (old, new) {
            (View::GCounter(a), View::GCounter(b)) if b > a => Delta::Gcounter(GCounterDelta { increment: b - a }),
            (View::PnCounter(a), View::PnCounter(b)) => Delta::Pncounter(PnCounterDelta {
                change: b.checked_sub(*a)?,
            }),
            (View::GSet(a), View::GSet(b)) if a.is_subset(b) => Delta::Gset(GSetDelta {
                added: anys(b.difference(a).cloned()),
            }),
            (View::OrSet(a), View::OrSet(b)) => Delta::Orset(OrSetDelta {
                cleared: false,
                removed: anys(a.difference(b).cloned()),
                added: anys(b.difference(a).cloned()),
            }),
            (View::LwwRegister(_), View::LwwRegister(b)) => Delta::Lwwregister(LwwRegisterDelta {
                value: Some(Any::from(b)),
                clock: 0,
                custom_clock_value: 0,
            }),
            (View::Flag(false), View::Flag(true)) => Delta::Flag(FlagDelta { value: true }),
            (View::OrMap(a), View::OrMap(b)) => {
                let mut removed = Vec::new();
                let mut updated = Vec::new();
                let mut added = Vec::new();
                for (k, old_value) in a {
                    match b.get(k) {
                        None => removed.push(Any::from(k)),
                        Some(new_value) if new_value.kind() != old_value.kind() => {
                            removed.push(Any::from(k));
                            added.push(entry(k, new_value.as_delta()));
                        }
                        Some(new_value) => {
                            if let Some(change) = View::diff(old_value, new_value) {
                                updated.push(entry(k, change));
                            } else if old_value != new_value {
                                // A change no delta expresses: start the entry over.
                                removed.push(Any::from(k));
                                added.push(entry(k, new_value.as_delta()));
                            }
                        }
                    }
                }
                for (k, new_value) in b {
                    if !a.contains_key(k) {
                        added.push(entry(k, new_value.as_delta()));
                    }
                }
                Delta::Ormap(OrMapDelta {
                    cleared: false,
                    removed,
                    updated,
                    added,
                })
            }
            (View::Vote { .. }, View::Vote { .. }) => match new.as_delta().delta? {
                vote @ Delta::Vote(_) => vote,
                _ => return None,
            },
            _ => return None,
        }))
    }

    /// The value a function holds after applying `change` to this one, as
    /// CloudState's language supports do.
    pub(crate) fn apply(&mut self, change: &CrdtDelta) -> Result<(), DeltaError> {
        let got = Kind::of(change)?;
        let expected = self.kind();
        match (self, change.delta.as_ref().ok_or(DeltaError::Empty)?) {
            (View::GCounter(value), Delta::Gcounter(d)) => *value = value.saturating_add(d.increment),
            (View::PnCounter(value), Delta::Pncounter(d)) => *value = value.saturating_add(d.change),
            (View::GSet(elements), Delta::Gset(d)) => elements.extend(d.added.iter().map(Element::from)),
            (View::OrSet(elements), Delta::Orset(d)) => {
                if d.cleared {
                    elements.clear();
                }
                for removed in &d.removed {
                    elements.remove(&Element::from(removed));
                }
                elements.extend(d.added.iter().map(Element::from));
            }
            (View::LwwRegister(value), Delta::Lwwregister(d)) => {
                *value = d.value.as_ref().map(Element::from).unwrap_or_default();
            }
            (View::Flag(value), Delta::Flag(d)) => *value |= d.value,
            (View::OrMap(entries), Delta::Ormap(d)) => {
                if d.cleared {
                    entries.clear();
                }
                for removed in &d.removed {
                    entries.remove(&key(Some(removed))?);
                }
                for e in &d.updated {
                    let k = key(e.key.as_ref())?;
                    let change = e.delta.as_ref().ok_or(DeltaError::Empty)?;
                    let value = entries
                        .get_mut(&k)
                        .ok_or_else(|| DeltaError::Invalid("update of a missing key".into()))?;
                    value.apply(change)?;
                }
                for e in &d.added {
                    let k = key(e.key.as_ref())?;
                    let change = e.delta.as_ref().ok_or(DeltaError::Empty)?;
                    match entries.get_mut(&k) {
                        Some(value) => value.apply(change)?,
                        None => {
                            let mut value = View::empty(Kind::of(change)?);
                            value.apply(change)?;
                            entries.insert(k, value);
                        }
                    }
                }
            }
            (
                View::Vote {
                    self_vote,
                    votes_for,
                    total_voters,
                },
                Delta::Vote(d),
            ) => {
                if d.total_voters > 0 {
                    // From the proxy: the whole tally.
                    *self_vote = d.self_vote;
                    *votes_for = d.votes_for;
                    *total_voters = d.total_voters;
                } else if *self_vote != d.self_vote {
                    // From the function: its own vote only.
                    *votes_for += if d.self_vote { 1 } else { -1 };
                    *self_vote = d.self_vote;
                }
            }
            _ => return Err(DeltaError::WrongType { expected, got }),
        }
        Ok(())
    }

    /// A function's value before any delta.
    pub(crate) fn empty(kind: Kind) -> View {
        match kind {
            Kind::GCounter => View::GCounter(0),
            Kind::PnCounter => View::PnCounter(0),
            Kind::GSet => View::GSet(BTreeSet::new()),
            Kind::OrSet => View::OrSet(BTreeSet::new()),
            Kind::LwwRegister => View::LwwRegister(Element::default()),
            Kind::Flag => View::Flag(false),
            Kind::OrMap => View::OrMap(BTreeMap::new()),
            Kind::Vote => View::Vote {
                self_vote: false,
                votes_for: 0,
                total_voters: 1,
            },
        }
    }
}

fn entry(key: &Element, delta: CrdtDelta) -> OrMapEntryDelta {
    OrMapEntryDelta {
        key: Some(Any::from(key)),
        delta: Some(delta),
    }
}
