//! A flag: once enabled, enabled for ever (merge is `or`).

use super::DeltaError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Flag {
    enabled: bool,
}

impl Flag {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// `true` enables; `false` is only allowed while the flag is disabled.
    pub(crate) fn set(&mut self, value: bool) -> Result<(), DeltaError> {
        if !value && self.enabled {
            return Err(DeltaError::Invalid("an enabled Flag cannot be disabled".into()));
        }
        self.enabled |= value;
        Ok(())
    }

    pub(crate) fn merge(&mut self, other: &Flag) {
        self.enabled |= other.enabled;
    }
}
