//! The REST management API under `/api/v1` (axum): services, instances, shards, metric
//! series, entities, timers, instance logs, schedules, the cluster and the event stream, with bearer-token auth,
//! forwarding of writes from followers to the leader and linearizable reads; beside it
//! on the same listener, the node's `/metrics`, its `/healthz` and `/readyz`, the
//! dashboard at `/ui/`, and `/v1/traces` (OTLP/HTTP into the trace store). Raft itself lives in `crate::node`.

mod audit;
mod cluster;
mod entities;
mod error;
mod events;
mod health;
mod history;
mod json;
mod logs;
mod metrics;
mod openapi;
mod payload;
mod revisions;
mod schedules;
mod services;
mod timers;
mod traces;
mod ui;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use audit::{AuditPage, AuditRecordView};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use ui::is_built as ui_is_built;

use crate::auth::{bearer, Authenticator, Principal};
use crate::logs::LogSource;
use crate::node::{ControlPlane, NodeError};
use crate::tasks::Stopping;
use crate::traces::SharedTraceStore;
use strata_store::Store;

/// Marks a request that a follower already forwarded, so it is never forwarded twice.
const FORWARDED_HEADER: &str = "x-strata-forwarded-by";
/// Largest JSON body the API accepts; service specs are small.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a follower waits to apply up to the leader's read index.
const READ_WAIT: Duration = Duration::from_secs(5);
/// How long a follower waits for the leader to answer a forwarded write or a read
/// index request (a write's own Raft commit takes milliseconds).
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bearer tokens as configured. With no admin token the API is open (only for `strata
/// dev` on loopback). The API keeps only their digests (`auth::Authenticator`).
#[derive(Clone, Default)]
pub struct Tokens {
    pub admin: Option<String>,
    pub read_only: Option<String>,
}

impl Tokens {
    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.admin.as_deref(), self.read_only.as_deref())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<ControlPlane>,
    /// Who may call; the server adds the cluster secret and the gateway token, so that
    /// their holders are told 403 (not theirs to call) rather than 401.
    pub auth: Arc<Authenticator>,
    pub http: reqwest::Client,
    /// How this node reaches other nodes' APIs: `https` when the API serves TLS.
    pub peer_scheme: &'static str,
    /// Ends long-lived responses (the event stream) when the server stops.
    pub stopping: Stopping,
    /// Where entities' state is read from (`/services/{name}/entities/...`), if
    /// anywhere; empty until the store is open.
    pub store: Option<StoreSlot>,
    /// Where instances' output is read from (`/services/{name}/logs`): the runtime
    /// driver's; `None`: those reads answer 501.
    pub logs: Option<Arc<dyn LogSource>>,
    /// The recent traces this node keeps (`strata dev`'s); `None`: the trace
    /// routes answer 501.
    pub traces: Option<SharedTraceStore>,
}

/// The entity store, set once it opens (a control plane may start before its store).
pub type StoreSlot = Arc<OnceLock<Arc<dyn Store>>>;

impl AppState {
    pub fn new(node: Arc<ControlPlane>, tokens: Tokens) -> Self {
        AppState {
            node,
            auth: Arc::new(tokens.authenticator()),
            http: peer_client(&[]),
            peer_scheme: "http",
            stopping: Stopping::never(),
            store: None,
            logs: None,
            traces: None,
        }
    }

    /// Entities are read from `store`, which is open.
    pub fn with_store(mut self, store: Option<Arc<dyn Store>>) -> Self {
        self.store = store.map(|store| Arc::new(OnceLock::from(store)));
        self
    }

    /// Entities are read from the store `slot` holds once it is open; until then
    /// reads answer 503.
    pub fn with_store_slot(mut self, slot: StoreSlot) -> Self {
        self.store = Some(slot);
        self
    }

    /// Other nodes' APIs serve TLS too: call them over `https`, trusting `roots` (a
    /// private CA) beside the public roots.
    pub fn with_peer_tls(mut self, roots: Vec<reqwest::Certificate>) -> Self {
        self.http = peer_client(&roots);
        self.peer_scheme = "https";
        self
    }

    /// Instance logs are read from `source`.
    pub fn with_logs(mut self, source: Option<Arc<dyn LogSource>>) -> Self {
        self.logs = source;
        self
    }

    /// Keeps recent traces that arrive at `/v1/traces` in `store`.
    pub fn with_traces(mut self, store: Option<SharedTraceStore>) -> Self {
        self.traces = store;
        self
    }

    pub fn with_authenticator(mut self, auth: Authenticator) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    pub fn with_stopping(mut self, stopping: Stopping) -> Self {
        self.stopping = stopping;
        self
    }
}

/// The client for calls to other nodes' APIs.
fn peer_client(roots: &[reqwest::Certificate]) -> reqwest::Client {
    roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
        .connect_timeout(Duration::from_secs(2))
        .timeout(LEADER_TIMEOUT)
        .build()
        .expect("an HTTP client with timeouts")
}

/// The whole management API, ready to serve or to drive with `oneshot` in tests.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(services::routes())
        .merge(revisions::routes())
        .merge(cluster::routes())
        .merge(events::routes())
        .merge(metrics::routes())
        .merge(entities::routes())
        .merge(audit::routes())
        .merge(logs::routes())
        .merge(history::routes())
        .merge(schedules::routes())
        .merge(timers::routes())
        .merge(traces::routes())
        .route("/access", get(access))
        .route("/internal/read-index", get(read_index))
        .layer(middleware::from_fn_with_state(state.clone(), forward_writes_to_leader))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics::prometheus))
        // OTLP/HTTP's own path, so an exporter needs only the base address.
        .route("/v1/traces", axum::routing::post(traces::ingest))
        .merge(health::routes())
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint; see /api/v1/openapi.json") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What the presented token may do; `GET /access` tells the dashboard which controls to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Reads and writes.
    Admin,
    /// Reads only.
    ReadOnly,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AccessView {
    pub access: Access,
}

