//! `strata-bench all`: every scenario of docs/benchmarks.md in one run, Strata
//! beside what users would pick instead, each measured the way a user meets it
//! (processes started and deployed through the CLI, HTTP+JSON or gRPC from
//! another process on loopback). Baselines and Strata alternate within each
//! round; medians over rounds and ratios go into the tables, and the file is
//! rewritten with PNG charts beside it. `--quick` runs every scenario briefly and
//! fails if any of them erred or had a request refused.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use prost::Message as _;
use strata_e2e::{cart_client, free_port, shoppingcart::GetShoppingCart, start_shopping_cart};

use crate::{
    charts::{self, Group},
    cpu,
    footprint::{self, Footprint},
    load::{self, Outcome, Plan},
    registry::{self, RegistryResults},
    stats::{median, percentile},
    systems::{fresh_database, Api, Endpoint, PgCart, Restate, RestatePrograms, StrataDev},
    timers, tracing_cost,
};

#[derive(clap::Args)]
pub struct Args {
    /// A few seconds per scenario; fails unless every scenario ran without errors.
    #[arg(long)]
    quick: bool,
    /// The Markdown file to rewrite (charts go in `benchmarks/` beside it).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// A PostgreSQL server's admin URL: Strata's second store and the baseline's database.
    #[arg(long, env = "STRATA_BENCH_POSTGRES_URL")]
    postgres: String,
    /// Restate's server (from the npm package `@restatedev/restate-server`).
    #[arg(long)]
    restate_server: Option<PathBuf>,
    /// The Restate cart (bench/restate-cart).
    #[arg(long)]
    restate_cart: Option<PathBuf>,
    /// Why Restate could not be built or installed; its rows then say so.
    #[arg(long)]
    restate_blocked: Option<String>,
    /// The command line to print as the way to reproduce the numbers.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}

/// How long and how hard each scenario runs.
struct Settings {
    seconds: u64,
    rounds: usize,
    clients: usize,
    keys: usize,
    open_rate: f64,
    single_seconds: u64,
    cold_trials: usize,
    footprint_runs: usize,
    footprint_carts: usize,
    registry: registry::Args,
    timers: timers::Settings,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                seconds: 1,
                rounds: 1,
                clients: 8,
                keys: 500,
                open_rate: 100.0,
                single_seconds: 1,
                cold_trials: 1,
                footprint_runs: 2,
                footprint_carts: 500,
                registry: registry::Args {
                    seconds: 1,
                    clients: vec![1, 8],
                    repeats: 1,
                    failovers: 1,
                    strata: None,
                },
                timers: timers::Settings {
                    pending: 500,
                    firing: 50,
                    clients: 8,
                    seconds: 1,
                },
            }
        } else {
            Settings {
                seconds: 5,
                rounds: 3,
                clients: 64,
                keys: 10_000,
                open_rate: 1_000.0,
                single_seconds: 3,
                cold_trials: 20,
                footprint_runs: 10,
                footprint_carts: 100_000,
                registry: registry::Args {
                    seconds: 3,
                    clients: vec![1, 16, 64],
                    repeats: 1,
                    failovers: 7,
                    strata: None,
                },
                timers: timers::Settings {
                    pending: 100_000,
                    firing: 1_000,
                    clients: 16,
                    seconds: 5,
                },
            }
        }
    }
}

/// Which request a scenario's client sends next, in a system's spelling.
type Mix = Arc<dyn Fn(Api, usize, u64) -> load::Request + Send + Sync>;

/// One system's runs of one scenario (one outcome per round).
type Runs = BTreeMap<String, Vec<Outcome>>;

/// Medians over rounds of one system's runs.
#[derive(Clone, Copy)]
struct Summary {
    per_second: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    refused: u64,
}

fn summarize(runs: &[Outcome]) -> Summary {
    let pick = |f: &dyn Fn(&Outcome) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Summary {
        per_second: pick(&|o| o.per_second()),
        p50: pick(&|o| o.ms(50.0)),
        p99: pick(&|o| o.ms(99.0)),
        p999: pick(&|o| o.ms(99.9)),
        refused: runs.iter().map(|o| o.refused).sum(),
    }
}

