//! `POST/GET /schedules` and `GET/DELETE /schedules/{name}`: cron schedules whose
//! calls the leader makes (see `runtime/schedules.rs`). A schedule is checked when
//! it is created, against the registry as it is: its cron expression and time zone
//! parse, its service exists (404) and serves its method (404), and the body reads
//! as that method's input (400).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::{audit, linearizable, AppState};
use crate::node::now_ms;
use crate::registry::{CatchUp, Command, Outcome, RunOutcome, Schedule, ScheduleRun, ScheduleSpec};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schedules", get(list_schedules).post(create_schedule))
        .route("/schedules/{name}", get(get_schedule).delete(delete_schedule))
}

/// A schedule to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub name: String,
    /// Five fields (minutes) or six (seconds first), e.g. `*/5 * * * *`.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Berlin`; default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// For times missed while no leader could run them: `run_once` (default) or `skip`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub catch_up: Option<CatchUp>,
    /// The deployed service to call.
    pub service: String,
    /// The gRPC method, as `package.Service/Method`.
    pub method: String,
    /// The request, as JSON (the proto3 JSON mapping of the method's input); default `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub body: Option<serde_json::Value>,
}

/// One time of a schedule and how its call went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleRunView {
    /// The schedule's time this run is for (milliseconds since the Unix epoch).
    pub time_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// `running`, `ok`, `failed`, `interrupted` or `skipped`.
    pub outcome: String,
    /// Why the call failed, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Missed times this run stands for (caught up once), or that were skipped.
    pub missed: u32,
}

/// A schedule, its next time and its latest runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    /// `run_once` or `skip`.
    pub catch_up: String,
    pub service: String,
    pub method: String,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub created_at_ms: u64,
    /// When it runs next; null if the expression has no time to come.
    pub next_run_ms: Option<u64>,
    /// The latest run, if any.
    pub last_run: Option<ScheduleRunView>,
    /// The latest runs, newest first.
    pub runs: Vec<ScheduleRunView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

fn run_view(run: &ScheduleRun) -> ScheduleRunView {
    let (outcome, error) = match &run.outcome {
        RunOutcome::Running => ("running", None),
        RunOutcome::Ok => ("ok", None),
        RunOutcome::Failed { error } => ("failed", Some(error.clone())),
        RunOutcome::Interrupted => ("interrupted", None),
        RunOutcome::Skipped => ("skipped", None),
    };
    ScheduleRunView {
        time_ms: run.time_ms,
        started_at_ms: run.started_at_ms,
        finished_at_ms: run.finished_at_ms,
        outcome: outcome.to_owned(),
        error,
        missed: run.missed,
    }
}

pub(crate) fn schedule_view(schedule: &Schedule, now_ms: u64) -> ScheduleView {
    let runs: Vec<ScheduleRunView> = schedule.runs.iter().rev().map(run_view).collect();
    ScheduleView {
        name: schedule.name.clone(),
        cron: schedule.cron.clone(),
        time_zone: schedule.time_zone.clone(),
        catch_up: match schedule.catch_up {
            CatchUp::RunOnce => "run_once",
            CatchUp::Skip => "skip",
        }
        .to_owned(),
        service: schedule.service.clone(),
        method: schedule.method.clone(),
        body: serde_json::from_str(&schedule.body).unwrap_or(serde_json::Value::Null),
        created_at_ms: schedule.created_at_ms,
        next_run_ms: schedule.next_run_ms(now_ms),
        last_run: schedule.runs.back().map(run_view),
        runs,
    }
}

#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let request_body = match body.body {
        None => None,
        Some(object @ serde_json::Value::Object(_)) => Some(object.to_string()),
        Some(_) => return Err(ApiError::invalid_field("body", "the body must be a JSON object")),
    };
    let spec = ScheduleSpec {
        name: body.name,
        cron: body.cron,
        time_zone: body.time_zone,
        service: body.service,
        method: body.method,
        body: request_body,
        catch_up: body.catch_up,
    };
    let outcome = audit::write(&state, Command::CreateSchedule(spec), StatusCode::CREATED).await?;
    let Outcome::Schedule(schedule) = outcome else {
        return Err(ApiError::unavailable(
            "the registry answered a schedule write with something else",
        ));
    };
    Ok((StatusCode::CREATED, Json(schedule_view(&schedule, now_ms()))))
}

#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_schedules(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ScheduleList>, ApiError> {
    linearizable(&state, &headers).await?;
    let now = now_ms();
    Ok(Json(state.node.read(|registry| {
        ScheduleList {
            schedules: registry
                .schedules
                .values()
                .map(|schedule| schedule_view(schedule, now))
                .collect(),
        }
    })))
}

#[utoipa::path(get, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ScheduleView>, ApiError> {
    linearizable(&state, &headers).await?;
    let now = now_ms();
    state.node.read(|registry| {
        registry
            .schedules
            .get(&name)
            .map(|schedule| Json(schedule_view(schedule, now)))
            .ok_or_else(|| ApiError::not_found(format!("schedule {name:?} not found")))
    })
}

#[utoipa::path(delete, path = "/api/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    audit::write(&state, Command::DeleteSchedule { name }, StatusCode::NO_CONTENT).await?;
    Ok(StatusCode::NO_CONTENT)
}
