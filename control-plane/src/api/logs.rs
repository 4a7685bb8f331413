//! `GET /services/{name}/logs`: an instance's (or every instance's) output as
//! newline-delimited JSON, one `LogLine` per line, read through the runtime
//! driver's `LogSource`; with `follow=true` the response stays open and goes on
//! with new lines. Unknown services and instances are 404s that name what exists.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;

use super::error::{unknown_service, ApiError, ErrorBody};
use super::AppState;
use crate::logs::{now_ms, LogError, LogQuery};
use crate::registry::parse_duration_ms;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/services/{name}/logs", get(service_logs))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// One instance's lines only (an id as `GET /services/{name}/instances` lists it).
    pub instance: Option<String>,
    /// Only lines written within this long, e.g. `10m`.
    pub since: Option<String>,
    /// Keep the response open and send new lines as they are written.
    #[serde(default)]
    pub follow: bool,
}

#[utoipa::path(get, path = "/api/v1/services/{name}/logs", tag = "services",
    params(("name" = String, Path), LogsQuery),
    responses(
        (status = 200, description = "one LogLine per line, oldest first", body = crate::logs::LogLine,
            content_type = "application/x-ndjson"),
        (status = 400, body = ErrorBody),
        (status = 404, description = "no such service or instance; the message names those that exist", body = ErrorBody),
        (status = 501, description = "this control plane runs no runtime whose logs it can read", body = ErrorBody)))]
pub(super) async fn service_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let since_ms = match query.since.as_deref() {
        None => None,
        Some(text) => {
            let window = parse_duration_ms(text).map_err(|message| ApiError::invalid_field("since", message))?;
            Some(now_ms().saturating_sub(window))
        }
    };
    state
        .node
        .read(|registry| match registry.services.contains_key(&name) {
            true => Ok(()),
            false => Err(unknown_service(registry, &name)),
        })?;
    let Some(source) = state.logs.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "this control plane runs no runtime whose instance logs it can read",
        ));
    };
    if let Some(instance) = &query.instance {
        let known = source.instances(&name).await?;
        if !known.contains(instance) {
            return Err(LogError::UnknownInstance {
                service: name,
                instance: instance.clone(),
                known,
            }
            .into());
        }
    }
    let lines = source
        .read(LogQuery {
            service: name,
            instance: query.instance,
            since_ms,
            follow: query.follow,
        })
        .await?;
    // Graceful shutdown waits for open responses: a followed stream ends with the server.
    let body = lines.take_until(state.stopping.clone().wait()).map(|line| {
        let mut json = serde_json::to_vec(&line).unwrap_or_default();
        json.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(json))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
