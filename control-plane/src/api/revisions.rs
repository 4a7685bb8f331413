//! `GET /services/{name}/revisions`: a service's revisions (what each ran, who
//! deployed it and when), newest first, with the serving one marked; and
//! `POST /services/{name}/rollback`, which serves an earlier one again. Revisions
//! are made by the registry when a deploy changes what runs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata_settings::RevisionSpec;
use utoipa::ToSchema;

use super::error::{known_service, ApiError, ErrorBody};
use super::json::ApiJson;
use super::{audit, linearizable, AppState};
use crate::registry::{Command, Outcome, Rollout, Service};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{name}/revisions", get(list_revisions))
        .route("/services/{name}/rollback", post(rollback))
}

/// One immutable revision of a service.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub number: u64,
    /// Whether it is the revision that runs.
    pub serving: bool,
    /// What it runs.
    #[serde(flatten)]
    pub spec: RevisionSpec,
    pub created_at_ms: u64,
    /// Who deployed it (the API principal, or the part of Strata that did).
    pub created_by: String,
    /// Why its rollout stopped, when its instances failed before one was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A move between revisions while the new one has no ready instance yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    pub from: u64,
    pub to: u64,
    pub started_at_ms: u64,
    /// Instances of `to` that failed so far (3 stop the rollout).
    pub failures: u32,
}

impl From<&Rollout> for RolloutView {
    fn from(rollout: &Rollout) -> Self {
        RolloutView {
            from: rollout.from,
            to: rollout.to,
            started_at_ms: rollout.started_at_ms,
            failures: rollout.failures,
        }
    }
}

/// The revisions a service keeps (its `revision_history`, 20 unless set), newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionList {
    pub service: String,
    /// The serving revision's number.
    pub serving: u64,
    /// How many revisions the service keeps.
    pub revision_history: u32,
    /// The rollout under way, until its revision has a ready instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
    pub revisions: Vec<RevisionView>,
}

/// What `POST /services/{name}/rollback` serves again.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The revision to serve; unset: the one the serving revision replaced (or the
    /// newest earlier one that did not fail).
    #[serde(default)]
    pub to: Option<u64>,
}

pub(crate) fn revision_list(service: &Service) -> RevisionList {
    let serving = service.serving();
    let revisions = service
        .revision_records()
        .into_iter()
        .rev()
        .map(|revision| RevisionView {
            number: revision.number,
            serving: revision.number == serving,
            spec: revision.spec,
            created_at_ms: revision.created_at_ms,
            created_by: revision.created_by,
            failure: revision.failure,
        })
        .collect();
    RevisionList {
        service: service.name.clone(),
        serving,
        revision_history: u32::try_from(service.revision_history()).unwrap_or(u32::MAX),
        rollout: service.rollout.as_ref().map(RolloutView::from),
        revisions,
    }
}

#[utoipa::path(get, path = "/api/v1/services/{name}/revisions", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = RevisionList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_revisions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<RevisionList>, ApiError> {
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        let service = known_service(registry, &name)?;
        Ok(Json(revision_list(service)))
    })
}

/// Serves an earlier revision again, moving the shards to its new instances as a
/// deploy does. 404 for a revision the service does not keep, 409 for the one that
/// serves already or when there is no earlier one.
#[utoipa::path(post, path = "/api/v1/services/{name}/rollback", tag = "services", params(("name" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, body = RevisionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RollbackRequest>,
) -> Result<Json<RevisionList>, ApiError> {
    let to = body.to;
    match audit::write(&state, Command::Rollback { service: name, to }, StatusCode::OK).await? {
        Outcome::Service(service) => Ok(Json(revision_list(&service))),
        _ => Err(ApiError::unavailable("unexpected answer from the registry")),
    }
}
