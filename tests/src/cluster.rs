//! A Strata deployment of separate processes on loopback, as in production:
//! three `strata control-plane` nodes (whose leader makes schedules' calls
//! through the gateway), a `strata gateway`, sidecars (`strata
//! proxy` joined to the control plane through every node's address) each with
//! its shopping-cart function, and a PostgreSQL server of its own. Every part
//! can be `kill -9`ed (PostgreSQL: an immediate shutdown, its crash) and
//! started again on the same ports and data. Owns the processes and their
//! addresses; what to do to them is the test's.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{binary, free_port, Process};

pub const SECRET: &str = "cluster-test-secret";
pub const TOKEN: &str = "cluster-test-admin";
/// The service the sidecars serve (the shopping cart).
pub const SERVICE: &str = "cart";

/// One `strata control-plane` process.
pub struct ControlPlaneNode {
    pub id: u64,
    dir: PathBuf,
    /// The management API, host:port.
    pub api: String,
    /// The Raft transport and data-plane API, host:port.
    pub listen: String,
    /// The gateway its schedules' calls go through, as a URL.
    schedule_gateway: String,
    process: Option<Process>,
}

impl ControlPlaneNode {
    /// Starts the node; the first start names its id and addresses (and
    /// bootstraps or joins), a restart needs only its data folder.
    fn start(&mut self, first: Option<&str>) {
        let mut command = Command::new(binary("strata"));
        command
            .arg("control-plane")
            .arg("--data-dir")
            .arg(&self.dir)
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .env("STRATA_ADMIN_TOKEN", TOKEN)
            .env("STRATA_SCHEDULE_GATEWAY", &self.schedule_gateway)
            .env("RUST_LOG", "info,openraft=warn");
        if let Some(join) = first {
            command.args([
                "--node-id",
                &self.id.to_string(),
                "--listen",
                &self.listen,
                "--api-listen",
                &self.api,
            ]);
            command.args(["--heartbeat-timeout", "3s"]);
            if join.is_empty() {
                command.arg("--bootstrap");
            } else {
                command.args(["--join", join]);
            }
        }
        self.process = Some(Process::spawn(&format!("control-plane node {}", self.id), command));
    }

    pub fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.start(None);
    }

    pub fn is_down(&mut self) -> bool {
        self.process.as_mut().is_none_or(Process::exited)
    }
}

/// One instance of the service: a sidecar and its function.
pub struct Instance {
    pub id: String,
    function_port: u16,
    pub http_port: u16,
    admin_port: u16,
    function: Option<Process>,
    sidecar: Option<Process>,
}

impl Instance {
    pub fn kill9_sidecar(&mut self) {
        if let Some(mut process) = self.sidecar.take() {
            process.kill();
        }
    }

    pub fn kill9_function(&mut self) {
        if let Some(mut process) = self.function.take() {
            process.kill();
        }
    }
}

/// A PostgreSQL server of the cluster's own (`scripts/postgres.sh`), so it
/// can be crashed without disturbing other tests.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    /// The server's `postgres` database, as a URL.
    pub admin_url: String,
    up: bool,
}

impl Postgres {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
    }

    /// Starts a server whose data lives in `parent/pg`, on a free port.
    pub fn start_in(parent: &Path) -> Postgres {
        // PostgreSQL runs as its own user, which must reach its folder.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.join("pg");
        let (admin_url, port) = Postgres::run_script(&dir, free_port());
        Postgres {
            dir,
            port,
            admin_url,
            up: true,
        }
    }

    /// A server of its own that is not up yet: its port is chosen now, so its
    /// URL is known before [`Postgres::start`] brings it up.
    pub fn later_in(parent: &Path) -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        Postgres {
            dir: parent.join("pg"),
            port,
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            up: false,
        }
    }

    /// Starts the server on its port (and data, if it ran before).
    pub fn start(&mut self) {
        let (_, port) = Postgres::run_script(&self.dir, self.port);
        assert_eq!(port, self.port, "PostgreSQL came up on another port");
        self.up = true;
    }

    /// Starts the server in `dir` on `port` (or the next free one); its URL and port.
    fn run_script(dir: &Path, port: u16) -> (String, u16) {
        let out = Command::new(Postgres::script())
            .arg("start")
            .arg(dir)
            .env("STRATA_PG_PORT", port.to_string())
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin_url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let port = std::fs::read_to_string(dir.join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (admin_url, port)
    }

    /// An immediate shutdown: no checkpoint, crash recovery on the next start.
    pub fn crash(&mut self) {
        let status = Command::new(Postgres::script())
            .arg("crash")
            .arg(&self.dir)
            .status()
            .expect("run scripts/postgres.sh");
        assert!(status.success(), "PostgreSQL did not stop");
        self.up = false;
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.start();
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Creates database `name`.
    pub async fn create_database(&self, name: &str) {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the database");
    }

    /// A URL for database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        let server = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(server, _)| server);
        format!("{server}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(Postgres::script()).arg("stop").arg(&self.dir).output();
    }
}

/// The whole deployment.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<ControlPlaneNode>,
    pub gateway_port: u16,
    gateway: Option<Process>,
    pub instances: Vec<Instance>,
    pub postgres: Postgres,
    /// The store the sidecars write.
    pub store: String,
}

