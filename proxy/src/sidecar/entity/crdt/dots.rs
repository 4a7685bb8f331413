//! Dots and their causal context, the machinery of the observed-remove types:
//! every addition is a dot (replica, n-th addition of that replica) carrying a
//! payload; a state keeps the dots still live per key and the context of every
//! dot it has seen. A dot the other side has seen but no longer holds was
//! removed there, so a merge drops it; a dot it has not seen is new and stays.

use std::collections::BTreeMap;

use super::Element;

/// A key's live dots: replica -> (counter, payload). A replica's newer addition
/// replaces its older one, so one dot per replica is enough.
pub(crate) type Dots<P> = BTreeMap<String, (u64, P)>;

/// Keys with their live dots, and the context of every dot seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DotStore<P> {
    entries: BTreeMap<Element, Dots<P>>,
    context: BTreeMap<String, u64>,
}

impl<P> Default for DotStore<P> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            context: BTreeMap::new(),
        }
    }
}

impl<P: Clone + PartialEq> DotStore<P> {
    pub(crate) fn from_parts(entries: BTreeMap<Element, Dots<P>>, context: BTreeMap<String, u64>) -> Self {
        Self { entries, context }
    }

    pub(crate) fn entries(&self) -> &BTreeMap<Element, Dots<P>> {
        &self.entries
    }

    pub(crate) fn context(&self) -> &BTreeMap<String, u64> {
        &self.context
    }

    pub(crate) fn get(&self, key: &Element) -> Option<&Dots<P>> {
        self.entries.get(key)
    }

    /// Writes `key` as a new addition by `replica`: its earlier dots, all seen
    /// here, give way to the new one.
    pub(crate) fn add(&mut self, key: Element, replica: &str, payload: P) {
        let counter = self.context.entry(replica.to_string()).or_default();
        *counter += 1;
        let dot = *counter;
        self.entries
            .insert(key, Dots::from([(replica.to_string(), (dot, payload))]));
    }

    pub(crate) fn remove(&mut self, key: &Element) {
        self.entries.remove(key);
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    fn seen(&self, replica: &str, counter: u64) -> bool {
        self.context.get(replica).is_some_and(|seen| *seen >= counter)
    }

    /// Keeps each dot both sides hold, and each dot one side holds that the
    /// other has not seen; the contexts join.
    pub(crate) fn merge(&mut self, other: &DotStore<P>) {
        let keys: std::collections::BTreeSet<Element> =
            self.entries.keys().chain(other.entries.keys()).cloned().collect();
        let mut merged = BTreeMap::new();
        for key in keys {
            let empty = Dots::new();
            let mine = self.entries.get(&key).unwrap_or(&empty);
            let theirs = other.entries.get(&key).unwrap_or(&empty);
            let mut dots: Dots<P> = Dots::new();
            for (replica, (counter, payload)) in mine {
                let shared = theirs.get(replica).is_some_and(|(c, _)| c == counter);
                if shared || !other.seen(replica, *counter) {
                    dots.insert(replica.clone(), (*counter, payload.clone()));
                }
            }
            for (replica, (counter, payload)) in theirs {
                if !self.seen(replica, *counter) {
                    // Valid states never keep two dots of one replica; if they
                    // did, the newer one wins on both sides alike.
                    let newer = dots.get(replica).is_none_or(|(c, _)| c < counter);
                    if newer {
                        dots.insert(replica.clone(), (*counter, payload.clone()));
                    }
                }
            }
            if !dots.is_empty() {
                merged.insert(key, dots);
            }
        }
        self.entries = merged;
        for (replica, counter) in &other.context {
            let mine = self.context.entry(replica.clone()).or_default();
            *mine = (*mine).max(*counter);
        }
    }
}
