//! `strata proxy`: the standalone sidecar. Settings come from flags or from the
//! environment variables CloudState's proxy used, so existing deployments work.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use clap::Args;
use strata_proxy::{
    membership::MembershipConfig,
    sidecar::{self, SidecarConfig},
};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Host of the user function's gRPC server.
    #[arg(long, env = "USER_FUNCTION_HOST", default_value = "127.0.0.1")]
    user_function_host: String,
    /// Port of the user function's gRPC server.
    #[arg(long, env = "USER_FUNCTION_PORT", default_value_t = 8080)]
    user_function_port: u16,
    /// Port to serve the function's API on (gRPC, gRPC-web and HTTP+JSON).
    #[arg(long, env = "HTTP_PORT", default_value_t = 9000)]
    http_port: u16,
    /// Address to listen on; 0.0.0.0 to serve other machines.
    #[arg(long, env = "HTTP_HOST", default_value = "127.0.0.1")]
    http_host: std::net::IpAddr,
    /// Where state lives: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "STRATA_STORE", default_value = "sqlite://.strata/strata.db")]
    store: String,
    /// Largest request body accepted, in bytes (larger: 413 / RESOURCE_EXHAUSTED).
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = strata_proxy::ingress::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// How long to wait for the user function to answer discovery (e.g. 30s, 2m).
    #[arg(long, env = "STRATA_DISCOVERY_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse)]
    discovery_timeout: Duration,
    /// How long the function may take to answer one command; a client's shorter
    /// grpc-timeout wins. Past it: 504 / DEADLINE_EXCEEDED, and the entity restarts.
    #[arg(long, env = "STRATA_COMMAND_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse)]
    command_timeout: Duration,
    /// The control plane's data-plane address (e.g. http://127.0.0.1:9101). With
    /// it the sidecar joins a deployment: it owns only the shards it is given.
    #[arg(long, env = "STRATA_CONTROL_PLANE", requires_all = ["instance_id", "service"])]
    control_plane: Option<String>,
    /// This instance's id in the registry (with --control-plane).
    #[arg(long, env = "STRATA_INSTANCE_ID")]
    instance_id: Option<String>,
    /// The registry's service this instance belongs to (with --control-plane).
    #[arg(long, env = "STRATA_SERVICE")]
    service: Option<String>,
    /// The address gateways use to reach this sidecar; default: the listen address.
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// Bearer token for the control plane.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
        }),
        _ => None,
    };
    let config = SidecarConfig {
        function_host: args.user_function_host,
        function_port: args.user_function_port,
        listen,
        store_url: args.store,
        max_body: args.max_body_bytes,
        discovery_patience: args.discovery_timeout,
        command_timeout: args.command_timeout,
        membership,
    };
    sidecar::run(config, crate::shutdown_signal()).await?;
    Ok(())
}
