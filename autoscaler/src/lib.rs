//! Strata's autoscaler: scrapes the sidecars' Prometheus metrics, averages them over stable
//! and panic windows, and decides each service's desired instance count with a pure KPA-style
//! function. Recording the count in the registry is the control plane's job ([`ScaleSink`]).

pub mod collector;
pub mod kpa;
pub mod scrape;
pub mod settings;
pub mod window;

#[cfg(test)]
mod test_server;

pub use collector::{Collector, CollectorCommand, MetricsSource, PrometheusSource, ScaleSink, SinkError};
pub use kpa::{Decision, Kpa, Limit, Load, Observation, Reason};
pub use scrape::{CounterRate, InstanceMetrics, ParseError, ScrapeError, Scraper, ServiceCounts};
pub use settings::{PanicWindow, ScalingSettings, SettingsError};
pub use window::{Timestamp, Window};
