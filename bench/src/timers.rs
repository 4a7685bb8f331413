//! The timers scenario (issue 21's Scale): what pending timers cost, and whether
//! many falling due at once stall commands. It replays what a user does: the
//! expiring value cart (tests/src/bin/value_cart.rs) deployed through `strata
//! dev`, each `AddItem` (over HTTP+JSON through the gateway) scheduling the cart's
//! `expire` timer. Owns the scenario and its section of docs/benchmarks.md; the
//! systems and the load are `systems.rs` and `load.rs`.
//!
//! - Pending: `pending` carts each with a timer due in a day, beside the same
//!   carts deployed without `EXPIRE_MS` (no timers): the store's bytes on disk
//!   and the cart's sidecar's resident memory, both after the same adds.
//! - Firing: `firing` carts of a second service expiring `FIRE_AFTER` after
//!   their add, with the pending timers still stored; `GetCart` from `clients`
//!   clients to that service from the first due time until none is pending,
//!   beside the same load for `seconds` before any was due; and that time.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::{
    load::{self, Connection, Outcome, Plan, Request},
    systems::StrataDev,
};

/// How long after its add a firing cart expires: past the time the adds take.
const FIRE_AFTER: Duration = Duration::from_secs(5);
/// The pending carts' expiry: far beyond the run.
const PENDING_EXPIRE_MS: &str = "86400000";
/// Connections that add carts.
const ADDERS: usize = 16;

/// How big the scenario runs (`strata-bench timers`'s flags; `all` sets them
/// itself).
#[derive(clap::Args)]
pub struct Settings {
    /// Carts with a pending timer each.
    #[arg(long, default_value_t = 100_000)]
    pub pending: usize,
    /// Carts whose timers fall due together.
    #[arg(long, default_value_t = 1_000)]
    pub firing: usize,
    /// Clients of the `GetCart` load.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of the `GetCart` load with no timer due (the load while firing
    /// lasts until all have fired).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// `strata-bench timers`: the scenario alone, its section printed.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("strata-bench-timers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let results = measure(&root, &settings).await;
    let _ = std::fs::remove_dir_all(&root);
    let mut md = String::new();
    render(&mut md, &results?)?;
    println!("{md}");
    Ok(())
}

/// One deployment's cost after its adds.
pub struct Cost {
    /// The SQLite store's files (database and write-ahead log).
    pub store_bytes: u64,
    /// The cart's sidecar (`strata proxy`), VmRSS.
    pub sidecar_kib: u64,
}

/// What the scenario measured.
pub struct TimerResults {
    pub pending: usize,
    pub with_timers: Cost,
    pub without_timers: Cost,
    pub firing: usize,
    /// Clients of the `GetCart` load.
    pub clients: usize,
    /// How long the load with no timer due ran.
    pub quiet_seconds: u64,
    /// From the first firing cart's due time until none was pending.
    pub all_fired: Duration,
    /// From the first due time to the last (the adds' spread).
    pub due_spread: Duration,
    /// `GetCart` load with no timer due, and while the firing carts fell due.
    pub quiet: Outcome,
    pub while_firing: Outcome,
}

