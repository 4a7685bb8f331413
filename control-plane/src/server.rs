//! Runs one control-plane node, as a process or embedded (`strata dev`): remembers its
//! identity in the data directory, serves the Raft transport and the data-plane API
//! (gRPC) and the management API (HTTP), and bootstraps or joins a cluster. Flag
//! parsing lives in the `strata` binary.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::api::{self, AppState, StoreSlot, Tokens};
use crate::auth::ClusterSecret;
use crate::data_plane::{self, DataPlaneService, HeartbeatSettings};
use crate::logs::LogSource;
use crate::node::{ControlPlane, NodeConfig, Timing};
use crate::raft::network::{GrpcNetwork, PeerTls};
use crate::raft::{write_atomically, NodeId, NodeInfo};
use crate::runtime::autoscale::{self, AutoscaleConfig};
use crate::runtime::schedules::{self, ScheduleConfig};
use crate::tasks::{Stopping, Tasks};
use strata_tls::{self as tls, ClientTls, TlsFiles};

const IDENTITY_FILE: &str = "node.json";
/// How often instances heartbeat unless configured otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long an instance may stay silent before the leader removes it.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for background tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error("joining through {url} failed: {message}")]
    Join { url: String, message: String },
}

/// Everything a node needs; `None` fields are taken from the data directory on restart.
/// Not `Debug`: it carries secrets. Start from `ServerConfig::default()` and set what
/// you need; `cluster_secret` is required.
#[derive(Clone)]
pub struct ServerConfig {
    pub node_id: Option<NodeId>,
    pub data_dir: PathBuf,
    /// Raft transport and data-plane gRPC address; port 0 picks a free port (see
    /// [`RunningServer::raft_address`]). Peers must be able to reach the address as
    /// bound, so a multi-node cluster needs a routable host and a stable port.
    pub listen: Option<String>,
    /// Management API address; port 0 picks a free port.
    pub api_listen: Option<String>,
    /// The Raft and data-plane address peers and instances dial, when it is not the
    /// bound one (a Kubernetes pod binds 0.0.0.0 but is reached by its stable name).
    pub advertise: Option<String>,
    /// The management API address peers forward to, when it is not the bound one.
    pub api_advertise: Option<String>,
    pub bootstrap: bool,
    pub join: Option<String>,
    pub cluster_secret: String,
    pub tokens: Tokens,
    /// Serve the management API and the Raft / data-plane port over TLS with this
    /// certificate and key (also presented to peers when a cluster requires client
    /// certificates); `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    /// A private CA (PEM) that this node trusts when it calls another node (joining,
    /// forwarding writes, read indexes, Raft), beside the public roots.
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by this CA (PEM) on the Raft and
    /// data-plane port (mutual TLS: peers, sidecars, gateways). Needs `tls`.
    pub tls_client_ca: Option<PathBuf>,
    /// The token gateways present to the data-plane API: it may watch routes and poke
    /// services, nothing else. `None`: only the admin token serves gateways.
    pub gateway_token: Option<String>,
    /// Raft heartbeat and election timeouts.
    pub raft_timing: Timing,
    /// How often instances should heartbeat (told to them when they register).
    pub heartbeat_interval: Duration,
    /// An instance silent for this long is removed by the leader and its shards move.
    pub heartbeat_timeout: Duration,
    /// Extra routes served on the API listener beside `/api/v1` (e.g. the dashboard).
    /// They are not behind the API's bearer-token check, must not overlap `/api/v1`
    /// and must not set a fallback.
    pub extra_routes: Option<axum::Router>,
    /// Run the autoscaler on this node (it acts while the node leads) and let it decide
    /// the gateway's pokes. `None`: no autoscaling, and a poke asks for one instance.
    pub autoscaler: Option<AutoscaleConfig>,
    /// The entity store (`sqlite://PATH` or `postgres://...`) that the API reads
    /// entities from for the dashboard's inspector; `None`: entity reads answer 501.
    pub store_url: Option<String>,
    /// Where the runtime driver keeps its instances' output, which the API serves
    /// (`/services/{name}/logs`); `None`: those reads answer 501.
    pub logs: Option<Arc<dyn LogSource>>,
    /// Where the leader makes schedules' calls (a gateway); `None`: schedules are
    /// kept but not run.
    pub schedules: Option<ScheduleConfig>,
    /// Keep recent traces within these limits, fed over OTLP/HTTP at
    /// `/v1/traces` on the API listener (`strata dev`); `None`: no trace store.
    pub traces: Option<crate::traces::TraceLimits>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: None,
            data_dir: PathBuf::from(".strata/control-plane"),
            listen: None,
            api_listen: None,
            advertise: None,
            api_advertise: None,
            bootstrap: false,
            join: None,
            cluster_secret: String::new(),
            tokens: Tokens::default(),
            gateway_token: None,
            tls: None,
            tls_ca: None,
            tls_client_ca: None,
            raft_timing: Timing::default(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            extra_routes: None,
            autoscaler: None,
            store_url: None,
            logs: None,
            schedules: None,
            traces: None,
        }
    }
}

