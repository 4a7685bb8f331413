//! Headers and CloudState metadata: request headers become command metadata (as
//! CloudState's proxy does), reply metadata becomes response headers or gRPC
//! trailers, and a call's context (the client's `grpc-timeout`, Strata's hop
//! count) is read from the headers. The one place these conversions live.

use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use strata_proto::cloudstate::{metadata_entry, Metadata, MetadataEntry};
use strata_telemetry::{TraceParent, TRACEPARENT};
use tokio::time::Instant;

use crate::call::{CallContext, HOPS_HEADER, ROUTES_HEADER};

/// Headers that belong to the transport, not to the call: never passed to the
/// function, never taken from it.
fn is_transport_header(name: &str) -> bool {
    name.starts_with("grpc-")
        || name.starts_with("access-control-")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "te"
                | "host"
                | "user-agent"
                | "accept"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "date"
                | "server"
                | HOPS_HEADER
                | ROUTES_HEADER
        )
}

/// Request (or response) headers as command (or reply) metadata; `-bin` headers
/// are base64-decoded into bytes values.
pub fn metadata_of(headers: &HeaderMap) -> Option<Metadata> {
    let entries: Vec<MetadataEntry> = headers
        .iter()
        .filter(|(name, _)| !is_transport_header(name.as_str()))
        .filter_map(|(name, value)| {
            let key = name.as_str();
            let value = if key.ends_with("-bin") {
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(
                        value
                            .as_bytes()
                            .iter()
                            .copied()
                            .filter(|b| *b != b'=')
                            .collect::<Vec<_>>(),
                    )
                    .ok()?;
                metadata_entry::Value::BytesValue(decoded)
            } else {
                metadata_entry::Value::StringValue(value.to_str().ok()?.to_string())
            };
            Some(MetadataEntry {
                key: key.to_string(),
                value: Some(value),
            })
        })
        .collect();
    (!entries.is_empty()).then_some(Metadata { entries })
}

