//! The settings of a Strata service, spelled once: [`ServiceSettings`] with its
//! defaults and rules, the duration type its durations have ([`HumanDuration`], text
//! such as "30s" on every wire), the keep-alive choice, and (with `schemars`) the
//! camelCase spelling a Kubernetes resource uses. No I/O; what each setting does is
//! decided elsewhere (the autoscaler, the registry, the gateway).

mod duration;
mod keep_alive;
#[cfg(feature = "schemars")]
mod kubernetes;
mod service_settings;

pub use duration::{format_duration_ms, parse_duration_ms, HumanDuration, InvalidDuration, DURATION_PATTERN};
pub use keep_alive::KeepAlive;
#[cfg(feature = "schemars")]
pub use kubernetes::{camel_case, KubernetesSettings, Unreadable};
pub use service_settings::{
    InvalidSetting, ServiceSettings, DEFAULT_HOLD_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_KEEP_ALIVE_PERCENTILE,
    DEFAULT_MAX_SCALE, DEFAULT_MIN_SCALE, DEFAULT_PREWARM_PERCENTILE, DEFAULT_SCALE_TO_ZERO_GRACE, DEFAULT_SHARD_COUNT,
    DEFAULT_TARGET_CONCURRENCY, MAX_HOLD_TIMEOUT, MAX_SHARD_COUNT, STABLE_WINDOW_RANGE,
};
