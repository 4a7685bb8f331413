//! The counters every Strata process shows on `/metrics` about its traces: spans
//! exported, spans dropped (the collector did not take them), and malformed
//! `traceparent` values that started a new trace. Process-wide, because the
//! exporter is; each `/metrics` registry includes them with [`register`].

use std::sync::{
    atomic::{AtomicU64, Ordering},
    OnceLock,
};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, Registry};

struct Counters {
    exported: IntCounter,
    dropped: IntCounter,
    malformed: IntCounter,
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| Counters {
        exported: IntCounter::new("strata_trace_spans_exported_total", "Spans the OTLP endpoint accepted")
            .expect("valid metric"),
        dropped: IntCounter::new(
            "strata_trace_spans_dropped_total",
            "Spans dropped because the OTLP endpoint failed or did not answer",
        )
        .expect("valid metric"),
        malformed: IntCounter::new(
            "strata_trace_context_malformed_total",
            "Calls whose traceparent was malformed; each started a new trace",
        )
        .expect("valid metric"),
    })
}

/// Adds the trace counters to a `/metrics` registry (once per registry).
pub fn register(registry: &Registry) {
    let counters = counters();
    for counter in [&counters.exported, &counters.dropped, &counters.malformed] {
        let _ = registry.register(Box::new(counter.clone()));
    }
}

/// Counts a malformed `traceparent`.
pub fn malformed_traceparent() {
    counters().malformed.inc();
}

pub(crate) fn exported(spans: usize) {
    counters().exported.inc_by(spans as u64);
}

/// Counts dropped spans and says so in the log at most once a minute.
pub(crate) fn dropped(spans: usize, error: &dyn std::fmt::Display) {
    counters().dropped.inc_by(spans as u64);
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST_WARNING.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 60)
        && LAST_WARNING
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            spans,
            dropped_total = counters().dropped.get(),
            %error,
            "the OTLP endpoint did not take spans; they are dropped (counted in strata_trace_spans_dropped_total, said once a minute)"
        );
    }
}
