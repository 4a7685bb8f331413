//! The cheap record of a call that was not sampled. No span was made for it,
//! but when it failed or was among the slowest its ingress sends one span that
//! sums it up (name, duration, status, entity) to Strata's trace store only, so
//! the store still lists it. The record's span id is the parent id the call's
//! unsampled `traceparent` carries on (the ingress gives it a new one), so a
//! span a later hop made for it anyway hangs under it; its parent is the
//! client's span, if the client sent one. The user's collector never sees
//! records.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Span, SpanData, SpanEvents, SpanLinks, SpanProcessor},
};

use crate::TraceParent;

/// The attribute that marks a record: `strata.sampled = false`.
pub const UNSAMPLED_ATTRIBUTE: &str = "strata.sampled";

/// One unsampled call, as its ingress saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsampledCall {
    /// The context the call went on with (its flag clear): its parent id is
    /// the record's span id.
    pub trace: TraceParent,
    /// The client's span, when the client sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// What its span would have been called, e.g. `gateway shop.Cart/AddItem`.
    pub name: String,
    pub start: SystemTime,
    pub duration: Duration,
    /// The error it ended in, if it failed.
    pub error: Option<String>,
    pub attributes: Vec<(&'static str, String)>,
}

/// Whether a call that took `duration` and failed or not is worth a record:
/// every failed call, and those slower than nine in ten of this process's
/// recent calls.
pub fn worth_recording(duration: Duration, failed: bool) -> bool {
    static RECENT: Mutex<SlowCalls> = Mutex::new(SlowCalls::new());
    let slow = RECENT
        .lock()
        .map(|mut recent| recent.observe(duration))
        .unwrap_or(false);
    failed || slow
}

/// Whether records go anywhere: only to Strata's trace store.
pub fn records_unsampled() -> bool {
    STORE.get().is_some()
}

/// Sends `call`'s record to the trace store, when there is one.
pub fn record(call: UnsampledCall) {
    let Some(store) = STORE.get() else {
        return;
    };
    store.on_end(span_data(call));
}

fn span_data(call: UnsampledCall) -> SpanData {
    let status = match call.error {
        Some(message) => Status::error(message),
        None => Status::Unset,
    };
    let mut attributes: Vec<KeyValue> = call
        .attributes
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value))
        .collect();
    attributes.push(KeyValue::new(UNSAMPLED_ATTRIBUTE, false));
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(call.trace.trace_id),
            SpanId::from_bytes(call.trace.parent_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: call.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: call.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(call.name),
        start_time: call.start,
        end_time: call.start + call.duration,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("strata").build(),
    }
}

static STORE: OnceLock<Arc<BatchSpanProcessor>> = OnceLock::new();

/// The trace store's processor, shared between the tracer provider (spans)
/// and [`record`] (records). The resource must be set before it is shared.
#[derive(Debug)]
pub(crate) struct StoreProcessor(Arc<BatchSpanProcessor>);

impl StoreProcessor {
    pub(crate) fn share(processor: BatchSpanProcessor) -> StoreProcessor {
        let shared = Arc::new(processor);
        let _ = STORE.set(shared.clone());
        StoreProcessor(shared)
    }
}

impl SpanProcessor for StoreProcessor {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }

    fn on_end(&self, span: SpanData) {
        self.0.on_end(span)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// How many recent durations decide what "slow" is, how many must be seen
/// before any call is slow, and how often the threshold is worked out again.
const RECENT: usize = 256;
const SLOW_AFTER: usize = 20;
const RECOMPUTE_EVERY: usize = 32;

/// The slowest tenth of recent calls, estimated cheaply: a ring of durations
/// whose 90th percentile is worked out every few calls.
#[derive(Debug)]
struct SlowCalls {
    micros: [u32; RECENT],
    next: usize,
    seen: usize,
    threshold: Option<u32>,
}

impl SlowCalls {
    const fn new() -> SlowCalls {
        SlowCalls {
            micros: [0; RECENT],
            next: 0,
            seen: 0,
            threshold: None,
        }
    }

    /// Takes one call's duration; whether it was slower than the threshold
    /// before it.
    fn observe(&mut self, duration: Duration) -> bool {
        let micros = u32::try_from(duration.as_micros()).unwrap_or(u32::MAX);
        let slow = self.threshold.is_some_and(|threshold| micros > threshold);
        self.micros[self.next] = micros;
        self.next = (self.next + 1) % RECENT;
        self.seen += 1;
        if self.seen >= SLOW_AFTER && (self.threshold.is_none() || self.seen % RECOMPUTE_EVERY == 0) {
            let filled = self.seen.min(RECENT);
            let mut sorted = self.micros[..filled].to_vec();
            sorted.sort_unstable();
            self.threshold = Some(sorted[filled * 9 / 10]);
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_tenth_is_slow_once_enough_calls_are_seen() {
        let mut recent = SlowCalls::new();
        // Nothing is slow before twenty calls.
        assert!(!recent.observe(Duration::from_secs(10)));
        for _ in 0..100 {
            recent.observe(Duration::from_millis(1));
        }
        for millis in 1..=100 {
            recent.observe(Duration::from_millis(millis));
        }
        assert!(recent.observe(Duration::from_millis(500)));
        assert!(!recent.observe(Duration::from_millis(2)));
    }

    #[test]
    fn a_record_is_one_root_span_named_by_its_context() {
        let trace = TraceParent {
            trace_id: [1; 16],
            parent_id: [2; 8],
            flags: 0,
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let data = span_data(UnsampledCall {
            trace,
            parent: None,
            name: "gateway shop.Cart/AddItem".into(),
            start,
            duration: Duration::from_millis(5),
            error: Some("no such cart".into()),
            attributes: vec![("strata.entity_id", "ann".into())],
        });
        assert_eq!(data.span_context.trace_id().to_bytes(), [1; 16]);
        assert_eq!(data.span_context.span_id().to_bytes(), [2; 8]);
        assert_eq!(data.parent_span_id, SpanId::INVALID);
        assert_eq!(data.end_time, start + Duration::from_millis(5));
        assert_eq!(data.status, Status::error("no such cart"));
        assert!(data.attributes.contains(&KeyValue::new(UNSAMPLED_ATTRIBUTE, false)));
        assert!(data.attributes.contains(&KeyValue::new("strata.entity_id", "ann")));
    }
}
