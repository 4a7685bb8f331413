//! `strata dev` end to end: cold start from zero for the Rust shopping cart (a
//! request's latency through the gateway when the service has no instance),
//! beside the same request's latency warm; and the time from a step in load until
//! new instances serve.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{binary, free_port, wait_for_port, Process};

use crate::stats::{median, percentile};

const TOKEN: &str = "bench-token";

#[derive(clap::Args)]
pub struct Args {
    /// Cold starts to time.
    #[arg(long, default_value_t = 50)]
    trials: usize,
    /// Load steps to time.
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

struct Dev {
    _process: Process,
    gateway: u16,
    api: u16,
    http: reqwest::Client,
}

impl Dev {
    async fn service(&self, name: &str) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}/api/v1/services/{name}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("API")
            .json()
            .await
            .expect("JSON")
    }

    async fn until(&self, name: &str, check: impl Fn(&Value) -> bool) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if check(&self.service(name).await) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "{name} never reached the expected state");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn deploy(&self, name: &str, args: &[&str]) {
        let status = Command::new(binary("strata"))
            .args([
                "deploy",
                name,
                "--command",
                &binary("shopping-cart").display().to_string(),
            ])
            .args(args)
            .args(["--api", &format!("http://127.0.0.1:{}", self.api)])
            .env("STRATA_TOKEN", TOKEN)
            .status()
            .expect("strata deploy");
        assert!(status.success());
    }

    async fn get_cart(&self, user: &str) -> Duration {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("http://127.0.0.1:{}/carts/{user}", self.gateway))
            .send()
            .await
            .expect("GetCart");
        assert!(response.status().is_success(), "GetCart answered {}", response.status());
        started.elapsed()
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("strata-bench-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (gateway, api) = (free_port(), free_port());
    let mut command = Command::new(binary("strata"));
    command
        .arg("dev")
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{gateway}")])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--token", TOKEN])
        .args(["--stable-window", "6s"])
        .current_dir(&dir);
    let process = Process::spawn("strata dev", command);
    anyhow::ensure!(
        wait_for_port(gateway, Duration::from_secs(30)),
        "strata dev did not start"
    );
    let dev = Dev {
        _process: process,
        gateway,
        api,
        http: reqwest::Client::new(),
    };

    // --- cold starts: wait for zero, then one request
    dev.deploy("cart", &["--min-scale", "0", "--scale-to-zero-grace", "1s"]);
    dev.until("cart", |s| s["ready_replicas"] == 1).await;
    let mut warm = Vec::new();
    for _ in 0..args.trials {
        warm.push(dev.get_cart("bench").await.as_secs_f64() * 1000.0);
    }
    let mut cold = Vec::new();
    for _ in 0..args.trials {
        dev.until("cart", |s| s["ready_replicas"] == 0 && s["desired_replicas"] == 0)
            .await;
        cold.push(dev.get_cart("bench").await.as_secs_f64() * 1000.0);
    }
    println!("GetCart through the gateway, {} trials each (ms):", args.trials);
    println!(
        "  warm (an instance is ready)   p50 {:>7.1}  p99 {:>7.1}",
        median(&warm),
        percentile(&warm, 99.0)
    );
    println!(
        "  cold (scaled to zero)         p50 {:>7.1}  p99 {:>7.1}   ({:.0}x warm at p50)",
        median(&cold),
        percentile(&cold, 99.0),
        median(&cold) / median(&warm)
    );

    // --- load steps: 1 client to 32; time until a second instance is ready
    dev.deploy(
        "steps",
        &["--min-scale", "1", "--max-scale", "4", "--target-concurrency", "4"],
    );
    let mut step_ms = Vec::new();
    for _ in 0..args.steps {
        dev.until("steps", |s| s["ready_replicas"] == 1 && s["desired_replicas"] == 1)
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut clients = Vec::new();
        for c in 0..32 {
            let (http, stop) = (dev.http.clone(), stop.clone());
            let url = format!("http://127.0.0.1:{gateway}/cart/step-{c}/items/add");
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .post(&url)
                        .json(&json!({"productId": "p", "name": "Thing", "quantity": 1}))
                        .send()
                        .await;
                }
            }));
        }
        let scaled = dev
            .until("steps", |s| s["ready_replicas"].as_u64().unwrap_or(0) >= 2)
            .await;
        step_ms.push(scaled.duration_since(started).as_secs_f64() * 1000.0);
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            let _ = client.await;
        }
    }
    println!(
        "step from 1 to 32 concurrent clients until a second instance is ready, {} steps (ms): median {:.0}, all {step_ms:.0?}",
        args.steps,
        median(&step_ms)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
