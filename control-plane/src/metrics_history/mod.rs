//! Per-service metric series over the last fifteen minutes, for the dashboard's charts
//! (`GET /api/v1/services/{name}/metrics`): one bounded ring of one-second samples per
//! service, filled on the leader from the autoscaler's own scrapes (see [`recording`])
//! and from cold starts seen in the registry (the latest of which also tells the
//! autoscaler how early to wake a service for a timer). It stores nothing on disk and
//! decides nothing; a new leader starts with empty rings.

mod canary_analysis;
mod latency;
mod outcomes;
mod recording;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use latency::{quantile, LatencyHistogram};
pub use recording::RecordingSource;

/// How many samples a service keeps: fifteen minutes at the autoscaler's one per second.
pub const CAPACITY: usize = 900;
/// The longest window a reader may ask for (what the ring holds).
pub const MAX_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The shortest window a reader may ask for.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);

/// What one autoscaler round saw of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    /// Wall-clock milliseconds of the scrape.
    pub at_ms: u64,
    /// Requests answered per second over the ready instances; null when none could be scraped.
    pub requests_per_second: Option<f64>,
    /// Requests in flight over the ready instances; null when none could be scraped.
    pub concurrency: Option<f64>,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// Median request latency since the previous sample; null without requests.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile request latency since the previous sample; null without requests.
    pub latency_p99_ms: Option<f64>,
    /// Cold starts (desired left zero, then the first instance became ready) completed
    /// since the previous sample.
    pub cold_starts: u32,
    /// The longest of those cold starts, in milliseconds.
    pub cold_start_ms: Option<f64>,
}

#[derive(Default)]
struct Series {
    samples: VecDeque<Sample>,
    /// Cold starts seen since the last sample, in milliseconds.
    cold_starts: Vec<f64>,
    /// The latest cold start, kept past its sample: the autoscaler wakes the service
    /// this far ahead of a due timer.
    last_cold_start: Option<Duration>,
}

/// The rings of every service. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct MetricsHistory {
    services: Mutex<BTreeMap<String, Series>>,
}

impl MetricsHistory {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Series>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot corrupt it.
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a sample, dropping the oldest past [`CAPACITY`]. Cold starts noted since
    /// the previous sample are folded into this one.
    pub fn record(&self, service: &str, mut sample: Sample) {
        let mut services = self.lock();
        let series = services.entry(service.to_owned()).or_default();
        let cold_starts = std::mem::take(&mut series.cold_starts);
        sample.cold_starts += u32::try_from(cold_starts.len()).unwrap_or(u32::MAX);
        sample.cold_start_ms = cold_starts.into_iter().reduce(f64::max).or(sample.cold_start_ms);
        if series.samples.len() == CAPACITY {
            series.samples.pop_front();
        }
        debug_assert!(series.samples.back().is_none_or(|last| last.at_ms <= sample.at_ms));
        series.samples.push_back(sample);
    }

    /// Notes a cold start of `service` that took `duration`; it shows in the next sample.
    pub fn cold_start(&self, service: &str, duration: Duration) {
        let millis = duration.as_secs_f64() * 1000.0;
        let mut services = self.lock();
        let series = services.entry(service.to_owned()).or_default();
        series.cold_starts.push(millis);
        series.last_cold_start = Some(duration);
    }

    /// The latest cold start of `service` this node saw, `None` before its first.
    pub fn last_cold_start(&self, service: &str) -> Option<Duration> {
        self.lock().get(service).and_then(|series| series.last_cold_start)
    }

    /// The samples of `service` taken at or after `since_ms`, oldest first.
    pub fn since(&self, service: &str, since_ms: u64) -> Vec<Sample> {
        let services = self.lock();
        let Some(series) = services.get(service) else {
            return Vec::new();
        };
        // Samples are in time order: skip the older ones without looking at each.
        let first = series.samples.partition_point(|sample| sample.at_ms < since_ms);
        series.samples.range(first..).cloned().collect()
    }

    /// Drops the series of a deleted service.
    pub fn forget(&self, service: &str) {
        self.lock().remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64) -> Sample {
        Sample {
            at_ms,
            requests_per_second: Some(1.0),
            concurrency: Some(0.5),
            desired_replicas: 1,
            ready_replicas: 1,
            latency_p50_ms: None,
            latency_p99_ms: None,
            cold_starts: 0,
            cold_start_ms: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let history = MetricsHistory::default();
        for second in 0..(CAPACITY as u64 + 10) {
            history.record("cart", sample(second * 1000));
        }
        let all = history.since("cart", 0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all.first().map(|s| s.at_ms), Some(10_000));
        assert_eq!(all.last().map(|s| s.at_ms), Some((CAPACITY as u64 + 9) * 1000));
    }

    #[test]
    fn a_window_starts_at_its_first_sample() {
        let history = MetricsHistory::default();
        for second in 0..10 {
            history.record("cart", sample(second * 1000));
        }
        let recent: Vec<u64> = history.since("cart", 7_000).iter().map(|s| s.at_ms).collect();
        assert_eq!(recent, vec![7_000, 8_000, 9_000]);
        assert!(history.since("cart", 10_000).is_empty());
        assert!(history.since("other", 0).is_empty());
    }

    #[test]
    fn cold_starts_fold_into_the_next_sample() {
        let history = MetricsHistory::default();
        history.record("cart", sample(1_000));
        history.cold_start("cart", Duration::from_millis(120));
        history.cold_start("cart", Duration::from_millis(300));
        history.record("cart", sample(2_000));
        history.record("cart", sample(3_000));
        let counts: Vec<(u32, Option<f64>)> = history
            .since("cart", 0)
            .iter()
            .map(|s| (s.cold_starts, s.cold_start_ms))
            .collect();
        assert_eq!(counts, vec![(0, None), (2, Some(300.0)), (0, None)]);
    }

    #[test]
    fn a_forgotten_service_has_no_series() {
        let history = MetricsHistory::default();
        history.record("cart", sample(1_000));
        history.forget("cart");
        assert!(history.since("cart", 0).is_empty());
    }
}
