//! What tracing costs: the hot cart (one cart, `AddItem` from every client)
//! against four `strata dev`s that differ only in tracing: off
//! (`--trace-store-bytes 0`, no collector), the trace store at its default
//! sampling (one call in a hundred traced, a record of the slow and failed
//! rest), the store with every call traced (`STRATA_TRACE_SAMPLE_RATIO=1`), and
//! the store plus an OTLP/gRPC collector with every call sampled
//! (`OTEL_TRACES_SAMPLER=always_on`; the collector is
//! `strata_e2e::otlp::Receiver`, in this process). Rounds alternate the four.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use strata_e2e::otlp::Receiver;

use crate::{
    cpu,
    load::{self, Outcome, Plan},
    stats::median,
    systems::{Api, StrataDev},
};

pub const OFF: &str = "tracing off";
pub const DEFAULT: &str = "trace store, default sampling (1 in 100)";
pub const STORE_EVERY_CALL: &str = "trace store, every call sampled";
pub const EVERY_CALL: &str = "trace store + collector, every call sampled";

/// The modes in the order the tables show them.
const MODES: [&str; 4] = [OFF, DEFAULT, STORE_EVERY_CALL, EVERY_CALL];

/// The scenario's name in the CPU table.
pub const SCENARIO: &str = "tracing";

/// Each mode's runs (one per round) and CPU per request.
pub struct Results {
    pub runs: BTreeMap<&'static str, Vec<Outcome>>,
    pub cpu: BTreeMap<&'static str, Vec<cpu::PerRequest>>,
}

/// `strata-bench tracing`: the scenario alone.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds; each runs the four modes in turn.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds of load per mode and round.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Runs the scenario and prints its throughput table and each mode's median CPU
/// per request by part.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("strata-bench-tracing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let results = measure(&root, args.rounds, args.clients, Duration::from_secs(args.seconds)).await;
    let _ = std::fs::remove_dir_all(&root);
    let results = results?;
    let mut md = String::new();
    table(&mut md, &results)?;
    writeln!(md, "| tracing | CPU per request (µs), by part |\n|---|---|")?;
    for name in MODES {
        let Some(runs) = results.cpu.get(name) else {
            continue;
        };
        let median = cpu::median(runs);
        let total: f64 = median.values().sum();
        let parts: Vec<String> = median
            .iter()
            .filter(|(_, micros)| **micros >= 0.5)
            .map(|(part, micros)| format!("{part} {micros:.0}"))
            .collect();
        writeln!(md, "| {name} | {total:.0} in all: {} |", parts.join(", "))?;
    }
    println!("{md}");
    Ok(())
}

/// The trace store's ceiling.
const STORE_BYTES: &str = "33554432";

/// Runs the hot cart `rounds` times against each mode, `clients` clients for
/// `duration` each.
pub async fn measure(dir: &Path, rounds: usize, clients: usize, duration: Duration) -> anyhow::Result<Results> {
    let collector = Receiver::start().await;
    let off = StrataDev::with_cart_configured(&dir.join("off"), &["--trace-store-bytes", "0"], &[]).await?;
    let default =
        StrataDev::with_cart_configured(&dir.join("default"), &["--trace-store-bytes", STORE_BYTES], &[]).await?;
    let store_every_call = StrataDev::with_cart_configured(
        &dir.join("store-every-call"),
        &["--trace-store-bytes", STORE_BYTES],
        &[("STRATA_TRACE_SAMPLE_RATIO", "1")],
    )
    .await?;
    let endpoint = collector.endpoint();
    let every_call = StrataDev::with_cart_configured(
        &dir.join("every-call"),
        &["--trace-store-bytes", STORE_BYTES],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
    )
    .await?;
    let modes = [
        (OFF, &off),
        (DEFAULT, &default),
        (STORE_EVERY_CALL, &store_every_call),
        (EVERY_CALL, &every_call),
    ];
    let mut results = Results {
        runs: BTreeMap::new(),
        cpu: BTreeMap::new(),
    };
    for round in 0..rounds {
        for (name, dev) in modes {
            let plan: Plan = Arc::new(|client, _n| Api::Cart.add("hot", &format!("p{}", client % 8)));
            let system = cpu::System {
                roots: vec![dev.pid()],
                postgres: false,
            };
            let before = cpu::Snapshot::take();
            let outcome = load::closed(dev.gateway, clients, duration, plan)
                .await
                .with_context(|| format!("the hot cart with {name}"))?;
            results
                .cpu
                .entry(name)
                .or_default()
                .push(cpu::Snapshot::take().since(&before, outcome.answered, &system));
            eprintln!(
                "bench: tracing round {round}: {name:<46} {:>8.0} req/s  p99 {:.2} ms  refused {}",
                outcome.per_second(),
                outcome.ms(99.0),
                outcome.refused
            );
            results.runs.entry(name).or_default().push(outcome);
        }
    }
    Ok(results)
}

/// The throughput table: each mode's median req/s and p99, and both as
/// ratios to tracing off.
pub fn table(md: &mut String, results: &Results) -> anyhow::Result<()> {
    let summary = |name: &str| -> Option<(f64, f64, u64)> {
        let runs = results.runs.get(name)?;
        let per_second: Vec<f64> = runs.iter().map(Outcome::per_second).collect();
        let p99: Vec<f64> = runs.iter().map(|run| run.ms(99.0)).collect();
        Some((
            median(&per_second),
            median(&p99),
            runs.iter().map(|run| run.refused).sum(),
        ))
    };
    let Some((off_rate, off_p99, _)) = summary(OFF) else {
        return Ok(());
    };
    writeln!(
        md,
        "| tracing | req/s | p99 | refused | vs tracing off |\n|---|---|---|---|---|"
    )?;
    for name in MODES {
        let Some((rate, p99, refused)) = summary(name) else {
            continue;
        };
        writeln!(
            md,
            "| {name} | {rate:.0} | {p99:.3} ms | {refused} | {:.1}% req/s, {:.2}x p99 |",
            (rate / off_rate - 1.0) * 100.0,
            p99 / off_p99
        )?;
    }
    writeln!(md)?;
    Ok(())
}
