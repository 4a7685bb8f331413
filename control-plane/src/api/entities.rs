//! `/services/{name}/entities/{entity_id}`: one entity's state (a value entity's value,
//! an event-sourced entity's latest snapshot) and its journal, newest first in pages,
//! read straight from the store and decoded with the service's descriptors. The
//! function is never called, so inspecting an entity neither activates nor changes it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use strata_store::{EntityKey, Store, StoreError};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::payload::{PayloadDecoder, PayloadView};
use super::AppState;
use crate::registry::EntityInfo;

/// Events per page unless the client asks for another count.
const DEFAULT_PAGE: u32 = 20;
/// The largest page a client may ask for.
const MAX_PAGE: u32 = 100;

const EVENT_SOURCED: &str = "cloudstate.eventsourced.EventSourced";
const VALUE_ENTITY: &str = "cloudstate.valueentity.ValueEntity";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/services/{name}/entities/{entity_id}", get(get_entity))
        .route("/services/{name}/entities/{entity_id}/events", get(list_events))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EntityQuery {
    /// The gRPC service of the entity (e.g. `com.example.shoppingcart.ShoppingCart`);
    /// needed only when the function serves several entities.
    pub entity: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// The gRPC service of the entity, as for the entity itself.
    pub entity: Option<String>,
    /// Only events with a smaller sequence number (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Events per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
}

/// What is stored of one entity.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntityStateView {
    pub service: String,
    pub entity_id: String,
    /// The gRPC service that handles the entity's commands.
    pub grpc_service: String,
    pub persistence_id: String,
    /// `event_sourced` or `value`.
    pub entity_type: String,
    /// The value (value entity) or the latest snapshot (event sourced); null for an
    /// event-sourced entity that has no snapshot yet.
    pub state: Option<PayloadView>,
    /// The sequence number the snapshot was taken at.
    pub snapshot_seq_nr: Option<i64>,
    /// The sequence number of the newest event (event sourced only).
    pub last_seq_nr: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq_nr: i64,
    #[serde(flatten)]
    pub payload: PayloadView,
}

/// One page of a journal, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// The entity's place in the store and how to decode what is stored there.
struct Located {
    store: Arc<dyn Store>,
    entity: EntityInfo,
    key: EntityKey,
    decoder: PayloadDecoder,
}

/// The store the API reads: 501 without one, 503 until it is open.
pub(super) fn open_store(state: &AppState) -> Result<Arc<dyn Store>, ApiError> {
    let slot = state.store.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_store",
            "this control plane has no entity store to read; start it with --store",
        )
    })?;
    slot.get().cloned().ok_or_else(|| {
        ApiError::unavailable("the entity store is not up yet; the control plane keeps trying to open it")
    })
}

fn locate(state: &AppState, service: &str, entity_id: &str, grpc_service: Option<&str>) -> Result<Located, ApiError> {
    let store = open_store(state)?;
    state.node.read(|registry| {
        let service_entry = registry
            .services
            .get(service)
            .ok_or_else(|| ApiError::not_found(format!("service {service:?} not found")))?;
        let stateful: Vec<&EntityInfo> = service_entry
            .entities
            .iter()
            .filter(|entity| matches!(entity.entity_type.as_str(), EVENT_SOURCED | VALUE_ENTITY))
            .collect();
        let entity = match grpc_service {
            Some(wanted) => stateful
                .iter()
                .find(|entity| entity.service_name == wanted)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "entity",
                        format!("service {service:?} has no event-sourced or value entity {wanted:?}"),
                    )
                })?,
            None => match stateful.as_slice() {
                [only] => only,
                [] if service_entry.entities.is_empty() => {
                    return Err(ApiError::not_found(format!(
                        "service {service:?} has not reported its entities yet: it must have run once"
                    )))
                }
                [] => {
                    return Err(ApiError::invalid(format!(
                        "service {service:?} has no event-sourced or value entities"
                    )))
                }
                several => {
                    let names: Vec<&str> = several.iter().map(|entity| entity.service_name.as_str()).collect();
                    return Err(ApiError::invalid_field(
                        "entity",
                        format!("service {service:?} has several entities; choose one with ?entity= ({names:?})"),
                    ));
                }
            },
        };
        Ok(Located {
            store,
            key: EntityKey::new(entity.persistence_id.clone(), entity_id),
            entity: (*entity).clone(),
            decoder: PayloadDecoder::new(service_entry.descriptor_set.as_deref()),
        })
    })
}

