//! The node's own health, for a kubelet's probes: outside `/api/v1` and without a
//! token, like `/metrics`. `/healthz` is liveness (the process serves);
//! `/readyz` is readiness: this node can serve, which takes its Raft log open
//! (it is, once the API serves) and a leader it knows, to forward writes to or
//! to be.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    match state.node.current_leader() {
        Some(leader) if leader == state.node.node_id() => (StatusCode::OK, "ready: this node leads".into()),
        Some(leader) => (StatusCode::OK, format!("ready: node {leader} leads")),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: this node knows no leader (it has not joined a cluster yet, or the cluster is electing one)"
                .into(),
        ),
    }
}
