//! `GET /services/{name}/revisions`: a service's revisions (what each ran, who
//! deployed it and when), newest first, with the serving one marked. Revisions are
//! made by the registry when a deploy changes what runs; this file only reads them.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata_settings::RevisionSpec;
use utoipa::ToSchema;

use super::error::{known_service, ApiError, ErrorBody};
use super::{linearizable, AppState};
use crate::registry::Service;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/services/{name}/revisions", get(list_revisions))
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
}

/// The revisions a service keeps (its `revision_history`, 20 unless set), newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevisionList {
    pub service: String,
    /// The serving revision's number.
    pub serving: u64,
    /// How many revisions the service keeps.
    pub revision_history: u32,
    pub revisions: Vec<RevisionView>,
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
        })
        .collect();
    RevisionList {
        service: service.name.clone(),
        serving,
        revision_history: u32::try_from(service.revision_history()).unwrap_or(u32::MAX),
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