pub(super) fn store_error(error: StoreError) -> ApiError {
    tracing::warn!(%error, "reading from the entity store failed");
    ApiError::unavailable("the entity store cannot be read right now; retry shortly")
}

fn no_such_entity(service: &str, entity_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no such entity: service {service:?} has nothing stored for {entity_id:?}"
    ))
}

#[utoipa::path(get, path = "/api/v1/services/{name}/entities/{entity_id}", tag = "entities",
    params(("name" = String, Path), ("entity_id" = String, Path), EntityQuery),
    responses((status = 200, body = EntityStateView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn get_entity(
    State(state): State<AppState>,
    Path((service, entity_id)): Path<(String, String)>,
    Query(query): Query<EntityQuery>,
) -> Result<Json<EntityStateView>, ApiError> {
    let located = locate(&state, &service, &entity_id, query.entity.as_deref())?;
    let store = &located.store;
    let mut view = EntityStateView {
        service: service.clone(),
        entity_id: entity_id.clone(),
        grpc_service: located.entity.service_name.clone(),
        persistence_id: located.entity.persistence_id.clone(),
        entity_type: String::new(),
        state: None,
        snapshot_seq_nr: None,
        last_seq_nr: None,
    };
    if located.entity.entity_type == VALUE_ENTITY {
        let value = store.load_value(&located.key).await.map_err(store_error)?;
        let value = value.ok_or_else(|| no_such_entity(&service, &entity_id))?;
        view.entity_type = "value".into();
        view.state = Some(located.decoder.decode(&value));
        return Ok(Json(view));
    }
    let (snapshot, newest) = futures::try_join!(
        store.latest_snapshot(&located.key),
        store.events_before(&located.key, i64::MAX, 1)
    )
    .map_err(store_error)?;
    if snapshot.is_none() && newest.is_empty() {
        return Err(no_such_entity(&service, &entity_id));
    }
    view.entity_type = "event_sourced".into();
    view.snapshot_seq_nr = snapshot.as_ref().map(|snapshot| snapshot.seq_nr);
    view.state = snapshot.map(|snapshot| located.decoder.decode(&snapshot.payload));
    view.last_seq_nr = newest.first().map(|event| event.seq_nr).or(view.snapshot_seq_nr);
    Ok(Json(view))
}

#[utoipa::path(get, path = "/api/v1/services/{name}/entities/{entity_id}/events", tag = "entities",
    params(("name" = String, Path), ("entity_id" = String, Path), EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn list_events(
    State(state): State<AppState>,
    Path((service, entity_id)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE} (got {limit})"),
        ));
    }
    if let Some(before) = query.before.filter(|before| *before < 1) {
        return Err(ApiError::invalid_field(
            "before",
            format!("before must be a sequence number of at least 1 (got {before})"),
        ));
    }
    let located = locate(&state, &service, &entity_id, query.entity.as_deref())?;
    if located.entity.entity_type != EVENT_SOURCED {
        return Err(ApiError::invalid(format!(
            "{} is a value entity: it has a value but no journal",
            located.entity.service_name
        )));
    }
    let before = query.before.unwrap_or(i64::MAX);
    let events = located
        .store
        .events_before(&located.key, before, limit)
        .await
        .map_err(store_error)?;
    if events.is_empty() && query.before.is_none() {
        let snapshot = located.store.latest_snapshot(&located.key).await.map_err(store_error)?;
        if snapshot.is_none() {
            return Err(no_such_entity(&service, &entity_id));
        }
    }
    let oldest = events.last().map(|event| event.seq_nr);
    let full_page = events.len() == limit as usize;
    Ok(Json(EventPage {
        events: events
            .into_iter()
            .map(|event| EventView {
                seq_nr: event.seq_nr,
                payload: located.decoder.decode(&event.payload),
            })
            .collect(),
        next_before: oldest.filter(|oldest| full_page && *oldest > 1),
    }))
}
