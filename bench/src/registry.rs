//! The control plane's registry: acknowledged writes per second and their latency
//! (p50/p99) on a three-node loopback cluster of `strata control-plane` processes, with
//! 1, 16 and 64 concurrent clients, beside the baseline of a one-node cluster (the same
//! binary, the same fsync per entry, no replication); then the time from a leader's
//! `kill -9` until writes succeed again.
//!
//! A write is `PATCH /api/v1/services/{name}` changing `target_concurrency` (every
//! value differs from the last, so every PATCH is a new revision), sent to the leader
//! and counted when answered 200, i.e. committed on a quorum's disks and applied.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use strata_e2e::{binary, free_port, Process};

use crate::stats::{median, percentile};

const SECRET: &str = "bench-cluster-secret";
const TOKEN: &str = "bench-admin-token";
const STARTUP: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Fresh clusters per throughput measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Leader kills to time (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub failovers: usize,
    /// Run this program instead of the `strata` binary beside `strata-bench`, with the
    /// same arguments (e.g. a wrapper that makes fsync slower, see docs/benchmarks.md).
    #[arg(long)]
    pub strata: Option<PathBuf>,
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub writes_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What the registry scenario measured: per client count, the median sample of
/// one node and of three; the failover times; elections during the loaded runs.
pub struct RegistryResults {
    pub clients: Vec<usize>,
    pub one_node: Vec<Sample>,
    pub three_nodes: Vec<Sample>,
    pub failovers_ms: Vec<f64>,
    /// Leader elections in the three-node clusters while they were under write load.
    pub elections_under_load: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let results = measure(&args).await?;
    println!(
        "\nregistry writes (PATCH to the leader), median of {} x {}s per row:",
        args.repeats, args.seconds
    );
    println!("| clients | 1 node: writes/s | p50 | p99 | 3 nodes: writes/s | p50 | p99 | 3 nodes vs 1 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, clients) in results.clients.iter().enumerate() {
        let (one, three) = (results.one_node[i], results.three_nodes[i]);
        println!(
            "| {clients} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2}x |",
            one.writes_per_second,
            one.p50_ms,
            one.p99_ms,
            three.writes_per_second,
            three.p50_ms,
            three.p99_ms,
            three.writes_per_second / one.writes_per_second
        );
    }
    let failovers = &results.failovers_ms;
    println!(
        "\nfailover (kill -9 of the leader until a write succeeds), {} runs: median {:.0} ms, min {:.0} ms, max {:.0} ms",
        failovers.len(),
        median(failovers),
        percentile(failovers, 0.0),
        percentile(failovers, 100.0)
    );
    println!(
        "elections in three-node clusters under write load: {}",
        results.elections_under_load
    );
    Ok(())
}

/// Runs the scenario: throughput rounds on fresh clusters, then the failovers.
pub async fn measure(args: &Args) -> anyhow::Result<RegistryResults> {
    let duration = Duration::from_secs(args.seconds);
    let root = std::env::temp_dir().join(format!("strata-registry-bench-{}", std::process::id()));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let strata = args.strata.clone().unwrap_or_else(|| binary("strata"));

    // samples[cluster size index][clients index] over repeats; sizes 1 (baseline) and 3.
    let sizes = [1usize, 3];
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); args.clients.len()]; sizes.len()];
    let mut elections = 0;
    for round in 0..args.repeats {
        for (size_index, size) in sizes.iter().enumerate() {
            let mut cluster = Cluster::start(&strata, &root.join(format!("r{round}-n{size}")), *size, &http).await?;
            let leader_api = cluster.leader_api().await?;
            let services = cluster
                .create_services(&leader_api, *args.clients.iter().max().unwrap_or(&1))
                .await?;
            for (clients_index, clients) in args.clients.iter().enumerate() {
                let term_before = cluster.term(&leader_api).await;
                let sample = drive(&http, &leader_api, &services[..*clients], duration).await?;
                if *size > 1 {
                    elections += cluster.term(&leader_api).await.saturating_sub(term_before);
                }
                println!(
                    "  round {round}: {size} node(s), {clients:>2} clients: {:>7.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
                    sample.writes_per_second, sample.p50_ms, sample.p99_ms
                );
                samples[size_index][clients_index].push(sample);
            }
            cluster.stop();
        }
    }

    println!("\nfailover: kill -9 of the leader of a three-node cluster, until a write succeeds again");
    let mut cluster = Cluster::start(&strata, &root.join("failover"), 3, &http).await?;
    let leader_api = cluster.leader_api().await?;
    cluster.create_services(&leader_api, 1).await?;
    let mut failovers = Vec::new();
    for run in 0..args.failovers {
        let took = cluster.kill_leader_and_time_recovery(2 + run as u64).await?;
        println!("  run {run}: writes succeeded again after {} ms", took.as_millis());
        failovers.push(took.as_secs_f64() * 1000.0);
        cluster.restart_killed().await?;
    }
    cluster.stop();
    let _ = std::fs::remove_dir_all(&root);

    Ok(RegistryResults {
        clients: args.clients.clone(),
        one_node: samples[0].iter().map(|s| summarize(s)).collect(),
        three_nodes: samples[1].iter().map(|s| summarize(s)).collect(),
        failovers_ms: failovers,
        elections_under_load: elections,
    })
}