impl Cluster {
    /// Starts PostgreSQL and three control-plane nodes (node 1 bootstraps, the
    /// others join through it). The rest starts once the service exists.
    pub fn start_control_plane() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let postgres = Postgres::start_in(dir.path());
        let gateway_port = free_port();
        let mut nodes: Vec<ControlPlaneNode> = (1..=3)
            .map(|id| ControlPlaneNode {
                id,
                dir: dir.path().join(format!("node-{id}")),
                api: format!("127.0.0.1:{}", free_port()),
                listen: format!("127.0.0.1:{}", free_port()),
                schedule_gateway: format!("http://127.0.0.1:{gateway_port}"),
                process: None,
            })
            .collect();
        let join = format!("http://{}", nodes[0].api);
        for node in &mut nodes {
            node.start(Some(if node.id == 1 { "" } else { &join }));
        }
        Cluster {
            store: postgres.url("strata"),
            dir,
            nodes,
            gateway_port,
            gateway: None,
            instances: Vec::new(),
            postgres,
        }
    }

    /// Creates the sidecars' database (once PostgreSQL answers).
    pub async fn create_database(&self) {
        self.postgres.create_database("strata").await;
    }

    /// Every node's data-plane address, comma-separated: what sidecars and the
    /// gateway are given.
    pub fn control_plane(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("http://{}", node.listen))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn apis(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.api.clone()).collect()
    }

    /// Starts the gateway and `count` instances.
    pub fn start_data_plane(&mut self, count: usize) {
        for i in 1..=count {
            self.instances.push(Instance {
                id: format!("{SERVICE}-{i}"),
                function_port: free_port(),
                http_port: free_port(),
                admin_port: free_port(),
                function: None,
                sidecar: None,
            });
        }
        self.revive();
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    pub fn kill9_gateway(&mut self) {
        if let Some(mut process) = self.gateway.take() {
            process.kill();
        }
    }

    /// Starts again whatever of the data plane is not running (killed, or
    /// exited by itself, e.g. a sidecar that found PostgreSQL down).
    pub fn revive(&mut self) {
        let control_plane = self.control_plane();
        if self.gateway.as_mut().is_none_or(Process::exited) {
            let mut command = Command::new(binary("strata"));
            command
                .arg("gateway")
                .args(["--listen", &format!("127.0.0.1:{}", self.gateway_port)])
                .args(["--control-plane", &control_plane, "--token", TOKEN]);
            self.gateway = Some(Process::spawn("strata gateway", command));
        }
        for instance in &mut self.instances {
            if instance.function.as_mut().is_none_or(Process::exited) {
                let mut command = Command::new(binary("shopping-cart"));
                command
                    .env("HOST", "127.0.0.1")
                    .env("PORT", instance.function_port.to_string());
                instance.function = Some(Process::spawn("shopping-cart", command));
            }
            if instance.sidecar.as_mut().is_none_or(Process::exited) {
                let mut command = Command::new(binary("strata"));
                command
                    .arg("proxy")
                    .args(["--user-function-port", &instance.function_port.to_string()])
                    .args(["--http-port", &instance.http_port.to_string()])
                    .args(["--admin-port", &instance.admin_port.to_string()])
                    .args(["--store", &self.store])
                    .args(["--control-plane", &control_plane, "--token", TOKEN])
                    .args(["--instance-id", &instance.id, "--service", SERVICE]);
                instance.sidecar = Some(Process::spawn("strata proxy", command));
            }
        }
    }
}
