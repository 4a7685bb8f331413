//! The trace store over HTTP: `POST /v1/traces` takes OTLP/HTTP (protobuf)
//! from the gateway and the sidecars, `GET /services/{name}/traces` lists a
//! service's kept traces (filtered, newest first, one bounded page) and
//! `GET /traces/{id}` shows one whole. Only a control plane that keeps traces
//! (`strata dev`) serves them; others answer 501.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::error::{known_service, ApiError, ErrorBody};
use super::AppState;
use crate::auth::{bearer, Principal};
use crate::registry::parse_duration_ms;
use crate::{
    registry::Registry,
    traces::{spans_of_request, SharedTraceStore, SpanStatus, TraceFilter, TraceSpan, TraceSummary, TraceView},
};

/// The page size when none is asked for, and the largest one.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{name}/traces", get(service_traces))
        .route("/traces/{id}", get(get_trace))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TracesQuery {
    /// `ok` or `error`.
    pub status: Option<String>,
    /// Only traces that took at least this long, e.g. `250ms`.
    pub min_duration: Option<String>,
    /// Only traces that worked on this entity.
    pub entity_id: Option<String>,
    /// Only traces that started within this long, e.g. `10m`.
    pub since: Option<String>,
    /// `true`: only traces that held a request through a cold start; `false`:
    /// only those that did not.
    pub cold_start: Option<String>,
    /// At most this many (1 to 200; 50 when not given).
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceList {
    /// Newest first.
    pub traces: Vec<TraceSummary>,
    /// The trace store's byte ceiling and what it holds now.
    pub store_bytes: usize,
    pub store_max_bytes: usize,
}

#[utoipa::path(get, path = "/api/v1/services/{name}/traces", tag = "traces",
    params(("name" = String, Path), TracesQuery),
    responses(
        (status = 200, body = TraceList),
        (status = 400, description = "a filter does not parse", body = ErrorBody),
        (status = 404, description = "no such service; the message names those that exist", body = ErrorBody),
        (status = 501, description = "this control plane keeps no traces (only `strata dev` does)", body = ErrorBody)))]
pub(super) async fn service_traces(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<TracesQuery>,
) -> Result<Json<TraceList>, ApiError> {
    let mut filter = filter(&query, now_micros())?;
    state.node.read(|registry| known_service(registry, &name).map(|_| ()))?;
    let store = trace_store(&state)?;
    filter.service = name;
    let mut store = store.lock().expect("the trace store's lock");
    store.settle(now_micros() / 1000);
    Ok(Json(TraceList {
        traces: store.list(&filter),
        store_bytes: store.bytes(),
        store_max_bytes: store.limits().max_bytes,
    }))
}

#[utoipa::path(get, path = "/api/v1/traces/{id}", tag = "traces",
    params(("id" = String, Path, description = "32 hex digits")),
    responses(
        (status = 200, body = TraceView),
        (status = 400, description = "the id is not 32 hex digits", body = ErrorBody),
        (status = 404, description = "no such trace is kept (never seen, not kept, or evicted)", body = ErrorBody),
        (status = 501, description = "this control plane keeps no traces (only `strata dev` does)", body = ErrorBody)))]
pub(super) async fn get_trace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TraceView>, ApiError> {
    if id.len() != 32 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field("id", "a trace id is 32 hex digits"));
    }
    let store = trace_store(&state)?;
    let mut store = store.lock().expect("the trace store's lock");
    store.settle(now_micros() / 1000);
    store.get(&id.to_ascii_lowercase()).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no trace {id} is kept: it was never seen, not kept, or evicted"
        ))
    })
}

