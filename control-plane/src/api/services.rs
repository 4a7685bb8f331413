//! `/services`: create, list, read, update and delete services, and read their instances
//! and shard maps. Request bodies are checked here for a clear 400 before Raft sees them.
//! A service's settings are `strata-settings`' one type, flattened into the bodies and
//! the view, so every setting the registry keeps is one the API takes and shows.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strata_settings::{RevisionSpec, ServiceSettings};
use utoipa::ToSchema;

use super::error::{known_service, ApiError, ErrorBody};
use super::json::ApiJson;
use super::revisions::AnalysisFields;
use super::{audit, linearizable, AppState};
use strata_autoscaler::{HistogramPolicy, Prediction, Unpredictable};

use crate::registry::{
    format_duration_ms, validate_name, Command, EventKind, Instance, InstanceState, Outcome, Registry, RegistryError,
    Service, ServicePatch, ServiceSpec, ServiceStatus,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/services", get(list_services).post(create_service))
        .route(
            "/services/{name}",
            get(get_service).patch(update_service).delete(delete_service),
        )
        .route("/services/{name}/instances", get(list_instances))
        .route("/services/{name}/shards", get(list_shards))
}

/// A service as users and scripts see it: every setting with the value it runs with
/// (the stable window and the hold timeout are null while the platform's default
/// applies).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    /// What the serving revision runs.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// What the autoscaler has learned of the idle times between requests.
    pub idle_times: IdleTimesView,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// `ready`, `scaling`, `pending` or `scaled_to_zero`.
    pub status: String,
    /// The serving revision's number (`GET /services/{name}/revisions` lists them).
    pub revision: u64,
    /// Increases on every change of what runs, the settings or the discovered
    /// descriptors.
    pub generation: u64,
    pub entities: Vec<EntityView>,
    /// The event logs (persistence ids) its actions subscribe to: events written to
    /// them wake it from zero.
    pub subscriptions: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The latest instance failure, while no instance has become ready since.
    pub failure: Option<FailureView>,
}

/// Why the service's instances are failing, as the runtime recorded it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailureView {
    pub reason: String,
    pub at_ms: u64,
}

/// The idle-time histogram in brief, and the windows it predicts with this service's
/// percentiles (whether or not the histogram policy is switched on).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdleTimesView {
    /// Idle times counted (older ones fade).
    pub samples: u64,
    /// Idle times longer than the histogram's range (4h).
    pub out_of_bounds: u32,
    /// Whether the histogram sets the windows; if not, the fixed policy applies.
    pub predictable: bool,
    /// Why not, when it does not: `too_few_samples`, `spread` (no pattern),
    /// `out_of_bounds` (idle times beyond 4h) or `short_idle` (the next request is
    /// expected within 10s: nothing to pre-warm).
    pub unpredictable: Option<String>,
    /// Idle time after which an instance is pre-warmed, e.g. "37s".
    pub prewarm: Option<String>,
    /// How long that instance is then kept, e.g. "13s".
    pub keep_alive: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntityView {
    pub entity_type: String,
    pub service_name: String,
    pub persistence_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceView>,
}

/// `POST /services`: only `name` and `command` (or `image`) are required; unset
/// settings take their defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    /// What it runs: its revision 1.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    #[serde(flatten)]
    pub settings: ServiceSettings,
}

/// `PATCH /services/{name}`: every field optional; absent fields keep their value.
/// The shard count cannot change once the service exists (the same count is no change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    /// A change of what runs (the command or image, arguments, environment) makes a
    /// new revision; a change of settings alone does not.
    #[serde(flatten)]
    pub runs: RevisionSpec,
    #[serde(flatten)]
    pub settings: ServiceSettings,
    /// Deploys the new revision as a canary with this share of the traffic (1 to
    /// 99 percent) beside the serving one, instead of rolling out to it.
    #[serde(default)]
    pub traffic: Option<u32>,
    #[serde(flatten)]
    pub analysis: AnalysisFields,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    pub id: String,
    pub service: String,
    pub address: String,
    /// Where the sidecar serves /metrics and health (empty: at `address`).
    pub admin_address: String,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// The revision of the service it runs (0: it did not say).
    pub revision: u64,
    pub registered_at_ms: u64,
    pub state_changed_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShardView {
    pub shard: usize,
    pub owner: Option<String>,
    pub epoch: u64,
    /// The instance the shard is being handed to (its owner finishes what it
    /// runs for it first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShardMapView {
    pub service: String,
    pub shard_count: usize,
    pub shards: Vec<ShardView>,
}

