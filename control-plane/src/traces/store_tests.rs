//! The trace store's decisions, asserted exactly: buffering until a trace
//! settles, the classes a trace is kept in, the ceiling and what it evicts
//! first, and the list's filters and order.

use std::collections::BTreeMap;

use super::{span::UNSAMPLED_ATTRIBUTE, *};

const SETTLE: u64 = 1_000;

fn limits(max_bytes: usize) -> TraceLimits {
    TraceLimits {
        max_bytes,
        sample_one_in: 10,
        settle_ms: SETTLE,
    }
}

/// A trace id whose one-in-ten sample choice is `sampled`.
fn trace_id(n: u64, sampled: bool) -> String {
    let tail = if sampled { n * 10 } else { n * 10 + 1 };
    format!("{:016x}{tail:016x}", 0xabcu64)
}

fn span(trace: &str, id: u64, parent: Option<u64>, start: u64, duration: u64) -> TraceSpan {
    TraceSpan {
        trace_id: trace.into(),
        span_id: format!("{id:016x}"),
        parent_span_id: parent.map(|parent| format!("{parent:016x}")),
        name: format!("span {id}"),
        kind: "server".into(),
        process: "strata-proxy".into(),
        service: Some("cart".into()),
        start_unix_micros: start,
        duration_micros: duration,
        status: SpanStatus::Ok,
        status_message: None,
        attributes: BTreeMap::from([("strata.entity_id".to_string(), "cart-1".to_string())]),
    }
}

fn failed(mut span: TraceSpan) -> TraceSpan {
    span.status = SpanStatus::Error;
    span.status_message = Some("out of stock".into());
    span
}

fn all(service: &str) -> TraceFilter {
    TraceFilter {
        service: service.into(),
        limit: 1000,
        ..TraceFilter::default()
    }
}

#[test]
fn a_trace_waits_until_its_spans_stop_arriving_then_is_kept_whole() {
    let mut store = TraceStore::new(limits(1 << 20));
    let id = trace_id(1, false);
    let mut gateway = span(&id, 1, None, 1_000, 900);
    gateway.service = None;
    store.ingest(vec![gateway], 0);
    store.ingest(vec![span(&id, 2, Some(1), 1_100, 700)], 600);
    store.settle(1_599);
    assert_eq!(store.traces(), 0, "the last span came 999 ms ago");
    store.settle(1_600);
    let listed = store.list(&all("cart"));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].root, "span 1");
    assert_eq!(listed[0].duration_micros, 900);
    assert_eq!(listed[0].spans, 2);
    assert_eq!(listed[0].kept_because, KeptBecause::Recent);
    assert_eq!(listed[0].entity_ids, vec!["cart-1".to_string()]);
    // A late span joins the kept trace.
    store.ingest(vec![span(&id, 3, Some(2), 1_200, 10)], 5_000);
    let view = store.get(&id).unwrap();
    let ids: Vec<&str> = view.span_list.iter().map(|span| span.span_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![format!("{:016x}", 1), format!("{:016x}", 2), format!("{:016x}", 3)]
    );
    assert_eq!(store.get(&trace_id(2, false)), None);
}

#[test]
fn failed_sampled_and_slow_traces_say_why_they_are_kept() {
    let mut store = TraceStore::new(limits(1 << 20));
    for n in 0..20 {
        store.ingest(vec![span(&trace_id(100 + n, false), 1, None, n, 100)], 0);
    }
    let (failing, sample, slow) = (trace_id(1, false), trace_id(2, true), trace_id(3, false));
    store.ingest(vec![failed(span(&failing, 1, None, 100, 5))], SETTLE);
    store.ingest(vec![span(&sample, 1, None, 200, 5)], 2 * SETTLE);
    store.ingest(vec![span(&slow, 1, None, 300, 5_000)], 3 * SETTLE);
    store.settle(4 * SETTLE);
    let because = |id: &str| store.get(id).unwrap().summary.kept_because;
    assert_eq!(because(&failing), KeptBecause::Failed);
    assert_eq!(store.get(&failing).unwrap().summary.status, SpanStatus::Error);
    assert_eq!(because(&sample), KeptBecause::Sampled);
    assert_eq!(because(&slow), KeptBecause::Slow);
}

#[test]
fn the_ceiling_holds_and_evicts_the_ordinary_before_the_failed() {
    let one = span(&trace_id(0, false), 1, None, 0, 1).weight();
    let mut store = TraceStore::new(limits(one * 10));
    let failing = trace_id(1, false);
    store.ingest(vec![failed(span(&failing, 1, None, 0, 1))], 0);
    for n in 2..500 {
        store.ingest(vec![span(&trace_id(n, false), 1, None, n, 1)], n * SETTLE);
        assert!(store.bytes() <= one * 10, "{} bytes after trace {n}", store.bytes());
    }
    assert!(
        store.get(&failing).is_some(),
        "the failed trace outlives 498 ordinary ones"
    );
    // The failed span's message makes it heavier than the rest, so eight
    // ordinary traces fit beside it: seven kept and the last, still arriving.
    assert_eq!(store.counts().traces_evicted, 498 - 8);
    // A late span of an evicted trace is dropped, not buffered again.
    let evicted = trace_id(2, false);
    assert!(store.get(&evicted).is_none());
    let dropped = store.counts().spans_dropped;
    store.ingest(vec![span(&evicted, 9, Some(1), 2, 1)], 600 * SETTLE);
    assert_eq!(store.counts().spans_dropped, dropped + 1);
}

