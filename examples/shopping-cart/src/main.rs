//! Runs the shopping cart user function: logging filtered by `RUST_LOG` (default
//! `info`), then the SDK's gRPC server on `HOST`:`PORT` (default `127.0.0.1:8080`)
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs by RUST_LOG and STRATA_LOG_FORMAT; the handlers' spans exported over
    // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let _telemetry = match strata_telemetry::init(Some("shopping-cart"), "info") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("shopping-cart: {error}");
            return ExitCode::FAILURE;
        }
    };
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line naming what was wrong (e.g. the variable), without a backtrace.
            eprintln!("shopping-cart: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    shopping_cart::service()
        .serve()
        .await
        .context("cannot serve the shopping cart")
}
