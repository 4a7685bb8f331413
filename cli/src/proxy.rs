//! `strata proxy`: the standalone sidecar. Settings come from flags or from the
//! environment variables CloudState's proxy used, so existing deployments work.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use clap::Args;
use strata_proxy::sidecar::{self, EntityLimits, MembershipConfig, SidecarConfig};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Host of the user function's gRPC server.
    #[arg(long, env = "USER_FUNCTION_HOST", default_value = "127.0.0.1")]
    user_function_host: String,
    /// Port of the user function's gRPC server.
    #[arg(long, env = "USER_FUNCTION_PORT", default_value_t = 8080)]
    user_function_port: u16,
    /// Worker threads that run the sidecar's tasks; 0 is one per CPU core. With
    /// one (the default) a call's tasks hand over to each other without waking
    /// another thread: measured on 2 cores, faster at one client and more calls a
    /// second under load. A sidecar shares its machine with its function; more
    /// workers pay off only where it has cores to itself.
    #[arg(long, env = "STRATA_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// Port to serve the function's API on (gRPC, gRPC-web and HTTP+JSON).
    #[arg(long, env = "HTTP_PORT", default_value_t = 9000)]
    http_port: u16,
    /// Address to listen on; 0.0.0.0 to serve other machines.
    #[arg(long, env = "HTTP_HOST", default_value = "127.0.0.1")]
    http_host: std::net::IpAddr,
    /// Port of the admin listener (/metrics, /healthz) on the same host, never
    /// the HTTP port; 0 picks a free port, which the log names and a managed
    /// sidecar reports to the control plane.
    #[arg(long, env = "STRATA_ADMIN_PORT", default_value_t = 0)]
    admin_port: u16,
    /// Where state lives: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "STRATA_STORE", default_value = "sqlite://.strata/strata.db")]
    store: String,
    /// Largest request body accepted, in bytes (larger: 413 / RESOURCE_EXHAUSTED).
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = strata_proxy::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// How long to wait for the user function to answer discovery (e.g. 30s, 2m).
    #[arg(long, env = "STRATA_DISCOVERY_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse)]
    discovery_timeout: Duration,
    /// How long the function may take to answer one command; a client's shorter
    /// grpc-timeout wins. Past it: 504 / DEADLINE_EXCEEDED, and the entity restarts.
    #[arg(long, env = "STRATA_COMMAND_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse)]
    command_timeout: Duration,
    /// Commands that may wait for one entity; more are refused at once with
    /// 429 / RESOURCE_EXHAUSTED and Retry-After.
    #[arg(long, env = "STRATA_ENTITY_MAILBOX", default_value_t = EntityLimits::DEFAULT_MAILBOX)]
    entity_mailbox: usize,
    /// Entities active at once; admitting one more passivates the least recently used.
    #[arg(long, env = "STRATA_MAX_ACTIVE_ENTITIES", default_value_t = EntityLimits::DEFAULT_MAX_ACTIVE)]
    max_active_entities: usize,
    /// Estimated bytes of state the active entities may hold together (their
    /// snapshots and events, values, CRDT states); past it the least recently
    /// used are passivated.
    #[arg(long, env = "STRATA_MAX_ACTIVE_BYTES", default_value_t = EntityLimits::DEFAULT_MAX_ACTIVE_BYTES)]
    max_active_bytes: usize,
    /// The control plane's data-plane address (e.g. http://127.0.0.1:9101), or
    /// every node's, comma-separated (calls fail over between them). With it the
    /// sidecar joins a deployment: it owns only the shards it is given.
    #[arg(long, env = "STRATA_CONTROL_PLANE", requires_all = ["instance_id", "service"])]
    control_plane: Option<String>,
    /// How long one call to the control plane may take (e.g. 10s).
    #[arg(long, env = "STRATA_CONTROL_PLANE_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    control_plane_timeout: Duration,
    /// This instance's id in the registry (with --control-plane).
    #[arg(long, env = "STRATA_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The registry's service this instance belongs to (with --control-plane).
    #[arg(long, env = "STRATA_SERVICE")]
    service: Option<String>,
    /// The revision of its service this instance runs, set by the runtime that
    /// starts it: the control plane moves shards between revisions by it, and
    /// every response says it (`strata-revision`).
    #[arg(long, env = "STRATA_REVISION", default_value_t = 0)]
    revision: u64,
    /// The address gateways use to reach this sidecar; default: the listen address.
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// Bearer token for the control plane.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    control_plane_tls: crate::tls::ControlPlaneTlsArgs,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if let Some(path) = args.store.strip_prefix("sqlite://") {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the store's folder {}", parent.display()))?;
        }
    }
    let listen = SocketAddr::new(args.http_host, args.http_port);
    let membership = match (args.control_plane, args.instance_id, args.service) {
        (Some(control_plane), Some(instance_id), Some(service)) => Some(MembershipConfig {
            control_plane,
            token: args.token,
            instance_id,
            service,
            advertise: args.advertise.unwrap_or_else(|| listen.to_string()),
            admin_advertise: String::new(),
            timeout: args.control_plane_timeout,
            tls: args.control_plane_tls.client_tls(),
            revision: args.revision,
        }),
        _ => None,
    };
    let config = SidecarConfig {
        function_host: args.user_function_host,
        function_port: args.user_function_port,
        listen,
        admin_listen: SocketAddr::new(args.http_host, args.admin_port),
        store_url: args.store,
        max_body: args.max_body_bytes,
        discovery_patience: args.discovery_timeout,
        command_timeout: args.command_timeout,
        entity_limits: EntityLimits {
            mailbox: args.entity_mailbox,
            max_active: args.max_active_entities,
            max_active_bytes: args.max_active_bytes,
        },
        membership,
    };
    sidecar::run(config, crate::shutdown_signal()).await?;
    Ok(())
}