/// Who this node is, written on first start so a restart needs only `--data-dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    listen: String,
    api_listen: String,
}

fn resolve_identity(config: &ServerConfig) -> Result<Identity, ServerError> {
    let path = config.data_dir.join(IDENTITY_FILE);
    let data_dir_error = |source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    let stored: Option<Identity> = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|error| data_dir_error(error.into()))?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(data_dir_error(error)),
    };
    let identity = match stored {
        Some(stored) => {
            if config.node_id.is_some_and(|id| id != stored.node_id) {
                return Err(ServerError::Config(format!(
                    "--node-id {} does not match node {} recorded in {}",
                    config.node_id.unwrap_or_default(),
                    stored.node_id,
                    path.display()
                )));
            }
            Identity {
                node_id: stored.node_id,
                listen: config.listen.clone().unwrap_or(stored.listen),
                api_listen: config.api_listen.clone().unwrap_or(stored.api_listen),
            }
        }
        None => Identity {
            node_id: config
                .node_id
                .ok_or_else(|| ServerError::Config("--node-id is required on first start".into()))?,
            listen: config
                .listen
                .clone()
                .ok_or_else(|| ServerError::Config("--listen is required on first start".into()))?,
            api_listen: config
                .api_listen
                .clone()
                .ok_or_else(|| ServerError::Config("--api-listen is required on first start".into()))?,
        },
    };
    Ok(identity)
}

/// Remembers the identity with the addresses actually bound (port 0 resolved).
fn record_identity(data_dir: &Path, identity: &Identity) -> Result<(), ServerError> {
    let data_dir_error = |source| ServerError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(identity).map_err(|error| data_dir_error(error.into()))?;
    write_atomically(&data_dir.join(IDENTITY_FILE), &bytes).map_err(data_dir_error)
}

async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address).await.map_err(|source| ServerError::Bind {
        address: address.to_owned(),
        source,
    })
}

/// A node serving its Raft transport, the data-plane gRPC API and the management API.
/// Background tasks attached with [`RunningServer::spawn`] stop with it.
pub struct RunningServer {
    node: Arc<ControlPlane>,
    raft_address: SocketAddr,
    api_address: SocketAddr,
    tasks: Tasks,
}

impl RunningServer {
    /// The node: replicated writes, reads of the applied registry, effects, leadership.
    pub fn node(&self) -> Arc<ControlPlane> {
        Arc::clone(&self.node)
    }

    /// Where the Raft transport and the data-plane gRPC API
    /// (`strata.controlplane.v1.DataPlane`) are served.
    pub fn raft_address(&self) -> SocketAddr {
        self.raft_address
    }

    /// Where the management API (and any extra routes) are served.
    pub fn api_address(&self) -> SocketAddr {
        self.api_address
    }

