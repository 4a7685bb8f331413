//! A last-writer-wins register: the value of the write with the largest
//! timestamp, equal timestamps settled by replica, then by value, so every
//! replica picks the same. A register never written is below every write. The
//! clocks are CloudState's: default (milliseconds, always moving forward),
//! reverse (first write wins), custom, and custom with auto-increment. A write
//! always takes effect where it is made; one whose clock went back (reverse, or
//! a smaller custom value) loses to the earlier write when replicas merge.

use strata_proto::cloudstate::crdt::{CrdtClock, LwwRegisterDelta};

use super::{DeltaError, Element, Replica};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LwwRegister {
    write: Option<Write>,
}

/// One write: its value, timestamp and the replica that made it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Write {
    pub timestamp: i64,
    pub replica: String,
    pub value: Element,
}

impl LwwRegister {
    pub(crate) fn from_write(write: Option<Write>) -> Self {
        Self { write }
    }

    pub(crate) fn write(&self) -> Option<&Write> {
        self.write.as_ref()
    }

    /// The value, empty for a register never written.
    pub(crate) fn value(&self) -> Element {
        self.write.as_ref().map(|w| w.value.clone()).unwrap_or_default()
    }

    /// Writes the delta's value with the timestamp its clock gives. A delta
    /// without a value writes the empty value, as CloudState's proxy did.
    pub(crate) fn set(&mut self, delta: &LwwRegisterDelta, replica: &Replica<'_>) -> Result<(), DeltaError> {
        let clock = CrdtClock::try_from(delta.clock)
            .map_err(|_| DeltaError::Invalid(format!("unknown LWWRegister clock {}", delta.clock)))?;
        let current = self.write.as_ref().map_or(0, |w| w.timestamp);
        let timestamp = match clock {
            CrdtClock::Default => replica.now_millis.max(current.saturating_add(1)),
            CrdtClock::Reverse => (-replica.now_millis).min(current.saturating_sub(1)),
            CrdtClock::Custom => delta.custom_clock_value,
            CrdtClock::CustomAutoIncrement if delta.custom_clock_value <= current => current.saturating_add(1),
            CrdtClock::CustomAutoIncrement => delta.custom_clock_value,
        };
        self.write = Some(Write {
            timestamp,
            replica: replica.id.to_string(),
            value: delta.value.as_ref().map(Element::from).unwrap_or_default(),
        });
        Ok(())
    }

    pub(crate) fn merge(&mut self, other: &LwwRegister) {
        if other.write > self.write {
            self.write = other.write.clone();
        }
    }
}
