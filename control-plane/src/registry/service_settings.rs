//! A stored service and its [`ServiceSettings`]: the registry keeps each setting in
//! its own field (what the autoscaler, the routes and the snapshots read), and reads
//! and writes them all together here, so no setting is left behind on the way in or
//! out.

use strata_settings::{HumanDuration, InvalidSetting, KeepAlive, ServiceSettings, DEFAULT_KEEP_ALIVE};

use super::{RegistryError, Service};

impl Service {
    /// Every setting the service runs with; those left to the platform (the stable
    /// window, the keep-alive policy, the hold timeout) are unset unless given.
    pub fn settings(&self) -> ServiceSettings {
        ServiceSettings {
            min_scale: Some(self.min_scale),
            max_scale: Some(self.max_scale),
            target_concurrency: Some(self.target_concurrency),
            scale_to_zero_grace: Some(HumanDuration::from_millis(self.scale_to_zero_grace_ms)),
            stable_window: self.stable_window_ms.map(HumanDuration::from_millis),
            shard_count: Some(u32::try_from(self.shards.len()).unwrap_or(u32::MAX)),
            keep_alive: self.keep_alive,
            prewarm_percentile: Some(self.prewarm_percentile),
            keep_alive_percentile: Some(self.keep_alive_percentile),
            hold_timeout: self.hold_timeout_ms.map(HumanDuration::from_millis),
        }
    }

    /// The keep-alive policy in effect.
    pub fn keep_alive(&self) -> KeepAlive {
        self.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE)
    }

    /// Takes `settings`, whose fixed defaults are filled in
    /// ([`ServiceSettings::with_defaults`]); a setting left to the platform is taken
    /// as given, unset included. The shard count is the shard map's and is not
    /// changed here.
    pub(super) fn set_settings(&mut self, settings: &ServiceSettings) {
        let ServiceSettings {
            min_scale,
            max_scale,
            target_concurrency,
            scale_to_zero_grace,
            stable_window,
            shard_count: _,
            keep_alive,
            prewarm_percentile,
            keep_alive_percentile,
            hold_timeout,
        } = settings;
        debug_assert!(
            min_scale.is_some() && max_scale.is_some(),
            "defaults are filled in first"
        );
        self.min_scale = min_scale.unwrap_or(self.min_scale);
        self.max_scale = max_scale.unwrap_or(self.max_scale);
        self.target_concurrency = target_concurrency.unwrap_or(self.target_concurrency);
        self.scale_to_zero_grace_ms = scale_to_zero_grace.map_or(self.scale_to_zero_grace_ms, HumanDuration::as_millis);
        self.stable_window_ms = stable_window.map(HumanDuration::as_millis);
        self.keep_alive = *keep_alive;
        self.prewarm_percentile = prewarm_percentile.unwrap_or(self.prewarm_percentile);
        self.keep_alive_percentile = keep_alive_percentile.unwrap_or(self.keep_alive_percentile);
        self.hold_timeout_ms = hold_timeout.map(HumanDuration::as_millis);
    }
}

impl From<InvalidSetting> for RegistryError {
    fn from(invalid: InvalidSetting) -> Self {
        RegistryError::invalid(invalid.field, invalid.message)
    }
}
