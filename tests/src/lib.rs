//! Harness for end-to-end tests: real `strata` and user-function processes on
//! loopback ports, killed when dropped, and small clients for the shopping cart.
//! The binaries come from the workspace's target folder (`cargo build` first).

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod cluster;
pub mod dev;
pub mod kube_api;
pub mod kubelet;
pub mod linearizability;
pub mod load;
pub mod otlp;
pub mod pki;
pub mod procfs;
pub mod relay;
pub mod revision_load;

/// The shopping cart's gRPC client and messages, generated from its public protos.
pub mod shoppingcart {
    include!(concat!(env!("OUT_DIR"), "/com.example.shoppingcart.rs"));
}

/// Messages and client of the streamer test function (`tests/proto/streamer.proto`).
pub mod streamer {
    include!(concat!(env!("OUT_DIR"), "/strata.test.streamer.rs"));
}

/// The streamer's `FileDescriptorSet`, imports included.
pub const STREAMER_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/streamer.bin"));

/// Messages of the value cart test function (`tests/proto/value_cart.proto`).
pub mod valuecart {
    include!(concat!(env!("OUT_DIR"), "/strata.test.valuecart.rs"));
}

/// The value cart's `FileDescriptorSet`, imports included.
pub const VALUE_CART_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/value_cart.bin"));

/// The flaky subscriber's `FileDescriptorSet` (`tests/proto/subscriber.proto`).
pub const SUBSCRIBER_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/subscriber.bin"));

/// The shopping cart's `FileDescriptorSet`, imports included.
pub const SHOPPING_CART_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shoppingcart.bin"));

/// A binary built by this workspace in the same profile folder as the running
/// executable: beside it (a bench binary) or one level up (a test in `deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let beside = exe.parent().expect("target folder");
    let candidates = [beside.join(name), beside.parent().unwrap_or(beside).join(name)];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
            candidates[1].display()
        )
    })
}

/// A free loopback port (bound, then released for the child to take), below the
/// kernel's ephemeral range (see `strata_ports`): the same chooser
/// `strata dev` uses for its instances.
pub fn free_port() -> u16 {
    strata_ports::free_loopback_port().expect("a free loopback port")
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process that is killed (SIGKILL) when dropped or on [`Process::kill`].
/// Its output goes to a log file (or to the test's own output with
/// `STRATA_TEST_LOGS=1`), whose tail a failed start prints.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: Option<tempfile::NamedTempFile>,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command) -> Process {
        let log = if std::env::var_os("STRATA_TEST_LOGS").is_none() {
            let log = tempfile::Builder::new()
                .prefix("strata-e2e-")
                .suffix(".log")
                .tempfile()
                .unwrap_or_else(|e| panic!("cannot create a log file for {name}: {e}"));
            let out = log.reopen().and_then(|out| Ok((out.try_clone()?, out)));
            let (stdout, stderr): (File, File) = out.unwrap_or_else(|e| panic!("cannot open {name}'s log: {e}"));
            command.stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
            Some(log)
        } else {
            None
        };
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Waits until the process serves on `port`; panics with how it ended (if it
    /// did) and the tail of its output when it does not within `timeout`.
    pub fn wait_serving(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if wait_for_port(port, Duration::from_millis(200)) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{} exited ({status}) before serving on {port}; its output ends:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
        panic!(
            "{} did not start serving on {port} within {timeout:?}; its output ends:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Everything the process wrote so far (empty when it went to the test's own output).
    pub fn log(&self) -> String {
        let Some(log) = &self.log else { return String::new() };
        std::fs::read_to_string(log.path()).unwrap_or_default()
    }

    /// The last lines of the process's output (empty when it went to the test's own).
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the workspace's user function binary `name` on `port` (HOST/PORT), with
/// `env`, and waits until it serves.
pub fn start_function(name: &str, port: u16, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(binary(name));
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .envs(env.iter().copied());
    let mut process = Process::spawn(name, command);
    process.wait_serving(port, Duration::from_secs(20));
    process
}

/// A JSON-over-HTTP client for one proxy or gateway: answers as (status, body).
pub struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    /// A client for `http://127.0.0.1:{port}`.
    pub fn new(port: u16) -> Http {
        Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The body of `path` as text (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    /// GETs `path` until the answer is 200 and `check` holds (for what lands
    /// after an answer, like asynchronous side effects), failing after 20 s.
    pub async fn get_until(&self, path: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never satisfied the check: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts the Rust shopping cart function on `port`.
pub fn start_shopping_cart(port: u16) -> Process {
    let mut command = Command::new(binary("shopping-cart"));
    command.env("HOST", "127.0.0.1").env("PORT", port.to_string());
    let mut process = Process::spawn("shopping-cart", command);
    process.wait_serving(port, Duration::from_secs(20));
    process
}

/// Starts `strata proxy` for the function on `function_port`, serving on
/// `http_port`, and waits until it serves (discovery done).
pub fn start_proxy(function_port: u16, http_port: u16, store: &str, extra: &[&str]) -> Process {
    let mut command = Command::new(binary("strata"));
    command
        .arg("proxy")
        .args(extra)
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("STRATA_STORE", store);
    let mut process = Process::spawn("strata proxy", command);
    process.wait_serving(http_port, Duration::from_secs(30));
    process
}

/// A cart behind a proxy, with its SQLite file in a temporary folder.
pub struct CartStack {
    pub dir: tempfile::TempDir,
    pub function_port: u16,
    pub http_port: u16,
    pub function: Process,
    pub proxy: Process,
}

impl CartStack {
    pub fn start() -> CartStack {
        let dir = tempfile::tempdir().expect("temp dir");
        let function_port = free_port();
        let http_port = free_port();
        let function = start_shopping_cart(function_port);
        let store = format!("sqlite://{}", dir.path().join("strata.db").display());
        let proxy = start_proxy(function_port, http_port, &store, &[]);
        CartStack {
            dir,
            function_port,
            http_port,
            function,
            proxy,
        }
    }

    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("strata.db").display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// `kill -9` both processes and start them again on the same ports and file.
    pub fn kill_and_restart(&mut self) {
        self.proxy.kill();
        self.function.kill();
        self.function = start_shopping_cart(self.function_port);
        self.proxy = start_proxy(self.function_port, self.http_port, &self.store_url(), &[]);
    }

    pub async fn grpc(&self) -> CartClient {
        cart_client(self.http_port).await
    }
}

pub type CartClient = shoppingcart::shopping_cart_client::ShoppingCartClient<tonic::transport::Channel>;

/// A gRPC client for the shopping cart served on a loopback port.
pub async fn cart_client(port: u16) -> CartClient {
    CartClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to the proxy")
}

/// A new, empty PostgreSQL database on the test server
/// (`STRATA_TEST_POSTGRES_URL`), as a URL. `None` when no server is configured,
/// unless `STRATA_REQUIRE_POSTGRES=1`, which turns a missing server into a failure
/// so CI can never skip PostgreSQL silently.
pub async fn fresh_postgres_database(prefix: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var("STRATA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STRATA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "STRATA_REQUIRE_POSTGRES=1 but STRATA_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipping the PostgreSQL part: STRATA_TEST_POSTGRES_URL is not set");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    // Swap the database name at the end of the admin URL (before any query string).
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base.to_string(), format!("?{query}")),
        None => (admin_url.clone(), String::new()),
    };
    let server = base
        .rsplit_once('/')
        .map(|(server, _)| server.to_string())
        .unwrap_or(base);
    Some(format!("{server}/{name}{query}"))
}
