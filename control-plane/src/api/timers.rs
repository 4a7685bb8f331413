//! `GET /services/{name}/timers`: a service's durable timers as the store keeps
//! them: how many are pending and failed, the pending ones soonest first (which
//! entity, when due, how many calls so far) and the failed ones latest first with
//! their last error. Read straight from the store; the sidecars that fire them are
//! not asked, so a service at zero shows its timers too.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata_store::{StoredTimer, TimerState};
use utoipa::ToSchema;

use super::entities::{open_store, store_error};
use super::error::{known_service, ApiError, ErrorBody};
use super::{linearizable, AppState};

/// Timers of each state listed unless the client asks for fewer.
const DEFAULT_LIMIT: u32 = 50;
/// The most of each state one answer lists.
const MAX_LIMIT: u32 = 500;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/services/{name}/timers", get(service_timers))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TimersQuery {
    /// At most this many pending and this many failed timers (1 to 500, default 50).
    pub limit: Option<u32>,
}

/// One stored timer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimerView {
    pub name: String,
    /// The gRPC service whose command scheduled it.
    pub owner: String,
    /// Its entity; empty for an action's timer.
    pub entity_id: String,
    /// When it was scheduled for (milliseconds since the Unix epoch).
    pub due_ms: i64,
    /// Pending: when it is called next (after a failed call, the retry's time).
    /// Failed: when it failed.
    pub attempt_at_ms: i64,
    /// The call it makes, as `package.Service/Method`.
    pub call: String,
    /// Calls made so far, and the most it makes.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The latest call's error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimersView {
    pub service: String,
    /// How many are pending and failed in all.
    pub pending_count: u64,
    pub failed_count: u64,
    /// Soonest first.
    pub pending: Vec<TimerView>,
    /// Latest first.
    pub failed: Vec<TimerView>,
}

fn timer_view(timer: StoredTimer) -> TimerView {
    TimerView {
        name: timer.key.name,
        owner: timer.key.owner,
        entity_id: timer.key.entity_id,
        due_ms: timer.due_ms,
        attempt_at_ms: timer.attempt_at_ms,
        call: format!("{}/{}", timer.call.service_name, timer.call.method),
        attempts: timer.attempts,
        max_attempts: timer.max_attempts,
        error: timer.last_error,
    }
}

#[utoipa::path(get, path = "/api/v1/services/{name}/timers", tag = "services",
    params(("name" = String, Path), TimersQuery),
    responses((status = 200, body = TimersView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn service_timers(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<TimersQuery>,
    headers: HeaderMap,
) -> Result<Json<TimersView>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("limit must be 1 to {MAX_LIMIT}, not {limit}"),
        ));
    }
    linearizable(&state, &headers).await?;
    state.node.read(|registry| known_service(registry, &name).map(|_| ()))?;
    let store = open_store(&state)?;
    let timers = store.timers().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "no_timers",
            "this control plane's store keeps no timers",
        )
    })?;
    let (counts, pending, failed) = futures::try_join!(
        timers.count_timers(&name),
        timers.list_timers(&name, TimerState::Pending, limit),
        timers.list_timers(&name, TimerState::Failed, limit),
    )
    .map_err(store_error)?;
    Ok(Json(TimersView {
        service: name,
        pending_count: counts.pending,
        failed_count: counts.failed,
        pending: pending.into_iter().map(timer_view).collect(),
        failed: failed.into_iter().map(timer_view).collect(),
    }))
}
