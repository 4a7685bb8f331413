//! `GET /services/{name}/revisions`: a service's revisions (what each ran, who
//! deployed it and when), newest first, with the serving one and a canary marked;
//! `POST /services/{name}/rollback`, which serves an earlier one again (or ends a
//! canary); `POST /services/{name}/traffic`, which gives a kept revision a canary's
//! share of the traffic (100 promotes it, 0 ends it); and
//! `POST /services/{name}/promote`. Revisions are made by the registry when a
//! deploy changes what runs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strata_settings::RevisionSpec;
use utoipa::ToSchema;

use super::error::{known_service, ApiError, ErrorBody};
use super::json::ApiJson;
use super::{audit, linearizable, AppState};
use crate::registry::{canary_shards, Canary, CanaryAnalysis, CanarySpec, Command, Outcome, Rollout, Service};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{name}/revisions", get(list_revisions))
        .route("/services/{name}/rollback", post(rollback))
        .route("/services/{name}/traffic", post(set_traffic))
        .route("/services/{name}/promote", post(promote))
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
    /// The canary, when a revision serves a slice of the traffic beside the serving one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
    pub revisions: Vec<RevisionView>,
}

/// A revision serving a slice of the entities (the first `shards` shards) and of the
/// actions' calls beside the serving revision.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CanaryView {
    pub revision: u64,
    /// Its share of the traffic, in percent.
    pub percent: u32,
    /// How many shards it serves (counted from shard 0).
    pub shards: u32,
    pub started_at_ms: u64,
    /// With automatic analysis: the error rate (0 to 1) above which it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// With a latency limit: how many times the serving revision's p99 the canary's may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
}

impl CanaryView {
    fn of(canary: &Canary, shard_count: usize) -> Self {
        CanaryView {
            revision: canary.revision,
            percent: canary.percent,
            shards: u32::try_from(canary_shards(shard_count, canary.percent)).unwrap_or(u32::MAX),
            started_at_ms: canary.started_at_ms,
            max_error_rate: canary
                .analysis
                .map(|analysis| f64::from(analysis.max_error_rate_bp) / 10_000.0),
            min_calls: canary.analysis.map(|analysis| analysis.min_calls),
            window_ms: canary.analysis.map(|analysis| analysis.window_ms),
            max_p99_ratio: canary
                .analysis
                .and_then(|analysis| analysis.max_p99_ratio_pct)
                .map(|pct| f64::from(pct) / 100.0),
        }
    }
}

/// What `POST /services/{name}/traffic` sets: `percent` of the traffic to
/// `revision` as a canary (1 to 99), or promotes it (100) or ends it (0).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficRequest {
    pub revision: u64,
    pub percent: u32,
    #[serde(flatten)]
    pub analysis: AnalysisFields,
}

/// Automatic analysis of a canary: with `canary_max_error_rate` set, the control
/// plane rolls the canary back on its own when its error rate over the window (of
/// the calls answered with a server error) exceeds it and the serving revision's.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct AnalysisFields {
    /// The highest error rate, as a fraction (0.05) or a percentage ("5%").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub canary_max_error_rate: Option<Value>,
    /// The calls the canary must answer in the window before it is judged (20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_min_calls: Option<u32>,
    /// The window it is judged over, e.g. "60s" (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_window: Option<String>,
    /// Also judge latency: roll back when the canary's p99 over the window is above
    /// this many times the serving revision's (e.g. 1.5), and at least 5 ms slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_max_p99_ratio: Option<f64>,
}

impl AnalysisFields {
    /// The analysis asked for; the minimum and window alone ask for none.
    pub(super) fn analysis(&self) -> Result<Option<CanaryAnalysis>, ApiError> {
        let rate = match &self.canary_max_error_rate {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(other) => {
                return Err(ApiError::invalid_field(
                    "canary_max_error_rate",
                    format!(
                        "canary_max_error_rate must be a fraction like 0.05 or a percentage like \"5%\", not {other}"
                    ),
                ))
            }
        };
        let analysis = CanaryAnalysis::from_fields(
            rate.as_deref(),
            self.canary_min_calls,
            self.canary_window.as_deref(),
            self.canary_max_p99_ratio,
        )?;
        Ok(analysis)
    }

    /// A deploy's canary: `traffic` percent of the traffic to the new revision.
    pub(super) fn canary(&self, traffic: Option<u32>) -> Result<Option<CanarySpec>, ApiError> {
        let analysis = self.analysis()?;
        match traffic {
            Some(percent) => Ok(Some(CanarySpec { percent, analysis })),
            None if analysis.is_some() => Err(ApiError::invalid_field(
                "traffic",
                "canary_max_error_rate goes with traffic (a deploy as a canary), which is not set",
            )),
            None => Ok(None),
        }
    }
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
        canary: service
            .canary
            .as_ref()
            .map(|canary| CanaryView::of(canary, service.shards.len())),
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

/// Gives a kept revision a canary's share of the traffic: 1 to 99 percent (the same
/// entities on every call), 100 promotes it, 0 ends it. 400 for a share that is not
/// one, 404 for a revision not kept, 409 for the serving revision, while another
/// revision is the canary or a rollout runs.
#[utoipa::path(post, path = "/api/v1/services/{name}/traffic", tag = "services", params(("name" = String, Path)),
    request_body = TrafficRequest,
    responses((status = 200, body = RevisionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn set_traffic(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<TrafficRequest>,
) -> Result<Json<RevisionList>, ApiError> {
    let command = Command::SetTraffic {
        service: name,
        revision: body.revision,
        percent: body.percent,
        analysis: body.analysis.analysis()?,
    };
    revision_answer(audit::write(&state, command, StatusCode::OK).await?)
}

/// Makes the canary the serving revision. 409 when there is none.
#[utoipa::path(post, path = "/api/v1/services/{name}/promote", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = RevisionList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RevisionList>, ApiError> {
    revision_answer(audit::write(&state, Command::Promote { service: name }, StatusCode::OK).await?)
}

fn revision_answer(outcome: Outcome) -> Result<Json<RevisionList>, ApiError> {
    match outcome {
        Outcome::Service(service) => Ok(Json(revision_list(&service))),
        _ => Err(ApiError::unavailable("unexpected answer from the registry")),
    }
}