fn add(user: &str) -> Request {
    Request::Post(
        format!("/vcart/{user}/items/add"),
        Bytes::from_static(br#"{"productId":"p","quantity":1}"#),
    )
}

fn get(user: &str) -> Request {
    Request::Get(format!("/vcarts/{user}"))
}

/// One `AddItem` to each of `carts` carts named `prefix-N`, from [`ADDERS`]
/// connections; fails on the first refusal.
async fn add_carts(gateway: SocketAddr, prefix: &str, carts: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for adder in 0..ADDERS {
        let mut connection = Connection::open(gateway).await?;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for cart in (adder..carts).step_by(ADDERS) {
                if let Err(why) = connection.send(&add(&format!("{prefix}-{cart}"))).await? {
                    bail!("AddItem to {prefix}-{cart} was refused: {why}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Deploys the value cart as `name` (one instance), expiring carts `expire_ms`
/// after their last add (`None`: never, no timers).
async fn deploy_cart(dev: &StrataDev, name: &str, expire_ms: Option<&str>) -> anyhow::Result<()> {
    let env = expire_ms.map(|ms| format!("EXPIRE_MS={ms}"));
    let mut args = vec!["--min-scale", "1", "--max-scale", "1"];
    if let Some(env) = &env {
        args.extend(["--env", env.as_str()]);
    }
    dev.deploy_program(name, "value-cart", &args)?;
    dev.until_service(name, |s| s["ready_replicas"] == 1).await
}

async fn pending_count(dev: &StrataDev, service: &str) -> anyhow::Result<u64> {
    let view = dev
        .api_get(&format!("/services/{service}/timers?limit=1"))
        .await
        .with_context(|| format!("GET /services/{service}/timers"))?;
    view["pending_count"]
        .as_u64()
        .with_context(|| format!("no pending_count in {view}"))
}

/// Waits until `service` has `count` timers pending; when that was.
async fn until_pending(dev: &StrataDev, service: &str, count: u64, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let pending = pending_count(dev, service).await?;
        if pending == count {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{service} still has {pending} timers pending after {limit:?}, not {count}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bytes of the SQLite store's files in `strata dev`'s data directory.
fn store_bytes(data: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("strata.db") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// `pending` carts on a fresh `strata dev` in `dir`, with or without timers:
/// what they cost. Gives back the running system.
async fn pending_cost(dir: &Path, pending: usize, timers: bool) -> anyhow::Result<(StrataDev, Cost)> {
    let dev = StrataDev::start(dir, None).await?;
    let expire = timers.then_some(PENDING_EXPIRE_MS);
    deploy_cart(&dev, "vcart", expire).await?;
    add_carts(dev.gateway, "held", pending).await?;
    let expected = if timers { pending as u64 } else { 0 };
    until_pending(&dev, "vcart", expected, Duration::from_secs(60)).await?;
    let sidecar = dev.sidecar_pid("vcart")?;
    let cost = Cost {
        store_bytes: store_bytes(&dir.join("data"))?,
        sidecar_kib: crate::footprint::rss_kib(sidecar),
    };
    Ok((dev, cost))
}

pub async fn measure(root: &Path, settings: &Settings) -> anyhow::Result<TimerResults> {
    // --- pending: the same adds without timers, then with them
    eprintln!("bench: timers: {} carts without timers", settings.pending);
    let (without, without_timers) = pending_cost(&root.join("timers-without"), settings.pending, false).await?;
    drop(without);
    eprintln!("bench: timers: {} carts with a pending timer each", settings.pending);
    let (dev, with_timers) = pending_cost(&root.join("timers-with"), settings.pending, true).await?;

    // --- firing: a second service whose carts expire soon, under GetCart load
    let fire_ms = FIRE_AFTER.as_millis().to_string();
    deploy_cart(&dev, "vcart-soon", Some(&fire_ms)).await?;
    let duration = Duration::from_secs(settings.seconds);
    let readers: Plan = Arc::new(|client, n| get(&format!("reader-{client}-{}", n % 16)));
    let quiet = load::closed(dev.gateway, settings.clients, duration, readers.clone()).await?;
    eprintln!("bench: timers: {} carts expiring together", settings.firing);
    let first_add = Instant::now();
    add_carts(dev.gateway, "soon", settings.firing).await?;
    let last_add = Instant::now();
    let first_due = first_add + FIRE_AFTER;
    if last_add >= first_due {
        bail!(
            "adding {} carts took {:?}, longer than their expiry of {FIRE_AFTER:?}",
            settings.firing,
            last_add - first_add
        );
    }
    tokio::time::sleep_until(first_due.into()).await;
    let firing = Arc::new(AtomicBool::new(true));
    let still_firing = firing.clone();
    let load = tokio::spawn(load::closed_while(dev.gateway, settings.clients, readers, move |_| {
        still_firing.load(Ordering::Relaxed)
    }));
    let all_fired = until_pending(&dev, "vcart-soon", 0, Duration::from_secs(120)).await;
    firing.store(false, Ordering::Relaxed);
    let while_firing = load.await??;
    let all_fired = all_fired?;
    Ok(TimerResults {
        pending: settings.pending,
        with_timers,
        without_timers,
        firing: settings.firing,
        clients: settings.clients,
        quiet_seconds: settings.seconds,
        all_fired: all_fired.saturating_duration_since(first_due),
        due_spread: last_add - first_add,
        quiet,
        while_firing,
    })
}

/// The scenario's section of docs/benchmarks.md.
pub fn render(md: &mut String, r: &TimerResults) -> std::fmt::Result {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    writeln!(md, "## Timers: {} pending, {} firing at once\n", r.pending, r.firing)?;
    writeln!(
        md,
        "The expiring value cart (`tests/src/bin/value_cart.rs`) deployed through `strata dev` \
         (SQLite), one instance. Each `AddItem` over HTTP through the gateway schedules the cart's \
         `expire` timer as a side effect. Pending: one `AddItem` to each of {} carts, expiring in a \
         day, beside the same adds to the cart deployed without `EXPIRE_MS` (no timers); the store's \
         files and the cart's sidecar's VmRSS after them.\n",
        r.pending
    )?;
    writeln!(md, "| | store on disk | sidecar memory |\n|---|---|---|")?;
    writeln!(
        md,
        "| without timers | {:.1} MiB | {:.1} MiB |",
        mib(r.without_timers.store_bytes),
        r.without_timers.sidecar_kib as f64 / 1024.0
    )?;
    writeln!(
        md,
        "| with {} pending timers | {:.1} MiB | {:.1} MiB |",
        r.pending,
        mib(r.with_timers.store_bytes),
        r.with_timers.sidecar_kib as f64 / 1024.0
    )?;
    let per_timer = |with: u64, without: u64| (with as f64 - without as f64) / r.pending.max(1) as f64;
    writeln!(
        md,
        "| per timer | {:.0} bytes | {:.2} KiB |\n",
        per_timer(r.with_timers.store_bytes, r.without_timers.store_bytes),
        per_timer(r.with_timers.sidecar_kib, r.without_timers.sidecar_kib)
    )?;
    writeln!(
        md,
        "Firing: with those timers still pending, {} carts of a second deployment added in {:.0} ms, \
         each expiring {} s after its add; all had fired (none pending in `GET \
         /api/v1/services/vcart-soon/timers`) {:.0} ms after the first was due. Meanwhile, from the \
         first due time until none was pending, `GetCart` from {} clients to the same service, beside \
         the same load for {} s before any was due:\n",
        r.firing,
        r.due_spread.as_secs_f64() * 1000.0,
        FIRE_AFTER.as_secs(),
        r.all_fired.as_secs_f64() * 1000.0,
        r.clients,
        r.quiet_seconds
    )?;
    writeln!(md, "| `GetCart` | req/s | p50 | p99 | refused |\n|---|---|---|---|---|")?;
    for (label, outcome) in [("no timer due", &r.quiet), ("timers firing", &r.while_firing)] {
        writeln!(
            md,
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            outcome.per_second(),
            outcome.ms(50.0),
            outcome.ms(99.0),
            outcome.refused
        )?;
    }
    writeln!(md)
}
