//! The bridge between a `tracing` span and W3C trace context: a span continues a
//! caller's `traceparent`, and a span's own context is written as the
//! `traceparent` of the calls it makes. Without the OpenTelemetry layer (no
//! exporter configured) spans have no context of their own, so the caller's is
//! passed on unchanged.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::traceparent::TraceParent;

/// Makes `span` a child of the remote span `parent` names. Must be called
/// before the span is first entered; later calls leave it where it is.
pub fn continue_trace(span: &tracing::Span, parent: &TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The `traceparent` naming `span` as the parent, when the span is traced (an
/// exporter is configured and the trace is sampled or recorded).
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let own = context.span();
    let own = own.span_context();
    own.is_valid().then(|| TraceParent {
        trace_id: own.trace_id().to_bytes(),
        parent_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    })
}

/// The `traceparent` a call made inside `span` should carry: the span's own
/// when it is traced, else the one the span continued (so a function still
/// sees its caller's trace when Strata exports nothing).
pub fn outgoing_traceparent(span: &tracing::Span, incoming: Option<&TraceParent>) -> Option<TraceParent> {
    traceparent_of(span).or_else(|| incoming.copied())
}
