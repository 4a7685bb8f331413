//! The settings of a Strata service, spelled once: [`ServiceSettings`] (how it
//! scales) with its defaults and rules, [`RevisionSpec`] (what it runs: a change
//! is a new revision), the duration type its durations have ([`HumanDuration`], text
//! such as "30s" on every wire), the keep-alive choice, and (with `schemars`) the
//! camelCase spelling a Kubernetes resource uses. No I/O; what each setting does is
//! decided elsewhere (the autoscaler, the registry, the gateway).

mod duration;
mod keep_alive;
#[cfg(feature = "schemars")]
mod kubernetes;
mod revision_spec;
mod service_settings;

pub use duration::{format_duration_ms, parse_duration_ms, HumanDuration, InvalidDuration, DURATION_PATTERN};
pub use keep_alive::KeepAlive;
#[cfg(feature = "schemars")]
pub use kubernetes::{camel_case, KubernetesSettings, Unreadable};
pub use revision_spec::{EnvVar, RevisionSpec};
pub use service_settings::{
    InvalidSetting, ServiceSettings, DEFAULT_HOLD_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_KEEP_ALIVE_PERCENTILE,
    DEFAULT_MAX_SCALE, DEFAULT_MIN_SCALE, DEFAULT_PREWARM_PERCENTILE, DEFAULT_REVISION_HISTORY,
    DEFAULT_SCALE_TO_ZERO_GRACE, DEFAULT_SHARD_COUNT, DEFAULT_TARGET_CONCURRENCY, MAX_HOLD_TIMEOUT,
    MAX_REVISION_HISTORY, MAX_SHARD_COUNT, STABLE_WINDOW_RANGE,
};