#[utoipa::path(get, path = "/api/v1/access", tag = "access",
    responses((status = 200, body = AccessView), (status = 401, body = ErrorBody)))]
pub(crate) async fn access(request: Request) -> Json<AccessView> {
    let access = request.extensions().get::<Access>().copied().unwrap_or(Access::Admin);
    Json(AccessView { access })
}

/// Read-only tokens may GET; everything else needs the admin token. Data-plane
/// credentials (gateway, instance) are refused with 403. The leader records every
/// write it answers, refused ones included, in the audit log; a follower leaves that
/// to the leader it forwards to.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let principal = if state.auth.is_open() {
        Principal::Open
    } else {
        let presented = bearer(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok()),
        );
        match state.auth.identify(presented) {
            Ok(principal) => principal,
            Err(error) => return ApiError::unauthenticated(error.to_string()).into_response(),
        }
    };
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let access = if matches!(principal, Principal::ReadOnly) {
        Access::ReadOnly
    } else {
        Access::Admin
    };
    let audited = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !audited || !state.node.is_leader() {
        if let Err(denied) = principal.may_call_api(writes) {
            if audited {
                // The leader never sees this one, so it is not in the audit log.
                tracing::info!(node_id = state.node.node_id(), principal = %principal.name(), method = %request.method(), path = %request.uri().path(), "refused a write on a follower");
            }
            return ApiError::forbidden(denied.0).into_response();
        }
        request.extensions_mut().insert(access);
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    }

    let method = request.method().clone();
    let path = request.extensions().get::<OriginalUri>().map_or_else(
        || request.uri().path().to_owned(),
        |original| original.0.path().to_owned(),
    );
    let (parts, body) = request.into_parts();
    // The body is read here to name the write's target; over the limit is refused as before.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::too_large().into_response();
    };
    let record = audit::pending(&principal, &method, &path, audit::target(&path, &body));
    let (response, unwritten) = match principal.may_call_api(true) {
        Err(denied) => (ApiError::forbidden(denied.0).into_response(), Some(record)),
        Ok(()) => {
            let mut request = Request::from_parts(parts, Body::from(body));
            request.extensions_mut().insert(access);
            request.extensions_mut().insert(principal.clone());
            audit::with_pending(record, next.run(request)).await
        }
    };
    if let Some(record) = unwritten {
        audit::record(&state, record, response.status().as_u16()).await;
    }
    response
}

/// A follower relays writes to the leader as they are, so clients may use any node.
async fn forward_writes_to_leader(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) || state.node.is_leader() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_HEADER) {
        return ApiError::leader_unavailable("leadership is changing; retry shortly").into_response();
    }
    let Some(leader_api) = leader_api(&state) else {
        return ApiError::from(NodeError::NoLeader).into_response();
    };
    let (parts, body) = request.into_parts();
    // A body over the limit is refused here, never forwarded cut or empty.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::too_large().into_response();
    };
    match forward(&state, &leader_api, parts, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(node_id = state.node.node_id(), leader = %leader_api, %error, "forwarding a write to the leader failed");
            if error.is_connect() {
                // The request never left this node.
                return ApiError::leader_unavailable("cannot reach the leader; retry shortly").into_response();
            }
            ApiError::unavailable("the leader did not answer; the write may or may not have happened").into_response()
        }
    }
}

pub(crate) fn leader_api(state: &AppState) -> Option<String> {
    let leader = state.node.current_leader()?;
    if leader == state.node.node_id() {
        return None;
    }
    state.node.member(leader).map(|info| info.api_address)
}

pub(crate) async fn forward(
    state: &AppState,
    leader_api: &str,
    parts: axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Result<Response, reqwest::Error> {
    // Inside the nested router the URI lacks its `/api/v1` prefix; forward the original.
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let mut outgoing = state
        .http
        .request(
            parts.method.clone(),
            format!("{}://{leader_api}{path}", state.peer_scheme),
        )
        .header(FORWARDED_HEADER, state.node.node_id().to_string())
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value.clone());
        }
    }
    let reply = outgoing.send().await?;
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = reply.headers().get(header::CONTENT_TYPE).cloned();
    let body = reply.bytes().await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}

/// Makes the next read linearizable: the leader confirms its leadership with a quorum;
/// a follower asks the leader for that read index and waits until it has applied it.
pub(crate) async fn linearizable(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.node.read_index().await {
        Ok(_) => Ok(()),
        Err(NodeError::NotLeader {
            leader: Some(leader), ..
        }) => {
            let mut request = state.http.get(format!(
                "{}://{}/api/v1/internal/read-index",
                state.peer_scheme, leader.api_address
            ));
            if let Some(value) = headers.get(header::AUTHORIZATION) {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            let reply = request
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|_| ApiError::unavailable("cannot reach the leader for a consistent read; retry shortly"))?;
            let index: ReadIndex = reply
                .json()
                .await
                .map_err(|_| ApiError::unavailable("the leader sent an unreadable read index"))?;
            state
                .node
                .wait_applied(index.index, READ_WAIT)
                .await
                .map_err(ApiError::from)
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ReadIndex {
    index: u64,
}

async fn read_index(State(state): State<AppState>) -> Result<Json<ReadIndex>, ApiError> {
    let index = state.node.read_index().await?;
    Ok(Json(ReadIndex { index }))
}
