//! Runs the likes user function: logging filtered by `RUST_LOG` (default
//! `info`), then the SDK's gRPC server on `HOST`:`PORT` (default `127.0.0.1:8080`)
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs by RUST_LOG and STRATA_LOG_FORMAT; the handlers' spans exported over
    // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let _telemetry = match strata_telemetry::init(Some("likes"), "info") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("likes: {error}");
            return ExitCode::FAILURE;
        }
    };
    match likes::service().serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("likes: {error}");
            ExitCode::FAILURE
        }
    }
}
