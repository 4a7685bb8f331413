//! The trace store on the control plane's `/metrics`: its fixed byte ceiling
//! beside what it holds, and what it took, kept, evicted and dropped.

use std::fmt::Write as _;

use super::TraceStore;

/// The Prometheus text lines for `store`.
pub fn render_metrics(store: &TraceStore) -> String {
    let counts = store.counts();
    let lines: [(&str, &str, &str, u64); 6] = [
        (
            "strata_trace_store_max_bytes",
            "gauge",
            "The trace store's fixed memory ceiling",
            store.limits().max_bytes as u64,
        ),
        (
            "strata_trace_store_bytes",
            "gauge",
            "Bytes the trace store holds now, kept and still arriving",
            store.bytes() as u64,
        ),
        (
            "strata_trace_store_traces",
            "gauge",
            "Traces kept now",
            store.traces() as u64,
        ),
        (
            "strata_trace_store_spans_received_total",
            "counter",
            "Spans received over OTLP",
            counts.spans_received,
        ),
        (
            "strata_trace_store_traces_evicted_total",
            "counter",
            "Kept traces evicted to stay under the ceiling",
            counts.traces_evicted,
        ),
        (
            "strata_trace_store_spans_dropped_total",
            "counter",
            "Spans dropped: their trace was evicted, or over the ceiling while still arriving",
            counts.spans_dropped,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in lines {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::TraceLimits;

    #[test]
    fn the_ceiling_is_shown_beside_what_is_held() {
        let store = TraceStore::new(TraceLimits {
            max_bytes: 4096,
            ..TraceLimits::default()
        });
        let text = render_metrics(&store);
        assert!(text.contains("\nstrata_trace_store_max_bytes 4096\n"), "{text}");
        assert!(text.contains("\nstrata_trace_store_bytes 0\n"), "{text}");
        assert!(
            text.contains("# TYPE strata_trace_store_spans_dropped_total counter"),
            "{text}"
        );
    }
}
