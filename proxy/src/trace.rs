//! The data path's spans and how a call's trace context moves between them. A
//! call carries the context its next span continues ([`CallContext::trace`]):
//! the client's `traceparent` at the ingress, then each span's own, so a span
//! made in another task (an entity's actor, a side effect) still lands in the
//! right place, and every call to another process or to the function carries
//! `traceparent` naming the span that made it. Spans are `tracing` spans; they
//! become OpenTelemetry spans only where an exporter is installed, and are
//! made only for a call its ingress sampled (see `ingress/arrival.rs`).

use strata_proto::cloudstate::{metadata_entry, Metadata, MetadataEntry};
use strata_telemetry::{continue_trace, makes_spans, outgoing_traceparent, TraceParent, TRACEPARENT};

use crate::{call::CallContext, error::ProxyError, model::MethodModel};

/// Which process's ingress a call arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Sidecar,
}

/// The server span of one call arriving at an ingress.
pub fn arrival(role: Role, method: &MethodModel) -> tracing::Span {
    let service = method.entity.service_name.as_str();
    let name = method.name();
    let span_name = arrival_name(role, method);
    match role {
        Role::Gateway => tracing::debug_span!(
            "gateway",
            otel.name = span_name,
            otel.kind = "server",
            rpc.service = service,
            rpc.method = name,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
        Role::Sidecar => tracing::debug_span!(
            "sidecar",
            otel.name = span_name,
            otel.kind = "server",
            rpc.service = service,
            rpc.method = name,
            strata.entity_id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
    }
}

/// What an arrival's span is called: `gateway shop.Cart/AddItem`.
pub fn arrival_name(role: Role, method: &MethodModel) -> String {
    let role = match role {
        Role::Gateway => "gateway",
        Role::Sidecar => "sidecar",
    };
    format!("{role} {}/{}", method.entity.service_name, method.name())
}

/// The span of a request held while `service` wakes from zero: it lasts as long
/// as the hold.
pub fn cold_start(service: &str) -> tracing::Span {
    tracing::debug_span!(
        "cold_start",
        otel.name = %format_args!("cold start {service}"),
        strata.service = service,
        strata.cold_start = true,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// The span of one call into the user function: from sending the command to
/// its answer.
pub fn function_call(method: &MethodModel) -> tracing::Span {
    tracing::debug_span!(
        "function",
        otel.name = %format_args!("function {}/{}", method.entity.service_name, method.name()),
        otel.kind = "client",
        rpc.method = method.name(),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// The span of a forward or side effect the function asked for: a call of
/// `target` (`service.Method`) that continues into the service it reaches.
pub fn hop(kind: Hop, target: &str) -> tracing::Span {
    let kind = match kind {
        Hop::Forward => "forward",
        Hop::SideEffect => "side effect",
    };
    tracing::debug_span!(
        "hop",
        otel.name = %format_args!("{kind} {target}"),
        otel.kind = "client",
        strata.hop = kind,
        strata.target = target,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// A forward (which answers the client) or a side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    Forward,
    SideEffect,
}

/// The span of an entity's activation: its state loaded and replayed into the
/// function, with the number of events read.
pub fn activation(service: &str, entity_id: &str) -> tracing::Span {
    tracing::debug_span!(
        "activation",
        otel.name = %format_args!("activate {service}"),
        strata.entity_id = entity_id,
        strata.events_read = tracing::field::Empty,
        strata.snapshot = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// The span of a store write of an entity's command, with its size.
pub fn store_write(entity_id: &str, bytes: usize) -> tracing::Span {
    tracing::debug_span!(
        "store_write",
        otel.name = "store write",
        strata.entity_id = entity_id,
        strata.bytes = bytes,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// The next step of the call in `context`: the span `make` gives, a child of
/// the span the context names and the parent of the steps after it. A call
/// that is not sampled makes no span at all (`make` is not called) and keeps
/// its context, which passes its unsampled `traceparent` on.
pub fn step(context: &mut CallContext, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !makes_spans(context.trace.as_ref()) {
        return tracing::Span::none();
    }
    let span = make();
    if let Some(parent) = &context.trace {
        continue_trace(&span, parent);
    }
    context.trace = outgoing_traceparent(&span, context.trace.as_ref());
    span
}

/// A span that is a child of the step `context` names, leaving the call's
/// context as it is (activation, the store write: steps nothing follows); none
/// for a call that is not sampled.
pub fn leaf(context: &CallContext, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !makes_spans(context.trace.as_ref()) {
        return tracing::Span::none();
    }
    let span = make();
    if let Some(parent) = &context.trace {
        continue_trace(&span, parent);
    }
    span
}

/// Traces the rest of an unsampled call after all: its context's sampled flag
/// is set, so the spans from here on are made, under the span its ingress's
/// record would have (see `ingress/arrival.rs`). Nothing changes when
/// nothing is exported or the call is traced already.
pub fn sample_from_here(context: &mut CallContext) {
    if let Some(trace) = &mut context.trace {
        if !makes_spans(Some(trace)) {
            trace.flags |= 1;
        }
    }
}

/// Marks `span` failed with the error's message, or leaves it OK.
pub fn outcome(span: &tracing::Span, error: Option<&ProxyError>) {
    if let Some(error) = error {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", tracing::field::display(error));
    }
}

/// `metadata` with its `traceparent` entry set to `trace`, replacing the one
/// the caller sent (or, with no trace context, removing it: it was malformed).
pub fn with_traceparent(metadata: Option<Metadata>, trace: Option<&TraceParent>) -> Option<Metadata> {
    let mut metadata = match (metadata, trace) {
        (None, None) => return None,
        (metadata, _) => metadata.unwrap_or_default(),
    };
    metadata
        .entries
        .retain(|entry| !entry.key.eq_ignore_ascii_case(TRACEPARENT));
    if let Some(trace) = trace {
        metadata.entries.push(MetadataEntry {
            key: TRACEPARENT.into(),
            value: Some(metadata_entry::Value::StringValue(trace.to_string())),
        });
    }
    (!metadata.entries.is_empty()).then_some(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> MetadataEntry {
        MetadataEntry {
            key: key.into(),
            value: Some(metadata_entry::Value::StringValue(value.into())),
        }
    }

    #[test]
    fn the_traceparent_entry_is_replaced_and_the_rest_kept() {
        let trace = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let metadata = Metadata {
            entries: vec![
                entry("Traceparent", "00-11111111111111111111111111111111-2222222222222222-01"),
                entry("tracestate", "vendor=1"),
            ],
        };
        let written = with_traceparent(Some(metadata), Some(&trace)).unwrap();
        assert_eq!(
            written.entries,
            vec![
                entry("tracestate", "vendor=1"),
                entry("traceparent", &trace.to_string())
            ]
        );
        assert_eq!(with_traceparent(None, None), None);
        let malformed = Metadata {
            entries: vec![entry("traceparent", "00-garbage")],
        };
        assert_eq!(with_traceparent(Some(malformed), None), None);
        assert_eq!(
            with_traceparent(None, Some(&trace)).unwrap().entries,
            vec![entry("traceparent", &trace.to_string())]
        );
    }
}
