//! [`ServiceSettings`]: how a service scales, keeps its last instance, spreads its
//! entities and waits to wake, each setting optional (unset: its default). The REST
//! API's bodies and views, the registry's commands, the `StatefulService` resource
//! and `strata deploy`'s flags all flatten this one type, so a setting added here
//! reaches every one of them. Its defaults and the rules a value must keep are here
//! too; what a setting does is the autoscaler's, the registry's and the gateway's.

use serde::{Deserialize, Serialize};

use crate::{HumanDuration, KeepAlive};

pub const DEFAULT_MIN_SCALE: u32 = 0;
pub const DEFAULT_MAX_SCALE: u32 = 10;
/// Knative's effective target: its default of 100 at its default 70% utilisation.
pub const DEFAULT_TARGET_CONCURRENCY: u32 = 70;
pub const DEFAULT_SCALE_TO_ZERO_GRACE: HumanDuration = HumanDuration::from_secs(30);
/// Shards per service unless a service asks for another count.
pub const DEFAULT_SHARD_COUNT: u32 = 64;
/// Largest shard count a service may ask for; keeps the shard map (replicated in full) small.
pub const MAX_SHARD_COUNT: u32 = 4096;
/// The histogram policy: it keeps Knative's behaviour wherever it cannot pre-warm, and in
/// the trace benchmark (docs/benchmarks.md) it never had more cold starts than the fixed
/// policy while costing 40% fewer idle instance-hours across a mix of services.
pub const DEFAULT_KEEP_ALIVE: KeepAlive = KeepAlive::Histogram;
/// The histogram policy's percentiles of idle time, as in "Serverless in the Wild".
pub const DEFAULT_PREWARM_PERCENTILE: u32 = 5;
pub const DEFAULT_KEEP_ALIVE_PERCENTILE: u32 = 99;
/// Knative's bounds for a stable window: long enough to average over, short enough
/// to react within the hour.
pub const STABLE_WINDOW_RANGE: (HumanDuration, HumanDuration) =
    (HumanDuration::from_secs(1), HumanDuration::from_secs(3_600));
/// How long a gateway holds a request for a service waking from zero, unless the
/// service or the gateway (`--hold-timeout`) says otherwise.
pub const DEFAULT_HOLD_TIMEOUT: HumanDuration = HumanDuration::from_secs(30);
/// A held request keeps its client's connection open; an hour is past any cold start.
pub const MAX_HOLD_TIMEOUT: HumanDuration = HumanDuration::from_secs(3_600);

/// The settings of a service. Unset ones take their defaults; durations are text
/// such as "30s".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Service settings"))]
pub struct ServiceSettings {
    /// Fewest instances; 0 lets the service scale to zero. Default 0.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_MIN_SCALE), minimum = 0))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub min_scale: Option<u32>,
    /// Most instances, at least 1. Default 10 (or the minimum, if that is higher).
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_MAX_SCALE), minimum = 1))]
    #[cfg_attr(feature = "schemars", schemars(range(min = 1)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub max_scale: Option<u32>,
    /// Requests in flight per instance that the autoscaler aims for, at least 1.
    /// Default 70.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_TARGET_CONCURRENCY), minimum = 1))]
    #[cfg_attr(feature = "schemars", schemars(range(min = 1)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub target_concurrency: Option<u32>,
    /// How long the last instance stays once the stable window has seen no traffic,
    /// before the service scales to zero, e.g. "30s" or "2m". Default 30s.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_SCALE_TO_ZERO_GRACE)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub scale_to_zero_grace: Option<HumanDuration>,
    /// How far back the autoscaler averages load, 1s to 1h, e.g. "60s". Default: the
    /// platform's (60s unless `strata dev --stable-window` says otherwise).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub stable_window: Option<HumanDuration>,
    /// Shards the service's entities are spread over, 1 to 4096; fixed once the
    /// service exists. Default 64.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_SHARD_COUNT), minimum = 1, maximum = 4096))]
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = 4096)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub shard_count: Option<u32>,
    /// How the last instance is kept once traffic stops: "histogram" (learned from the
    /// service's idle times: kept, or started ahead, only where the next request is
    /// expected; Knative's behaviour where it cannot pre-warm) or "fixed" (Knative's:
    /// the stable window, then the grace). Default histogram.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_KEEP_ALIVE)))]
    #[cfg_attr(feature = "clap", arg(long))]
    pub keep_alive: Option<KeepAlive>,
    /// With the histogram policy: the percentile of idle time at which an instance is
    /// started ahead of the next request, 0 to 50. Default 5.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_PREWARM_PERCENTILE), minimum = 0, maximum = 50))]
    #[cfg_attr(feature = "schemars", schemars(range(max = 50)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "PERCENTILE"))]
    pub prewarm_percentile: Option<u32>,
    /// With the histogram policy: the percentile of idle time until which the instance
    /// is kept, 50 to 100. Default 99.
    #[cfg_attr(feature = "utoipa", schema(default = json!(DEFAULT_KEEP_ALIVE_PERCENTILE), minimum = 50, maximum = 100))]
    #[cfg_attr(feature = "schemars", schemars(range(min = 50, max = 100)))]
    #[cfg_attr(feature = "clap", arg(long, value_name = "PERCENTILE"))]
    pub keep_alive_percentile: Option<u32>,
    /// How long a gateway holds a request while the service wakes from zero before it
    /// answers 503 (UNAVAILABLE), more than 0 and at most 1h, e.g. "5m" where a first
    /// start pulls an image. Default: the gateway's --hold-timeout (30s).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DURATION"))]
    pub hold_timeout: Option<HumanDuration>,
}

