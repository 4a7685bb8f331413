//! Metrics over HTTP: `GET /services/{name}/metrics?window=15m` (the series the leader
//! keeps for the dashboard's charts; other nodes ask the leader) and the node's own
//! Prometheus exposition at `/metrics`.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{forward, leader_api, AppState};
use crate::metrics_history::{Sample, MAX_WINDOW, MIN_WINDOW};
use crate::node::{now_ms, NodeError};
use crate::registry::{format_duration_ms, parse_duration_ms};

/// The window unless the client asks for another.
const DEFAULT_WINDOW: Duration = MAX_WINDOW;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/services/{name}/metrics", get(service_metrics))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MetricsQuery {
    /// How far back, e.g. `90s` or `15m`; between 10s and 15m (default 15m).
    pub window: Option<String>,
}

/// A service's samples over the window, oldest first, one per autoscaler round.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    pub service: String,
    /// The window the samples cover, e.g. "15m".
    pub window: String,
    /// How often samples are taken.
    pub interval_ms: u64,
    pub samples: Vec<Sample>,
}

fn window(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_WINDOW);
    };
    let millis = parse_duration_ms(text).map_err(|message| ApiError::invalid_field("window", message))?;
    let window = Duration::from_millis(millis);
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        return Err(ApiError::invalid_field(
            "window",
            format!(
                "window must be between {} and {} (got {text})",
                format_duration_ms(MIN_WINDOW.as_millis() as u64),
                format_duration_ms(MAX_WINDOW.as_millis() as u64)
            ),
        ));
    }
    Ok(window)
}

#[utoipa::path(get, path = "/api/v1/services/{name}/metrics", tag = "services",
    params(("name" = String, Path), MetricsQuery),
    responses((status = 200, body = MetricSeries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn service_metrics(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<MetricsQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let window = window(query.window.as_deref())?;
    if !state.node.is_leader() {
        // Only the leader scrapes, so only it has the series.
        let leader = leader_api(&state).ok_or_else(|| ApiError::from(NodeError::NoLeader))?;
        let (parts, _) = request.into_parts();
        return forward(&state, &leader, parts, axum::body::Bytes::new())
            .await
            .map_err(|error| {
                tracing::warn!(node_id = state.node.node_id(), %error, "asking the leader for metrics failed");
                ApiError::unavailable("cannot reach the leader for metrics; retry shortly")
            });
    }
    if !state.node.read(|registry| registry.services.contains_key(&name)) {
        return Err(ApiError::not_found(format!("service {name:?} not found")));
    }
    let since_ms = now_ms().saturating_sub(window.as_millis() as u64);
    let samples = state.node.history().since(&name, since_ms);
    Ok(Json(MetricSeries {
        service: name,
        window: format_duration_ms(window.as_millis() as u64),
        interval_ms: strata_autoscaler::collector::TICK.as_millis() as u64,
        samples,
    })
    .into_response())
}

/// `GET /metrics`: this node's Prometheus exposition.
pub(super) async fn prometheus(State(state): State<AppState>) -> Response {
    let mut text = state
        .node
        .read(|registry| state.node.telemetry().render(&state.node.raft_status(), registry));
    if let Some(store) = &state.traces {
        text.push_str(&crate::traces::render_metrics(
            &store.lock().expect("the trace store's lock"),
        ));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_bounded() {
        assert_eq!(window(None).unwrap(), Duration::from_secs(900));
        assert_eq!(window(Some("90s")).unwrap(), Duration::from_secs(90));
        assert_eq!(window(Some("15m")).unwrap(), Duration::from_secs(900));
        for bad in ["5s", "16m", "1h", "soon", ""] {
            let error = window(Some(bad)).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(error.field.as_deref(), Some("window"), "{bad}");
        }
    }
}