pub(crate) fn service_view(registry: &Registry, service: &Service) -> ServiceView {
    let status = match registry.status(service) {
        ServiceStatus::Ready => "ready",
        ServiceStatus::Scaling => "scaling",
        ServiceStatus::Pending => "pending",
        ServiceStatus::ScaledToZero => "scaled_to_zero",
    };
    ServiceView {
        name: service.name.clone(),
        runs: service.runs.clone(),
        settings: ServiceSettings {
            keep_alive: Some(service.keep_alive()),
            ..service.settings()
        },
        idle_times: idle_times_view(service),
        desired_replicas: service.desired_replicas,
        ready_replicas: registry.ready_replicas(&service.name),
        status: status.to_owned(),
        revision: service.serving(),
        generation: service.generation,
        entities: service
            .entities
            .iter()
            .map(|entity| EntityView {
                entity_type: entity.entity_type.clone(),
                service_name: entity.service_name.clone(),
                persistence_id: entity.persistence_id.clone(),
            })
            .collect(),
        subscriptions: service.subscriptions.clone(),
        created_at_ms: service.created_at_ms,
        updated_at_ms: service.updated_at_ms,
        failure: current_failure(registry, &service.name),
    }
}

fn idle_times_view(service: &Service) -> IdleTimesView {
    let histogram = service.idle_times.histogram();
    let policy = HistogramPolicy {
        prewarm_percentile: f64::from(service.prewarm_percentile),
        keep_alive_percentile: f64::from(service.keep_alive_percentile),
    };
    let seconds = |duration: std::time::Duration| format_duration_ms(duration.as_secs_f64().round() as u64 * 1_000);
    let (unpredictable, prewarm, keep_alive) = match histogram.predict(&policy) {
        Prediction::Windows { prewarm, keep_alive } => (None, Some(seconds(prewarm)), Some(seconds(keep_alive))),
        Prediction::Unpredictable(why) => {
            let why = match why {
                Unpredictable::TooFewSamples { .. } => "too_few_samples",
                Unpredictable::Spread { .. } => "spread",
                Unpredictable::OutOfBounds => "out_of_bounds",
                Unpredictable::ShortIdle { .. } => "short_idle",
            };
            (Some(why.to_owned()), None, None)
        }
    };
    IdleTimesView {
        samples: histogram.samples(),
        out_of_bounds: histogram.out_of_bounds(),
        predictable: unpredictable.is_none(),
        unpredictable,
        prewarm,
        keep_alive,
    }
}

/// The newest failure of the service's instances, unless an instance became ready after it.
fn current_failure(registry: &Registry, service: &str) -> Option<FailureView> {
    let latest = registry
        .events
        .iter()
        .rev()
        .filter(|event| event.service.as_deref() == Some(service))
        .find(|event| matches!(event.kind, EventKind::InstanceFailed | EventKind::InstanceReady))?;
    (latest.kind == EventKind::InstanceFailed).then(|| FailureView {
        reason: latest.reason.clone(),
        at_ms: latest.at_ms,
    })
}

fn instance_view(instance: &Instance) -> InstanceView {
    let state = match instance.state {
        InstanceState::Starting => "starting",
        InstanceState::Ready => "ready",
        InstanceState::Draining => "draining",
    };
    InstanceView {
        id: instance.id.clone(),
        service: instance.service.clone(),
        address: instance.address.clone(),
        admin_address: instance.admin_address.clone(),
        state: state.to_owned(),
        revision: instance.revision,
        registered_at_ms: instance.registered_at_ms,
        state_changed_at_ms: instance.state_changed_at_ms,
    }
}