/// Everything the run measured, for the report.
struct Results {
    /// Closed-loop scenarios by name, in order: (title, runs by system).
    closed: Vec<(&'static str, String, Runs)>,
    open: Runs,
    single: Runs,
    grpc: BTreeMap<&'static str, Vec<f64>>,
    cold_ms: Vec<f64>,
    cold_refused: usize,
    warm_ms: Vec<f64>,
    footprint: Footprint,
    registry: RegistryResults,
    tracing: tracing_cost::Results,
    timers: timers::TimerResults,
    /// CPU per request by part, per (scenario, system), every round.
    cpu_use: CpuUse,
    problems: Vec<String>,
}

type CpuUse = BTreeMap<(&'static str, String), Vec<cpu::PerRequest>>;

/// The one-client scenario's key in [`Results::cpu_use`].
const ONE_CLIENT: &str = "one client";

const GATEWAY_SQLITE: &str = "Strata gateway (SQLite)";
const GATEWAY_PG: &str = "Strata gateway (PostgreSQL)";
const SIDECAR: &str = "Strata sidecar, direct (SQLite)";
const PG_CART: &str = "stateless function + PostgreSQL";
const RESTATE: &str = "Restate";

pub async fn run(args: Args) -> anyhow::Result<()> {
    charts::load_font()?;
    let settings = Settings::new(args.quick);
    let started = Instant::now();
    let root = std::env::temp_dir().join(format!("strata-bench-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut problems = Vec::new();

    // --- the systems, each as a user runs it
    eprintln!("bench: starting strata dev (SQLite), strata dev (PostgreSQL), the PostgreSQL cart, Restate");
    let dev_sqlite = StrataDev::with_cart(&root.join("dev-sqlite"), None).await?;
    // Plain TCP, as the PostgreSQL cart dials it (tokio-postgres' NoTls): both
    // sides on the same transport, whatever TLS the server offers.
    let pg_store = format!(
        "{}?sslmode=disable",
        fresh_database(&args.postgres, "strata_bench").await?
    );
    let dev_pg = StrataDev::with_cart(&root.join("dev-pg"), Some(&pg_store)).await?;
    let pg_cart = PgCart::start(&fresh_database(&args.postgres, "pg_cart").await?)?;
    let restate = match (&args.restate_blocked, &args.restate_server, &args.restate_cart) {
        (Some(reason), _, _) => Err(reason.clone()),
        (None, Some(server), Some(cart)) => Restate::start(
            &RestatePrograms {
                server: server.clone(),
                cart: cart.clone(),
            },
            &root.join("restate"),
        )
        .await
        .map_err(|e| format!("Restate did not start here: {e:#}")),
        _ => Err("no --restate-server and --restate-cart given".into()),
    };
    if let Err(reason) = &restate {
        problems.push(format!("Restate: {reason}"));
    }
    let endpoint = |name: &str, addr: SocketAddr, api: Api, roots: Vec<u32>, postgres: bool| Endpoint {
        name: name.into(),
        addr,
        api,
        system: cpu::System { roots, postgres },
    };
    let sidecar = dev_sqlite.sidecar("cart").await?;
    let strata_sqlite = || vec![dev_sqlite.pid()];
    let mut loaded = vec![
        endpoint(GATEWAY_SQLITE, dev_sqlite.gateway, Api::Cart, strata_sqlite(), false),
        endpoint(GATEWAY_PG, dev_pg.gateway, Api::Cart, vec![dev_pg.pid()], true),
        endpoint(PG_CART, pg_cart.addr, Api::Cart, vec![pg_cart.pid()], true),
    ];
    if let Ok(restate) = &restate {
        loaded.push(endpoint(RESTATE, restate.ingress, Api::Restate, restate.pids(), false));
    }
    let mut single = vec![
        endpoint(GATEWAY_SQLITE, dev_sqlite.gateway, Api::Cart, strata_sqlite(), false),
        endpoint(SIDECAR, sidecar, Api::Cart, strata_sqlite(), false),
        endpoint(PG_CART, pg_cart.addr, Api::Cart, vec![pg_cart.pid()], true),
    ];
    if let Ok(restate) = &restate {
        single.push(endpoint(RESTATE, restate.ingress, Api::Restate, restate.pids(), false));
    }

    // --- closed loop: hot cart, many carts, read-mostly
    let duration = Duration::from_secs(settings.seconds);
    let keys = settings.keys;
    let scenarios: Vec<(&'static str, String, Mix)> = vec![
        (
            "hot",
            format!("one hot cart: `AddItem`, {} clients", settings.clients),
            Arc::new(|api: Api, client: usize, _n: u64| api.add("hot", &format!("p{}", client % 8))),
        ),
        (
            "keys",
            format!("{keys} carts: `AddItem`, {} clients", settings.clients),
            Arc::new(move |api: Api, client: usize, n: u64| api.add(&cart_key(client, n, keys), "p")),
        ),
        (
            "read-mostly",
            format!(
                "read-mostly: 90% `GetCart`, 10% `AddItem` over {keys} carts, {} clients",
                settings.clients
            ),
            Arc::new(move |api: Api, client: usize, n: u64| {
                let key = cart_key(client, n, keys);
                if n % 10 == 9 {
                    api.add(&key, "p")
                } else {
                    api.get(&key)
                }
            }),
        ),
    ];
    let mut closed = Vec::new();
    let mut cpu_use: CpuUse = BTreeMap::new();
    for (name, title, request) in scenarios {
        let mut runs = Runs::new();
        for round in 0..settings.rounds {
            for target in &loaded {
                let api = target.api;
                let request = request.clone();
                let plan: Plan = Arc::new(move |client, n| request(api, client, n));
                let before = cpu::Snapshot::take();
                let outcome = load::closed(target.addr, settings.clients, duration, plan)
                    .await
                    .with_context(|| format!("{name} against {}", target.name))?;
                cpu_use
                    .entry((name, target.name.clone()))
                    .or_default()
                    .push(cpu::Snapshot::take().since(&before, outcome.answered, &target.system));
                eprintln!(
                    "bench: {name} round {round}: {:<36} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  refused {}",
                    target.name,
                    outcome.per_second(),
                    outcome.ms(50.0),
                    outcome.ms(99.0),
                    outcome.refused
                );
                note_refusals(&mut problems, name, &target.name, &outcome);
                runs.entry(target.name.clone()).or_default().push(outcome);
            }
        }
        closed.push((name, title, runs));
    }

    // --- open loop: a fixed rate of AddItem over many carts
    let mut open = Runs::new();
    for _ in 0..settings.rounds {
        for target in &loaded {
            let api = target.api;
            let plan: Plan = Arc::new(move |client, n| api.add(&cart_key(client, n, keys), "p"));
            let outcome = load::open(target.addr, settings.open_rate, 16, duration, plan).await?;
            note_refusals(&mut problems, "open loop", &target.name, &outcome);
            open.entry(target.name.clone()).or_default().push(outcome);
        }
    }

    // --- one client: GetCart of one cart whose state is warm
    let mut singles = Runs::new();
    for target in &single {
        let (_, answer) = load::once(target.addr, &target.api.add("solo", "p")).await?;
        answer.map_err(|e| anyhow::anyhow!("AddItem to {}: {e}", target.name))?;
    }
    for _ in 0..settings.rounds {
        for target in &single {
            let api = target.api;
            let plan: Plan = Arc::new(move |_, _| api.get("solo"));
            let before = cpu::Snapshot::take();
            let outcome = load::closed(target.addr, 1, Duration::from_secs(settings.single_seconds), plan).await?;
            cpu_use
                .entry((ONE_CLIENT, target.name.clone()))
                .or_default()
                .push(cpu::Snapshot::take().since(&before, outcome.answered, &target.system));
            note_refusals(&mut problems, "one client", &target.name, &outcome);
            singles.entry(target.name.clone()).or_default().push(outcome);
        }
    }

    // --- what tracing costs: the hot cart with tracing off, default, every call
    eprintln!("bench: tracing cost");
    let tracing = tracing_cost::measure(&root.join("tracing"), settings.rounds, settings.clients, duration).await?;
    for (mode, outcomes) in &tracing.runs {
        for outcome in outcomes {
            note_refusals(&mut problems, tracing_cost::SCENARIO, mode, outcome);
        }
    }
    for (mode, runs) in &tracing.cpu {
        cpu_use.insert((tracing_cost::SCENARIO, mode.to_string()), runs.clone());
    }

    // --- proxy overhead over gRPC: the function itself, its sidecar, the gateway
    let grpc = grpc_overhead(&dev_sqlite, sidecar, &settings).await?;
    drop(dev_pg);
    drop(pg_cart);
    drop(restate);

    // --- cold start in the user's sequence
    let (cold_ms, cold_refused, warm_ms) = cold_starts(&root.join("dev-cold"), settings.cold_trials).await?;
    if cold_refused > 0 {
        problems.push(format!("cold start: {cold_refused} requests refused"));
    }
    drop(dev_sqlite);

    // --- footprint, registry
    eprintln!("bench: footprint");
    let footprint = footprint::measure(settings.footprint_runs, settings.footprint_carts, 64).await?;
    eprintln!("bench: registry writes and failover");
    let registry = registry::measure(&settings.registry).await?;
    let timers = timers::measure(&root, &settings.timers).await?;
    note_refusals(&mut problems, "timers, no timer due", "value cart", &timers.quiet);
    note_refusals(&mut problems, "timers firing", "value cart", &timers.while_firing);

    let results = Results {
        closed,
        open,
        single: singles,
        grpc,
        cold_ms,
        cold_refused,
        warm_ms,
        footprint,
        registry,
        tracing,
        timers,
        cpu_use,
        problems,
    };
    let charts_dir = args.out.with_file_name("benchmarks");
    std::fs::create_dir_all(&charts_dir)?;
    let report = render(&args, &settings, &results, &charts_dir, started.elapsed())?;
    std::fs::write(&args.out, report)?;
    let _ = std::fs::remove_dir_all(&root);
    eprintln!(
        "bench: wrote {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    if args.quick && !results.problems.is_empty() {
        bail!("the quick run had problems:\n  {}", results.problems.join("\n  "));
    }
    Ok(())
}

/// How long and how hard `strata-bench hop` runs.
#[derive(clap::Args)]
pub struct HopArgs {
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds, alternating gateway and sidecar within each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Clients of the loaded run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

/// The gateway hop alone, for profiling it (`perf record` beside it): one
/// `strata dev` (SQLite) with the cart; `GetCart` of one warm cart over
/// HTTP+JSON through the gateway and straight to its sidecar, with one client
/// and with `--clients`, alternating, then the gRPC chain (function, sidecar,
/// gateway). Prints each run and the medians.
pub async fn hop(args: HopArgs) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("strata-bench-hop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let dev = StrataDev::with_cart(&root.join("dev"), None).await?;
    let sidecar = dev.sidecar("cart").await?;
    let targets = [(GATEWAY_SQLITE, dev.gateway), (SIDECAR, sidecar)];
    let system = cpu::System {
        roots: vec![dev.pid()],
        postgres: false,
    };
    let (_, answer) = load::once(dev.gateway, &Api::Cart.add("solo", "p")).await?;
    answer.map_err(|e| anyhow::anyhow!("AddItem: {e}"))?;
    let duration = Duration::from_secs(args.seconds);
    for clients in [1, args.clients] {
        let mut p50s: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for round in 0..args.rounds {
            for (name, addr) in targets {
                let plan: Plan = Arc::new(|_, _| Api::Cart.get("solo"));
                let before = cpu::Snapshot::take();
                let outcome = load::closed(addr, clients, duration, plan).await?;
                let used = cpu::Snapshot::take().since(&before, outcome.answered, &system);
                let used: Vec<String> = used
                    .iter()
                    .filter(|(_, us)| **us >= 0.5)
                    .map(|(part, us)| format!("{part} {us:.0}"))
                    .collect();
                eprintln!(
                    "hop: {clients} clients round {round}: {name:<36} {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  refused {}\n     CPU µs per request: {}",
                    outcome.per_second(),
                    outcome.ms(50.0),
                    outcome.ms(99.0),
                    outcome.refused,
                    used.join(", ")
                );
                p50s.entry(name).or_default().push(outcome.ms(50.0));
                rates.entry(name).or_default().push(outcome.per_second());
            }
        }
        let (gateway, direct) = (median(&p50s[GATEWAY_SQLITE]), median(&p50s[SIDECAR]));
        println!(
            "{clients} clients, GetCart over HTTP+JSON: p50 gateway {gateway:.3} ms, sidecar {direct:.3} ms \
             (+{:.3} ms); {:.0} vs {:.0} req/s",
            gateway - direct,
            median(&rates[GATEWAY_SQLITE]),
            median(&rates[SIDECAR])
        );
    }
    let settings = Settings {
        single_seconds: args.seconds,
        rounds: args.rounds,
        ..Settings::new(false)
    };
    for (path, latencies) in grpc_overhead(&dev, sidecar, &settings).await? {
        println!("gRPC GetCart, {path}: p50 {:.3} ms", median(&latencies));
    }
    drop(dev);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// A cart for a client's n-th request, spread over `keys` carts.
fn cart_key(client: usize, n: u64, keys: usize) -> String {
    let mixed = (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    format!("c{}", (mixed >> 17) % keys as u64)
}

fn note_refusals(problems: &mut Vec<String>, scenario: &str, system: &str, outcome: &Outcome) {
    if outcome.refused > 0 {
        problems.push(format!(
            "{scenario}, {system}: {} of {} requests refused, first: {}",
            outcome.refused,
            outcome.refused + outcome.answered,
            outcome.first_refusal.as_deref().unwrap_or("?")
        ));
    }
}

/// `GetCart` over gRPC, one client: straight to the function over the CloudState
/// protocol (one entity stream, as the sidecar holds it), to the sidecar, and
/// through the gateway. Latencies in ms, every call of every round.
async fn grpc_overhead(
    dev: &StrataDev,
    sidecar: SocketAddr,
    settings: &Settings,
) -> anyhow::Result<BTreeMap<&'static str, Vec<f64>>> {
    use strata_proto::cloudstate::{
        eventsourced::{
            event_sourced_client::EventSourcedClient, event_sourced_stream_in, event_sourced_stream_out,
            EventSourcedInit, EventSourcedStreamIn,
        },
        Command,
    };
    let duration = Duration::from_secs(settings.single_seconds);
    let function_port = free_port();
    let _function = start_shopping_cart(function_port);
    let mut function = EventSourcedClient::connect(format!("http://127.0.0.1:{function_port}")).await?;
    let (to_function, requests) = tokio::sync::mpsc::channel::<EventSourcedStreamIn>(4);
    to_function
        .send(EventSourcedStreamIn {
            message: Some(event_sourced_stream_in::Message::Init(EventSourcedInit {
                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                entity_id: "solo".into(),
                snapshot: None,
            })),
        })
        .await?;
    let mut replies = function
        .handle(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await?
        .into_inner();
    let payload = prost_types::Any {
        type_url: "type.googleapis.com/com.example.shoppingcart.GetShoppingCart".into(),
        value: GetShoppingCart { user_id: "solo".into() }.encode_to_vec(),
    };
    let mut gateway = cart_client(dev.gateway.port()).await;
    let mut direct = cart_client(sidecar.port()).await;
    let mut latencies: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut command_id = 0;
    let request = || GetShoppingCart { user_id: "solo".into() };
    for _ in 0..settings.rounds {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            command_id += 1;
            let sent = Instant::now();
            to_function
                .send(EventSourcedStreamIn {
                    message: Some(event_sourced_stream_in::Message::Command(Command {
                        entity_id: "solo".into(),
                        id: command_id,
                        name: "GetCart".into(),
                        payload: Some(payload.clone()),
                        streamed: false,
                        metadata: None,
                    })),
                })
                .await?;
            match replies.message().await? {
                Some(out) if matches!(out.message, Some(event_sourced_stream_out::Message::Reply(_))) => {}
                other => bail!("the function answered GetCart with {other:?}"),
            }
            latencies
                .entry("the function itself (CloudState protocol)")
                .or_default()
                .push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let sent = Instant::now();
            direct.get_cart(request()).await?;
            latencies
                .entry("the sidecar (strata proxy)")
                .or_default()
                .push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let sent = Instant::now();
            gateway.get_cart(request()).await?;
            latencies
                .entry("the gateway, then the sidecar")
                .or_default()
                .push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(latencies)
}

/// The issue's sequence, repeated: deploy with `--min-scale 0
/// --scale-to-zero-grace 5s --stable-window 6s`, wait until no instance is
/// ready, then `GET /carts/z1` on a new connection (as `curl` does). Also the
/// same request warm. Returns (cold ms, refused, warm ms).
async fn cold_starts(dir: &Path, trials: usize) -> anyhow::Result<(Vec<f64>, usize, Vec<f64>)> {
    let dev = StrataDev::start(dir, None).await?;
    dev.deploy(
        "cart",
        &[
            "--min-scale",
            "0",
            "--scale-to-zero-grace",
            "5s",
            "--stable-window",
            "6s",
        ],
    )?;
    dev.until_service("cart", |s| s["ready_replicas"] == 1).await?;
    let request = Api::Cart.get("z1");
    let mut warm = Vec::new();
    for _ in 0..trials.max(5) {
        let (took, answer) = load::once(dev.gateway, &request).await?;
        answer.map_err(|e| anyhow::anyhow!("warm GetCart: {e}"))?;
        warm.push(took.as_secs_f64() * 1000.0);
    }
    let (mut cold, mut refused) = (Vec::new(), 0);
    for trial in 0..trials {
        dev.until_service("cart", |s| s["ready_replicas"] == 0 && s["desired_replicas"] == 0)
            .await?;
        let (took, answer) = load::once(dev.gateway, &request).await?;
        match answer {
            Ok(_) => cold.push(took.as_secs_f64() * 1000.0),
            Err(why) => {
                eprintln!("bench: cold start {trial} refused: {why}");
                refused += 1;
            }
        }
        eprintln!("bench: cold start {trial}: {:.1} ms", took.as_secs_f64() * 1000.0);
    }
    Ok((cold, refused, warm))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores ({cpu}), {memory} of memory")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// "met" or "missed", for a target.
fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

fn render(
    args: &Args,
    settings: &Settings,
    results: &Results,
    charts_dir: &Path,
    took: Duration,
) -> anyhow::Result<String> {
    let chart = |name: &str| format!("benchmarks/{name}.png");
    let mut md = String::new();
    let command = if args.quick {
        format!("{} --quick", args.command)
    } else {
        args.command.clone()
    };
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `{command}` on {} in {:.0} s, on {}. {} builds; load from another process on \
         loopback sharing the same cores, so every figure includes the client's cost. Machines here are \
         noisy: each figure is the median of {} round(s), and every baseline ran in the same invocation, \
         alternating with Strata within each round. Targets come from issue 11.\n",
        today(),
        took.as_secs_f64(),
        machine(),
        if args.quick { "Debug" } else { "Release" },
        settings.rounds
    )?;
    if args.quick {
        writeln!(
            md,
            "**This is a quick run** (about a second a scenario): it shows that every scenario runs, not \
             how fast. Run `{}` for the real figures.\n",
            args.command
        )?;
    }
    writeln!(md, "```sh\n{command}\n```\n")?;
    writeln!(
        md,
        "The systems: **Strata** is `strata dev` with the Rust shopping cart deployed by `strata deploy cart \
         --min-scale 1 --max-scale 1` (one instance, so the load is not split by scaling on two cores), \
         its store SQLite (the default) or PostgreSQL (`strata dev --store postgres://...`), called over \
         HTTP+JSON through the gateway. The **stateless function + PostgreSQL** (`bench/pg-cart`) is what \
         most users would write instead: axum and tokio-postgres with a pool of 32 connections, every \
         `AddItem` one transaction that locks the cart's row (`SELECT ... FOR UPDATE`) and upserts the line \
         item, every `GetCart` one query. **Restate** is `restate-server` from the npm package \
         `@restatedev/restate-server` (a one-node server, default settings) with the same cart as a virtual \
         object on the `restate-sdk` crate (`bench/restate-cart`, served with `TCP_NODELAY`, which the SDK's \
         own `HttpServer` leaves off: see bench/notes.md), called through Restate's HTTP ingress. \
         PostgreSQL is Debian's, with `fsync` and `synchronous_commit` on.\n"
    )?;

    // --- targets
    let closed: BTreeMap<&str, BTreeMap<String, Summary>> = results
        .closed
        .iter()
        .map(|(name, _, runs)| (*name, runs.iter().map(|(k, v)| (k.clone(), summarize(v))).collect()))
        .collect();
    let get = |scenario: &str, system: &str| closed.get(scenario).and_then(|s| s.get(system)).copied();
    let single: BTreeMap<String, Summary> = results.single.iter().map(|(k, v)| (k.clone(), summarize(v))).collect();
    let grpc_p50 = |name: &str| {
        results
            .grpc
            .iter()
            .find(|(k, _)| k.starts_with(name))
            .map_or(f64::NAN, |(_, v)| median(v))
    };
    let (function_p50, sidecar_p50, gateway_p50) = (
        grpc_p50("the function"),
        grpc_p50("the sidecar"),
        grpc_p50("the gateway"),
    );
    let cold_p50 = median(&results.cold_ms);
    let cold_p99 = percentile(&results.cold_ms, 99.0);
    let failover = median(&results.registry.failovers_ms);

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | |\n|---|---|---|")?;
    writeln!(
        md,
        "| cold start from zero through the gateway, the user's sequence: p50 ≤ 20 ms, p99 ≤ 100 ms, none refused | p50 {cold_p50:.1} ms, p99 {cold_p99:.1} ms, {} refused of {} | {} |",
        results.cold_refused,
        results.cold_ms.len() + results.cold_refused,
        verdict(cold_p50 <= 20.0 && cold_p99 <= 100.0 && results.cold_refused == 0)
    )?;
    writeln!(
        md,
        "| the gateway adds ≤ 0.1 ms at p50 over the sidecar (gRPC, one client) | +{:.3} ms ({gateway_p50:.3} vs {sidecar_p50:.3} ms) | {} |",
        gateway_p50 - sidecar_p50,
        verdict(gateway_p50 - sidecar_p50 <= 0.1)
    )?;
    writeln!(
        md,
        "| gateway + sidecar add ≤ 0.2 ms at p50 over the function itself | +{:.3} ms ({gateway_p50:.3} vs {function_p50:.3} ms) | {} |",
        gateway_p50 - function_p50,
        verdict(gateway_p50 - function_p50 <= 0.2)
    )?;
    let ratio_row = |md: &mut String,
                     scenario: &str,
                     label: &str,
                     baseline: &str,
                     factor: f64,
                     p99_factor: Option<f64>|
     -> anyhow::Result<()> {
        match (get(scenario, GATEWAY_SQLITE), get(scenario, baseline)) {
            (Some(strata), Some(base)) => {
                let ratio = strata.per_second / base.per_second;
                let p99_ok = p99_factor.is_none_or(|f| strata.p99 * f <= base.p99);
                let p99_text = match p99_factor {
                    Some(f) if f > 1.0 => format!(", p99 {:.2} vs {:.2} ms (needs ≤ 1/{f:.0})", strata.p99, base.p99),
                    Some(_) => format!(", p99 {:.2} vs {:.2} ms (needs lower)", strata.p99, base.p99),
                    None => String::new(),
                };
                writeln!(
                    md,
                    "| {label} | {ratio:.2}x ({:.0} vs {:.0} req/s){p99_text} | {} |",
                    strata.per_second,
                    base.per_second,
                    verdict(ratio >= factor && p99_ok)
                )?;
            }
            _ => writeln!(
                md,
                "| {label} | not measured: {} | **blocked** |",
                blocked_reason(results)
            )?,
        }
        Ok(())
    };
    ratio_row(
        &mut md,
        "hot",
        "one hot cart: ≥ 5x the stateless function's throughput, ≤ 1/5 of its p99",
        PG_CART,
        5.0,
        Some(5.0),
    )?;
    ratio_row(
        &mut md,
        "keys",
        "many carts: ≥ 3x the stateless function",
        PG_CART,
        3.0,
        None,
    )?;
    ratio_row(
        &mut md,
        "read-mostly",
        "read-mostly (90% `GetCart`): ≥ 3x the stateless function",
        PG_CART,
        3.0,
        None,
    )?;
    match (single.get(GATEWAY_SQLITE), single.get(PG_CART)) {
        (Some(strata), Some(base)) => writeln!(
            md,
            "| one `GetCart` (one client) faster at p50 than the stateless function's database read | {:.3} vs {:.3} ms | {} |",
            strata.p50,
            base.p50,
            verdict(strata.p50 < base.p50)
        )?,
        _ => writeln!(md, "| one `GetCart` | not measured | **missed** |")?,
    }
    ratio_row(
        &mut md,
        "hot",
        "one hot cart: ≥ 10x Restate, at a lower p99",
        RESTATE,
        10.0,
        Some(1.0),
    )?;
    ratio_row(
        &mut md,
        "keys",
        "many carts: ≥ 5x Restate, at a lower p99",
        RESTATE,
        5.0,
        Some(1.0),
    )?;
    writeln!(
        md,
        "| the next acknowledged registry write ≤ 1 s after `kill -9` of the Raft leader, no spurious elections under load | median {failover:.0} ms; {} election(s) during the loaded runs | {} |",
        results.registry.elections_under_load,
        verdict(failover <= 1000.0 && results.registry.elections_under_load == 0)
    )?;
    writeln!(md)?;
    if !results.problems.is_empty() {
        writeln!(md, "Problems in this run:\n")?;
        for problem in &results.problems {
            writeln!(md, "- {problem}")?;
        }
        writeln!(md)?;
    }

    // --- closed loop tables and charts
    let mut systems: Vec<String> = Vec::new();
    for (_, _, runs) in &results.closed {
        for name in runs.keys() {
            if !systems.contains(name) {
                systems.push(name.clone());
            }
        }
    }
    writeln!(md, "## Throughput and latency under load (closed loop)\n")?;
    writeln!(
        md,
        "Each client sends its next request when the last is answered, on its own kept-alive HTTP/1.1 \
         connection, for {} s per round. Ratios are against the stateless function + PostgreSQL.\n",
        settings.seconds
    )?;
    for (name, title, runs) in &results.closed {
        writeln!(md, "### {title}\n")?;
        table(&mut md, runs, Some(PG_CART))?;
        writeln!(md)?;
        cpu_table(&mut md, &results.cpu_use, name)?;
    }
    // One bar per system in each scenario, of one figure of its summary.
    let closed_groups = |figure: fn(&Summary) -> f64| -> Vec<Group> {
        results
            .closed
            .iter()
            .map(|(name, _, _)| Group {
                label: (*name).to_string(),
                values: systems
                    .iter()
                    .map(|system| get(name, system).map_or(f64::NAN, |summary| figure(&summary)))
                    .collect(),
            })
            .collect()
    };
    charts::bars(
        &charts_dir.join("throughput.png"),
        "Requests per second (median of rounds)",
        "req/s",
        &systems,
        &closed_groups(|summary| summary.per_second),
    )?;
    charts::bars(
        &charts_dir.join("p99.png"),
        "p99 latency under load",
        "ms",
        &systems,
        &closed_groups(|summary| summary.p99),
    )?;
    writeln!(
        md,
        "![throughput]({})\n\n![p99]({})\n",
        chart("throughput"),
        chart("p99")
    )?;

    // --- open loop
    writeln!(md, "## A fixed rate (open loop)\n")?;
    writeln!(
        md,
        "`AddItem` over {} carts at {:.0} requests a second from 16 connections; each request is timed \
         from the moment it was due, so a stall shows in the latency of every request it delayed.\n",
        settings.keys, settings.open_rate
    )?;
    table(&mut md, &results.open, Some(PG_CART))?;
    writeln!(md)?;

    // --- one client
    writeln!(md, "## One client: `GetCart` of one cart\n")?;
    writeln!(
        md,
        "One client, one request at a time, HTTP+JSON. Strata answers from the entity in the sidecar's \
         memory; the stateless function reads PostgreSQL; Restate runs its shared handler.\n"
    )?;
    table(&mut md, &results.single, Some(PG_CART))?;
    writeln!(md)?;
    cpu_table(&mut md, &results.cpu_use, ONE_CLIENT)?;
    let names: Vec<String> = results.single.keys().cloned().collect();
    charts::bars(
        &charts_dir.join("one-client.png"),
        "One client: GetCart latency",
        "ms",
        &["p50".to_string(), "p99".to_string()],
        &names
            .iter()
            .map(|n| {
                let s = summarize(&results.single[n]);
                Group {
                    label: short(n),
                    values: vec![s.p50, s.p99],
                }
            })
            .collect::<Vec<_>>(),
    )?;
    writeln!(md, "![one client]({})\n", chart("one-client"))?;

    // --- tracing
    writeln!(md, "## What tracing costs (the hot cart)\n")?;
    writeln!(
        md,
        "The hot cart (`AddItem` to one cart, {} clients) against four `strata dev`s that differ only in \
         tracing: off (`--trace-store-bytes 0`), the trace store at its default sampling (the default: one \
         call in a hundred traced, a record of the failed and slowest rest), the store with every call \
         traced (`STRATA_TRACE_SAMPLE_RATIO=1`), and the store plus an OTLP/gRPC collector with every call \
         sampled (`OTEL_TRACES_SAMPLER=always_on`). Targets (issue 19): default sampling within 5% of off, \
         every call sampled within 15%.\n",
        settings.clients
    )?;
    tracing_cost::table(&mut md, &results.tracing)?;
    cpu_table(&mut md, &results.cpu_use, tracing_cost::SCENARIO)?;

    // --- proxy overhead
    writeln!(md, "## What the proxy and the gateway cost (gRPC)\n")?;
    writeln!(
        md,
        "`GetCart` over gRPC, one client: straight to the function over the CloudState protocol (one \
         entity stream held open, as the sidecar holds it), to the sidecar, and through `strata dev`'s \
         gateway to the same sidecar.\n"
    )?;
    writeln!(md, "| path | calls | p50 | p99 | added at p50 |\n|---|---|---|---|---|")?;
    for (name, samples) in &results.grpc {
        writeln!(
            md,
            "| {name} | {} | {:.3} ms | {:.3} ms | {} |",
            samples.len(),
            median(samples),
            percentile(samples, 99.0),
            if name.starts_with("the function") {
                "".to_string()
            } else {
                format!("+{:.3} ms over the function", median(samples) - function_p50)
            }
        )?;
    }
    writeln!(md)?;

    // --- cold start
    writeln!(md, "## Cold start in the user's sequence\n")?;
    writeln!(
        md,
        "`strata dev`; `strata deploy cart --command target/release/shopping-cart --min-scale 0 \
         --scale-to-zero-grace 5s --stable-window 6s`; wait until `ready_replicas` is 0; `GET /carts/z1` \
         on a new connection, as `curl` sends it; {} times. Warm: the same request with an instance \
         ready. The floor is the function's own start: spawning `shopping-cart` until its port accepts \
         (from the footprint scenario).\n",
        results.cold_ms.len() + results.cold_refused
    )?;
    writeln!(md, "| | requests | p50 | p99 | max |\n|---|---|---|---|---|")?;
    for (label, samples) in [
        ("warm (an instance is ready)", &results.warm_ms),
        ("cold, from zero", &results.cold_ms),
        ("floor: the function's own start", &results.footprint.function_start_ms),
    ] {
        writeln!(
            md,
            "| {label} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            samples.len(),
            median(samples),
            percentile(samples, 99.0),
            percentile(samples, 100.0)
        )?;
    }
    writeln!(md, "\nRefused: {}.\n", results.cold_refused)?;
    charts::bars(
        &charts_dir.join("cold-start.png"),
        "GetCart through the gateway: warm and from zero",
        "ms",
        &["p50".to_string(), "p99".to_string()],
        &[
            Group {
                label: "warm".into(),
                values: vec![median(&results.warm_ms), percentile(&results.warm_ms, 99.0)],
            },
            Group {
                label: "cold".into(),
                values: vec![cold_p50, cold_p99],
            },
            Group {
                label: "function start".into(),
                values: vec![
                    median(&results.footprint.function_start_ms),
                    percentile(&results.footprint.function_start_ms, 99.0),
                ],
            },
        ],
    )?;
    writeln!(md, "![cold start]({})\n", chart("cold-start"))?;

    // --- footprint
    let f = &results.footprint;
    let per_cart = f.per_cart_kib();
    writeln!(
        md,
        "## Footprint: start-up and memory with {} active entities\n",
        f.carts
    )?;
    writeln!(
        md,
        "`strata proxy` (SQLite) beside the function it fronts (the baseline: the Rust cart, a bare tonic \
         server). Start-up is from spawn until the port accepts (the proxy: store open, discovery done). \
         Memory is VmRSS, idle and after one `AddItem` to each of {} carts over gRPC from 64 clients \
         (each cart keeps its actor and protocol stream until passivation).\n",
        f.carts
    )?;
    writeln!(
        md,
        "| | start-up p50 | idle | {} active | per active entity |\n|---|---|---|---|---|",
        f.carts
    )?;
    writeln!(
        md,
        "| function (baseline) | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.2} KiB |",
        median(&f.function_start_ms),
        f.idle_kib.1 as f64 / 1024.0,
        f.loaded_kib.1 as f64 / 1024.0,
        per_cart.1
    )?;
    writeln!(
        md,
        "| `strata proxy` | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.2} KiB |",
        median(&f.proxy_start_ms),
        f.idle_kib.0 as f64 / 1024.0,
        f.loaded_kib.0 as f64 / 1024.0,
        per_cart.0
    )?;
    writeln!(
        md,
        "\nActivation ran at {:.0} new entities a second.\n",
        f.activations_per_second
    )?;

    timers::render(&mut md, &results.timers)?;

    // --- registry
    let r = &results.registry;
    writeln!(md, "## Control plane: registry writes and leader failover\n")?;
    writeln!(
        md,
        "`strata control-plane` processes on loopback with the default Raft timing (50 ms heartbeats, \
         200-400 ms election timeout). A write is `PATCH /api/v1/services/{{name}}` to the leader, counted \
         when answered 200 (committed on a majority's disks and applied). Baseline: a one-node cluster of \
         the same binary (no replication).\n"
    )?;
    writeln!(
        md,
        "| clients | 1 node: writes/s | p50 | p99 | 3 nodes: writes/s | p50 | p99 | 3 nodes vs 1 |\n|---|---|---|---|---|---|---|---|"
    )?;
    for (i, clients) in r.clients.iter().enumerate() {
        let (one, three) = (r.one_node[i], r.three_nodes[i]);
        writeln!(
            md,
            "| {clients} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2}x |",
            one.writes_per_second,
            one.p50_ms,
            one.p99_ms,
            three.writes_per_second,
            three.p50_ms,
            three.p99_ms,
            three.writes_per_second / one.writes_per_second
        )?;
    }
    writeln!(
        md,
        "\n**Failover**: `kill -9` of the leader of the three-node cluster, then PATCHes every 5 ms to the \
         survivors until one is acknowledged; {} runs: median **{:.0} ms**, min {:.0} ms, max {:.0} ms \
         (runs: {}). Elections while the three-node clusters were under write load (the term before and \
         after each loaded run, both cores busy): **{}**.\n",
        r.failovers_ms.len(),
        failover,
        percentile(&r.failovers_ms, 0.0),
        percentile(&r.failovers_ms, 100.0),
        r.failovers_ms
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.elections_under_load
    )?;
    let groups: Vec<Group> = r
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| Group {
            label: format!("{c} clients"),
            values: vec![r.one_node[i].writes_per_second, r.three_nodes[i].writes_per_second],
        })
        .collect();
    charts::bars(
        &charts_dir.join("registry.png"),
        "Registry writes per second",
        "writes/s",
        &["1 node".to_string(), "3 nodes".to_string()],
        &groups,
    )?;
    writeln!(md, "![registry]({})\n", chart("registry"))?;
    md.push_str(include_str!("../traces.md"));
    md.push('\n');
    md.push_str(include_str!("../notes.md"));
    Ok(md)
}

fn blocked_reason(results: &Results) -> String {
    results
        .problems
        .iter()
        .find(|p| p.starts_with("Restate"))
        .cloned()
        .unwrap_or_else(|| "no measurement".into())
}

/// A short label for charts.
fn short(name: &str) -> String {
    match name {
        GATEWAY_SQLITE => "gateway (SQLite)".into(),
        GATEWAY_PG => "gateway (PostgreSQL)".into(),
        SIDECAR => "sidecar".into(),
        PG_CART => "function + PostgreSQL".into(),
        other => other.into(),
    }
}

/// Where the CPU went in `scenario`: per system, the microseconds of CPU each
/// part of the machine used per request answered (median of rounds).
fn cpu_table(md: &mut String, cpu_use: &CpuUse, scenario: &str) -> anyhow::Result<()> {
    let rows: Vec<(&String, cpu::PerRequest)> = cpu_use
        .iter()
        .filter(|((name, _), _)| *name == scenario)
        .map(|((_, system), runs)| (system, cpu::median(runs)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    // Only the parts some system used.
    let parts: Vec<&str> = cpu::PARTS
        .into_iter()
        .filter(|part| rows.iter().any(|(_, used)| used[part] >= 0.5))
        .collect();
    writeln!(
        md,
        "CPU per request (µs of processor time, median of rounds), by process, every process on the \
         machine during the run: the system's own (its total), the load generator (the client, this \
         benchmark), and \"{}\" (the rest of the machine, the idle systems beside included).\n",
        cpu::ELSEWHERE
    )?;
    writeln!(
        md,
        "| system | total | {} |\n|---|---|{}",
        parts.join(" | "),
        "---|".repeat(parts.len())
    )?;
    for (system, used) in rows {
        let total: f64 = used
            .iter()
            .filter(|(part, _)| !matches!(**part, cpu::ELSEWHERE | cpu::LOAD_GENERATOR))
            .map(|(_, us)| us)
            .sum();
        let cells: Vec<String> = parts.iter().map(|part| format!("{:.0}", used[part])).collect();
        writeln!(md, "| {system} | {total:.0} | {} |", cells.join(" | "))?;
    }
    writeln!(md)?;
    Ok(())
}

/// One row per system: throughput, latency percentiles, refusals, ratio to `baseline`.
fn table(md: &mut String, runs: &Runs, baseline: Option<&str>) -> anyhow::Result<()> {
    let base = baseline.and_then(|b| runs.get(b)).map(|r| summarize(r));
    writeln!(
        md,
        "| system | req/s | p50 | p99 | p99.9 | refused | vs stateless function |\n|---|---|---|---|---|---|---|"
    )?;
    for (name, outcomes) in runs {
        let s = summarize(outcomes);
        let ratio = match base {
            Some(b) => format!("{:.2}x req/s, {:.2}x p99", s.per_second / b.per_second, s.p99 / b.p99),
            None => String::new(),
        };
        writeln!(
            md,
            "| {name} | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {} | {ratio} |",
            s.per_second, s.p50, s.p99, s.p999, s.refused
        )?;
    }
    Ok(())
}
