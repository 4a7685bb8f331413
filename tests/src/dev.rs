//! `strata dev` as a test subject: the whole platform as one real process on free
//! loopback ports, with the CLI to deploy, the REST API to watch it, and the
//! shopping cart's HTTP API to load it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{binary, free_port, procfs, Process};

pub const TOKEN: &str = "e2e-admin-token";

/// Writes the shell script `body` to `dir/name`, executable: a function to deploy
/// that does something first (records how it was started, crashes on demand).
pub fn write_script(dir: &std::path::Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let status = Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    assert!(status.success(), "chmod +x {}", path.display());
}

pub struct Dev {
    pub dir: tempfile::TempDir,
    pub process: Process,
    pub gateway: u16,
    pub api: u16,
}

pub fn start_dev(dir: tempfile::TempDir, extra: &[&str]) -> Dev {
    start_dev_on(dir, free_port(), free_port(), extra)
}

pub fn start_dev_on(dir: tempfile::TempDir, gateway: u16, api: u16, extra: &[&str]) -> Dev {
    let command = dev_command(&dir, gateway, api, extra);
    let mut process = Process::spawn("strata dev", command);
    process.wait_serving(gateway, Duration::from_secs(30));
    process.wait_serving(api, Duration::from_secs(30));
    Dev {
        dir,
        process,
        gateway,
        api,
    }
}

/// The `strata dev` command line the harness runs: data in `dir`, the given
/// ports, the test's admin token, a short stable window.
pub fn dev_command(dir: &tempfile::TempDir, gateway: u16, api: u16, extra: &[&str]) -> Command {
    let mut command = Command::new(binary("strata"));
    command
        .arg("dev")
        .args(["--data-dir", &dir.path().join("strata").display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{gateway}")])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--token", TOKEN])
        .args(["--stable-window", "6s"])
        .args(extra)
        .current_dir(dir.path());
    command
}

/// A sidecar `strata dev` runs: its process and its command line.
#[derive(Debug, Clone)]
pub struct Sidecar {
    pub pid: u32,
    pub args: Vec<String>,
}

impl Sidecar {
    /// The value of `flag` on its command line (`--instance-id`, `--service`, ...).
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|arg| arg == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }
}

impl Dev {
    /// The sidecars (`strata proxy` children) running now, read from `/proc`.
    pub fn sidecars(&self) -> Vec<Sidecar> {
        let parent = self.process.pid();
        let mut sidecars: Vec<Sidecar> = procfs::pids()
            .into_iter()
            .filter(|pid| procfs::stat(*pid).is_some_and(|stat| stat.parent == parent))
            .map(|pid| Sidecar {
                pid,
                args: procfs::cmdline(pid),
            })
            .filter(|sidecar| sidecar.args.get(1).map(String::as_str) == Some("proxy"))
            .collect();
        sidecars.sort_by_key(|sidecar| sidecar.pid);
        sidecars
    }

    /// The sidecar of `service` (the first, if it runs several).
    pub fn sidecar_of(&self, service: &str) -> Sidecar {
        self.sidecars()
            .into_iter()
            .find(|sidecar| sidecar.arg("--service") == Some(service))
            .unwrap_or_else(|| panic!("no running sidecar of {service}"))
    }

    pub fn deploy(&self, args: &[&str]) {
        self.deploy_command("cart", &binary("shopping-cart").display().to_string(), args);
    }

    pub fn deploy_command(&self, name: &str, command: &str, args: &[&str]) {
        let status = Command::new(binary("strata"))
            .args(["deploy", name, "--command", command])
            .args(args)
            .args(["--api", &format!("http://127.0.0.1:{}", self.api)])
            .env("STRATA_TOKEN", TOKEN)
            .status()
            .expect("strata deploy");
        assert!(status.success(), "strata deploy failed");
    }

    /// `strata ARGS` against this platform's API with the admin token, run in its folder.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("strata"))
            .args(args)
            .args(["--api", &format!("http://127.0.0.1:{}", self.api)])
            .env("STRATA_TOKEN", TOKEN)
            .current_dir(self.dir.path())
            .output()
            .expect("strata")
    }

    /// [`Dev::cli`] that must succeed: its standard output.
    pub fn strata(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn api(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("API")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn service(&self) -> Value {
        self.api("/services/cart").await
    }

    /// The event history so far (the SSE stream's retained part, read briefly).
    pub async fn events(&self) -> Vec<Value> {
        let mut response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/api/v1/events", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("events");
        let mut text = String::new();
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    }

    /// Polls the cart service until `check` holds, failing after `limit`.
    pub async fn until(&self, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        self.until_service("cart", what, limit, check).await
    }

    /// Polls the service `name` until `check` holds, failing after `limit`.
    pub async fn until_service(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let service = self.api(&format!("/services/{name}")).await;
            if check(&service) {
                return service;
            }
            assert!(Instant::now() < deadline, "{what}: never happened; last seen {service}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway)
    }
}

pub async fn add(http: &reqwest::Client, dev: &Dev, user: &str, quantity: i64) -> reqwest::Response {
    http.post(dev.url(&format!("/cart/{user}/items/add")))
        .json(&json!({"productId": "p", "name": "Thing", "quantity": quantity}))
        .send()
        .await
        .expect("request")
}

pub async fn total(http: &reqwest::Client, dev: &Dev, user: &str) -> i64 {
    let cart: Value = http
        .get(dev.url(&format!("/carts/{user}")))
        .send()
        .await
        .expect("GetCart")
        .json()
        .await
        .expect("JSON");
    cart["items"].as_array().map_or(0, |items| {
        items.iter().map(|i| i["quantity"].as_i64().unwrap_or(0)).sum()
    })
}
