//! Startup time to ready and resident memory of `strata proxy`, beside the same
//! numbers for the user function it fronts (the baseline: a bare tonic server with
//! the same entities in memory).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use strata_e2e::{binary, cart_client, free_port, shoppingcart::AddLineItem, Process};

use crate::stats::{median, percentile};

#[derive(clap::Args)]
pub struct Args {
    /// Start-ups to time.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Distinct carts to activate for the loaded memory reading.
    #[arg(long, default_value_t = 10_000)]
    carts: usize,
    /// Concurrent clients while activating carts.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits for the port with millisecond resolution (the test harness polls more
/// lazily), so start-up times are not rounded to the polling interval.
fn wait_precisely(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    false
}

fn start_function(port: u16) -> (Process, Duration) {
    let mut command = Command::new(binary("shopping-cart"));
    command.env("PORT", port.to_string());
    let started = Instant::now();
    let process = Process::spawn("shopping-cart", command);
    assert!(wait_precisely(port), "function did not start");
    (process, started.elapsed())
}

fn start_proxy(function_port: u16, http_port: u16, store: &str) -> (Process, Duration) {
    let mut command = Command::new(binary("strata"));
    command
        .args(["proxy", "--store", store])
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string());
    let started = Instant::now();
    let process = Process::spawn("strata proxy", command);
    assert!(wait_precisely(http_port), "proxy did not start");
    (process, started.elapsed())
}

/// What the footprint scenario measured.
pub struct Footprint {
    /// Start-up to ready, in milliseconds, per run.
    pub function_start_ms: Vec<f64>,
    pub proxy_start_ms: Vec<f64>,
    /// Resident memory in KiB: (proxy, function), idle and with `carts` active.
    pub idle_kib: (u64, u64),
    pub loaded_kib: (u64, u64),
    pub carts: usize,
    pub activations_per_second: f64,
}

impl Footprint {
    /// Resident memory per active cart in KiB: (proxy, function).
    pub fn per_cart_kib(&self) -> (f64, f64) {
        (
            self.loaded_kib.0.saturating_sub(self.idle_kib.0) as f64 / self.carts as f64,
            self.loaded_kib.1.saturating_sub(self.idle_kib.1) as f64 / self.carts as f64,
        )
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let footprint = measure(args.runs, args.carts, args.concurrency).await?;
    let (function_ms, proxy_ms) = (&footprint.function_start_ms, &footprint.proxy_start_ms);
    println!("startup to ready, {} runs (ms):", args.runs);
    println!(
        "  function (baseline)  median {:.1}  p90 {:.1}",
        median(function_ms),
        percentile(function_ms, 90.0)
    );
    println!(
        "  strata proxy         median {:.1}  p90 {:.1}   ratio {:.2}",
        median(proxy_ms),
        percentile(proxy_ms, 90.0),
        median(proxy_ms) / median(function_ms)
    );
    let (idle, loaded) = (footprint.idle_kib, footprint.loaded_kib);
    let per_cart = footprint.per_cart_kib();
    println!("resident memory (MiB):");
    println!(
        "  idle                 proxy {:.1}  function {:.1}",
        idle.0 as f64 / 1024.0,
        idle.1 as f64 / 1024.0
    );
    println!(
        "  {} active carts   proxy {:.1}  function {:.1}   per cart: proxy {:.2} KiB, function {:.2} KiB",
        args.carts,
        loaded.0 as f64 / 1024.0,
        loaded.1 as f64 / 1024.0,
        per_cart.0,
        per_cart.1,
    );
    println!("  ({:.0} new carts/s)", footprint.activations_per_second);
    Ok(())
}

/// Start-up times over `runs`, then memory idle and with `carts` carts active.
pub async fn measure(runs: usize, carts: usize, concurrency: usize) -> anyhow::Result<Footprint> {
    let dir = tempfile_dir()?;
    let store = format!("sqlite://{}/bench.db", dir.display());

    // --- start-up: function (baseline) and proxy (to ready: store open, discovery, listening)
    let mut function_ms = Vec::new();
    let mut proxy_ms = Vec::new();
    for _ in 0..runs {
        let (function_port, http_port) = (free_port(), free_port());
        let (_function, f) = start_function(function_port);
        let (_proxy, p) = start_proxy(function_port, http_port, &store);
        function_ms.push(f.as_secs_f64() * 1000.0);
        proxy_ms.push(p.as_secs_f64() * 1000.0);
    }

    // --- memory: idle, then with `carts` distinct active carts
    let (function_port, http_port) = (free_port(), free_port());
    let (function, _) = start_function(function_port);
    let (proxy, _) = start_proxy(function_port, http_port, &store);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = (rss_kib(proxy.pid()), rss_kib(function.pid()));

    let client = cart_client(http_port).await;
    let started = Instant::now();
    let per_client = carts.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c * per_client)..((c + 1) * per_client).min(carts) {
                client
                    .add_item(AddLineItem {
                        user_id: format!("bench-{i}"),
                        product_id: "p".into(),
                        name: "Thing".into(),
                        quantity: 1,
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("AddItem failed: {s}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let loaded = (rss_kib(proxy.pid()), rss_kib(function.pid()));
    drop(proxy);
    drop(function);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Footprint {
        function_start_ms: function_ms,
        proxy_start_ms: proxy_ms,
        idle_kib: idle,
        loaded_kib: loaded,
        carts,
        activations_per_second: carts as f64 / elapsed.as_secs_f64(),
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
