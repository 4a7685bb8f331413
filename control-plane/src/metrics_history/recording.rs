//! The autoscaler's metrics source, recorded: [`RecordingSource`] wraps the source the
//! autoscaler scales on, passes its load through unchanged, and writes one [`Sample`]
//! per service and round into the [`MetricsHistory`], with the latency read from the
//! same instances and the desired and ready counts from the registry. The same reads
//! give each instance's calls and errors, which the canary analysis judges by
//! revision (`canary_analysis.rs`): a failing canary is rolled back from here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use strata_autoscaler::collector::MetricsSource;
use strata_autoscaler::kpa::Load;
use strata_autoscaler::scrape::MAX_EXPOSITION_BYTES;
use strata_autoscaler::window::Timestamp;

use super::canary_analysis::{judge, Answered, CanaryWindows};
use super::latency::LatencyHistogram;
use super::outcomes::Outcomes;
use super::{MetricsHistory, Sample};
use crate::node::{now_ms, ControlPlane};
use crate::registry::Command;

/// Bounds one latency read, like the autoscaler bounds its scrapes.
const LATENCY_TIMEOUT: Duration = Duration::from_millis(800);

/// A [`MetricsSource`] that records what it observes. Scrapes failures only leave gaps.
pub struct RecordingSource<M> {
    inner: M,
    node: Arc<ControlPlane>,
    http: reqwest::Client,
    /// The last reading of each `(service, metrics URL)`.
    readings: Mutex<HashMap<(String, String), Answered>>,
    /// What each revision answered lately, for the canary analysis.
    canaries: Mutex<CanaryWindows>,
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
            canaries: Mutex::new(CanaryWindows::default()),
        }
    }

    fn history(&self) -> &MetricsHistory {
        self.node.history()
    }

    /// The latency histogram of `service` since the previous round, over every instance
    /// that answered both times, and each such instance's calls since then.
    async fn latency(&self, service: &str, targets: &[String]) -> (LatencyHistogram, Vec<(String, Answered)>) {
        let readings = join_all(targets.iter().map(|url| self.read(url))).await;
        let mut last = self.readings.lock().unwrap_or_else(PoisonError::into_inner);
        last.retain(|(owner, url), _| owner != service || targets.contains(url));
        let mut total = LatencyHistogram::default();
        let mut calls = Vec::new();
        for (url, reading) in targets.iter().zip(readings) {
            let Some(reading) = reading else { continue };
            let key = (service.to_owned(), url.clone());
            if let Some(previous) = last.get(&key) {
                let answered = reading.since(previous);
                total.add(&answered.latency);
                calls.push((url.clone(), answered));
            }
            last.insert(key, reading);
        }
        (total, calls)
    }

    async fn read(&self, url: &str) -> Option<Answered> {
        let response = self.http.get(url).send().await.ok()?.error_for_status().ok()?;
        if response
            .content_length()
            .is_some_and(|length| length > MAX_EXPOSITION_BYTES as u64)
        {
            return None;
        }
        let text = response.text().await.ok()?;
        Some(Answered {
            latency: LatencyHistogram::from_exposition(&text),
            outcomes: Outcomes::from_exposition(&text),
        })
    }

    /// Feeds a round's calls, by revision, to the canary analysis, and rolls a
    /// failing canary back.
    async fn analyse_canary(&self, service: &str, calls: Vec<(String, Answered)>, now_ms: u64) {
        // Most services have no canary under analysis: for them, only forget.
        let analysed = self.node.read(|registry| {
            let entry = registry.services.get(service)?;
            let canary = entry.canary.clone().filter(|canary| canary.analysis.is_some())?;
            let serving = entry.serving();
            let revisions: HashMap<String, u64> = registry
                .instances_of(service)
                .map(|instance| {
                    let revision = if instance.revision == 0 {
                        serving
                    } else {
                        instance.revision
                    };
                    (format!("http://{}/metrics", instance.metrics_address()), revision)
                })
                .collect();
            Some((canary, serving, revisions))
        });
        // The lock is held in this block only: the write below awaits.
        let verdict = {
            let mut windows = self.canaries.lock().unwrap_or_else(PoisonError::into_inner);
            let Some((canary, serving, revisions)) = analysed else {
                windows.forget(service);
                return;
            };
            let mut by_revision: HashMap<u64, Answered> = HashMap::new();
            for (url, answered) in &calls {
                if let Some(revision) = revisions.get(url) {
                    by_revision.entry(*revision).or_default().add(answered);
                }
            }
            for (revision, answered) in by_revision {
                windows.record(service, now_ms, revision, answered);
            }
            windows
                .compare(service, Some(&canary), serving, now_ms)
                .zip(canary.analysis)
                .and_then(|(comparison, analysis)| judge(&comparison, &analysis, serving))
                .map(|reason| (canary.revision, reason))
        };
        let Some((revision, reason)) = verdict else {
            return;
        };
        tracing::warn!(service, revision, %reason, "rolling the canary back");
        let command = Command::FailCanary {
            service: service.to_owned(),
            revision,
            reason,
        };
        if let Err(error) = self.node.write(command).await {
            tracing::warn!(service, revision, %error, "could not roll the canary back; trying again next round");
        }
    }
}

#[async_trait]
impl<M: MetricsSource> MetricsSource for RecordingSource<M> {
    async fn observe(&self, service: &str, targets: &[String], now: Timestamp) -> Option<Load> {
        let (load, (latency, calls)) = futures::join!(
            self.inner.observe(service, targets, now),
            self.latency(service, targets)
        );
        self.analyse_canary(service, calls, now_ms()).await;
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
