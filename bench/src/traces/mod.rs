//! The trace benchmark: synthetic invocation traces (timers, Poisson arrivals, bursts, a
//! mix of many services) replayed under Knative's fixed keep-alive and under the
//! idle-time histogram policy, side by side in one run. Reported: the fraction of
//! requests that waited for a cold start, p99 latency, and idle instance-seconds (the
//! cost). Long traces replay through the scaling decision in simulated time; short ones
//! through real `strata dev` processes in real time, which also measures the cold start
//! the simulation then uses.

mod live;
mod shape;
mod simulate;

use strata_autoscaler::{HistogramPolicy, KeepAlive, ScalingSettings};

use self::shape::{arrivals, mix, singles, Rng, Shape};
use self::simulate::{replay, Model, Outcome};
use crate::stats::{median, percentile};

#[derive(clap::Args)]
pub struct Args {
    /// Hours of each simulated trace.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Services in the simulated mix.
    #[arg(long, default_value_t = 100)]
    services: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Minutes of real-time replay through strata dev; 0 runs the simulation alone.
    #[arg(long, default_value_t = 20.0)]
    live_minutes: f64,
    /// The simulated cold start (ms) when no live run measures it.
    #[arg(long, default_value_t = 400.0)]
    cold_start_ms: f64,
}

const POLICIES: [&str; 2] = ["fixed", "histogram"];

fn settings(policy: &str) -> ScalingSettings {
    let keep_alive = match policy {
        "histogram" => KeepAlive::Histogram(HistogramPolicy::default()),
        _ => KeepAlive::Fixed,
    };
    ScalingSettings {
        keep_alive,
        ..ScalingSettings::default()
    }
}

/// One row: the same trace under both policies.
struct Row {
    name: String,
    shape: String,
    fixed: Outcome,
    histogram: Outcome,
}

fn print_table(title: &str, rows: &[Row], unit_hours: bool) {
    println!("\n{title}\n");
    let cost = if unit_hours {
        "idle instance-hours"
    } else {
        "idle instance-seconds"
    };
    println!("| trace | requests | cold starts, fixed | cold starts, histogram | p99 ms, fixed | p99 ms, histogram | {cost}, fixed | {cost}, histogram |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let cold = |outcome: &Outcome| {
            let share = 100.0 * outcome.cold as f64 / outcome.requests.max(1) as f64;
            format!("{} ({share:.1}%)", outcome.cold)
        };
        let idle = |outcome: &Outcome| {
            let seconds = outcome.idle_instance_seconds();
            if unit_hours {
                format!("{:.2}", seconds / 3_600.0)
            } else {
                format!("{seconds:.0}")
            }
        };
        println!(
            "| {} ({}) | {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            row.name,
            row.shape,
            row.fixed.requests,
            cold(&row.fixed),
            cold(&row.histogram),
            percentile(&row.fixed.latencies_ms, 99.0),
            percentile(&row.histogram.latencies_ms, 99.0),
            idle(&row.fixed),
            idle(&row.histogram),
        );
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cold_start_ms = args.cold_start_ms;
    if args.live_minutes > 0.0 {
        let live_traces: Vec<(&str, Shape)> = vec![
            (
                "timer-45s",
                Shape::Timer {
                    period: 45.0,
                    jitter: 0.5,
                },
            ),
            ("poisson-30s", Shape::Poisson { mean: 30.0 }),
            (
                "bursts-2m",
                Shape::Bursts {
                    mean: 120.0,
                    size: 10,
                    spread: 0.2,
                },
            ),
        ];
        println!(
            "live: {} traces x {} policies through strata dev, {} minutes in real time...",
            live_traces.len(),
            POLICIES.len(),
            args.live_minutes
        );
        let (minutes, seed) = (args.live_minutes, args.seed);
        let runs = live_traces.iter().flat_map(|&(name, shape)| {
            POLICIES.iter().map(move |&policy| {
                let label = format!("{name}-{policy}");
                async move { live::replay(&label, shape, policy, minutes, seed).await }
            })
        });
        let mut outcomes = futures_join(runs.collect()).await?.into_iter();
        let mut rows = Vec::new();
        for (name, shape) in &live_traces {
            rows.push(Row {
                name: (*name).to_owned(),
                shape: shape.to_string(),
                fixed: outcomes.next().expect("one outcome per run"),
                histogram: outcomes.next().expect("one outcome per run"),
            });
        }
        print_table(
            &format!(
                "Live, through strata dev, {} minutes each (cold: a request over {} ms)",
                args.live_minutes,
                live::COLD_MS
            ),
            &rows,
            false,
        );
        let cold: Vec<f64> = rows
            .iter()
            .flat_map(|row| [&row.fixed, &row.histogram])
            .flat_map(|outcome| outcome.latencies_ms.iter().copied())
            .filter(|ms| *ms >= live::COLD_MS)
            .collect();
        let warm: Vec<f64> = rows
            .iter()
            .flat_map(|row| [&row.fixed, &row.histogram])
            .flat_map(|outcome| outcome.latencies_ms.iter().copied())
            .filter(|ms| *ms < live::COLD_MS)
            .collect();
        println!(
            "\nlive latencies: warm p50 {:.1} ms p99 {:.1} ms ({} requests); cold p50 {:.0} ms p99 {:.0} ms ({} requests)",
            median(&warm),
            percentile(&warm, 99.0),
            warm.len(),
            median(&cold),
            percentile(&cold, 99.0),
            cold.len()
        );
        if !cold.is_empty() {
            cold_start_ms = median(&cold);
        }
    }

    let model = Model {
        cold_start: cold_start_ms / 1_000.0,
        service_time: 0.002,
    };
    let duration = args.hours * 3_600.0;
    let mut rows = Vec::new();
    for (index, (name, shape)) in singles().into_iter().enumerate() {
        let trace = arrivals(shape, duration, &mut Rng::new(args.seed + index as u64));
        let [fixed, histogram] = POLICIES.map(|policy| replay(&trace, duration, &settings(policy), model));
        rows.push(Row {
            name: name.to_owned(),
            shape: shape.to_string(),
            fixed,
            histogram,
        });
    }
    let shapes = mix(args.services, &mut Rng::new(args.seed));
    let mut fixed = Outcome::default();
    let mut histogram = Outcome::default();
    for (index, shape) in shapes.iter().enumerate() {
        let trace = arrivals(*shape, duration, &mut Rng::new(args.seed * 1_000 + index as u64));
        fixed.add(replay(&trace, duration, &settings("fixed"), model));
        histogram.add(replay(&trace, duration, &settings("histogram"), model));
    }
    rows.push(Row {
        name: "mix".to_owned(),
        shape: format!("{} services", args.services),
        fixed,
        histogram,
    });
    print_table(
        &format!(
            "Simulated, {} hours each, cold start {:.0} ms, through Kpa::decide",
            args.hours, cold_start_ms
        ),
        &rows,
        true,
    );
    Ok(())
}

/// Runs the futures concurrently, in order of their results.
async fn futures_join<T>(
    runs: Vec<impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static>,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
{
    let handles: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await??);
    }
    Ok(results)
}
