//! Runs one control-plane node as a process: remembers its identity in the data
//! directory, serves the Raft transport (gRPC) and the management API (HTTP), and
//! bootstraps or joins a cluster. Flag parsing lives in the `strata` binary.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::api::{self, AppState, Tokens};
use crate::auth::ClusterSecret;
use crate::node::{ControlPlane, NodeConfig, Timing};
use crate::raft::network::GrpcNetwork;
use crate::raft::{write_atomically, NodeId, NodeInfo};

const IDENTITY_FILE: &str = "node.json";

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
/// Not `Debug`: it carries secrets.
#[derive(Clone)]
pub struct ServerConfig {
    pub node_id: Option<NodeId>,
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub api_listen: Option<String>,
    pub bootstrap: bool,
    pub join: Option<String>,
    pub cluster_secret: String,
    pub tokens: Tokens,
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
    let bytes = serde_json::to_vec_pretty(&identity).map_err(|error| data_dir_error(error.into()))?;
    write_atomically(&path, &bytes).map_err(data_dir_error)?;
    Ok(identity)
}

async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address).await.map_err(|source| ServerError::Bind {
        address: address.to_owned(),
        source,
    })
}

/// Runs the node until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    if config.cluster_secret.is_empty() {
        return Err(ServerError::Config(
            "a cluster secret is required: set STRATA_CLUSTER_SECRET or --cluster-secret".into(),
        ));
    }
    if config.bootstrap && config.join.is_some() {
        return Err(ServerError::Config("--bootstrap and --join exclude each other".into()));
    }
    let identity = resolve_identity(&config)?;
    let secret = ClusterSecret::new(config.cluster_secret.clone());
    let raft_listener = bind(&identity.listen).await?;
    let api_listener = bind(&identity.api_listen).await?;
    let info = NodeInfo {
        address: identity.listen.clone(),
        api_address: identity.api_listen.clone(),
    };
    let node = ControlPlane::start(
        NodeConfig {
            node_id: identity.node_id,
            data_dir: config.data_dir.clone(),
            info: info.clone(),
            secret: secret.clone(),
            timing: Timing::default(),
        },
        GrpcNetwork {
            node_id: identity.node_id,
            secret: secret.clone(),
        },
    )
    .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let transport = crate::raft::transport::TransportService::server(identity.node_id, node.raft.clone(), secret);
    let mut raft_stop = stop_rx.clone();
    let raft_server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(raft_listener);
        tonic::transport::Server::builder()
            .add_service(transport)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = raft_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let app = api::app(AppState::new(node.clone(), config.tokens.clone()));
    let mut api_stop = stop_rx.clone();
    let api_server = tokio::spawn(async move {
        axum::serve(api_listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(node_id = identity.node_id, raft = %identity.listen, api = %identity.api_listen, "control plane listening");

    if config.bootstrap {
        node.bootstrap().await?;
    } else if let Some(url) = &config.join {
        if node.is_initialized().await {
            tracing::info!(
                node_id = identity.node_id,
                "already a member (state on disk), not joining again"
            );
        } else {
            let join = join(url, identity.node_id, &info, config.tokens.admin.as_deref());
            tokio::select! {
                result = join => result?,
                () = wait_stopped(stop_rx.clone()) => {}
            }
        }
    }

    shutdown.await;
    tracing::info!(node_id = identity.node_id, "stopping the control-plane node");
    let _ = stop_tx.send(true);
    node.shutdown().await;
    let _ = raft_server.await;
    let _ = api_server.await;
    Ok(())
}

async fn wait_stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Asks a member to add this node; retries while the cluster elects a leader.
async fn join(url: &str, node_id: NodeId, info: &NodeInfo, token: Option<&str>) -> Result<(), ServerError> {
    let client = reqwest::Client::new();
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
