//! `strata control-plane`: one node of the Raft-replicated control plane. A restarted
//! node needs only `--data-dir`; its id and addresses are remembered there. With
//! `--runtime kubernetes` it is also the operator for `StatefulService`s (only the
//! leader acts) and runs the autoscaler.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use strata_control_plane::api::Tokens;
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::runtime::autoscale::AutoscaleConfig;
use strata_control_plane::runtime::schedules::ScheduleConfig;
use strata_control_plane::server::{self, ServerConfig};
use strata_runtime::kubernetes::{self, objects::OperatorSettings};

/// What runs the registered services' instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Runtime {
    /// Nothing here: instances are started elsewhere and register themselves.
    None,
    /// Deployments in this node's Kubernetes namespace, from `StatefulService`s.
    Kubernetes,
}

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
    /// Bearer token gateways present to the data-plane API: it may watch routes and
    /// poke services at zero, nothing else.
    #[arg(long, env = "STRATA_GATEWAY_TOKEN", hide_env_values = true)]
    gateway_token: Option<String>,
    /// Serve the management API and the Raft / data-plane port over TLS with this
    /// certificate chain (PEM); needs --tls-key. Peers, sidecars and gateways then
    /// dial this node with https://.
    #[arg(long, env = "STRATA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// A private CA (PEM) to trust when calling other nodes over TLS.
    #[arg(long, env = "STRATA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS on the Raft / data-plane port: every peer, sidecar and gateway
    /// must present a certificate this CA (PEM) signed. Needs --tls-cert.
    #[arg(long, env = "STRATA_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
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
    /// The Raft and data-plane address others dial, if not the --listen address
    /// (e.g. a pod's stable DNS name and port).
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// The API address peers forward to, if not the --api-listen address.
    #[arg(long, env = "STRATA_API_ADVERTISE")]
    api_advertise: Option<String>,
    /// What runs the services: `none`, or `kubernetes` (this node becomes the operator
    /// for StatefulServices; in-cluster config or KUBECONFIG).
    #[arg(long, env = "STRATA_RUNTIME", value_enum, default_value = "none")]
    runtime: Runtime,
    /// Kubernetes: the namespace to run services in (default: the client's, i.e. the pod's).
    #[arg(long, env = "STRATA_NAMESPACE")]
    namespace: Option<String>,
    /// Kubernetes: the image of the sidecar injected beside each function (a `strata` image).
    #[arg(long, env = "STRATA_SIDECAR_IMAGE")]
    sidecar_image: Option<String>,
    /// Kubernetes: the data-plane URL sidecars reach the control plane at,
    /// e.g. http://strata-control-plane:9200.
    #[arg(long, env = "STRATA_SIDECAR_CONTROL_PLANE")]
    sidecar_control_plane: Option<String>,
    /// Kubernetes: how long a pod may take to become ready, counted from its
    /// containers' start (scheduling and image pulls do not count), before it is replaced.
    #[arg(long, default_value = "120s", value_parser = crate::duration::parse)]
    ready_timeout: Duration,
    /// How often the Raft leader sends heartbeats (e.g. 50ms); followers start an
    /// election after four to eight are missed. Each replication RPC must finish
    /// within one interval, so raise it where nodes' round trip nears 50 ms.
    #[arg(long, env = "STRATA_RAFT_HEARTBEAT", default_value = "50ms", value_parser = crate::duration::parse)]
    raft_heartbeat: Duration,
    /// Autoscaler: how far back the stable window averages load (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    stable_window: Duration,
    /// The gateway the leader makes schedules' calls through (e.g.
    /// http://strata-gateway:9000); without it, schedules are kept but not run.
    #[arg(long, env = "STRATA_SCHEDULE_GATEWAY")]
    schedule_gateway: Option<String>,
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let cluster_secret = args.cluster_secret.filter(|secret| !secret.is_empty()).context(
        "a cluster secret is required: set STRATA_CLUSTER_SECRET or --cluster-secret (the same on every node)",
    )?;
    let admin_token = args
        .admin_token
        .filter(|token| !token.is_empty())
        .context("an admin token is required: set STRATA_ADMIN_TOKEN or --admin-token")?;
    let gateway_token = args.gateway_token.filter(|token| !token.is_empty());
    for (setting, value) in [
        ("STRATA_CLUSTER_SECRET", Some(&cluster_secret)),
        ("STRATA_ADMIN_TOKEN", Some(&admin_token)),
        ("STRATA_GATEWAY_TOKEN", gateway_token.as_ref()),
    ] {
        let Some(value) = value else { continue };
        // deploy/secret.yaml's placeholders: a cluster must not run on a published secret.
        anyhow::ensure!(
            !value.starts_with("REPLACE"),
            "{setting} is still the placeholder from deploy/secret.yaml: put a long random string there (openssl rand -hex 32)"
        );
    }
    let config = ServerConfig {
        node_id: args.node_id,
        data_dir: args.data_dir,
        listen: args.listen,
        api_listen: args.api_listen,
        bootstrap: args.bootstrap,
        join: args.join,
        cluster_secret: cluster_secret.clone(),
        gateway_token,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| strata_tls::TlsFiles { cert, key }),
        tls_ca: args.tls_ca,
        tls_client_ca: args.tls_client_ca,
        tokens: Tokens {
            admin: Some(admin_token),
            read_only: args.read_only_token.filter(|token| !token.is_empty()),
        },
        heartbeat_interval: args.heartbeat_interval,
        heartbeat_timeout: args.heartbeat_timeout,
        store_url: args.store.filter(|store| !store.is_empty()),
        advertise: args.advertise.filter(|address| !address.is_empty()),
        api_advertise: args.api_advertise.filter(|address| !address.is_empty()),
        raft_timing: strata_control_plane::node::Timing::with_heartbeat(args.raft_heartbeat.as_millis() as u64),
        schedules: args
            .schedule_gateway
            .filter(|gateway| !gateway.is_empty())
            .map(|gateway| ScheduleConfig {
                gateway,
                ..ScheduleConfig::default()
            }),
        ..ServerConfig::default()
    };
    if args.runtime == Runtime::None {
        server::run(config, crate::shutdown_signal()).await?;
        return Ok(());
    }

    // Settings are checked and the cluster reached before the node starts.
    let sidecar_image = args
        .sidecar_image
        .filter(|image| !image.is_empty())
        .context("--runtime kubernetes needs --sidecar-image (STRATA_SIDECAR_IMAGE), the strata image")?;
    let control_plane_url = args.sidecar_control_plane.filter(|url| !url.is_empty()).context(
        "--runtime kubernetes needs --sidecar-control-plane (STRATA_SIDECAR_CONTROL_PLANE), e.g. http://strata-control-plane:9200",
    )?;
    let client = kubernetes::client().await?;
    let settings = OperatorSettings {
        namespace: args
            .namespace
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        sidecar_image,
        control_plane_url,
        cluster_secret: ClusterSecret::new(cluster_secret.clone()),
        ready_timeout: args.ready_timeout,
    };
    // With a runtime, the node also runs the autoscaler (it acts while it leads),
    // which sizes scale from zero by the requests the gateways hold.
    // `strata logs` and the dashboard read the pods' logs through the API.
    let logs = kubernetes::logs::KubeLogs::new(client.clone(), &settings.namespace);
    let config = ServerConfig {
        autoscaler: Some(AutoscaleConfig {
            stable_window: args.stable_window,
        }),
        logs: Some(std::sync::Arc::new(logs)),
        ..config
    };
    let server = server::start(config).await?;
    let node = server.node();
    let stopping = server.stopping();
    server.spawn(
        "kubernetes-runtime",
        kubernetes::run(node, client, settings, stopping.wait()),
    );
    crate::shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}
