//! `strata-bench`: measurements that go into docs/benchmarks.md. Each scenario
//! measures Strata beside a baseline in the same run, on this machine, and prints
//! medians and ratios (machines here are noisy; single numbers lie).

mod charts;
mod cpu;
mod footprint;
mod load;
mod registry;
mod scaling;
mod stats;
mod suite;
mod systems;
mod throughput;
mod timers;
mod traces;
mod tracing_cost;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "strata-bench", about = "Strata benchmarks (build with --release)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Every scenario of docs/benchmarks.md beside its baselines in one run, and
    /// the file rewritten with tables and charts (what `scripts/bench` runs).
    All(suite::Args),
    /// Proxy startup time to ready and resident memory, idle and with many active
    /// carts; the baseline is the user function itself (a plain tonic server).
    Footprint(footprint::Args),
    /// Acknowledged writes per second through the proxy, to one hot cart and to
    /// many carts; the baseline is one durable SQLite write per command.
    Throughput(throughput::Args),
    /// Control-plane registry writes per second and latency on a three-node cluster
    /// (baseline: a one-node cluster, no replication), and the time from a leader's
    /// `kill -9` until writes succeed again.
    Registry(registry::Args),
    /// `strata dev`: cold start from zero beside warm latency, and the time from a
    /// step in load until a new instance serves.
    Scaling(scaling::Args),
    /// Invocation traces (timers, Poisson arrivals, bursts, a mix of many services)
    /// under Knative's fixed keep-alive beside the idle-time histogram policy: cold
    /// starts, p99 latency and idle instance-seconds, simulated and live.
    Traces(traces::Args),
    /// Durable timers: 100,000 pending (store bytes and sidecar memory beside the
    /// same carts without timers), and 1,000 falling due at once under `GetCart`
    /// load beside the same load before; the value cart through `strata dev`.
    Timers(timers::Settings),
    /// What tracing costs: the hot cart with tracing off, with `strata dev`'s
    /// trace store, and with the store and a collector sampling every call.
    Tracing(tracing_cost::Args),
    /// The gateway hop alone: one client and many, through the gateway beside
    /// straight to the sidecar, then the gRPC chain; for profiling the hop.
    Hop(suite::HopArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::All(args) => suite::run(args).await,
        Scenario::Footprint(args) => footprint::run(args).await,
        Scenario::Throughput(args) => throughput::run(args).await,
        Scenario::Registry(args) => registry::run(args).await,
        Scenario::Scaling(args) => scaling::run(args).await,
        Scenario::Timers(settings) => timers::run(settings).await,
        Scenario::Traces(args) => traces::run(args).await,
        Scenario::Tracing(args) => tracing_cost::run(args).await,
        Scenario::Hop(args) => suite::hop(args).await,
    }
}