/// The median of each figure over repeats.
fn summarize(samples: &[Sample]) -> Sample {
    let pick = |figure: fn(&Sample) -> f64| median(&samples.iter().map(figure).collect::<Vec<_>>());
    Sample {
        writes_per_second: pick(|s| s.writes_per_second),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
    }
}

/// `clients` concurrent clients, each PATCHing its own service until `duration` is up.
async fn drive(http: &reqwest::Client, api: &str, services: &[String], duration: Duration) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, service) in services.iter().enumerate() {
        let http = http.clone();
        let url = format!("http://{api}/api/v1/services/{service}");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut value = 1 + client as u64;
            while started.elapsed() < duration {
                value += 1;
                let sent = Instant::now();
                let reply = http
                    .patch(&url)
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({ "target_concurrency": 1 + value % 1000 }))
                    .send()
                    .await?;
                if reply.status() != reqwest::StatusCode::OK {
                    bail!("PATCH {url} answered {}", reply.status());
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Sample {
        writes_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
    })
}

struct Node {
    id: u64,
    program: PathBuf,
    dir: PathBuf,
    api: String,
    process: Option<Process>,
}

impl Node {
    fn spawn(&mut self, args: &[String]) {
        let mut command = Command::new(&self.program);
        command
            .arg("control-plane")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .env("STRATA_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        self.process = Some(Process::spawn(&format!("control-plane node {}", self.id), command));
    }
}

struct Cluster {
    nodes: Vec<Node>,
    http: reqwest::Client,
    killed: Option<usize>,
}

impl Cluster {
    /// Node 1 bootstraps; the others join through its API. Returns once all are voters.
    async fn start(program: &Path, dir: &Path, size: usize, http: &reqwest::Client) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let mut nodes: Vec<Node> = (1..=size as u64)
            .map(|id| Node {
                id,
                program: program.to_owned(),
                dir: dir.join(format!("node-{id}")),
                api: format!("127.0.0.1:{}", free_port()),
                process: None,
            })
            .collect();
        let first_api = nodes[0].api.clone();
        for node in nodes.iter_mut() {
            let mut args = vec![
                "--node-id".to_owned(),
                node.id.to_string(),
                "--listen".to_owned(),
                format!("127.0.0.1:{}", free_port()),
                "--api-listen".to_owned(),
                node.api.clone(),
            ];
            if node.id == 1 {
                args.push("--bootstrap".into());
            } else {
                args.extend(["--join".to_owned(), format!("http://{first_api}")]);
            }
            node.spawn(&args);
        }
        let mut cluster = Cluster {
            nodes,
            http: http.clone(),
            killed: None,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let voters = cluster.get(&first_api, "/api/v1/cluster").await.map(|cluster| {
                cluster["members"]
                    .as_array()
                    .map_or(0, |members| members.iter().filter(|m| m["role"] == "voter").count())
            });
            if voters == Some(size) {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                // Which nodes gave up (a refused join ends the process) tells a
                // port taken between free_port and the node's bind from a slow join.
                let exited: Vec<String> = cluster
                    .nodes
                    .iter_mut()
                    .filter_map(|node| node.process.as_mut()?.exited().then(|| node.id.to_string()))
                    .collect();
                bail!(
                    "the {size}-node cluster did not form within {STARTUP:?} (nodes that exited: {}; \
                     STRATA_TEST_LOGS=1 shows their logs)",
                    if exited.is_empty() {
                        "none".to_string()
                    } else {
                        exited.join(", ")
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, api: &str, path: &str) -> Option<serde_json::Value> {
        let reply = self
            .http
            .get(format!("http://{api}{path}"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !reply.status().is_success() {
            return None;
        }
        reply.json().await.ok()
    }

    /// The index of the node that reports itself leader, among running nodes.
    async fn leader(&self) -> Option<usize> {
        for (index, node) in self.nodes.iter().enumerate() {
            if node.process.is_none() {
                continue;
            }
            if let Some(cluster) = self.get(&node.api, "/api/v1/cluster").await {
                if cluster["state"] == "leader" {
                    return Some(index);
                }
            }
        }
        None
    }

    /// The Raft term a node reports (0 if it cannot be read).
    async fn term(&self, api: &str) -> u64 {
        self.get(api, "/api/v1/cluster")
            .await
            .and_then(|cluster| cluster["term"].as_u64())
            .unwrap_or(0)
    }

    async fn leader_api(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(index) = self.leader().await {
                return Ok(self.nodes[index].api.clone());
            }
            if Instant::now() > deadline {
                bail!("no leader within {STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create_services(&self, api: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("bench-{i}");
            let reply = self
                .http
                .post(format!("http://{api}/api/v1/services"))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({ "name": name, "command": "./run", "max_scale": 1000 }))
                .send()
                .await?;
            if !reply.status().is_success() {
                bail!("creating {name} answered {}", reply.status());
            }
            names.push(name);
        }
        Ok(names)
    }

    /// Kills the leader with SIGKILL and PATCHes through the survivors until one write
    /// is acknowledged; returns the time from the kill to that acknowledgement.
    async fn kill_leader_and_time_recovery(&mut self, target_concurrency: u64) -> anyhow::Result<Duration> {
        let leader = self.leader().await.context("no leader before the kill")?;
        let survivors: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(index, node)| *index != leader && node.process.is_some())
            .map(|(_, node)| node.api.clone())
            .collect();
        let mut process = self.nodes[leader].process.take().context("the leader runs")?;
        process.kill();
        self.killed = Some(leader);
        let killed_at = Instant::now();
        let body = serde_json::json!({ "target_concurrency": target_concurrency });
        let mut attempt = 0usize;
        loop {
            attempt += 1;
            let api = &survivors[attempt % survivors.len()];
            let reply = self
                .http
                .patch(format!("http://{api}/api/v1/services/bench-0"))
                .bearer_auth(TOKEN)
                .json(&body)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if reply.is_ok_and(|reply| reply.status() == reqwest::StatusCode::OK) {
                return Ok(killed_at.elapsed());
            }
            if killed_at.elapsed() > STARTUP {
                bail!("no write succeeded within {STARTUP:?} of killing the leader");
            }
            // Poll finely: the figure measured is the gap, so the poll adds at most this.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Restarts the killed node from its data directory and waits until it has caught up
    /// with the leader, so the next kill starts from three equal replicas.
    async fn restart_killed(&mut self) -> anyhow::Result<()> {
        let Some(index) = self.killed.take() else {
            return Ok(());
        };
        self.nodes[index].spawn(&[]);
        let api = self.nodes[index].api.clone();
        let deadline = Instant::now() + STARTUP;
        loop {
            let leader_applied = match self.leader().await {
                Some(leader) => self
                    .get(&self.nodes[leader].api, "/api/v1/cluster")
                    .await
                    .and_then(|cluster| cluster["applied_index"].as_u64()),
                None => None,
            };
            let applied = self
                .get(&api, "/api/v1/cluster")
                .await
                .and_then(|cluster| cluster["applied_index"].as_u64());
            if let (Some(leader_applied), Some(applied)) = (leader_applied, applied) {
                if applied >= leader_applied {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the restarted node did not catch up within {STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(mut process) = node.process.take() {
                process.kill();
            }
        }
    }
}
