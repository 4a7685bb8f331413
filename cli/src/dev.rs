//! `strata dev`: the whole platform in one process on this machine: a one-node
//! control plane (REST API, dashboard and /metrics on 127.0.0.1:9100), the gateway
//! (127.0.0.1:9000), the local runtime that runs each service's instances as
//! processes, and the autoscaler. State lives in the data directory.

use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use strata_control_plane::{
    api::Tokens,
    auth::ClusterSecret,
    runtime::autoscale::AutoscaleConfig,
    runtime::schedules::ScheduleConfig,
    server::{self, ServerConfig},
    traces::TraceLimits,
};
use strata_proxy::gateway::{self, GatewayConfig};
use strata_runtime::local::{LocalLogs, LocalRuntime, LocalRuntimeConfig};
use strata_tasks::Tasks;

/// How long stopping waits for the gateway and the local runtime (which drains
/// and stops every instance) before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the registry, the entity store and instance logs live.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = ".strata")]
    data_dir: PathBuf,
    /// The gateway: every deployed service, over gRPC, gRPC-web and HTTP+JSON.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The gateway's /metrics and /healthz (never on --listen); port 0 picks a
    /// free port, which the log names.
    #[arg(long, default_value = "127.0.0.1:0")]
    gateway_admin_listen: SocketAddr,
    /// The management REST API (/api/v1), the dashboard (/ui/) and /metrics.
    #[arg(long, default_value = "127.0.0.1:9100")]
    api_listen: SocketAddr,
    /// The admin token for the API; generated (and kept in the data directory) if not given.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A second token for the API that may only read (none unless given).
    #[arg(long, env = "STRATA_READ_ONLY_TOKEN", hide_env_values = true)]
    read_only_token: Option<String>,
    /// Autoscaler: how far back the stable window averages load (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    stable_window: Duration,
    /// Requests that may wait per service while it scales from zero (more get 503).
    #[arg(long, default_value_t = 1000)]
    hold_capacity: usize,
    /// How long a request may wait for a service to scale from zero (then 503).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    hold_timeout: Duration,
    /// How long an instance may take to become ready before it is replaced.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    ready_timeout: Duration,
    /// The entity store every sidecar writes (and the dashboard reads):
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; default a SQLite file in the
    /// data directory.
    #[arg(long, env = "STRATA_STORE")]
    store: Option<String>,
    /// The memory ceiling of the trace store that keeps recent traces (the
    /// failed and the slowest longest) for the dashboard and the API; 0 keeps
    /// none and turns tracing off. Spans go there beside any
    /// OTEL_EXPORTER_OTLP_ENDPOINT. One call in a hundred is traced for it
    /// (STRATA_TRACE_SAMPLE_RATIO), plus a record of the failed and slowest rest.
    #[arg(long, default_value_t = DEFAULT_TRACE_STORE_BYTES)]
    trace_store_bytes: usize,
    /// The gateway's TLS (its --tls-cert and --tls-key).
    #[command(flatten)]
    gateway_tls: crate::tls::IngressTlsArgs,
}

/// The trace store's ceiling unless `--trace-store-bytes` says otherwise: 32 MiB.
pub const DEFAULT_TRACE_STORE_BYTES: usize = 32 * 1024 * 1024;

/// Where this process sends its own spans (its gateway's): its own trace store,
/// with its admin token; `None` when it keeps no traces or its API port is not
/// known yet (port 0).
pub fn own_trace_store(args: &DevArgs) -> Option<strata_telemetry::TraceStore> {
    if args.trace_store_bytes == 0 || args.api_listen.port() == 0 {
        return None;
    }
    std::fs::create_dir_all(&args.data_dir).ok()?;
    let token = kept_secret(&args.data_dir.join("admin-token"), args.token.clone()).ok()?;
    Some(strata_telemetry::TraceStore {
        endpoint: trace_store_endpoint(args.api_listen),
        token: Some(token),
        // Read from STRATA_TRACE_SAMPLE_RATIO when telemetry is installed, as
        // the sidecars read it.
        sample_ratio: strata_telemetry::DEFAULT_STORE_SAMPLE_RATIO,
    })
}

