//! The trace store's core, pure (the clock comes in as `now_ms`): spans are
//! buffered per trace until none has arrived for a settle time, then the trace
//! is kept in one of three classes: failed or slow (among the slowest tenth of
//! recent traces, or the record of an unsampled call its ingress judged slow),
//! a one-in-N sample by trace id, or ordinary. Everything kept
//! and buffered is counted against one byte ceiling; past it the oldest trace
//! of the lowest class goes first (traces still arriving between the sample
//! and the slow), so the failed and the slowest stay longest.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::span::{SpanStatus, TraceSpan};

/// How many recent traces' durations decide what "slow" is, and how many must
/// have been seen before any is called slow.
const RECENT_DURATIONS: usize = 256;
const SLOW_AFTER: usize = 20;
/// Traces whose late spans are ignored because the trace was evicted.
const FORGOTTEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLimits {
    /// The ceiling on everything kept and buffered (see `TraceSpan::weight`).
    pub max_bytes: usize,
    /// One trace in this many (by trace id) is kept as the sample.
    pub sample_one_in: u64,
    /// How long after its last span arrived a trace is decided.
    pub settle_ms: u64,
}

impl Default for TraceLimits {
    fn default() -> Self {
        TraceLimits {
            max_bytes: 32 * 1024 * 1024,
            sample_one_in: 10,
            settle_ms: 2_000,
        }
    }
}

/// Why a trace is kept, from the first to go at the ceiling to the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeptBecause {
    /// Kept while there is room.
    Recent,
    /// The one-in-N sample of all calls.
    Sampled,
    /// Among the slowest tenth of recent traces.
    Slow,
    /// A span in it ended in an error.
    Failed,
}

/// One trace in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The first span's name, e.g. `gateway shop.Cart/AddItem`.
    pub root: String,
    pub start_unix_micros: u64,
    /// From the first span's start to the last span's end.
    pub duration_micros: u64,
    pub status: SpanStatus,
    pub spans: usize,
    /// The Strata services whose sidecars took part.
    pub services: Vec<String>,
    pub entity_ids: Vec<String>,
    /// A request in it was held while a service woke from zero.
    pub cold_start: bool,
    /// Whether the call was traced. An unsampled call that failed or was slow
    /// is kept as its ingress's record alone: one span, no steps.
    pub sampled: bool,
    pub kept_because: KeptBecause,
}

/// One trace whole: every span, earliest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceView {
    #[serde(flatten)]
    pub summary: TraceSummary,
    pub span_list: Vec<TraceSpan>,
}

/// Which traces a list shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFilter {
    pub service: String,
    pub status: Option<SpanStatus>,
    pub min_duration_micros: u64,
    pub entity_id: Option<String>,
    pub since_unix_micros: u64,
    /// Only traces that held a request through a cold start (or only those that did not).
    pub cold_start: Option<bool>,
    pub limit: usize,
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<TraceSpan>,
    bytes: usize,
}

impl Trace {
    fn add(&mut self, span: TraceSpan) -> usize {
        let weight = span.weight();
        self.spans.push(span);
        self.bytes += weight;
        weight
    }

    fn start(&self) -> u64 {
        self.spans.iter().map(|span| span.start_unix_micros).min().unwrap_or(0)
    }

    fn duration(&self) -> u64 {
        let end = self.spans.iter().map(TraceSpan::end_unix_micros).max().unwrap_or(0);
        end.saturating_sub(self.start())
    }

    fn is_record(&self) -> bool {
        self.spans.iter().any(TraceSpan::is_record)
    }

    fn failed(&self) -> bool {
        self.spans.iter().any(|span| span.status == SpanStatus::Error)
    }

    fn summary(&self, trace_id: &str, kept_because: KeptBecause) -> TraceSummary {
        let root = self
            .spans
            .iter()
            .min_by_key(|span| (span.parent_span_id.is_some(), span.start_unix_micros))
            .map(|span| span.name.clone())
            .unwrap_or_default();
        let services: BTreeSet<&str> = self.spans.iter().filter_map(|span| span.service.as_deref()).collect();
        let entity_ids: BTreeSet<&str> = self.spans.iter().filter_map(TraceSpan::entity_id).collect();
        TraceSummary {
            trace_id: trace_id.to_string(),
            root,
            start_unix_micros: self.start(),
            duration_micros: self.duration(),
            status: if self.failed() {
                SpanStatus::Error
            } else {
                SpanStatus::Ok
            },
            spans: self.spans.len(),
            services: services.into_iter().map(String::from).collect(),
            entity_ids: entity_ids.into_iter().map(String::from).collect(),
            cold_start: self.spans.iter().any(|span| {
                span.attributes
                    .get("strata.cold_start")
                    .is_some_and(|value| value == "true")
            }),
            sampled: !self.is_record(),
            kept_because,
        }
    }
}

