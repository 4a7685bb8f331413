//! `GET /events`: server-sent events. First the retained history (after `?since=ID`),
//! then registry events as this node applies them, and leader changes as it sees them.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use super::AppState;
use crate::registry::{Effect, Event};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events with a larger id (resume after a reconnect).
    pub since: Option<u64>,
}

fn registry_event(event: &Event) -> SseEvent {
    SseEvent::default()
        .event("registry")
        .id(event.id.to_string())
        .json_data(event)
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "text/event-stream of `registry` and `leader` events")))]
pub(super) async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before reading the history so nothing falls between the two.
    let live = BroadcastStream::new(state.node.subscribe());
    let history: Vec<Event> = state.node.read(|registry| {
        registry
            .events
            .iter()
            .filter(|event| query.since.is_none_or(|since| event.id > since))
            .cloned()
            .collect()
    });
    let mut last_sent = history.last().map(|event| event.id).or(query.since).unwrap_or(0);
    let replay = stream::iter(history.into_iter().map(|event| registry_event(&event)));
    let live = live.filter_map(move |applied| {
        let mut out = Vec::new();
        if let Ok(applied) = applied {
            for effect in applied.effects {
                if let Effect::Event(event) = effect {
                    if event.id > last_sent {
                        last_sent = event.id;
                        out.push(registry_event(&event));
                    }
                }
            }
        }
        futures::future::ready(Some(stream::iter(out)))
    });
    let node_id = state.node.node_id();
    let leaders = WatchStream::new(state.node.watch_raft_metrics())
        .map(|metrics| (metrics.current_leader, metrics.current_term))
        .scan(None, |previous, current| {
            let changed = *previous != Some(current.0);
            *previous = Some(current.0);
            futures::future::ready(Some(changed.then_some(current)))
        })
        .filter_map(move |change| {
            futures::future::ready(change.map(|(leader, term)| {
                let data = serde_json::json!({ "observer": node_id, "leader": leader, "term": term });
                stream::iter(vec![SseEvent::default().event("leader").data(data.to_string())])
            }))
        });
    // Graceful shutdown waits for open responses: end the stream when the server stops.
    let merged = stream::select(replay.chain(live.flatten()), leaders.flatten())
        .take_until(state.stopping.clone().wait())
        .map(Ok);
    Sse::new(merged).keep_alive(KeepAlive::default())
}
