//! Replays traces through real `strata dev` processes in real time: one `strata dev` per
//! trace and policy, all side by side, each running the Rust shopping cart behind the
//! gateway. The cart is started through `sleep 0.3; exec ...`, a function that takes
//! 300 ms to start (a Python or JVM function; the Rust cart alone starts in about 50 ms),
//! so that a request that waited for a cold start is told from a warm one by its latency
//! alone. Instance-seconds come from the API's instance list, read four times a second.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use strata_e2e::{binary, free_port, wait_for_port, Process};

use super::shape::{arrivals, Rng, Shape};
use super::simulate::Outcome;

const TOKEN: &str = "bench-token";
/// A request this slow waited for an instance to start (warm ones take milliseconds).
pub const COLD_MS: f64 = 200.0;
/// How long the modelled function takes to start.
pub const FUNCTION_START: &str = "0.3";

struct Dev {
    _process: Process,
    dir: std::path::PathBuf,
    gateway: u16,
    api: u16,
    http: reqwest::Client,
}

impl Dev {
    fn start(label: &str) -> anyhow::Result<Dev> {
        let dir = std::env::temp_dir().join(format!("strata-bench-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (gateway, api) = (free_port(), free_port());
        let mut command = Command::new(binary("strata"));
        command
            .arg("dev")
            .args(["--data-dir", &dir.join("data").display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{gateway}")])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--token", TOKEN])
            .current_dir(&dir);
        let process = Process::spawn(&format!("strata dev ({label})"), command);
        anyhow::ensure!(
            wait_for_port(gateway, Duration::from_secs(30)),
            "strata dev did not start"
        );
        Ok(Dev {
            _process: process,
            dir,
            gateway,
            api,
            http: reqwest::Client::new(),
        })
    }

    fn deploy(&self, keep_alive: &str) -> anyhow::Result<()> {
        let cart = binary("shopping-cart").display().to_string();
        let status = Command::new(binary("strata"))
            .args([
                "deploy",
                "svc",
                "--command",
                &format!("sleep {FUNCTION_START}; exec {cart}"),
            ])
            .args(["--min-scale", "0", "--keep-alive", keep_alive])
            .args(["--api", &format!("http://127.0.0.1:{}", self.api)])
            .env("STRATA_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "strata deploy failed");
        Ok(())
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("http://127.0.0.1:{}/api/v1{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    async fn instances(&self) -> Option<usize> {
        Some(
            self.api("/services/svc/instances").await?["instances"]
                .as_array()?
                .len(),
        )
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One trace through one `strata dev` with the given keep-alive policy.
pub async fn replay(label: &str, shape: Shape, keep_alive: &str, minutes: f64, seed: u64) -> anyhow::Result<Outcome> {
    let dev = Dev::start(label)?;
    dev.deploy(keep_alive)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dev.api("/services/svc").await.is_none_or(|s| s["ready_replicas"] != 1) {
        anyhow::ensure!(Instant::now() < deadline, "{label}: the service never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let duration = minutes * 60.0;
    let trace = arrivals(shape, duration, &mut Rng::new(seed));
    let dev = Arc::new(dev);

    let started = tokio::time::Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (dev, done) = (dev.clone(), done.clone());
        tokio::spawn(async move {
            let mut instance_seconds = 0.0;
            let mut last = Instant::now();
            let mut count = 1usize;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                instance_seconds += count as f64 * now.duration_since(last).as_secs_f64();
                last = now;
                count = dev.instances().await.unwrap_or(count);
            }
            instance_seconds
        })
    };
    let mut requests = Vec::with_capacity(trace.len());
    for at in trace {
        tokio::time::sleep_until(started + Duration::from_secs_f64(at)).await;
        let (http, url) = (
            dev.http.clone(),
            format!("http://127.0.0.1:{}/carts/bench", dev.gateway),
        );
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = http
                .get(url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            (ok, sent.elapsed().as_secs_f64() * 1_000.0)
        }));
    }
    tokio::time::sleep_until(started + Duration::from_secs_f64(duration)).await;
    let mut outcome = Outcome::default();
    for request in requests {
        let (ok, ms) = request.await?;
        anyhow::ensure!(ok, "{label}: a request failed");
        outcome.requests += 1;
        outcome.cold += usize::from(ms >= COLD_MS);
        outcome.latencies_ms.push(ms);
    }
    done.store(true, Ordering::Relaxed);
    outcome.instance_seconds = poller.await?;
    Ok(outcome)
}