/// OTLP/HTTP's traces endpoint. Any credential but a read-only one may send
/// spans (the gateway's, an instance's, the admin's).
pub(super) async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !state.auth.is_open() {
        let presented = bearer(headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()));
        match state.auth.identify(presented) {
            Ok(Principal::ReadOnly) => {
                return ApiError::forbidden("a read-only token may not send spans").into_response()
            }
            Ok(_) => {}
            Err(error) => return ApiError::unauthenticated(error.to_string()).into_response(),
        }
    }
    let store = match trace_store(&state) {
        Ok(store) => store,
        Err(error) => return error.into_response(),
    };
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::invalid(format!("not an OTLP ExportTraceServiceRequest in protobuf: {error}"))
                .into_response()
        }
    };
    let mut spans = spans_of_request(request);
    if spans.iter().any(|span| span.is_record() && span.service.is_none()) {
        state.node.read(|registry| name_record_services(registry, &mut spans));
    }
    store
        .lock()
        .expect("the trace store's lock")
        .ingest(spans, now_micros() / 1000);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// A record of an unsampled call comes from the gateway, whose spans name no
/// Strata service: it is named by the service that serves its gRPC service, so
/// the service's list shows it.
fn name_record_services(registry: &Registry, spans: &mut [TraceSpan]) {
    for span in spans
        .iter_mut()
        .filter(|span| span.is_record() && span.service.is_none())
    {
        let Some(grpc_service) = span.attributes.get("rpc.service") else {
            continue;
        };
        span.service = registry
            .services
            .values()
            .find(|service| {
                service
                    .entities
                    .iter()
                    .any(|entity| &entity.service_name == grpc_service)
            })
            .map(|service| service.name.clone());
    }
}

fn trace_store(state: &AppState) -> Result<SharedTraceStore, ApiError> {
    state.traces.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this control plane keeps no traces (only `strata dev` does, unless started with `--trace-store-bytes 0`); read them in your OTLP collector",
        )
    })
}

/// The list's filter as `query` spells it, at `now` (microseconds since the epoch).
fn filter(query: &TracesQuery, now: u64) -> Result<TraceFilter, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some("ok") => Some(SpanStatus::Ok),
        Some("error") => Some(SpanStatus::Error),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "status",
                format!("{other:?} is not ok or error"),
            ))
        }
    };
    let duration = |field: &str, text: Option<&str>| -> Result<u64, ApiError> {
        text.map_or(Ok(0), |text| {
            parse_duration_ms(text)
                .map(|ms| ms.saturating_mul(1000))
                .map_err(|message| ApiError::invalid_field(field, message))
        })
    };
    let since = duration("since", query.since.as_deref())?;
    let cold_start = match query.cold_start.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "cold_start",
                format!("{other:?} is not true or false"),
            ))
        }
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(ApiError::invalid_field(
                    "limit",
                    format!("{text:?} is not a page size from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    Ok(TraceFilter {
        service: String::new(),
        status,
        min_duration_micros: duration("min_duration", query.min_duration.as_deref())?,
        entity_id: query.entity_id.clone().filter(|id| !id.is_empty()),
        since_unix_micros: if query.since.is_some() {
            now.saturating_sub(since)
        } else {
            0
        },
        cold_start,
        limit,
    })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> TracesQuery {
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
        TracesQuery {
            status: get("status"),
            min_duration: get("min_duration"),
            entity_id: get("entity_id"),
            since: get("since"),
            cold_start: get("cold_start"),
            limit: get("limit"),
        }
    }

    #[test]
    fn filters_parse_and_bad_ones_name_their_field() {
        let parsed = filter(
            &query(&[
                ("status", "error"),
                ("min_duration", "250ms"),
                ("entity_id", "cart-1"),
                ("since", "10m"),
                ("cold_start", "true"),
                ("limit", "20"),
            ]),
            1_000_000_000,
        )
        .unwrap();
        assert_eq!(
            parsed,
            TraceFilter {
                service: String::new(),
                status: Some(SpanStatus::Error),
                min_duration_micros: 250_000,
                entity_id: Some("cart-1".into()),
                since_unix_micros: 1_000_000_000 - 600_000_000,
                cold_start: Some(true),
                limit: 20,
            }
        );
        assert_eq!(filter(&query(&[]), 5).unwrap().limit, DEFAULT_LIMIT);
        for (key, value) in [
            ("status", "fine"),
            ("min_duration", "slow"),
            ("since", "yesterday"),
            ("cold_start", "maybe"),
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "many"),
        ] {
            let error = filter(&query(&[(key, value)]), 5).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{key}={value}");
            assert_eq!(error.field.as_deref(), Some(key), "{key}={value}");
        }
    }
}