/// Reads a body of a service's own fields and its settings. The settings are read
/// first, alone, so one of the wrong type or shape is named (400 `invalid_argument`
/// with its field); then the whole body, where only an unknown field or one of the
/// service's own can be at fault (400 `malformed_json`). Their rules are checked last.
fn service_body<T: DeserializeOwned>(body: Value, settings_of: impl Fn(&T) -> &ServiceSettings) -> Result<T, ApiError> {
    if let Value::Object(fields) = &body {
        let settings: Map<String, Value> = fields
            .iter()
            .filter(|(name, _)| ServiceSettings::FIELDS.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        serde_path_to_error::deserialize::<_, ServiceSettings>(Value::Object(settings)).map_err(|error| {
            let field = error.path().to_string();
            ApiError::invalid_field(&field, format!("{field}: {}", error.inner()))
        })?;
    }
    let body: T = serde_path_to_error::deserialize(body)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", error.to_string()))?;
    settings_of(&body).validate().map_err(RegistryError::from)?;
    Ok(body)
}

fn service_response(state: &AppState, outcome: Outcome) -> Result<Json<ServiceView>, ApiError> {
    match outcome {
        Outcome::Service(service) => Ok(Json(state.node.read(|registry| service_view(registry, &service)))),
        _ => Err(ApiError::unavailable("unexpected answer from the registry")),
    }
}

#[utoipa::path(get, path = "/api/v1/services", tag = "services",
    responses((status = 200, body = ServiceList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_services(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ServiceList>, ApiError> {
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        Ok(Json(ServiceList {
            services: registry
                .services
                .values()
                .map(|service| service_view(registry, service))
                .collect(),
        }))
    })
}

#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = CreateService,
    responses((status = 201, body = ServiceView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create_service(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let body: CreateService = service_body(body, |body: &CreateService| &body.settings)?;
    validate_name(&body.name)?;
    let spec = ServiceSpec {
        name: body.name,
        runs: body.runs,
        settings: body.settings,
    };
    let outcome = audit::write(&state, Command::CreateService(spec), StatusCode::CREATED).await?;
    Ok((StatusCode::CREATED, service_response(&state, outcome)?))
}

#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ServiceView>, ApiError> {
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        let service = known_service(registry, &name)?;
        Ok(Json(service_view(registry, service)))
    })
}

#[utoipa::path(patch, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    request_body = UpdateService,
    responses((status = 200, body = ServiceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<ServiceView>, ApiError> {
    let body: UpdateService = service_body(body, |body: &UpdateService| &body.settings)?;
    let patch = ServicePatch {
        canary: body.analysis.canary(body.traffic)?,
        runs: body.runs,
        settings: body.settings,
        replace_settings: false,
    };
    let outcome = audit::write(&state, Command::UpdateService { name, patch }, StatusCode::OK).await?;
    service_response(&state, outcome)
}

#[utoipa::path(delete, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    audit::write(&state, Command::DeleteService { name }, StatusCode::NO_CONTENT).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/services/{name}/instances", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = InstanceList), (status = 404, body = ErrorBody)))]
pub(super) async fn list_instances(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<InstanceList>, ApiError> {
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        known_service(registry, &name)?;
        Ok(Json(InstanceList {
            instances: registry.instances_of(&name).map(instance_view).collect(),
        }))
    })
}

#[utoipa::path(get, path = "/api/v1/services/{name}/shards", tag = "services", params(("name" = String, Path)),
    responses((status = 200, body = ShardMapView), (status = 404, body = ErrorBody)))]
pub(super) async fn list_shards(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ShardMapView>, ApiError> {
    linearizable(&state, &headers).await?;
    state.node.read(|registry| {
        let service = known_service(registry, &name)?;
        let shards = service
            .shards
            .iter()
            .enumerate()
            .map(|(shard, entry)| ShardView {
                shard,
                owner: entry.owner.clone(),
                handoff_to: entry.handoff.as_ref().map(|handoff| handoff.to.clone()),
                epoch: entry.epoch,
            })
            .collect();
        Ok(Json(ShardMapView {
            service: name,
            shard_count: service.shards.len(),
            shards,
        }))
    })
}