#[derive(Debug)]
struct Pending {
    trace: Trace,
    last_arrival_ms: u64,
}

#[derive(Debug)]
struct Kept {
    trace: Trace,
    outcome: KeptBecause,
}

/// What the store has done, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    pub spans_received: u64,
    pub traces_kept: u64,
    pub traces_evicted: u64,
    pub spans_dropped: u64,
}

#[derive(Debug)]
pub struct TraceStore {
    limits: TraceLimits,
    pending: HashMap<String, Pending>,
    kept: HashMap<String, Kept>,
    /// Kept traces by outcome, oldest decision first (ids may be stale).
    order: HashMap<KeptBecause, VecDeque<String>>,
    forgotten: (VecDeque<String>, HashSet<String>),
    recent_durations: VecDeque<u64>,
    bytes: usize,
    counts: TraceCounts,
}

impl TraceStore {
    pub fn new(limits: TraceLimits) -> Self {
        TraceStore {
            limits,
            pending: HashMap::new(),
            kept: HashMap::new(),
            order: HashMap::new(),
            forgotten: (VecDeque::new(), HashSet::new()),
            recent_durations: VecDeque::new(),
            bytes: 0,
            counts: TraceCounts::default(),
        }
    }

    pub fn limits(&self) -> TraceLimits {
        self.limits
    }

