//! The store fails under a running sidecar: SQLite on a full disk (a small
//! tmpfs, filled), PostgreSQL crashed and started again, PostgreSQL slow (every
//! packet delayed by a relay in the test). Every refused write is a clear 503
//! UNAVAILABLE, or 504 DEADLINE_EXCEEDED at the client's deadline (never a 500,
//! never a hang), nothing acknowledged is lost, and once the store is back (or
//! fast again) the same sidecar serves again, without a restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    cluster::Postgres,
    free_port,
    load::{broken_journals, journals, postgres_journals},
    relay::Relay,
    start_proxy, start_shopping_cart,
};

/// A tmpfs of `size` mounted at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs at {}", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` until it refuses to take more.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).and_then(|_| file.sync_all()).is_err() {
            return;
        }
    }
}

/// What AddItems were told: the acknowledged products per cart, and the
/// other answers by status.
#[derive(Default, Debug)]
struct Told {
    acked: BTreeMap<String, BTreeSet<String>>,
    refused: BTreeMap<u16, u64>,
}

impl Told {
    /// Five AddItems over two carts while the store is healthy, each acknowledged.
    async fn add_while_healthy(&mut self, http: &reqwest::Client, port: u16) {
        for n in 0..5 {
            assert_eq!(
                self.add(http, port, &format!("cart-{}", n % 2), &format!("before-{n}"))
                    .await,
                200
            );
        }
    }

