//! An observed-remove map from keys to CRDTs. Keys behave like an observed-remove
//! set's elements; every write of a key (an addition or an update) is a new dot
//! that carries the key's whole value after the write, so a value never changes
//! under a dot and a removal takes away exactly the writes it has seen. A key's
//! value is the merge of the values under its live dots (one, unless replicas
//! wrote it concurrently). Keys must name a type with a stable encoding.

use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::crdt::OrMapDelta;

use super::{dots::DotStore, Crdt, DeltaError, Element, Replica};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrMap {
    pub(crate) store: DotStore<Crdt>,
}

/// Primitive types whose equality is not byte equality, refused as keys.
const FLOATING_POINT: [&str; 2] = ["p.cloudstate.io/float", "p.cloudstate.io/double"];

/// The key of a map entry the function sent, checked.
pub(crate) fn key(any: Option<&Any>) -> Result<Element, DeltaError> {
    let any = any.ok_or_else(|| DeltaError::UnsupportedKey("is missing: every entry needs a key".into()))?;
    if any.type_url.is_empty() {
        return Err(DeltaError::UnsupportedKey(
            "has no type URL: a key must name its type (a CloudState primitive such as p.cloudstate.io/string, \
             JSON, or a protobuf message)"
                .into(),
        ));
    }
    if FLOATING_POINT.contains(&any.type_url.as_str()) {
        return Err(DeltaError::UnsupportedKey(format!(
            "has type {}, which is not supported: floating-point numbers have no stable equality; \
             use a string or integer key",
            any.type_url
        )));
    }
    Ok(Element::from(any))
}

/// A key as messages show it: a string key as itself, others by type.
pub(crate) fn describe(key: &Element) -> String {
    if key.type_url == "p.cloudstate.io/string" {
        if let Ok(text) = String::decode(key.value.as_slice()) {
            return format!("{text:?}");
        }
    }
    format!("of type {} ({} bytes)", key.type_url, key.value.len())
}

impl OrMap {
    /// The key's value: the merge of the values its live writes left.
    pub(crate) fn value(&self, key: &Element) -> Option<Crdt> {
        let dots = self.store.get(key)?;
        let mut writes: Vec<(&u64, &String, &Crdt)> = dots.iter().map(|(r, (c, v))| (c, r, v)).collect();
        writes.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        let mut writes = writes.into_iter();
        let (_, _, first) = writes.next()?;
        let mut value = first.clone();
        for (_, _, other) in writes {
            // Concurrent writes of different types: the newest dot's type wins.
            let _ = value.merge(other);
        }
        Some(value)
    }

    /// Every key with its value, in key order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Element, Crdt)> {
        self.store
            .entries()
            .keys()
            .filter_map(|key| self.value(key).map(|value| (key, value)))
    }

    /// Clears, removes, updates, then adds, in the protocol's order. An update
    /// of a key the map does not hold is refused (the function's value and the
    /// proxy's differ); adding a key it holds updates it. On error nothing
    /// changes.
    pub(crate) fn apply(&mut self, delta: &OrMapDelta, replica: &Replica<'_>) -> Result<(), DeltaError> {
        let mut next = self.clone();
        if delta.cleared {
            next.store.clear();
        }
        for removed in &delta.removed {
            next.store.remove(&key(Some(removed))?);
        }
        for entry in &delta.updated {
            let key = key(entry.key.as_ref())?;
            let change = entry.delta.as_ref().ok_or_else(|| {
                DeltaError::Invalid(format!("the update of ORMap key {} has no delta", describe(&key)))
            })?;
            let mut value = next.value(&key).ok_or_else(|| {
                DeltaError::Invalid(format!(
                    "the delta updates ORMap key {}, which the map does not hold",
                    describe(&key)
                ))
            })?;
            value.apply(change, replica).map_err(|e| nested(&key, e))?;
            next.store.add(key, replica.id, value);
        }
        for entry in &delta.added {
            let key = key(entry.key.as_ref())?;
            let change = entry.delta.as_ref().ok_or_else(|| {
                DeltaError::Invalid(format!("the addition of ORMap key {} has no delta", describe(&key)))
            })?;
            let value = match next.value(&key) {
                Some(mut value) => {
                    value.apply(change, replica).map_err(|e| nested(&key, e))?;
                    value
                }
                None => Crdt::from_delta(change, replica).map_err(|e| nested(&key, e))?,
            };
            next.store.add(key, replica.id, value);
        }
        *self = next;
        Ok(())
    }

    pub(crate) fn merge(&mut self, other: &OrMap) {
        self.store.merge(&other.store);
    }
}

fn nested(key: &Element, error: DeltaError) -> DeltaError {
    match error {
        DeltaError::UnsupportedKey(_) => error,
        other => DeltaError::Invalid(format!("ORMap key {}: {other}", describe(key))),
    }
}