    /// Bytes kept and buffered now; never above `limits().max_bytes` after a call returns.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn traces(&self) -> usize {
        self.kept.len()
    }

    pub fn counts(&self) -> TraceCounts {
        self.counts
    }

    /// Takes spans that arrived at `now_ms`. A span of a kept trace joins it; one
    /// of an evicted trace is dropped; the rest wait for their trace's decision.
    pub fn ingest(&mut self, spans: Vec<TraceSpan>, now_ms: u64) {
        for span in spans {
            self.counts.spans_received += 1;
            if self.forgotten.1.contains(&span.trace_id) {
                self.counts.spans_dropped += 1;
                continue;
            }
            if let Some(kept) = self.kept.get_mut(&span.trace_id) {
                self.bytes += kept.trace.add(span);
                continue;
            }
            let pending = self.pending.entry(span.trace_id.clone()).or_insert_with(|| Pending {
                trace: Trace::default(),
                last_arrival_ms: now_ms,
            });
            pending.last_arrival_ms = now_ms;
            self.bytes += pending.trace.add(span);
        }
        self.settle(now_ms);
    }

    /// Decides every trace whose spans stopped arriving by `now_ms`, then holds
    /// the ceiling.
    pub fn settle(&mut self, now_ms: u64) {
        let settle_ms = self.limits.settle_ms;
        let mut due: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.last_arrival_ms + settle_ms <= now_ms)
            .map(|(id, pending)| (pending.trace.start(), id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            if let Some(pending) = self.pending.remove(&id) {
                self.keep(id, pending.trace);
            }
        }
        self.hold_ceiling();
    }

    fn keep(&mut self, id: String, trace: Trace) {
        let duration = trace.duration();
        let record = trace.is_record();
        let outcome = if trace.failed() {
            KeptBecause::Failed
        } else if record {
            // Its ingress recorded it because it was among its slowest.
            KeptBecause::Slow
        } else if self.is_slow(duration) {
            KeptBecause::Slow
        } else if sampled(&id, self.limits.sample_one_in) {
            KeptBecause::Sampled
        } else {
            KeptBecause::Recent
        };
        // Records, all slow or failed, would skew what "slow" is.
        if !record {
            if self.recent_durations.len() == RECENT_DURATIONS {
                self.recent_durations.pop_front();
            }
            self.recent_durations.push_back(duration);
        }
        self.counts.traces_kept += 1;
        self.order.entry(outcome).or_default().push_back(id.clone());
        self.kept.insert(id, Kept { trace, outcome });
    }

    /// Among the slowest tenth of the recent traces (before this one).
    fn is_slow(&self, duration: u64) -> bool {
        if self.recent_durations.len() < SLOW_AFTER {
            return false;
        }
        let mut sorted: Vec<u64> = self.recent_durations.iter().copied().collect();
        sorted.sort_unstable();
        duration > sorted[sorted.len() * 9 / 10]
    }

    /// Evicts until under the ceiling: kept `recent` and `sampled` traces first,
    /// then traces still arriving (oldest first: they may yet fail, but a trace
    /// known to be slow or failed is worth more), then `slow`, then `failed`.
    fn hold_ceiling(&mut self) {
        while self.bytes > self.limits.max_bytes {
            let cheap = self.oldest_kept(&[KeptBecause::Recent, KeptBecause::Sampled]);
            if let Some(id) = cheap {
                self.evict_kept(id);
                continue;
            }
            if let Some(id) = self.oldest_pending() {
                let pending = self.pending.remove(&id).expect("just found");
                self.bytes -= pending.trace.bytes;
                self.counts.spans_dropped += pending.trace.spans.len() as u64;
                self.forget(id);
                continue;
            }
            match self.oldest_kept(&[KeptBecause::Slow, KeptBecause::Failed]) {
                Some(id) => self.evict_kept(id),
                None => break,
            }
        }
        debug_assert!(self.bytes <= self.limits.max_bytes);
    }

    fn evict_kept(&mut self, id: String) {
        let kept = self.kept.remove(&id).expect("ordered ids are kept");
        self.bytes -= kept.trace.bytes;
        self.counts.traces_evicted += 1;
        self.forget(id);
    }

    fn oldest_pending(&self) -> Option<String> {
        self.pending
            .iter()
            .min_by_key(|(_, pending)| pending.last_arrival_ms)
            .map(|(id, _)| id.clone())
    }

    /// The oldest kept trace of the first of `classes` that has one.
    fn oldest_kept(&mut self, classes: &[KeptBecause]) -> Option<String> {
        for outcome in classes {
            let Some(queue) = self.order.get_mut(outcome) else {
                continue;
            };
            while let Some(id) = queue.pop_front() {
                if self.kept.get(&id).is_some_and(|kept| kept.outcome == *outcome) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn forget(&mut self, id: String) {
        let (queue, set) = &mut self.forgotten;
        if queue.len() == FORGOTTEN {
            if let Some(old) = queue.pop_front() {
                set.remove(&old);
            }
        }
        set.insert(id.clone());
        queue.push_back(id);
    }

    /// The kept traces `filter` asks for, newest first.
    pub fn list(&self, filter: &TraceFilter) -> Vec<TraceSummary> {
        let mut found: Vec<TraceSummary> = self
            .kept
            .iter()
            .map(|(id, kept)| kept.trace.summary(id, kept.outcome))
            .filter(|summary| {
                summary.services.contains(&filter.service)
                    && filter.status.is_none_or(|status| summary.status == status)
                    && summary.duration_micros >= filter.min_duration_micros
                    && summary.start_unix_micros >= filter.since_unix_micros
                    && filter.cold_start.is_none_or(|cold| summary.cold_start == cold)
                    && filter
                        .entity_id
                        .as_ref()
                        .is_none_or(|entity| summary.entity_ids.contains(entity))
            })
            .collect();
        found.sort_by(|a, b| {
            b.start_unix_micros
                .cmp(&a.start_unix_micros)
                .then(a.trace_id.cmp(&b.trace_id))
        });
        found.truncate(filter.limit);
        found
    }

    /// One kept trace, whole.
    pub fn get(&self, trace_id: &str) -> Option<TraceView> {
        let kept = self.kept.get(trace_id)?;
        let mut span_list = kept.trace.spans.clone();
        span_list.sort_by_key(|span| (span.start_unix_micros, span.parent_span_id.is_some()));
        Some(TraceView {
            summary: kept.trace.summary(trace_id, kept.outcome),
            span_list,
        })
    }
}

/// The deterministic one-in-`n` choice by the trace id's last 16 hex digits,
/// which W3C asks to be random.
fn sampled(trace_id: &str, n: u64) -> bool {
    let tail = &trace_id[trace_id.len().saturating_sub(16)..];
    n > 0 && u64::from_str_radix(tail, 16).is_ok_and(|value| value % n == 0)
}