    /// Resolves when the node begins to stop; give it to tasks that run beside the node.
    pub fn stopping(&self) -> Stopping {
        self.tasks.stopping()
    }

    /// Runs `task` beside the node; [`RunningServer::shutdown`] waits for it (it should
    /// end once [`RunningServer::stopping`] resolves) before Raft stops.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(name, task);
    }

    /// Stops serving, waits for the background tasks, then shuts Raft down.
    pub async fn shutdown(self) {
        tracing::info!(node_id = self.node.node_id(), "stopping the control-plane node");
        self.tasks.stop(SHUTDOWN_GRACE).await;
        self.node.shutdown().await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Dropped without `shutdown` (e.g. a cancelled start): at least stop serving.
        self.tasks.signal_stop();
    }
}

/// Starts a node: binds both listeners, starts Raft, serves, and bootstraps or joins
/// (returning once this node is a member). Stop it with [`RunningServer::shutdown`].
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.cluster_secret.is_empty() {
        return Err(ServerError::Config(
            "a cluster secret is required: set STRATA_CLUSTER_SECRET or --cluster-secret".into(),
        ));
    }
    if config.bootstrap && config.join.is_some() {
        return Err(ServerError::Config("--bootstrap and --join exclude each other".into()));
    }
    if config.heartbeat_interval.is_zero() || config.heartbeat_timeout <= config.heartbeat_interval {
        return Err(ServerError::Config(
            "the heartbeat timeout must be longer than the (non-zero) heartbeat interval".into(),
        ));
    }
    let tls_acceptor = match &config.tls {
        Some(files) => {
            Some(tls::acceptor(files).map_err(|error| ServerError::Config(format!("--tls-cert/--tls-key: {error}")))?)
        }
        None => None,
    };
    if config.tls_client_ca.is_some() && config.tls.is_none() {
        return Err(ServerError::Config(
            "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS on a port that serves TLS)".into(),
        ));
    }
    let internal_tls = match &config.tls {
        Some(files) => Some(
            tls::grpc_server(files, config.tls_client_ca.as_deref())
                .map_err(|error| ServerError::Config(format!("--tls-cert/--tls-key/--tls-client-ca: {error}")))?,
        ),
        None => None,
    };
    let peer_tls = match &config.tls {
        Some(files) => PeerTls::new(Some(
            ClientTls {
                ca: config.tls_ca.clone(),
                identity: Some(files.clone()),
            }
            .grpc()
            .map_err(|error| ServerError::Config(format!("--tls-ca: {error}")))?,
        )),
        None => PeerTls::default(),
    };
    let peer_roots = match &config.tls_ca {
        Some(path) => tls::trusted_ca(path).map_err(|error| ServerError::Config(format!("--tls-ca: {error}")))?,
        None => Vec::new(),
    };
    // A store URL that cannot work fails the start; a store that is not up yet
    // (the usual order when everything starts together) is waited for below.
    if let Some(url) = &config.store_url {
        strata_store::check_url(url).map_err(|error| ServerError::Config(format!("--store: {error}")))?;
    }
    let mut identity = resolve_identity(&config)?;
    let raft_listener = bind(&identity.listen).await?;
    let api_listener = bind(&identity.api_listen).await?;
    let raft_address = local_address(&raft_listener, &identity.listen)?;
    let api_address = local_address(&api_listener, &identity.api_listen)?;
    identity.listen = raft_address.to_string();
    identity.api_listen = api_address.to_string();
    record_identity(&config.data_dir, &identity)?;

    let secret = ClusterSecret::new(config.cluster_secret.clone());
    let auth = config
        .tokens
        .authenticator()
        .with_gateway_token(config.gateway_token.as_deref())
        .with_cluster_secret(secret.clone());
    let info = NodeInfo {
        address: config.advertise.clone().unwrap_or_else(|| identity.listen.clone()),
        api_address: config
            .api_advertise
            .clone()
            .unwrap_or_else(|| identity.api_listen.clone()),
    };
    let node = ControlPlane::start(
        NodeConfig {
            node_id: identity.node_id,
            data_dir: config.data_dir.clone(),
            info: info.clone(),
            secret: secret.clone(),
            timing: config.raft_timing.clone(),
            peer_tls: peer_tls.clone(),
        },
        GrpcNetwork {
            node_id: identity.node_id,
            secret: secret.clone(),
            tls: peer_tls,
        },
    )
    .await?;
    let server = RunningServer {
        node: Arc::clone(&node),
        raft_address,
        api_address,
        tasks: Tasks::default(),
    };

    let transport =
        crate::raft::transport::TransportService::server(identity.node_id, node.raft().clone(), secret.clone());
    let mut data_plane = DataPlaneService::new(
        node.clone(),
        auth.clone(),
        HeartbeatSettings {
            interval: config.heartbeat_interval,
            timeout: config.heartbeat_timeout,
        },
        server.tasks.clone(),
    );
    if let Some(autoscale_config) = config.autoscaler.clone() {
        let (pokes, receiver) = autoscale::pokes();
        server.spawn(
            "autoscaler",
            autoscale::run(node.clone(), autoscale_config, receiver, server.stopping().wait()),
        );
        data_plane = data_plane.with_autoscaler(pokes);
    }
    if let Some(schedule_config) = config.schedules.clone() {
        server.spawn(
            "schedules",
            schedules::run(node.clone(), schedule_config, server.stopping()),
        );
    }
    server.spawn(
        "instance-liveness",
        data_plane::reap_silent_instances(data_plane.clone(), server.stopping()),
    );
    let mut internal_server = tonic::transport::Server::builder();
    if let Some(config) = internal_tls {
        internal_server = internal_server
            .tls_config(config)
            .map_err(|error| ServerError::Config(format!("--tls-cert/--tls-key: {error}")))?;
    }
    let stopping = server.stopping();
    server.spawn("raft-grpc-server", async move {
        // Raft and data-plane answers are small and latency-bound: without
        // TCP_NODELAY, Nagle and delayed ACKs hold some back by 40 ms.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(raft_listener),
            |connection| {
                connection.and_then(|stream| {
                    stream.set_nodelay(true)?;
                    Ok(stream)
                })
            },
        );
        let served = internal_server
            .add_service(transport)
            .add_service(data_plane.server())
            .serve_with_incoming_shutdown(incoming, stopping.wait())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the raft transport stopped serving");
        }
    });
    let mut state = AppState::new(node.clone(), config.tokens.clone())
        .with_authenticator(auth)
        .with_stopping(server.stopping())
        .with_logs(config.logs.clone())
        .with_traces(
            config
                .traces
                .map(|limits| Arc::new(std::sync::Mutex::new(crate::traces::TraceStore::new(limits)))),
        );
    if let Some(url) = config.store_url.clone() {
        state = state.with_store_slot(open_entity_store(&server, url).await?);
    }
    if config.tls.is_some() {
        state = state.with_peer_tls(peer_roots.clone());
    }
    let mut app = api::app(state);
    if let Some(extra) = config.extra_routes.clone() {
        app = app.merge(extra);
    }
    let stopping = server.stopping();
    match tls_acceptor {
        None => server.spawn("api-http-server", async move {
            let api_listener = axum::serve::ListenerExt::tap_io(api_listener, |stream: &mut tokio::net::TcpStream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY on an API connection");
                }
            });
            let served = axum::serve(api_listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stopping.wait())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the management api stopped serving");
            }
        }),
        Some(acceptor) => {
            let (listener, accept_loop) =
                tls::listen(api_listener, acceptor, server.stopping().wait()).map_err(|source| ServerError::Bind {
                    address: identity.api_listen.clone(),
                    source,
                })?;
            server.spawn("api-tls-accept", accept_loop);
            server.spawn("api-https-server", async move {
                use axum::serve::ListenerExt;
                // `tap_io` only to get axum's `ConnectInfo<SocketAddr>` for a custom listener.
                let listener = listener.tap_io(|_| ());
                let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(stopping.wait())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "the management api stopped serving");
                }
            });
        }
    }
    tracing::info!(node_id = identity.node_id, raft = %raft_address, api = %api_address, "control plane listening");

    let membership = if config.bootstrap {
        node.bootstrap().await.map_err(ServerError::from)
    } else if let Some(url) = &config.join {
        if node.is_initialized().await {
            tracing::info!(
                node_id = identity.node_id,
                "already a member (state on disk), not joining again"
            );
            Ok(())
        } else {
            join(
                url,
                identity.node_id,
                &info,
                config.tokens.admin.as_deref(),
                &peer_roots,
            )
            .await
        }
    } else {
        Ok(())
    };
    if let Err(error) = membership {
        server.shutdown().await;
        return Err(error);
    }
    Ok(server)
}

