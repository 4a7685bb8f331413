//! The systems the suite measures, each started as a user would run it: `strata
//! dev` with the Rust cart deployed through `strata deploy` (SQLite or PostgreSQL
//! as its store), the stateless PostgreSQL cart (`pg-cart`), and Restate (its
//! server from the npm package, the cart as a virtual object on `restate-sdk`).
//! Every process is killed when its system is dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::Value;
use strata_e2e::{binary, free_port, wait_for_port, Process};

use crate::load::Request;

pub const TOKEN: &str = "bench-token";

/// How a system spells the cart's two calls over HTTP+JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The cart's `google.api.http` bindings (Strata, and the PostgreSQL cart).
    Cart,
    /// Restate's ingress: `POST /Cart/{key}/{handler}`.
    Restate,
}

impl Api {
    pub fn add(self, user: &str, product: &str) -> Request {
        let body = Bytes::from(format!(r#"{{"productId":"{product}","name":"Thing","quantity":1}}"#));
        match self {
            Api::Cart => Request::Post(format!("/cart/{user}/items/add"), body),
            Api::Restate => Request::Post(format!("/Cart/{user}/addItem"), body),
        }
    }

    pub fn get(self, user: &str) -> Request {
        match self {
            Api::Cart => Request::Get(format!("/carts/{user}")),
            Api::Restate => Request::Post(format!("/Cart/{user}/getCart"), Bytes::new()),
        }
    }
}

/// One HTTP endpoint under test.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub addr: SocketAddr,
    pub api: Api,
    /// Its processes, for the CPU they use.
    pub system: crate::cpu::System,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn until<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `strata dev` with the cart deployed.
pub struct StrataDev {
    process: Process,
    pub gateway: SocketAddr,
    pub api: u16,
    http: reqwest::Client,
}

impl StrataDev {
    /// `strata dev`'s process: its sidecars and functions run under it.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Starts `strata dev` in `dir` with `store` (`None`: its SQLite file).
    pub async fn start(dir: &Path, store: Option<&str>) -> anyhow::Result<StrataDev> {
        let store: Vec<&str> = store.map(|store| vec!["--store", store]).unwrap_or_default();
        StrataDev::start_configured(dir, &store, &[]).await
    }

    /// Starts `strata dev` in `dir` with extra flags `args` and variables `env`.
    pub async fn start_configured(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<StrataDev> {
        std::fs::create_dir_all(dir)?;
        let (gateway, api) = (free_port(), free_port());
        let mut command = Command::new(binary("strata"));
        command
            .arg("dev")
            .args(["--data-dir", &dir.join("data").display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{gateway}")])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--token", TOKEN])
            .args(["--stable-window", "6s"])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir);
        let process = Process::spawn("strata dev", command);
        if !wait_for_port(gateway, Duration::from_secs(60)) {
            bail!("strata dev did not open its gateway");
        }
        Ok(StrataDev {
            process,
            gateway: loopback(gateway),
            api,
            http: reqwest::Client::new(),
        })
    }

    /// `strata deploy NAME --command shopping-cart ARGS...`, as a user types it.
    pub fn deploy(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        self.deploy_program(name, "shopping-cart", args)
    }

    /// `strata deploy NAME --command PROGRAM ARGS...` (a binary of this build).
    pub fn deploy_program(&self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new(binary("strata"))
            .args(["deploy", name, "--command", &binary(program).display().to_string()])
            .args(args)
            .args(["--api", &format!("http://127.0.0.1:{}", self.api)])
            .env("STRATA_TOKEN", TOKEN)
            .stdout(std::process::Stdio::null())
            .status()
            .context("strata deploy")?;
        if !status.success() {
            bail!("strata deploy {name} failed");
        }
        Ok(())
    }

    pub async fn api_get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}/api/v1{path}", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Waits until the service's record satisfies `check`.
    pub async fn until_service(&self, name: &str, check: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        let path = format!("/services/{name}");
        until(
            &format!("{name} reaching the expected state"),
            Duration::from_secs(180),
            async || self.api_get(&path).await.filter(|s| check(s)).map(|_| ()),
        )
        .await
    }

    /// The address of the first ready instance's sidecar.
    pub async fn sidecar(&self, name: &str) -> anyhow::Result<SocketAddr> {
        let path = format!("/services/{name}/instances");
        let address = until("a ready instance", Duration::from_secs(60), async || {
            let instances = self.api_get(&path).await?;
            instances["instances"]
                .as_array()?
                .iter()
                .find(|i| i["state"] == "ready")
                .and_then(|i| i["address"].as_str())
                .map(str::to_owned)
        })
        .await?;
        address.parse().context("sidecar address")
    }

    /// The process id of the sidecar (`strata proxy --service NAME`) this
    /// `strata dev` runs for `name`.
    pub fn sidecar_pid(&self, name: &str) -> anyhow::Result<u32> {
        let parent = |pid: u32| -> Option<u32> {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()
        };
        let descends = |mut pid: u32| {
            while let Some(up) = parent(pid).filter(|&up| up > 1) {
                if up == self.pid() {
                    return true;
                }
                pid = up;
            }
            false
        };
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let serves = args.get(1) == Some(&b"proxy".as_slice())
                && args.windows(2).any(|w| w[0] == b"--service" && w[1] == name.as_bytes());
            if serves && descends(pid) {
                return Ok(pid);
            }
        }
        bail!("no sidecar of {name} runs under strata dev")
    }

