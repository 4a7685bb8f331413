//! Counters: a grow-only counter is one count per replica, merged by taking the
//! larger count of each; a positive-negative counter is two of them, one for
//! increments and one for decrements.

use std::collections::BTreeMap;

use super::DeltaError;

/// A grow-only counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GCounter {
    counts: BTreeMap<String, u64>,
}

impl GCounter {
    pub(crate) fn from_counts(counts: BTreeMap<String, u64>) -> Self {
        Self { counts }
    }

    pub(crate) fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// The sum of every replica's count (saturating: a sum past `u64::MAX`
    /// cannot be sent to the function anyway).
    pub(crate) fn value(&self) -> u64 {
        self.counts.values().fold(0u64, |sum, count| sum.saturating_add(*count))
    }

    pub(crate) fn increment(&mut self, replica: &str, by: u64) -> Result<(), DeltaError> {
        if by == 0 {
            return Ok(());
        }
        let count = self.counts.entry(replica.to_string()).or_default();
        *count = count
            .checked_add(by)
            .ok_or_else(|| DeltaError::Invalid(format!("incrementing by {by} overflows the counter")))?;
        Ok(())
    }

    pub(crate) fn merge(&mut self, other: &GCounter) {
        for (replica, count) in &other.counts {
            let mine = self.counts.entry(replica.clone()).or_default();
            *mine = (*mine).max(*count);
        }
    }
}

/// A counter that goes up and down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PnCounter {
    pub(crate) increments: GCounter,
    pub(crate) decrements: GCounter,
}

impl PnCounter {
    /// Increments less decrements, clamped to `i64` (what the protocol carries).
    pub(crate) fn value(&self) -> i64 {
        let value = i128::from(self.increments.value()) - i128::from(self.decrements.value());
        value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    pub(crate) fn change(&mut self, replica: &str, by: i64) -> Result<(), DeltaError> {
        if by >= 0 {
            self.increments.increment(replica, by.unsigned_abs())
        } else {
            self.decrements.increment(replica, by.unsigned_abs())
        }
    }

    pub(crate) fn merge(&mut self, other: &PnCounter) {
        self.increments.merge(&other.increments);
        self.decrements.merge(&other.decrements);
    }
}