/// The entity store the API reads: open now if it is up, else opened in the
/// background, for as long as it takes, while the node serves everything else
/// (its entity reads answer 503 until then). A store that refuses the URL's
/// settings fails the start.
async fn open_entity_store(server: &RunningServer, url: String) -> Result<StoreSlot, ServerError> {
    let slot = StoreSlot::default();
    match strata_store::open(&url).await {
        Ok(store) => {
            let _ = slot.set(store);
            return Ok(slot);
        }
        Err(error @ strata_store::StoreError::Config(_)) => {
            return Err(ServerError::Config(format!("--store: {error}")))
        }
        Err(error) => tracing::warn!(%error, "the entity store is not up yet; serving without it until it is"),
    }
    let (filled, stopping) = (slot.clone(), server.stopping());
    server.spawn("entity-store", async move {
        tokio::select! {
            () = stopping.wait() => {}
            opened = strata_store::open_when_up(&url, None) => match opened {
                Ok(store) => {
                    tracing::info!("the entity store is open");
                    let _ = filled.set(store);
                }
                Err(error) => tracing::error!(%error, "the entity store cannot be opened; entity reads stay unavailable"),
            },
        }
    });
    Ok(slot)
}

/// Runs the node until `shutdown` resolves; `strata control-plane` in one call.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let server = tokio::select! {
        started = start(config) => started?,
        // Dropping a half-started server stops what it already serves.
        () = &mut shutdown => return Ok(()),
    };
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