#[test]
fn spans_still_arriving_are_held_to_the_ceiling_too() {
    let one = span(&trace_id(0, false), 1, None, 0, 1).weight();
    let mut store = TraceStore::new(limits(one * 3));
    let busy = trace_id(1, false);
    for n in 0..10 {
        store.ingest(vec![span(&busy, n + 1, None, n, 1)], n);
        assert!(store.bytes() <= one * 3);
    }
    // The fourth span put the trace over: its four are dropped, and the six after.
    assert_eq!(store.counts().spans_dropped, 10);
}

#[test]
fn the_list_filters_and_puts_the_newest_first() {
    let mut store = TraceStore::new(limits(1 << 20));
    let mut other_entity = span(&trace_id(3, false), 1, None, 3_000, 50);
    other_entity
        .attributes
        .insert("strata.entity_id".into(), "cart-2".into());
    let mut other_service = span(&trace_id(4, false), 1, None, 4_000, 50);
    other_service.service = Some("checkout".into());
    let mut cold = span(&trace_id(1, false), 2, Some(1), 1_000, 5);
    cold.attributes.insert("strata.cold_start".into(), "true".into());
    store.ingest(
        vec![
            span(&trace_id(1, false), 1, None, 1_000, 10),
            cold,
            failed(span(&trace_id(2, false), 1, None, 2_000, 500)),
            other_entity,
            other_service,
        ],
        0,
    );
    store.settle(SETTLE);
    let ids = |filter: TraceFilter| -> Vec<String> { store.list(&filter).into_iter().map(|t| t.trace_id).collect() };
    assert_eq!(
        ids(all("cart")),
        vec![trace_id(3, false), trace_id(2, false), trace_id(1, false)]
    );
    assert_eq!(ids(all("checkout")), vec![trace_id(4, false)]);
    assert_eq!(
        ids(TraceFilter {
            status: Some(SpanStatus::Error),
            ..all("cart")
        }),
        vec![trace_id(2, false)]
    );
    assert_eq!(
        ids(TraceFilter {
            status: Some(SpanStatus::Ok),
            min_duration_micros: 20,
            ..all("cart")
        }),
        vec![trace_id(3, false)]
    );
    assert_eq!(
        ids(TraceFilter {
            entity_id: Some("cart-1".into()),
            since_unix_micros: 1_500,
            ..all("cart")
        }),
        vec![trace_id(2, false)]
    );
    assert_eq!(
        ids(TraceFilter {
            limit: 1,
            ..all("cart")
        }),
        vec![trace_id(3, false)]
    );
    assert_eq!(
        ids(TraceFilter {
            cold_start: Some(true),
            ..all("cart")
        }),
        vec![trace_id(1, false)]
    );
    assert_eq!(
        ids(TraceFilter {
            cold_start: Some(false),
            ..all("cart")
        }),
        vec![trace_id(3, false), trace_id(2, false)]
    );
}

#[test]
fn a_flood_of_traces_still_arriving_does_not_evict_a_failed_one() {
    let one = span(&trace_id(0, false), 1, None, 0, 1).weight();
    let mut store = TraceStore::new(limits(one * 10));
    let failing = trace_id(1, false);
    store.ingest(vec![failed(span(&failing, 1, None, 0, 1))], 0);
    store.settle(SETTLE);
    // Faster than they settle: all 100 are still arriving.
    for n in 2..102 {
        store.ingest(vec![span(&trace_id(n, false), 1, None, n, 1)], SETTLE + n);
        assert!(store.bytes() <= one * 10);
    }
    assert!(store.get(&failing).is_some());
    assert_eq!(store.counts().traces_evicted, 0);
    // Eight fit beside the failed one, which its message makes heavier.
    assert_eq!(store.counts().spans_dropped, 100 - 8);
}

fn record(span: TraceSpan) -> TraceSpan {
    let mut span = span;
    span.attributes
        .insert(UNSAMPLED_ATTRIBUTE.to_string(), "false".to_string());
    span
}

#[test]
fn a_record_of_an_unsampled_call_is_kept_as_slow_or_failed_and_says_it_was_not_sampled() {
    let mut store = TraceStore::new(limits(1 << 20));
    let slow = trace_id(1, false);
    let broken = trace_id(2, false);
    let traced = trace_id(3, false);
    store.ingest(
        vec![
            record(span(&slow, 1, None, 1_000, 5)),
            record(failed(span(&broken, 2, None, 2_000, 5))),
            span(&traced, 3, None, 3_000, 5),
        ],
        0,
    );
    store.settle(SETTLE);
    let listed = store.list(&all("cart"));
    let found = |id: &str| listed.iter().find(|summary| summary.trace_id == id).unwrap();
    assert_eq!(found(&slow).kept_because, KeptBecause::Slow);
    assert!(!found(&slow).sampled);
    assert_eq!(found(&broken).kept_because, KeptBecause::Failed);
    assert!(!found(&broken).sampled);
    assert_eq!(found(&traced).kept_because, KeptBecause::Recent);
    assert!(found(&traced).sampled);
}