    /// `strata dev` with one always-ready instance of the cart (`cart`), for load.
    pub async fn with_cart(dir: &Path, store: Option<&str>) -> anyhow::Result<StrataDev> {
        let dev = StrataDev::start(dir, store).await?;
        dev.deploy_cart().await
    }

    /// As [`StrataDev::with_cart`], with extra flags `args` and variables `env`.
    pub async fn with_cart_configured(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<StrataDev> {
        let dev = StrataDev::start_configured(dir, args, env).await?;
        dev.deploy_cart().await
    }

    async fn deploy_cart(self) -> anyhow::Result<StrataDev> {
        self.deploy("cart", &["--min-scale", "1", "--max-scale", "1"])?;
        self.until_service("cart", |s| s["ready_replicas"] == 1).await?;
        Ok(self)
    }
}

/// The stateless PostgreSQL cart.
pub struct PgCart {
    process: Process,
    pub addr: SocketAddr,
}

impl PgCart {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn start(database_url: &str) -> anyhow::Result<PgCart> {
        let port = free_port();
        let mut command = Command::new(binary("pg-cart"));
        command.env("PORT", port.to_string()).env("DATABASE_URL", database_url);
        let process = Process::spawn("pg-cart", command);
        if !wait_for_port(port, Duration::from_secs(30)) {
            bail!("pg-cart did not start (is PostgreSQL at {database_url} up?)");
        }
        Ok(PgCart {
            process,
            addr: loopback(port),
        })
    }
}

/// Where Restate's two programs are.
#[derive(Debug, Clone)]
pub struct RestatePrograms {
    pub server: PathBuf,
    pub cart: PathBuf,
}

/// A one-node Restate server with the cart registered.
pub struct Restate {
    server: Process,
    cart: Process,
    pub ingress: SocketAddr,
}

impl Restate {
    /// The server's and the cart's processes.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.server.pid(), self.cart.pid()]
    }

    pub async fn start(programs: &RestatePrograms, dir: &Path) -> anyhow::Result<Restate> {
        std::fs::create_dir_all(dir)?;
        let (ingress, admin, node, cart) = (free_port(), free_port(), free_port(), free_port());
        let mut command = Command::new(&programs.server);
        command
            .arg("--no-logo")
            .env("RESTATE_BASE_DIR", dir)
            .env("RESTATE_LISTEN_MODE", "tcp")
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{node}"))
            .env("RESTATE_INGRESS__BIND_ADDRESS", format!("127.0.0.1:{ingress}"))
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin}"))
            .env("RESTATE_DISABLE_TELEMETRY", "true")
            .env("RESTATE_LOG_FILTER", "error");
        let server = Process::spawn("restate-server", command);
        let mut command = Command::new(&programs.cart);
        command.env("PORT", cart.to_string());
        let cart_process = Process::spawn("restate-cart", command);
        if !wait_for_port(admin, Duration::from_secs(60)) || !wait_for_port(cart, Duration::from_secs(30)) {
            bail!("restate-server or the Restate cart did not start");
        }
        let http = reqwest::Client::new();
        until("Restate registering the cart", Duration::from_secs(60), async || {
            let reply = http
                .post(format!("http://127.0.0.1:{admin}/deployments"))
                .json(&serde_json::json!({ "uri": format!("http://127.0.0.1:{cart}") }))
                .send()
                .await
                .ok()?;
            reply.status().is_success().then_some(())
        })
        .await?;
        if !wait_for_port(ingress, Duration::from_secs(60)) {
            bail!("Restate's ingress did not open");
        }
        let restate = Restate {
            server,
            cart: cart_process,
            ingress: loopback(ingress),
        };
        // The ingress may answer 404 until the registration has reached it.
        until("Restate serving the cart", Duration::from_secs(60), async || {
            let mut connection = crate::load::Connection::open(restate.ingress).await.ok()?;
            connection.send(&Api::Restate.get("warm-up")).await.ok()?.ok()
        })
        .await?;
        Ok(restate)
    }
}

/// A fresh PostgreSQL database on the server of `admin_url`, as a URL.
pub async fn fresh_database(admin_url: &str, prefix: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to PostgreSQL at {admin_url}"))?;
    tokio::spawn(connection);
    let name = format!("{prefix}_{}_{}", std::process::id(), free_port());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    let (server, _) = admin_url
        .rsplit_once('/')
        .context("a PostgreSQL URL ends with /DATABASE")?;
    Ok(format!("{server}/{name}"))
}
