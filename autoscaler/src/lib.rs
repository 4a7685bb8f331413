//! Strata's autoscaler: scrapes the sidecars' Prometheus metrics, averages them over stable
//! and panic windows, learns each service's idle times, wakes a service at zero for its due timers, and decides each service's desired
//! instance count with a pure KPA-style function. The loop that drives it and recording the
//! count in the registry are the control plane's job ([`ScaleSink`]).

pub mod collector;
pub mod idle;
pub mod kpa;
pub mod scrape;
pub mod settings;
pub mod timer_wake;
pub mod window;

#[cfg(test)]
mod test_server;

pub use collector::{adoption, Collector, MetricsSource, PrometheusSource, ScaleSink, ServiceState, SinkError};
pub use idle::{HistogramPolicy, IdleHistogram, Prediction, Unpredictable};
pub use kpa::{Decision, Kpa, Limit, Load, Observation, Reason, Wake};
pub use scrape::{CounterRate, InstanceMetrics, ParseError, ScrapeError, Scraper, ServiceCounts};
pub use settings::{KeepAlive, PanicWindow, ScalingSettings, SettingsError};
pub use timer_wake::TimerDue;
pub use window::{Timestamp, Window};
