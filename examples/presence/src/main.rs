//! Runs the presence user function: logging filtered by `RUST_LOG` (default
//! `info`), then the SDK's gRPC server on `HOST`:`PORT` (default `127.0.0.1:8080`)
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match presence::service().serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: {error}");
            ExitCode::FAILURE
        }
    }
}
