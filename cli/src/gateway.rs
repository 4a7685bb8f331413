//! `strata gateway`: the edge of a deployment, following a control plane's routes.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use strata_proxy::gateway::{self, GatewayConfig};

use crate::tls::{ControlPlaneTlsArgs, IngressTlsArgs};

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to serve every deployed service on (gRPC, gRPC-web, HTTP+JSON).
    #[arg(long, env = "STRATA_GATEWAY_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Where /metrics and /healthz are served (never on --listen); port 0 picks
    /// a free port, which the log names.
    #[arg(long, env = "STRATA_GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// The control plane's data-plane address (a node's --listen), e.g. http://127.0.0.1:9101,
    /// or every node's, comma-separated (calls fail over between them).
    #[arg(long, env = "STRATA_CONTROL_PLANE")]
    control_plane: String,
    /// How long one call to the control plane may take (e.g. 10s).
    #[arg(long, env = "STRATA_CONTROL_PLANE_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    control_plane_timeout: Duration,
    /// How long a call passed on to a sidecar may take when the client set no
    /// shorter grpc-timeout (then 504 / DEADLINE_EXCEEDED).
    #[arg(long, env = "STRATA_FORWARD_TIMEOUT", default_value = "65s", value_parser = crate::duration::parse)]
    forward_timeout: Duration,
    /// Bearer token for the control plane (the admin token).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = strata_proxy::DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// Requests that may wait per service while it scales from zero (more get 503).
    #[arg(long, env = "STRATA_HOLD_CAPACITY", default_value_t = 1000)]
    hold_capacity: usize,
    /// How long a request may wait for a service to scale from zero (then 503).
    #[arg(long, env = "STRATA_HOLD_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse)]
    hold_timeout: Duration,
    #[command(flatten)]
    ingress_tls: IngressTlsArgs,
    #[command(flatten)]
    control_plane_tls: ControlPlaneTlsArgs,
}

impl GatewayArgs {
    pub fn config(&self) -> GatewayConfig {
        GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            control_plane: self.control_plane.clone(),
            token: self.token.clone(),
            max_body: self.max_body_bytes,
            hold_capacity: self.hold_capacity,
            hold_timeout: self.hold_timeout,
            forward_timeout: self.forward_timeout,
            control_plane_timeout: self.control_plane_timeout,
            tls: self.ingress_tls.files(),
            control_plane_tls: self.control_plane_tls.client_tls(),
        }
    }
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    gateway::run(args.config(), crate::shutdown_signal()).await?;
    Ok(())
}
