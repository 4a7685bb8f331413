//! `strata control-plane`: one node of the Raft-replicated control plane. A restarted
//! node needs only `--data-dir`; its id and addresses are remembered there.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_control_plane::api::Tokens;
use strata_control_plane::server::{self, ServerConfig};

#[derive(Args)]
pub struct ControlPlaneArgs {
    /// This node's id, unique in the cluster (required on first start).
    #[arg(long)]
    node_id: Option<u64>,
    /// Where the Raft log, snapshots and the node's identity live.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = ".strata/control-plane")]
    data_dir: PathBuf,
    /// Raft transport address (gRPC) that peers connect to, e.g. 127.0.0.1:9200.
    #[arg(long)]
    listen: Option<String>,
    /// Management API address, e.g. 127.0.0.1:9100.
    #[arg(long)]
    api_listen: Option<String>,
    /// Start a new cluster with this node as its only voter.
    #[arg(long, conflicts_with = "join")]
    bootstrap: bool,
    /// Join an existing cluster through any member's API, e.g. http://127.0.0.1:9100.
    #[arg(long)]
    join: Option<String>,
    /// Shared secret that Raft peers prove to each other.
    #[arg(long, env = "STRATA_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Bearer token for the management API with full rights.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token for the management API that may only read.
    #[arg(long, env = "STRATA_READ_ONLY_TOKEN", hide_env_values = true)]
    read_only_token: Option<String>,
    /// How often function instances heartbeat to the leader.
    #[arg(long, default_value = "1s", value_parser = crate::duration::parse)]
    heartbeat_interval: Duration,
    /// An instance silent this long is removed and its shards move.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
    heartbeat_timeout: Duration,
    /// The entity store the sidecars write (`sqlite://PATH` or `postgres://...`), read
    /// by the API's entity inspector; without it, entity reads answer 501.
    #[arg(long, env = "STRATA_STORE")]
    store: Option<String>,
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let cluster_secret = args.cluster_secret.filter(|secret| !secret.is_empty()).context(
        "a cluster secret is required: set STRATA_CLUSTER_SECRET or --cluster-secret (the same on every node)",
    )?;
    let admin_token = args
        .admin_token
        .filter(|token| !token.is_empty())
        .context("an admin token is required: set STRATA_ADMIN_TOKEN or --admin-token")?;
    let config = ServerConfig {
        node_id: args.node_id,
        data_dir: args.data_dir,
        listen: args.listen,
        api_listen: args.api_listen,
        bootstrap: args.bootstrap,
        join: args.join,
        cluster_secret,
        tokens: Tokens {
            admin: Some(admin_token),
            read_only: args.read_only_token.filter(|token| !token.is_empty()),
        },
        heartbeat_interval: args.heartbeat_interval,
        heartbeat_timeout: args.heartbeat_timeout,
        store_url: args.store.filter(|store| !store.is_empty()),
        ..ServerConfig::default()
    };
    server::run(config, crate::shutdown_signal()).await?;
    Ok(())
}
