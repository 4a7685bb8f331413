//! `GET /services/{name}/history`: the retained events of one service (scale
//! decisions with their reasons, instances coming and going, failures), newest
//! first, as JSON; what `strata describe` shows. The live feed is `GET /events`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{known_service, ApiError, ErrorBody};
use super::{linearizable, AppState};
use crate::registry::Event;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/services/{name}/history", get(service_history))
}

/// How many events a page holds unless asked for fewer.
const MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HistoryQuery {
    /// At most this many events (1 to 200, default 20).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
}

#[utoipa::path(get, path = "/api/v1/services/{name}/history", tag = "services",
    params(("name" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 404, body = ErrorBody)))]
pub(super) async fn service_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Json<HistoryView>, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_LIMIT);
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        known_service(registry, &name)?;
        let events = registry
            .events
            .iter()
            .rev()
            .filter(|event| event.service.as_deref() == Some(name.as_str()))
            .take(limit)
            .cloned()
            .collect();
        Ok(Json(HistoryView { events }))
    })
}