/// Metadata as headers: string values as they are, bytes values base64-encoded
/// under a `-bin` name. Entries whose key is not a valid header name, or that
/// belong to the transport, are left out.
pub fn headers_of(metadata: Option<&Metadata>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for entry in metadata.map(|m| m.entries.as_slice()).unwrap_or_default() {
        let key = entry.key.to_ascii_lowercase();
        if is_transport_header(&key) {
            continue;
        }
        let (name, value) = match &entry.value {
            Some(metadata_entry::Value::StringValue(text)) => (key, HeaderValue::from_str(text).ok()),
            Some(metadata_entry::Value::BytesValue(bytes)) => {
                let name = if key.ends_with("-bin") {
                    key
                } else {
                    format!("{key}-bin")
                };
                let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
                (name, HeaderValue::from_str(&encoded).ok())
            }
            None => continue,
        };
        match (HeaderName::from_bytes(name.as_bytes()), value) {
            (Ok(name), Some(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(key = %entry.key, "metadata entry is not a valid header; left out"),
        }
    }
    headers
}

/// The call's context from its headers: the deadline of a `grpc-timeout`, and the
/// hop count and route version another Strata process sent.
pub fn context_of(headers: &HeaderMap) -> CallContext {
    let deadline = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|timeout| Instant::now() + timeout);
    CallContext {
        deadline,
        hops: number(headers, HOPS_HEADER).unwrap_or(0),
        routed_by: number(headers, ROUTES_HEADER).unwrap_or(0),
        trace: trace_of(headers),
    }
}

/// The caller's W3C trace context. A malformed `traceparent` is counted and
/// dropped, so the call starts a new trace instead of failing.
fn trace_of(headers: &HeaderMap) -> Option<TraceParent> {
    let value = headers.get(TRACEPARENT)?;
    match value.to_str().map(TraceParent::parse) {
        Ok(Ok(trace)) => Some(trace),
        Ok(Err(reason)) => {
            strata_telemetry::malformed_traceparent();
            tracing::debug!(%reason, "malformed traceparent; starting a new trace");
            None
        }
        Err(_) => {
            strata_telemetry::malformed_traceparent();
            None
        }
    }
}

fn number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The context as headers for a call to another Strata process.
pub fn context_headers(context: &CallContext, headers: &mut HeaderMap) {
    if context.hops > 0 {
        headers.insert(HOPS_HEADER, HeaderValue::from(context.hops));
    }
    if context.routed_by > 0 {
        headers.insert(ROUTES_HEADER, HeaderValue::from(context.routed_by));
    }
    if let Some(trace) = &context.trace {
        if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
            headers.insert(TRACEPARENT, value);
        }
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The `grpc-timeout` value of `timeout`: its count in the finest unit that
/// fits the protocol's eight digits (rounded down).
pub fn grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (count, unit) = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(count, _)| *count <= MAX)
    .unwrap_or((MAX, 'H'));
    HeaderValue::try_from(format!("{count}{unit}")).expect("digits and a unit are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("1x"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn grpc_timeouts_written_read_back() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(65),
            Duration::from_secs(99_999_999),
        ] {
            let written = grpc_timeout(timeout);
            let text = written.to_str().unwrap();
            assert!(text.len() <= 9, "{text}");
            let read = parse_grpc_timeout(text).unwrap();
            assert!(
                read <= timeout && timeout - read < timeout / 1000 + Duration::from_nanos(1),
                "{timeout:?} -> {text}"
            );
        }
    }

    #[test]
    fn headers_and_metadata_round_trip() {
        let metadata = Metadata {
            entries: vec![
                MetadataEntry {
                    key: "X-Trace".into(),
                    value: Some(metadata_entry::Value::StringValue("abc".into())),
                },
                MetadataEntry {
                    key: "token".into(),
                    value: Some(metadata_entry::Value::BytesValue(vec![0, 255, 7])),
                },
                MetadataEntry {
                    key: "content-type".into(),
                    value: Some(metadata_entry::Value::StringValue("text/plain".into())),
                },
                MetadataEntry {
                    key: "bad key".into(),
                    value: Some(metadata_entry::Value::StringValue("x".into())),
                },
            ],
        };
        let headers = headers_of(Some(&metadata));
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["x-trace"], "abc");
        assert_eq!(headers["token-bin"], "AP8H");
        let back = metadata_of(&headers).unwrap();
        assert_eq!(
            back.entries,
            vec![
                MetadataEntry {
                    key: "x-trace".into(),
                    value: Some(metadata_entry::Value::StringValue("abc".into())),
                },
                MetadataEntry {
                    key: "token-bin".into(),
                    value: Some(metadata_entry::Value::BytesValue(vec![0, 255, 7])),
                },
            ]
        );
    }

    #[test]
    fn context_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(context_of(&headers), CallContext::default());
        headers.insert("grpc-timeout", HeaderValue::from_static("10S"));
        headers.insert(HOPS_HEADER, HeaderValue::from_static("3"));
        headers.insert(ROUTES_HEADER, HeaderValue::from_static("42"));
        let context = context_of(&headers);
        assert_eq!(context.hops, 3);
        assert_eq!(context.routed_by, 42);
        let mut back = HeaderMap::new();
        context_headers(&context, &mut back);
        assert_eq!(back.get(ROUTES_HEADER).unwrap(), "42");
        assert!(context.deadline.is_some_and(|d| d > Instant::now()));
        assert!(metadata_of(&headers).is_none(), "transport headers are not metadata");
    }

    #[test]
    fn a_traceparent_is_continued_and_a_malformed_one_dropped() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(value));
        let context = context_of(&headers);
        assert_eq!(context.trace.map(|t| t.to_string()).as_deref(), Some(value));
        let mut back = HeaderMap::new();
        context_headers(&context, &mut back);
        assert_eq!(back.get(TRACEPARENT).unwrap(), value);
        // The function still sees what the client sent, among the metadata.
        assert!(metadata_of(&headers).is_some());
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-not-a-trace-01"));
        assert_eq!(context_of(&headers).trace, None);
    }
}