    /// AddItem of `product` (with a large name, so each write needs new pages)
    /// to `cart`; the answer's status.
    async fn add(&mut self, http: &reqwest::Client, port: u16, cart: &str, product: &str) -> u16 {
        let reply = http
            .post(format!("http://127.0.0.1:{port}/cart/{cart}/items/add"))
            .json(&json!({"productId": product, "name": "x".repeat(16 * 1024), "quantity": 1}))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("the sidecar answers");
        let status = reply.status().as_u16();
        if status == 200 {
            self.acked
                .entry(cart.to_owned())
                .or_default()
                .insert(product.to_owned());
        } else {
            let body: Value = reply.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (503, Some("UNAVAILABLE")),
                "a failing store is a clear 503: {body}"
            );
            *self.refused.entry(status).or_default() += 1;
        }
        status
    }

    /// AddItem of `product` to `cart` with a `grpc-timeout` of `deadline`: the
    /// answer's status and code, and how long it took. A 200 is recorded as
    /// acknowledged; any other answer must be 503 UNAVAILABLE or 504
    /// DEADLINE_EXCEEDED.
    async fn add_within(
        &mut self,
        http: &reqwest::Client,
        port: u16,
        cart: &str,
        product: &str,
        deadline: Duration,
    ) -> (u16, Duration) {
        let started = Instant::now();
        let reply = http
            .post(format!("http://127.0.0.1:{port}/cart/{cart}/items/add"))
            .header("grpc-timeout", format!("{}m", deadline.as_millis()))
            .json(&json!({"productId": product, "name": "Thing", "quantity": 1}))
            // Far past the deadline: hitting it means the sidecar hung.
            .timeout(deadline + Duration::from_secs(60))
            .send()
            .await
            .expect("the sidecar answers before the client gives up");
        let status = reply.status().as_u16();
        if status == 200 {
            self.acked
                .entry(cart.to_owned())
                .or_default()
                .insert(product.to_owned());
        } else {
            let body: Value = reply.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str();
            assert!(
                matches!(
                    (status, code),
                    (503, Some("UNAVAILABLE")) | (504, Some("DEADLINE_EXCEEDED"))
                ),
                "a slow store is a clear 503 or 504: {status} {body}"
            );
            *self.refused.entry(status).or_default() += 1;
        }
        (status, started.elapsed())
    }

    /// Adds to `cart` until one is acknowledged (the store is back), within a
    /// minute.
    async fn until_acked(&mut self, http: &reqwest::Client, port: u16, cart: &str, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0.. {
            if self.add(http, port, cart, &format!("{prefix}-{n}")).await == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "the sidecar never wrote again: {self:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The acknowledged products missing from their carts.
    async fn lost(&self, http: &reqwest::Client, port: u16) -> Vec<String> {
        let mut lost = Vec::new();
        for (cart, acked) in &self.acked {
            let stored = strata_e2e::load::cart_products(http, &format!("http://127.0.0.1:{port}"), cart).await;
            lost.extend(acked.difference(&stored).map(|p| format!("{cart}/{p}")));
        }
        lost
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_writes_clearly_and_recovers_without_a_restart() {
    if !is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "4m");
    let db = disk.0.join("strata.db");
    let function_port = free_port();
    let http_port = free_port();
    let _function = start_shopping_cart(function_port);
    let store = format!("sqlite://{}", db.display());
    let mut proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = reqwest::Client::new();
    let mut told = Told::default();

    println!("--- writes while there is room");
    told.add_while_healthy(&http, http_port).await;

    println!("--- fill the disk; writes are refused with 503");
    fill(&disk.0.join("filler"));
    for n in 0..40 {
        told.add(&http, http_port, &format!("cart-{}", n % 4), &format!("full-{n}"))
            .await;
    }
    println!("while full: {told:?}");
    assert!(
        told.refused.get(&503).is_some_and(|count| *count > 0),
        "a full disk refused nothing"
    );

    println!("--- free the disk; the same sidecar writes again");
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    for cart in ["cart-0", "cart-1", "cart-2", "cart-3"] {
        told.until_acked(&http, http_port, cart, "after").await;
    }
    let lost = told.lost(&http, http_port).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    println!("--- and after a kill -9, everything acknowledged is still there");
    proxy.kill();
    proxy = start_proxy(function_port, http_port, &store, &[]);
    let lost = told.lost(&http, http_port).await;
    assert!(lost.is_empty(), "acknowledged writes lost after a restart: {lost:?}");
    proxy.kill();
    let broken = broken_journals(&journals(&db, "shopping-cart"));
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_crashed_under_load_costs_clear_errors_and_recovers_without_a_restart() {
    if std::env::var_os("STRATA_REQUIRE_POSTGRES").is_none() && std::env::var_os("STRATA_TEST_POSTGRES_URL").is_none() {
        eprintln!("skipping: runs with PostgreSQL (STRATA_TEST_POSTGRES_URL or STRATA_REQUIRE_POSTGRES)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = Postgres::start_in(dir.path());
    postgres.create_database("strata").await;
    let store = postgres.url("strata");
    let function_port = free_port();
    let http_port = free_port();
    let _function = start_shopping_cart(function_port);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = reqwest::Client::new();
    let mut told = Told::default();

    println!("--- writes while PostgreSQL is up");
    told.add_while_healthy(&http, http_port).await;

    println!("--- PostgreSQL crashes: writes are refused with 503, at once");
    postgres.crash();
    for n in 0..10 {
        told.add(&http, http_port, &format!("cart-{}", n % 4), &format!("down-{n}"))
            .await;
    }
    assert_eq!(told.refused.get(&503), Some(&10), "{told:?}");

    println!("--- PostgreSQL is back; the same sidecar writes again");
    postgres.restart();
    for cart in ["cart-0", "cart-1", "cart-2", "cart-3"] {
        told.until_acked(&http, http_port, cart, "after").await;
    }
    let lost = told.lost(&http, http_port).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let broken = broken_journals(&postgres_journals(&store, "shopping-cart").await);
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_postgresql_costs_deadline_errors_not_hangs_and_recovers_when_fast_again() {
    if std::env::var_os("STRATA_REQUIRE_POSTGRES").is_none() && std::env::var_os("STRATA_TEST_POSTGRES_URL").is_none() {
        eprintln!("skipping: runs with PostgreSQL (STRATA_TEST_POSTGRES_URL or STRATA_REQUIRE_POSTGRES)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start_in(dir.path());
    postgres.create_database("strata").await;
    let direct = postgres.url("strata");
    // The sidecar reaches PostgreSQL only through the relay.
    let (server, database) = direct.rsplit_once('/').unwrap();
    let (credentials, host) = server.rsplit_once('@').unwrap();
    let target: std::net::SocketAddr = host.parse().expect("PostgreSQL on a numeric address");
    let relay = Relay::start("127.0.0.1", target, 13).await;
    let store = format!("{credentials}@{}/{database}", relay.address);
    let function_port = free_port();
    let http_port = free_port();
    let _function = start_shopping_cart(function_port);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = reqwest::Client::new();
    let mut told = Told::default();
    let deadline = Duration::from_secs(2);

    println!("--- writes while PostgreSQL is fast");
    for n in 0..5 {
        let (status, _) = told
            .add_within(
                &http,
                http_port,
                &format!("cart-{}", n % 2),
                &format!("fast-{n}"),
                deadline,
            )
            .await;
        assert_eq!(status, 200, "{told:?}");
    }

    println!("--- every packet to and from PostgreSQL held 1 s: clear answers by the deadline");
    relay.set_delay(Duration::from_secs(1));
    let writes = (0..12).map(|n| {
        let (http, mut mine) = (http.clone(), Told::default());
        async move {
            let answer = mine
                .add_within(
                    &http,
                    http_port,
                    &format!("cart-{}", n % 4),
                    &format!("slow-{n}"),
                    deadline,
                )
                .await;
            (mine, answer)
        }
    });
    for (mine, (status, took)) in futures::future::join_all(writes).await {
        // A store round trip is 2 s now, and a write takes several: only the
        // deadline can answer this soon.
        assert!(
            took < deadline + Duration::from_secs(5),
            "an answer ({status}) took {took:?}, far past the client's {deadline:?} deadline"
        );
        for (cart, products) in mine.acked {
            told.acked.entry(cart).or_default().extend(products);
        }
        for (status, count) in mine.refused {
            *told.refused.entry(status).or_default() += count;
        }
    }
    println!("while slow: {told:?}");
    assert!(!told.refused.is_empty(), "a store this slow refused nothing: {told:?}");

    println!("--- PostgreSQL is fast again; the same sidecar writes again");
    relay.set_delay(Duration::ZERO);
    for cart in ["cart-0", "cart-1", "cart-2", "cart-3"] {
        told.until_acked(&http, http_port, cart, "after").await;
    }
    let lost = told.lost(&http, http_port).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let broken = broken_journals(&postgres_journals(&direct, "shopping-cart").await);
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
}