/// The OTLP/HTTP traces endpoint on the API at `api`, reached on loopback when
/// the API listens on every address.
fn trace_store_endpoint(api: SocketAddr) -> String {
    let host = if api.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api.port())
    } else {
        api
    };
    format!("http://{host}/v1/traces")
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let cluster_secret = kept_secret(&data_dir.join("cluster-secret"), None)?;
    let token = kept_secret(&data_dir.join("admin-token"), args.token.clone())?;
    // The in-process gateway's own token, new on every start: it watches and pokes only.
    let gateway_token = random_token()?;
    let store_url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("strata.db").display()));

    let server = server::start(ServerConfig {
        node_id: Some(1),
        data_dir: data_dir.join("control-plane"),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some(args.api_listen.to_string()),
        bootstrap: true,
        cluster_secret: cluster_secret.clone(),
        gateway_token: Some(gateway_token.clone()),
        tokens: Tokens {
            admin: Some(token.clone()),
            read_only: args.read_only_token.clone().filter(|token| !token.is_empty()),
        },
        autoscaler: Some(AutoscaleConfig {
            stable_window: args.stable_window,
        }),
        // The same SQLite file the sidecars write: the dashboard reads entities from it.
        store_url: Some(store_url.clone()),
        // `strata logs` and the dashboard's Logs tab read the local runtime's files.
        logs: Some(Arc::new(LocalLogs::new(data_dir.join("logs")))),
        // Schedules call through this process's own gateway, trusting its
        // certificate (which may be self-signed).
        schedules: Some(ScheduleConfig {
            gateway_roots: gateway_roots(&args.gateway_tls)?,
            gateway: format!(
                "{}://{}",
                if args.gateway_tls.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                },
                args.listen
            ),
        }),
        traces: (args.trace_store_bytes > 0).then(|| TraceLimits {
            max_bytes: args.trace_store_bytes,
            ..TraceLimits::default()
        }),
        ..ServerConfig::default()
    })
    .await?;
    let node = server.node();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !node.is_leader() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the one-node control plane did not elect itself leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let control_plane = format!("http://{}", server.raft_address());
    let tasks = Tasks::default();

    let runtime = LocalRuntime::new(
        LocalRuntimeConfig {
            strata_binary: std::env::current_exe().context("cannot find the strata binary")?,
            control_plane: control_plane.clone(),
            cluster_secret: ClusterSecret::new(cluster_secret.clone()),
            store_url,
            work_dir: std::env::current_dir()?,
            log_dir: data_dir.join("logs"),
            ready_timeout: args.ready_timeout,
            trace_store: (args.trace_store_bytes > 0).then(|| trace_store_endpoint(server.api_address())),
        },
        node.clone(),
    );
    tasks.spawn("local runtime", runtime.run(tasks.stopping().wait()));
    let gateway_config = GatewayConfig {
        listen: args.listen,
        admin_listen: args.gateway_admin_listen,
        control_plane,
        token: Some(gateway_token),
        max_body: strata_proxy::DEFAULT_MAX_BODY,
        hold_capacity: args.hold_capacity,
        hold_timeout: args.hold_timeout,
        forward_timeout: strata_proxy::gateway::DEFAULT_FORWARD_TIMEOUT,
        control_plane_timeout: strata_proxy::DEFAULT_CONTROL_PLANE_TIMEOUT,
        tls: args.gateway_tls.files(),
        // The one-node control plane's port is plain TCP on loopback.
        control_plane_tls: Default::default(),
    };
    let (gateway_ended, gateway) = tokio::sync::oneshot::channel();
    let stopping = tasks.stopping();
    tasks.spawn("gateway", async move {
        let _ = gateway_ended.send(gateway::run(gateway_config, stopping.wait()).await);
    });

    let api = server.api_address();
    let gateway_scheme = if args.gateway_tls.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let dashboard = if strata_control_plane::api::ui_is_built() {
        format!("http://{api}/ui/")
    } else {
        format!("http://{api}/ui/   (not built: run `npm ci && npm run build` in web-ui/, then rebuild)")
    };
    println!(
        "\nStrata is running.\n\n  dashboard       {dashboard}\n  gateway         {gateway_scheme}://{}   (gRPC, gRPC-web, HTTP+JSON)\n  management API  http://{api}/api/v1\n  metrics         http://{api}/metrics\n  admin token     {token}\n  data            {}\n\nDeploy a function:\n\n  STRATA_TOKEN={token} strata deploy cart --command \"target/release/shopping-cart\"\n  STRATA_TOKEN={token} strata services\n\nCtrl-C stops everything.\n",
        args.listen,
        data_dir.display()
    );

    tokio::select! {
        () = crate::shutdown_signal() => {}
        result = gateway => {
            tasks.stop(STOP_GRACE).await;
            server.shutdown().await;
            return match result {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(anyhow::anyhow!("the gateway stopped without saying why")),
            };
        }
    }
    // Stop taking requests, drain and stop every instance while the control plane
    // still answers them, then stop the control plane.
    tasks.stop(STOP_GRACE).await;
    server.shutdown().await;
    Ok(())
}

/// A secret kept in the data directory (mode 0600): the given value, else the one
/// stored, else a new random one.
/// The gateway's certificate chain, which its schedules' calls trust (`None`:
/// the gateway serves plain HTTP).
fn gateway_roots(tls: &crate::tls::IngressTlsArgs) -> anyhow::Result<Option<Vec<u8>>> {
    tls.tls_cert
        .as_deref()
        .map(|cert| std::fs::read(cert).with_context(|| format!("cannot read --tls-cert {}", cert.display())))
        .transpose()
}

fn kept_secret(path: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(given) = given.filter(|g| !g.is_empty()) {
        return Ok(given);
    }
    if let Ok(stored) = std::fs::read_to_string(path) {
        let stored = stored.trim().to_string();
        if !stored.is_empty() {
            return Ok(stored);
        }
    }
    let secret = random_token()?;
    write_private(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

/// 128 random bits, hex.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a new secret")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a secret that is never readable by others, not even for a moment: the
/// file is created with mode 0600 under a temporary name, synced, then renamed.
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_secret_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let secret = kept_secret(&path, None).unwrap();
        assert_eq!(secret.len(), 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(kept_secret(&path, None).unwrap(), secret, "the stored secret is reused");
        assert_eq!(kept_secret(&path, Some("given".into())).unwrap(), "given");
    }
}
