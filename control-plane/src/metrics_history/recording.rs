//! The autoscaler's metrics source, recorded: [`RecordingSource`] wraps the source the
//! autoscaler scales on, passes its load through unchanged, and writes one [`Sample`]
//! per service and round into the [`MetricsHistory`], with the latency read from the
//! same instances and the desired and ready counts from the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use strata_autoscaler::collector::MetricsSource;
use strata_autoscaler::kpa::Load;
use strata_autoscaler::scrape::MAX_EXPOSITION_BYTES;
use strata_autoscaler::window::Timestamp;

use super::latency::LatencyHistogram;
use super::{MetricsHistory, Sample};
use crate::node::{now_ms, ControlPlane};

/// Bounds one latency read, like the autoscaler bounds its scrapes.
const LATENCY_TIMEOUT: Duration = Duration::from_millis(800);

/// A [`MetricsSource`] that records what it observes. Scrapes failures only leave gaps.
pub struct RecordingSource<M> {
    inner: M,
    node: Arc<ControlPlane>,
    http: reqwest::Client,
    /// The last latency reading of each `(service, metrics URL)`.
    readings: Mutex<HashMap<(String, String), LatencyHistogram>>,
}

impl<M: MetricsSource> RecordingSource<M> {
    pub fn new(inner: M, node: Arc<ControlPlane>) -> Self {
        RecordingSource {
            inner,
            node,
            http: reqwest::Client::builder()
                .timeout(LATENCY_TIMEOUT)
                .build()
                .unwrap_or_default(),
            readings: Mutex::new(HashMap::new()),
        }
    }

    fn history(&self) -> &MetricsHistory {
        self.node.history()
    }

    /// The latency histogram of `service` since the previous round, over every instance
    /// that answered both times.
    async fn latency(&self, service: &str, targets: &[String]) -> LatencyHistogram {
        let readings = join_all(targets.iter().map(|url| self.read_latency(url))).await;
        let mut last = self.readings.lock().unwrap_or_else(PoisonError::into_inner);
        last.retain(|(owner, url), _| owner != service || targets.contains(url));
        let mut total = LatencyHistogram::default();
        for (url, reading) in targets.iter().zip(readings) {
            let Some(reading) = reading else { continue };
            let key = (service.to_owned(), url.clone());
            if let Some(previous) = last.get(&key) {
                total.add(&reading.since(previous));
            }
            last.insert(key, reading);
        }
        total
    }

    async fn read_latency(&self, url: &str) -> Option<LatencyHistogram> {
        let response = self.http.get(url).send().await.ok()?.error_for_status().ok()?;
        if response
            .content_length()
            .is_some_and(|length| length > MAX_EXPOSITION_BYTES as u64)
        {
            return None;
        }
        let text = response.text().await.ok()?;
        Some(LatencyHistogram::from_exposition(&text))
    }
}

#[async_trait]
impl<M: MetricsSource> MetricsSource for RecordingSource<M> {
    async fn observe(&self, service: &str, targets: &[String], now: Timestamp) -> Option<Load> {
        let (load, latency) = futures::join!(
            self.inner.observe(service, targets, now),
            self.latency(service, targets)
        );
        let (desired_replicas, ready_replicas) = self.node.read(|registry| {
            let desired = registry.services.get(service).map_or(0, |s| s.desired_replicas);
            (desired, registry.ready_replicas(service))
        });
        // No instance to scrape is a measurement too: nothing is being served.
        let idle = targets.is_empty().then_some(0.0);
        let millis = |q: f64| latency.quantile(q).map(|seconds| seconds * 1000.0);
        self.history().record(
            service,
            Sample {
                at_ms: now_ms(),
                requests_per_second: load.map(|load| load.requests_per_second).or(idle),
                concurrency: load.map(|load| load.concurrency).or(idle),
                desired_replicas,
                ready_replicas,
                latency_p50_ms: millis(0.5),
                latency_p99_ms: millis(0.99),
                cold_starts: 0,
                cold_start_ms: None,
            },
        );
        load
    }
}