fn local_address(listener: &TcpListener, requested: &str) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        address: requested.to_owned(),
        source,
    })
}

/// Asks a member to add this node; retries while the cluster elects a leader.
async fn join(
    url: &str,
    node_id: NodeId,
    info: &NodeInfo,
    token: Option<&str>,
    roots: &[reqwest::Certificate],
) -> Result<(), ServerError> {
    let client = roots
        .iter()
        .fold(reqwest::Client::builder(), |builder, root| {
            builder.add_root_certificate(root.clone())
        })
        .build()
        .map_err(|error| ServerError::Config(format!("an HTTP client for joining: {error}")))?;
    let endpoint = format!("{}/api/v1/cluster/members", url.trim_end_matches('/'));
    let body = serde_json::json!({ "node_id": node_id, "address": info.address, "api_address": info.api_address });
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=30 {
        let mut request = client.post(&endpoint).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(reply) if reply.status().is_success() => {
                tracing::info!(node_id, url, "joined the cluster");
                return Ok(());
            }
            Ok(reply) if reply.status().is_client_error() => {
                let message = reply.text().await.unwrap_or_default();
                return Err(ServerError::Join {
                    url: url.to_owned(),
                    message,
                });
            }
            Ok(reply) => tracing::info!(node_id, attempt, status = %reply.status(), "join not accepted yet, retrying"),
            Err(error) => tracing::info!(node_id, attempt, %error, "cannot reach the member to join, retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
    Err(ServerError::Join {
        url: url.to_owned(),
        message: "no member accepted the join; is the cluster up?".into(),
    })
}

/// The data directory's identity file, for tools that want to know a node's id.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}
