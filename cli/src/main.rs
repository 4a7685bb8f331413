//! `strata`: one thin binary for every role. This file only parses the command
//! line, sets up logging, and hands over to the role's library code.

/// `print!` for the verbs that print for a reader (`strata revisions cart | head`):
/// a reader that goes away ends the command quietly, as it ends Unix tools,
/// instead of the panic `print!` makes of a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// [`say!`] with a newline.
macro_rules! sayln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod api_client;
mod audit;
mod control_plane;
mod crd;
mod delete;
mod deploy;
mod describe;
mod dev;
mod duration;
mod gateway;
mod logs;
mod proxy;
mod render;
mod revisions;
mod rollback;
mod schedule;
mod services;
mod stdout;
mod tls;
mod traffic;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: stateful serverless, CloudState-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine: control plane, gateway, runtime, autoscaler.
    Dev(dev::DevArgs),
    /// Register a service (or update it): the runtime runs its command, scaled on load.
    Deploy(deploy::DeployArgs),
    /// Run the sidecar proxy beside one user function (CloudState-compatible).
    Proxy(proxy::ProxyArgs),
    /// Run the gateway: serve every deployed service and route to its owners.
    Gateway(gateway::GatewayArgs),
    /// Run one node of the Raft-replicated control plane.
    ControlPlane(Box<control_plane::ControlPlaneArgs>),
    /// List services with their desired and ready instances.
    Services(services::ServicesArgs),
    /// List a service's revisions (what each ran, who deployed it, when), the serving one marked.
    Revisions(revisions::RevisionsArgs),
    /// Serve an earlier revision again (the previous one, or --to N), or end a canary.
    Rollback(rollback::RollbackArgs),
    /// Give a revision a canary's share of the traffic (REV=10), promote it (REV=100) or end it (REV=0).
    Traffic(traffic::TrafficArgs),
    /// Make the canary the serving revision.
    Promote(traffic::PromoteArgs),
    /// Print the audit log: every management write, who made it, and its outcome.
    Audit(audit::AuditArgs),
    /// Create, list or delete cron schedules whose calls the control plane makes.
    Schedule(schedule::ScheduleArgs),
    /// Print what a service's instances wrote (function and sidecar), with time and instance.
    Logs(logs::LogsArgs),
    /// Show a service: settings, instances, shards, subscriptions, scale decisions, recent traffic.
    Describe(describe::DescribeArgs),
    /// Delete a service (asks first unless --yes); its entities' state stays in the store.
    Delete(delete::DeleteArgs),
    /// Print the StatefulService CustomResourceDefinition (YAML) for Kubernetes.
    Crd(crd::CrdArgs),
    /// Print every object the operator would apply for the StatefulServices of a file (`-`: stdin), as a YAML List.
    Render(render::RenderArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Proxy(args) => args.worker_threads,
        _ => 0,
    };
    let runtime = match async_runtime(threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP/gRPC exporter needs it. Dropped (flushing
    // the spans still queued) before the runtime is.
    let telemetry = {
        let _runtime = runtime.enter();
        let trace_store = match &cli.command {
            Command::Dev(args) => dev::own_trace_store(args),
            _ => None,
        };
        strata_telemetry::init_with_trace_store(cli.command.span_source(), "info,h2=warn,hyper=warn", trace_store)
    };
    let _telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("strata: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Deploy(args) => deploy::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::ControlPlane(args) => control_plane::run(*args).await,
            Command::Services(args) => services::run(args).await,
            Command::Revisions(args) => revisions::run(args).await,
            Command::Rollback(args) => rollback::run(args).await,
            Command::Traffic(args) => traffic::traffic(args).await,
            Command::Promote(args) => traffic::promote(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Schedule(args) => schedule::run(args).await,
            Command::Logs(args) => logs::run(args).await,
            Command::Describe(args) => describe::run(args).await,
            Command::Delete(args) => delete::run(args).await,
            Command::Crd(args) => crd::run(args),
            Command::Render(args) => render::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The service name the process's spans carry (`OTEL_SERVICE_NAME` wins);
    /// `None` for the commands that serve no calls, which export nothing.
    fn span_source(&self) -> Option<&'static str> {
        match self {
            Command::Dev(_) => Some("strata"),
            Command::Proxy(_) => Some("strata-proxy"),
            Command::Gateway(_) => Some("strata-gateway"),
            Command::ControlPlane(_) => Some("strata-control-plane"),
            _ => None,
        }
    }
}

/// The async runtime: `threads` workers, or tokio's default (a worker per CPU
/// core) for 0. One worker still gets its own thread beside the main one:
/// measured, that served calls faster than a current-thread runtime.
fn async_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Resolves on Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
