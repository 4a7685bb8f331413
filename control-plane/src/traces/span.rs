//! One span as the trace store keeps it and the API shows it, read from an
//! OTLP `ExportTraceServiceRequest`: ids in hex, times in microseconds since
//! the Unix epoch (exact in JSON), attributes as text, and the Strata service
//! of the process that made it (the `strata.service` resource attribute the
//! local runtime gives each sidecar).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    trace::v1::{span::SpanKind, status::StatusCode},
};
use serde::{Deserialize, Serialize};

/// Whether a span ended in an error (a failed call, a function `Failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpanStatus {
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The span this one is a step of; `None` for a trace's first span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `server`, `client`, `internal`, `producer` or `consumer`.
    pub kind: String,
    /// The process that made it (its OTLP `service.name`).
    pub process: String,
    /// The Strata service whose sidecar made it; `None` for the gateway's.
    pub service: Option<String>,
    pub start_unix_micros: u64,
    pub duration_micros: u64,
    pub status: SpanStatus,
    /// What went wrong, for an error.
    pub status_message: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// The resource attribute naming the Strata service of a sidecar's spans.
pub const SERVICE_ATTRIBUTE: &str = "strata.service";
/// The span attribute that marks the record of an unsampled call
/// (`strata.sampled = false`).
pub const UNSAMPLED_ATTRIBUTE: &str = "strata.sampled";
/// The span attribute naming the entity a span worked on.
pub const ENTITY_ATTRIBUTE: &str = "strata.entity_id";

impl TraceSpan {
    /// What keeping it costs, roughly: its text plus a fixed overhead for the
    /// numbers, the map and the allocations. The byte ceiling counts this.
    pub fn weight(&self) -> usize {
        const FIXED: usize = 192;
        FIXED
            + self.trace_id.len()
            + self.span_id.len()
            + self.parent_span_id.as_ref().map_or(0, String::len)
            + self.name.len()
            + self.process.len()
            + self.service.as_ref().map_or(0, String::len)
            + self.status_message.as_ref().map_or(0, String::len)
            + self
                .attributes
                .iter()
                .map(|(key, value)| key.len() + value.len() + 32)
                .sum::<usize>()
    }

    pub fn end_unix_micros(&self) -> u64 {
        self.start_unix_micros + self.duration_micros
    }

    /// Whether it is the record of a call that was not sampled (one span that
    /// sums the call up, from its ingress), not a span of a traced call.
    pub fn is_record(&self) -> bool {
        self.attributes
            .get(UNSAMPLED_ATTRIBUTE)
            .is_some_and(|value| value == "false")
    }

    pub fn entity_id(&self) -> Option<&str> {
        self.attributes.get(ENTITY_ATTRIBUTE).map(String::as_str)
    }
}

/// Every span in `request`; spans with ids of the wrong length are skipped.
pub fn spans_of_request(request: ExportTraceServiceRequest) -> Vec<TraceSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|resource| resource.attributes)
            .unwrap_or_default();
        let process = text_attribute(&resource, "service.name").unwrap_or_else(|| "unknown".into());
        let service = text_attribute(&resource, SERVICE_ATTRIBUTE);
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                if span.trace_id.len() != 16 || span.span_id.len() != 8 {
                    continue;
                }
                let (status, status_message) = match span.status {
                    Some(status) if status.code == StatusCode::Error as i32 => (
                        SpanStatus::Error,
                        (!status.message.is_empty()).then_some(status.message),
                    ),
                    _ => (SpanStatus::Ok, None),
                };
                let start = span.start_time_unix_nano / 1000;
                let end = span.end_time_unix_nano.max(span.start_time_unix_nano) / 1000;
                spans.push(TraceSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (span.parent_span_id.len() == 8).then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    kind: kind(span.kind).into(),
                    process: process.clone(),
                    service: service.clone(),
                    start_unix_micros: start,
                    duration_micros: end - start,
                    status,
                    status_message,
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|pair| Some((pair.key.clone(), text(pair.value.as_ref()?)?)))
                        .collect(),
                });
            }
        }
    }
    spans
}

fn kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "internal",
    }
}

fn text_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .and_then(|pair| text(pair.value.as_ref()?))
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::BoolValue(value) => value.to_string(),
        any_value::Value::IntValue(value) => value.to_string(),
        any_value::Value::DoubleValue(value) => value.to_string(),
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
