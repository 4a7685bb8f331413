//! The OpenAPI document, generated from the handlers' annotations and the body types.

use axum::Json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    audit, cluster, entities, events, history, logs, metrics, payload, revisions, schedules, services, timers, traces,
};
use super::{Access, AccessView, ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata management API", description = "Services, instances, shards, metric series, entities, schedules, the control-plane cluster and the audit log of management writes."),
    paths(
        services::list_services,
        services::create_service,
        services::get_service,
        services::update_service,
        services::delete_service,
        services::list_instances,
        services::list_shards,
        revisions::list_revisions,
        revisions::rollback,
        revisions::set_traffic,
        revisions::promote,
        metrics::service_metrics,
        logs::service_logs,
        history::service_history,
        entities::get_entity,
        entities::list_events,
        super::access,
        cluster::get_cluster,
        cluster::add_member,
        cluster::remove_member,
        events::events,
        audit::list_audit,
        schedules::create_schedule,
        schedules::list_schedules,
        schedules::get_schedule,
        schedules::delete_schedule,
        timers::service_timers,
        traces::service_traces,
        traces::get_trace,
    ),
    components(schemas(
        services::ServiceView,
        services::ServiceList,
        services::CreateService,
        services::UpdateService,
        strata_settings::ServiceSettings,
        strata_settings::KeepAlive,
        strata_settings::HumanDuration,
        services::InstanceView,
        services::InstanceList,
        services::ShardView,
        services::ShardMapView,
        services::EntityView,
        services::IdleTimesView,
        services::FailureView,
        revisions::RevisionView,
        revisions::RevisionList,
        revisions::RolloutView,
        revisions::RollbackRequest,
        revisions::CanaryView,
        revisions::TrafficRequest,
        revisions::AnalysisFields,
        metrics::MetricSeries,
        crate::metrics_history::Sample,
        crate::logs::LogLine,
        history::HistoryView,
        entities::EntityStateView,
        entities::EventView,
        entities::EventPage,
        payload::PayloadView,
        Access,
        AccessView,
        cluster::ClusterView,
        cluster::MemberView,
        cluster::AddMember,
        audit::AuditRecordView,
        audit::AuditPage,
        schedules::CreateSchedule,
        schedules::ScheduleView,
        schedules::ScheduleRunView,
        schedules::ScheduleList,
        timers::TimerView,
        timers::TimersView,
        traces::TraceList,
        crate::traces::TraceSummary,
        crate::traces::TraceView,
        crate::traces::TraceSpan,
        crate::traces::SpanStatus,
        crate::traces::KeptBecause,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerAuth, &CommonResponses),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// The answers every operation may give besides its own: 401 and 403 from the token
/// check, 503 while there is no leader; with a body, 413 and 415; with a path
/// parameter, 400 for one that does not parse. Said once here, not on every handler.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error = |description: &str| -> RefOr<Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_path_parameter = path.contains('{');
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let mut common = vec![
                    ("401", "no valid bearer token"),
                    ("403", "the token may not do this"),
                    ("503", "no leader right now, or the leader is unreachable; retry"),
                ];
                if operation.request_body.is_some() {
                    common.push(("413", "the body is over 1 MiB"));
                    common.push(("415", "the body is not sent as JSON"));
                    common.push(("400", "the body is malformed or invalid"));
                }
                if has_path_parameter || operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    common.push(("400", "a parameter does not parse"));
                }
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description));
                }
            }
        }
    }
}

pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