/// A setting whose value breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSetting {
    /// The setting, as the REST API spells it (e.g. `max_scale`).
    pub field: &'static str,
    pub message: String,
}

impl InvalidSetting {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidSetting {
            field,
            message: message.into(),
        }
    }
}

impl ServiceSettings {
    /// Every setting's name, as the REST API spells it, in declaration order.
    pub const FIELDS: &'static [&'static str] = &[
        "min_scale",
        "max_scale",
        "target_concurrency",
        "scale_to_zero_grace",
        "stable_window",
        "shard_count",
        "keep_alive",
        "prewarm_percentile",
        "keep_alive_percentile",
        "hold_timeout",
    ];

    /// Every setting given, none at its default: what tests send through a surface
    /// (the API, the registry, the resource, the flags) to see that none is lost.
    pub fn sample() -> Self {
        ServiceSettings {
            min_scale: Some(2),
            max_scale: Some(7),
            target_concurrency: Some(9),
            scale_to_zero_grace: Some(HumanDuration::from_secs(45)),
            stable_window: Some(HumanDuration::from_secs(90)),
            shard_count: Some(16),
            keep_alive: Some(KeepAlive::Fixed),
            prewarm_percentile: Some(10),
            keep_alive_percentile: Some(95),
            hold_timeout: Some(HumanDuration::from_secs(300)),
        }
    }

    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        self == &ServiceSettings::default()
    }

    /// These settings with every fixed default filled in. The stable window and the
    /// hold timeout stay unset when not given: their defaults are the platform's (the
    /// autoscaler's and each gateway's own), and so is the keep-alive policy's, kept
    /// unset so that changing [`DEFAULT_KEEP_ALIVE`] needs no migration.
    pub fn with_defaults(self) -> Self {
        let ServiceSettings {
            min_scale,
            max_scale,
            target_concurrency,
            scale_to_zero_grace,
            stable_window,
            shard_count,
            keep_alive,
            prewarm_percentile,
            keep_alive_percentile,
            hold_timeout,
        } = self;
        let min_scale = min_scale.unwrap_or(DEFAULT_MIN_SCALE);
        ServiceSettings {
            min_scale: Some(min_scale),
            max_scale: Some(max_scale.unwrap_or(DEFAULT_MAX_SCALE.max(min_scale))),
            target_concurrency: Some(target_concurrency.unwrap_or(DEFAULT_TARGET_CONCURRENCY)),
            scale_to_zero_grace: Some(scale_to_zero_grace.unwrap_or(DEFAULT_SCALE_TO_ZERO_GRACE)),
            stable_window,
            shard_count: Some(shard_count.unwrap_or(DEFAULT_SHARD_COUNT)),
            keep_alive,
            prewarm_percentile: Some(prewarm_percentile.unwrap_or(DEFAULT_PREWARM_PERCENTILE)),
            keep_alive_percentile: Some(keep_alive_percentile.unwrap_or(DEFAULT_KEEP_ALIVE_PERCENTILE)),
            hold_timeout,
        }
    }

    /// These settings laid over `base`: each one given here wins, the others keep
    /// `base`'s value.
    pub fn over(self, base: &ServiceSettings) -> Self {
        let ServiceSettings {
            min_scale,
            max_scale,
            target_concurrency,
            scale_to_zero_grace,
            stable_window,
            shard_count,
            keep_alive,
            prewarm_percentile,
            keep_alive_percentile,
            hold_timeout,
        } = self;
        ServiceSettings {
            min_scale: min_scale.or(base.min_scale),
            max_scale: max_scale.or(base.max_scale),
            target_concurrency: target_concurrency.or(base.target_concurrency),
            scale_to_zero_grace: scale_to_zero_grace.or(base.scale_to_zero_grace),
            stable_window: stable_window.or(base.stable_window),
            shard_count: shard_count.or(base.shard_count),
            keep_alive: keep_alive.or(base.keep_alive),
            prewarm_percentile: prewarm_percentile.or(base.prewarm_percentile),
            keep_alive_percentile: keep_alive_percentile.or(base.keep_alive_percentile),
            hold_timeout: hold_timeout.or(base.hold_timeout),
        }
    }

    /// Checks every setting that is given against its rule, and the bounds against
    /// each other when both are given; the first broken rule is the answer.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let ServiceSettings {
            min_scale,
            max_scale,
            target_concurrency,
            scale_to_zero_grace: _,
            stable_window,
            shard_count,
            keep_alive: _,
            prewarm_percentile,
            keep_alive_percentile,
            hold_timeout,
        } = self;
        if *max_scale == Some(0) {
            return Err(InvalidSetting::new("max_scale", "max_scale must be at least 1"));
        }
        if let (Some(min), Some(max)) = (min_scale, max_scale) {
            if min > max {
                return Err(InvalidSetting::new(
                    "min_scale",
                    format!("min_scale ({min}) must not exceed max_scale ({max})"),
                ));
            }
        }
        if *target_concurrency == Some(0) {
            return Err(InvalidSetting::new(
                "target_concurrency",
                "target_concurrency must be at least 1",
            ));
        }
        if let Some(window) = stable_window {
            let (shortest, longest) = STABLE_WINDOW_RANGE;
            if !(shortest..=longest).contains(window) {
                return Err(InvalidSetting::new(
                    "stable_window",
                    format!("stable_window must be between {shortest} and {longest} (got {window})"),
                ));
            }
        }
        if let Some(count) = shard_count {
            if !(1..=MAX_SHARD_COUNT).contains(count) {
                return Err(InvalidSetting::new(
                    "shard_count",
                    format!("shard_count must be between 1 and {MAX_SHARD_COUNT} (got {count})"),
                ));
            }
        }
        if let Some(percentile) = prewarm_percentile {
            if *percentile > 50 {
                return Err(InvalidSetting::new(
                    "prewarm_percentile",
                    format!("prewarm_percentile must be between 0 and 50 (got {percentile})"),
                ));
            }
        }
        if let Some(percentile) = keep_alive_percentile {
            if !(50..=100).contains(percentile) {
                return Err(InvalidSetting::new(
                    "keep_alive_percentile",
                    format!("keep_alive_percentile must be between 50 and 100 (got {percentile})"),
                ));
            }
        }
        if let Some(timeout) = hold_timeout {
            if timeout.as_millis() == 0 || *timeout > MAX_HOLD_TIMEOUT {
                return Err(InvalidSetting::new(
                    "hold_timeout",
                    format!("hold_timeout must be more than 0 and at most {MAX_HOLD_TIMEOUT} (got {timeout})"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "service_settings_tests.rs"]
mod tests;
