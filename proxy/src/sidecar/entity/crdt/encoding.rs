//! The stored form of a CRDT (`strata.crdt.v1.CrdtState`, see
//! `proto/strata/crdt_state.proto`): every replica count, dot and context, so a
//! restarted or moved entity continues exactly where it stopped.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::Any;
use strata_proto::strata::crdt::v1 as pb;

use super::{
    dots::{DotStore, Dots},
    register::Write,
    Crdt, Element, Flag, GCounter, GSet, LwwRegister, OrMap, OrSet, PnCounter, Vote,
};

/// The type URL stored CRDT states carry.
pub(crate) const STATE_TYPE_URL: &str = "type.googleapis.com/strata.crdt.v1.CrdtState";

/// Why a stored state cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored CRDT state cannot be read: {0}")]
pub(crate) struct DecodeError(String);

pub(crate) fn encode(crdt: &Crdt) -> Any {
    Any {
        type_url: STATE_TYPE_URL.into(),
        value: to_proto(crdt).encode_to_vec(),
    }
}

pub(crate) fn decode(any: &Any) -> Result<Crdt, DecodeError> {
    if any.type_url != STATE_TYPE_URL {
        return Err(DecodeError(format!("unexpected type {:?}", any.type_url)));
    }
    let state = pb::CrdtState::decode(any.value.as_slice()).map_err(|e| DecodeError(e.to_string()))?;
    from_proto(&state)
}

fn counts(counts: &BTreeMap<String, u64>) -> Vec<pb::ReplicaCount> {
    counts
        .iter()
        .map(|(replica, count)| pb::ReplicaCount {
            replica: replica.clone(),
            count: *count,
        })
        .collect()
}

fn counts_of(counts: &[pb::ReplicaCount]) -> BTreeMap<String, u64> {
    counts.iter().map(|c| (c.replica.clone(), c.count)).collect()
}

fn counter(counter: &GCounter) -> pb::Counter {
    pb::Counter {
        replicas: counts(counter.counts()),
    }
}

fn counter_of(counter: Option<&pb::Counter>) -> GCounter {
    GCounter::from_counts(counter.map(|c| counts_of(&c.replicas)).unwrap_or_default())
}

fn any(element: &Element) -> Option<Any> {
    Some(Any::from(element))
}

fn element(any: Option<&Any>) -> Element {
    any.map(Element::from).unwrap_or_default()
}

fn dot(replica: &str, counter: u64) -> Option<pb::Dot> {
    Some(pb::Dot {
        replica: replica.to_string(),
        counter,
    })
}

fn to_proto(crdt: &Crdt) -> pb::CrdtState {
    use pb::crdt_state::State;
    let state = match crdt {
        Crdt::GCounter(c) => State::Gcounter(counter(c)),
        Crdt::PnCounter(c) => State::Pncounter(pb::PnCounter {
            increments: Some(counter(&c.increments)),
            decrements: Some(counter(&c.decrements)),
        }),
        Crdt::GSet(s) => State::Gset(pb::GSet {
            elements: s.elements().iter().map(Any::from).collect(),
        }),
        Crdt::OrSet(s) => State::Orset(pb::OrSet {
            entries: s
                .store
                .entries()
                .iter()
                .map(|(e, dots)| pb::OrSetEntry {
                    element: any(e),
                    dots: dots.iter().filter_map(|(r, (c, ()))| dot(r, *c)).collect(),
                })
                .collect(),
            context: counts(s.store.context()),
        }),
        Crdt::LwwRegister(r) => State::Lwwregister(match r.write() {
            Some(write) => pb::LwwRegister {
                value: any(&write.value),
                timestamp: write.timestamp,
                replica: write.replica.clone(),
            },
            // Never written: no replica (every replica has a name).
            None => pb::LwwRegister::default(),
        }),
        Crdt::Flag(f) => State::Flag(pb::Flag { enabled: f.enabled() }),
        Crdt::OrMap(m) => State::Ormap(pb::OrMap {
            entries: m
                .store
                .entries()
                .iter()
                .map(|(k, dots)| pb::OrMapEntry {
                    key: any(k),
                    values: dots
                        .iter()
                        .map(|(r, (c, v))| pb::OrMapValue {
                            dot: dot(r, *c),
                            value: Some(to_proto(v)),
                        })
                        .collect(),
                })
                .collect(),
            context: counts(m.store.context()),
        }),
        Crdt::Vote(v) => State::Vote(pb::Vote {
            votes: counts(v.votes()),
        }),
    };
    pb::CrdtState { state: Some(state) }
}

fn from_proto(state: &pb::CrdtState) -> Result<Crdt, DecodeError> {
    use pb::crdt_state::State;
    let dot_of = |dot: Option<&pb::Dot>| {
        dot.map(|d| (d.replica.clone(), d.counter))
            .ok_or_else(|| DecodeError("a dot is missing".into()))
    };
    Ok(
        match state.state.as_ref().ok_or_else(|| DecodeError("no state".into()))? {
            State::Gcounter(c) => Crdt::GCounter(counter_of(Some(c))),
            State::Pncounter(c) => Crdt::PnCounter(PnCounter {
                increments: counter_of(c.increments.as_ref()),
                decrements: counter_of(c.decrements.as_ref()),
            }),
            State::Gset(s) => Crdt::GSet(GSet::from_elements(s.elements.iter().map(Element::from).collect())),
            State::Orset(s) => {
                let mut entries = BTreeMap::new();
                for entry in &s.entries {
                    let dots: Dots<()> = entry
                        .dots
                        .iter()
                        .map(|d| (d.replica.clone(), (d.counter, ())))
                        .collect();
                    entries.insert(element(entry.element.as_ref()), dots);
                }
                Crdt::OrSet(OrSet {
                    store: DotStore::from_parts(entries, counts_of(&s.context)),
                })
            }
            State::Lwwregister(r) => {
                Crdt::LwwRegister(LwwRegister::from_write((!r.replica.is_empty()).then(|| Write {
                    timestamp: r.timestamp,
                    replica: r.replica.clone(),
                    value: element(r.value.as_ref()),
                })))
            }
            State::Flag(f) => Crdt::Flag(Flag::new(f.enabled)),
            State::Ormap(m) => {
                let mut entries = BTreeMap::new();
                for entry in &m.entries {
                    let mut dots = Dots::new();
                    for value in &entry.values {
                        let (replica, counter) = dot_of(value.dot.as_ref())?;
                        let crdt = from_proto(
                            value
                                .value
                                .as_ref()
                                .ok_or_else(|| DecodeError("a value is missing".into()))?,
                        )?;
                        dots.insert(replica, (counter, crdt));
                    }
                    entries.insert(element(entry.key.as_ref()), dots);
                }
                Crdt::OrMap(OrMap {
                    store: DotStore::from_parts(entries, counts_of(&m.context)),
                })
            }
            State::Vote(v) => Crdt::Vote(Vote::from_votes(counts_of(&v.votes))),
        },
    )
}
