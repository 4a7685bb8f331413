//! The OpenAPI document, generated from the handlers' annotations and the body types.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, cluster, entities, events, metrics, payload, services};
use super::{Access, AccessView, ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(title = "Strata management API", description = "Services, instances, shards, metric series, entities, the control-plane cluster and the audit log of management writes."),
    paths(
        services::list_services,
        services::create_service,
        services::get_service,
        services::update_service,
        services::delete_service,
        services::list_instances,
        services::list_shards,
        metrics::service_metrics,
        entities::get_entity,
        entities::list_events,
        super::access,
        cluster::get_cluster,
        cluster::add_member,
        cluster::remove_member,
        events::events,
        audit::list_audit,
    ),
    components(schemas(
        services::ServiceView,
        services::ServiceList,
        services::CreateService,
        services::UpdateService,
        services::InstanceView,
        services::InstanceList,
        services::ShardView,
        services::ShardMapView,
        services::EntityView,
        services::IdleTimesView,
        services::FailureView,
        metrics::MetricSeries,
        crate::metrics_history::Sample,
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
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerAuth),
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

pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
