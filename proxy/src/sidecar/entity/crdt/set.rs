//! Sets: a grow-only set (union), and an observed-remove set in which an
//! addition wins over a concurrent removal (a removal takes away only the
//! additions it has seen).

use std::collections::BTreeSet;

use prost_types::Any;
use strata_proto::cloudstate::crdt::OrSetDelta;

use super::{dots::DotStore, Element};

/// A grow-only set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GSet {
    elements: BTreeSet<Element>,
}

impl GSet {
    pub(crate) fn from_elements(elements: BTreeSet<Element>) -> Self {
        Self { elements }
    }

    pub(crate) fn elements(&self) -> &BTreeSet<Element> {
        &self.elements
    }

    pub(crate) fn add(&mut self, added: &[Any]) {
        self.elements.extend(added.iter().map(Element::from));
    }

    pub(crate) fn merge(&mut self, other: &GSet) {
        self.elements.extend(other.elements.iter().cloned());
    }
}

/// An observed-remove (add-wins) set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OrSet {
    pub(crate) store: DotStore<()>,
}

impl OrSet {
    pub(crate) fn elements(&self) -> BTreeSet<Element> {
        self.store.entries().keys().cloned().collect()
    }

    /// Clears, then removes, then adds, in the protocol's order.
    pub(crate) fn apply(&mut self, delta: &OrSetDelta, replica: &str) {
        if delta.cleared {
            self.store.clear();
        }
        for removed in &delta.removed {
            self.store.remove(&Element::from(removed));
        }
        for added in &delta.added {
            self.store.add(Element::from(added), replica, ());
        }
    }

    pub(crate) fn merge(&mut self, other: &OrSet) {
        self.store.merge(&other.store);
    }
}
