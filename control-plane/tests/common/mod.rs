//! Helpers for the multi-process tests: start, kill and restart `strata control-plane`
//! processes on loopback, and talk to their management API.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "process-test-secret";
pub const TOKEN: &str = "process-test-admin";
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn strata_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let binary = exe.parent().and_then(Path::parent).expect("target dir").join("strata");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p strata` first",
        binary.display()
    );
    binary
}

pub use strata_e2e::free_port;

pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub api: String,
    pub child: Option<Child>,
}

impl Node {
    pub fn spawn(&mut self, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(strata_binary())
            .arg("control-plane")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .env("STRATA_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start strata control-plane");
        self.child = Some(child);
    }

    /// The last lines the node logged, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- node {} (api {}), the end of its log:\n{tail}", self.id, self.api)
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = Instant::now() + DEADLINE;
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "node {} did not stop on SIGTERM", self.id);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Client(pub reqwest::Client);

impl Client {
    pub async fn get(&self, api: &str, path: &str) -> Option<Value> {
        let reply = self
            .0
            .get(format!("http://{api}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if !reply.status().is_success() {
            return None;
        }
        reply.json().await.ok()
    }

    pub async fn create(&self, api: &str, name: &str) -> Result<u16, String> {
        let body = serde_json::json!({ "name": name, "command": "./run" });
        let reply = self
            .0
            .post(format!("http://{api}/api/v1/services"))
            .bearer_auth(TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|error| error.to_string())?;
        Ok(reply.status().as_u16())
    }

    pub async fn service_names(&self, api: &str) -> Option<BTreeSet<String>> {
        let list = self.get(api, "/api/v1/services").await?;
        Some(
            list["services"]
                .as_array()?
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect(),
        )
    }
}

pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn leader_of(client: &Client, nodes: &[&Node]) -> Option<u64> {
    for node in nodes {
        if let Some(cluster) = client.get(&node.api, "/api/v1/cluster").await {
            if cluster["state"] == "leader" {
                return cluster["node_id"].as_u64();
            }
        }
    }
    None
}

pub async fn voters(client: &Client, api: &str) -> Option<usize> {
    let cluster = client.get(api, "/api/v1/cluster").await?;
    Some(
        cluster["members"]
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "voter")
            .count(),
    )
}

/// Where one node of a test cluster listens (Raft and data plane; management
/// API), and any further arguments (e.g. addresses it advertises instead).
pub struct Listen {
    pub raft: String,
    pub api: String,
    pub extra: Vec<String>,
}

impl Listen {
    /// Free loopback ports, nothing advertised.
    pub fn loopback() -> Listen {
        Listen {
            raft: format!("127.0.0.1:{}", free_port()),
            api: format!("127.0.0.1:{}", free_port()),
            extra: Vec::new(),
        }
    }
}

/// Starts three nodes: node 1 bootstraps, nodes 2 and 3 join through it; returns once
/// all three are voters.
pub async fn start_cluster(dir: &Path, client: &Client) -> Vec<Node> {
    start_cluster_on(dir, client, (1..=3).map(|_| Listen::loopback()).collect()).await
}

/// [`start_cluster`] with each node's [`Listen`].
pub async fn start_cluster_on(dir: &Path, client: &Client, listens: Vec<Listen>) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node {
            id,
            dir: dir.join(format!("node-{id}")),
            api: listens[id as usize - 1].api.clone(),
            child: None,
        })
        .collect();
    let first_api = nodes[0].api.clone();
    for (node, listen) in nodes.iter_mut().zip(&listens) {
        let mut args = vec![
            "--node-id".to_owned(),
            node.id.to_string(),
            "--listen".to_owned(),
            listen.raft.clone(),
        ];
        args.extend(["--api-listen".to_owned(), node.api.clone()]);
        args.extend(listen.extra.iter().cloned());
        if node.id == 1 {
            args.push("--bootstrap".into());
        } else {
            args.extend(["--join".to_owned(), format!("http://{first_api}")]);
        }
        node.spawn(&args);
    }
    let deadline = Instant::now() + DEADLINE;
    while voters(client, &first_api).await != Some(3) {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(Node::log_tail).collect();
            panic!("timed out waiting for three voters\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}
