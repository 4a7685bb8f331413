//! `/services`: create, list, read, update and delete services, and read their instances
//! and shard maps. Request bodies are checked here for a clear 400 before Raft sees them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{unknown_service, ApiError, ErrorBody};
use super::json::ApiJson;
use super::{audit, linearizable, AppState};
use strata_autoscaler::{HistogramPolicy, Prediction, Unpredictable};

use crate::registry::{
    format_duration_ms, parse_duration_ms, validate_name, Command, EventKind, Instance, InstanceState, KeepAlive,
    Outcome, Registry, Service, ServicePatch, ServiceSpec, ServiceStatus,
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

/// A service as users and scripts see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub command: Option<String>,
    pub image: Option<String>,
    pub min_scale: u32,
    pub max_scale: u32,
    pub target_concurrency: u32,
    /// e.g. "30s"
    pub scale_to_zero_grace: String,
    /// The autoscaler's stable window, e.g. "60s"; null: the platform's default.
    pub stable_window: Option<String>,
    /// How the last instance is kept after traffic stops: `histogram` (the default:
    /// learned from the service's idle times, Knative's behaviour where it cannot
    /// pre-warm) or `fixed` (Knative's: the stable window, then the grace).
    pub keep_alive: String,
    /// With `histogram`: the idle-time percentile at which an instance is pre-warmed.
    pub prewarm_percentile: u32,
    /// With `histogram`: the idle-time percentile until which the instance is kept.
    pub keep_alive_percentile: u32,
    /// What the autoscaler has learned of the idle times between requests.
    pub idle_times: IdleTimesView,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// `ready`, `scaling`, `pending` or `scaled_to_zero`.
    pub status: String,
    pub revision: u64,
    pub shard_count: usize,
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

/// `POST /services`: only `name` and `command` (or `image`) are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    pub name: String,
    pub command: Option<String>,
    pub image: Option<String>,
    pub min_scale: Option<i64>,
    pub max_scale: Option<i64>,
    pub target_concurrency: Option<i64>,
    /// e.g. "30s", "5m"
    pub scale_to_zero_grace: Option<String>,
    /// e.g. "60s"; between 1s and 1h
    pub stable_window: Option<String>,
    pub shard_count: Option<i64>,
    /// `histogram` (default) or `fixed`
    pub keep_alive: Option<String>,
    /// 0 to 50 (default 5)
    pub prewarm_percentile: Option<i64>,
    /// 50 to 100 (default 99)
    pub keep_alive_percentile: Option<i64>,
}

/// `PATCH /services/{name}`: every field optional; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    pub command: Option<String>,
    pub image: Option<String>,
    pub min_scale: Option<i64>,
    pub max_scale: Option<i64>,
    pub target_concurrency: Option<i64>,
    pub scale_to_zero_grace: Option<String>,
    pub stable_window: Option<String>,
    pub keep_alive: Option<String>,
    pub prewarm_percentile: Option<i64>,
    pub keep_alive_percentile: Option<i64>,
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
        command: service.command.clone(),
        image: service.image.clone(),
        min_scale: service.min_scale,
        max_scale: service.max_scale,
        target_concurrency: service.target_concurrency,
        scale_to_zero_grace: format_duration_ms(service.scale_to_zero_grace_ms),
        stable_window: service.stable_window_ms.map(format_duration_ms),
        keep_alive: keep_alive_name(service.keep_alive()).to_owned(),
        prewarm_percentile: service.prewarm_percentile,
        keep_alive_percentile: service.keep_alive_percentile,
        idle_times: idle_times_view(service),
        desired_replicas: service.desired_replicas,
        ready_replicas: registry.ready_replicas(&service.name),
        status: status.to_owned(),
        revision: service.revision,
        shard_count: service.shards.len(),
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

fn keep_alive_name(keep_alive: KeepAlive) -> &'static str {
    match keep_alive {
        KeepAlive::Fixed => "fixed",
        KeepAlive::Histogram => "histogram",
    }
}

fn keep_alive(value: Option<&str>) -> Result<Option<KeepAlive>, ApiError> {
    match value {
        None => Ok(None),
        Some("fixed") => Ok(Some(KeepAlive::Fixed)),
        Some("histogram") => Ok(Some(KeepAlive::Histogram)),
        Some(other) => Err(ApiError::invalid(format!(
            "keep_alive must be \"fixed\" or \"histogram\" (got {other:?})"
        ))),
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
        registered_at_ms: instance.registered_at_ms,
        state_changed_at_ms: instance.state_changed_at_ms,
    }
}

/// A non-negative count that fits the registry's `u32`.
fn count(field: &str, value: Option<i64>) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(value) if value < 0 => Err(ApiError::invalid_field(
            field,
            format!("{field} must not be negative (got {value})"),
        )),
        Some(value) => u32::try_from(value)
            .map(Some)
            .map_err(|_| ApiError::invalid_field(field, format!("{field} is too large (got {value})"))),
    }
}

fn grace(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    duration("scale_to_zero_grace", value)
}

fn duration(field: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|text| {
            parse_duration_ms(text).map_err(|message| ApiError::invalid_field(field, format!("{field}: {message}")))
        })
        .transpose()
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
    ApiJson(body): ApiJson<CreateService>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    validate_name(&body.name)?;
    let spec = ServiceSpec {
        name: body.name,
        command: body.command,
        image: body.image,
        min_scale: count("min_scale", body.min_scale)?,
        max_scale: count("max_scale", body.max_scale)?,
        target_concurrency: count("target_concurrency", body.target_concurrency)?,
        scale_to_zero_grace_ms: grace(body.scale_to_zero_grace.as_deref())?,
        stable_window_ms: duration("stable_window", body.stable_window.as_deref())?,
        shard_count: count("shard_count", body.shard_count)?,
        keep_alive: keep_alive(body.keep_alive.as_deref())?,
        prewarm_percentile: count("prewarm_percentile", body.prewarm_percentile)?,
        keep_alive_percentile: count("keep_alive_percentile", body.keep_alive_percentile)?,
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
        let service = registry
            .services
            .get(&name)
            .ok_or_else(|| unknown_service(registry, &name))?;
        Ok(Json(service_view(registry, service)))
    })
}

#[utoipa::path(patch, path = "/api/v1/services/{name}", tag = "services", params(("name" = String, Path)),
    request_body = UpdateService,
    responses((status = 200, body = ServiceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn update_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpdateService>,
) -> Result<Json<ServiceView>, ApiError> {
    let patch = ServicePatch {
        command: body.command,
        image: body.image,
        min_scale: count("min_scale", body.min_scale)?,
        max_scale: count("max_scale", body.max_scale)?,
        target_concurrency: count("target_concurrency", body.target_concurrency)?,
        scale_to_zero_grace_ms: grace(body.scale_to_zero_grace.as_deref())?,
        stable_window_ms: duration("stable_window", body.stable_window.as_deref())?,
        keep_alive: keep_alive(body.keep_alive.as_deref())?,
        prewarm_percentile: count("prewarm_percentile", body.prewarm_percentile)?,
        keep_alive_percentile: count("keep_alive_percentile", body.keep_alive_percentile)?,
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
        if !registry.services.contains_key(&name) {
            return Err(unknown_service(registry, &name));
        }
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
        let service = registry
            .services
            .get(&name)
            .ok_or_else(|| unknown_service(registry, &name))?;
        let shards = service
            .shards
            .iter()
            .enumerate()
            .map(|(shard, entry)| ShardView {
                shard,
                owner: entry.owner.clone(),
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
