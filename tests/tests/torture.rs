//! Torture: AddItem load on the shopping cart through `strata dev` while its
//! sidecars, its functions and `strata dev` itself are killed with `kill -9` at
//! random. No request is answered 500 (a dying process is an outage, 503, not
//! a failure of the function). At the end every acknowledged write is in its
//! cart, and every journal in the SQLite file counts 1, 2, 3... with no gap and
//! no fork.
//!
//! `STRATA_TORTURE_SECONDS` sets how long the chaos lasts (default 20 s, the
//! smoke run in `scripts/check`); `scripts/torture` runs the long one and prints
//! the figures `docs/reliability.md` records. `STRATA_TORTURE_SEED` replays a run.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    dev::{start_dev, start_dev_on, Dev},
    load::{broken_journals, children, journals, seconds, seed, Dice},
};

const CARTS: usize = 16;
const CLIENTS: usize = 8;

/// What the clients were told: the product ids of every acknowledged AddItem per
/// cart, and how the other requests failed.
#[derive(Default)]
struct Ledger {
    acked: Mutex<BTreeMap<String, BTreeSet<String>>>,
    attempts: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    fn ack(&self, cart: &str, product: &str) {
        let mut acked = self.acked.lock().unwrap();
        acked.entry(cart.to_owned()).or_default().insert(product.to_owned());
    }

    fn fail(&self, kind: String) {
        *self.failures.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn acked_total(&self) -> usize {
        self.acked.lock().unwrap().values().map(BTreeSet::len).sum()
    }
}

fn chaos_duration() -> Duration {
    seconds("STRATA_TORTURE_SECONDS", 20)
}

/// One client: AddItem of a new product (quantity 1) to a random cart, again and
/// again, recording what was acknowledged.
async fn client(id: usize, gateway: u16, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut dice = Dice(seed("STRATA_TORTURE_SEED") ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("t{}", dice.below(CARTS as u64));
        let product = format!("c{id}-{n}");
        ledger.attempts.fetch_add(1, Ordering::Relaxed);
        let reply = http
            .post(format!("http://127.0.0.1:{gateway}/cart/{cart}/items/add"))
            .json(&json!({"productId": product, "name": "Thing", "quantity": 1}))
            .send()
            .await;
        match reply {
            Ok(reply) if reply.status().is_success() => ledger.ack(&cart, &product),
            Ok(reply) => {
                let status = reply.status().as_u16();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
                ledger.fail(format!("{status} {code}"));
            }
            Err(error) => {
                ledger.fail(if error.is_connect() {
                    "connect".into()
                } else {
                    "transport".into()
                });
                // strata dev is down: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// What the chaos did, for the report.
#[derive(Default, Debug)]
struct Kills {
    sidecars: u32,
    functions: u32,
    platform: u32,
}

/// The product ids in a cart, read through the gateway (retried while instances
/// come back).
async fn products(http: &reqwest::Client, dev: &Dev, cart: &str) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http.get(dev.url(&format!("/carts/{cart}"))).send().await;
        if let Ok(reply) = reply {
            if reply.status().is_success() {
                let body: Value = reply.json().await.unwrap();
                return body["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item["productId"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
        assert!(Instant::now() < deadline, "cart {cart} never answered after the chaos");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_of_every_process() {
    let seed = seed("STRATA_TORTURE_SEED");
    let chaos = chaos_duration();
    println!("--- seed {seed}, chaos for {chaos:?}");
    let mut dice = Dice(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut dev = start_dev(dir, &[]);
    dev.deploy(&["--min-scale", "1", "--max-scale", "2", "--target-concurrency", "2"]);
    dev.until("the first instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    println!("--- load: {CLIENTS} clients adding to {CARTS} carts");
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, dev.gateway, ledger.clone(), stop.clone())))
        .collect();

    println!("--- chaos: kill -9 sidecars, functions and strata dev at random");
    let mut kills = Kills::default();
    let started = Instant::now();
    while started.elapsed() < chaos {
        tokio::time::sleep(Duration::from_millis(1000 + dice.below(2000))).await;
        let platform = dev.process.pid();
        match dice.below(5) {
            0 | 1 => {
                if let Some(&pid) = children(platform, "strata proxy").first() {
                    kill9(pid);
                    kills.sidecars += 1;
                }
            }
            2 | 3 => {
                if let Some(&pid) = children(platform, "shopping-cart").first() {
                    kill9(pid);
                    kills.functions += 1;
                }
            }
            _ => {
                let (gateway, api) = (dev.gateway, dev.api);
                let dir = std::mem::replace(&mut dev.dir, tempfile::tempdir().unwrap());
                dev.process.kill();
                drop(dev);
                dev = start_dev_on(dir, gateway, api, &[]);
                kills.platform += 1;
            }
        }
    }

    println!("--- stop the load");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let attempts = ledger.attempts.load(Ordering::Relaxed);
    let acked = ledger.acked_total();
    let failures = ledger.failures.lock().unwrap().clone();
    println!("kills {kills:?}; {attempts} AddItems, {acked} acknowledged; failures {failures:?}");
    assert!(acked > 0, "nothing was acknowledged: {failures:?}");
    // A dying process is an outage (503, retry), never the function's own
    // failure (500 UNKNOWN) nor a proxy fault (500 INTERNAL).
    let server_errors: BTreeMap<_, _> = failures.iter().filter(|(kind, _)| kind.starts_with("500")).collect();
    assert!(server_errors.is_empty(), "500s while processes died: {server_errors:?}");

    println!("--- every acknowledged AddItem is in its cart");
    let http = reqwest::Client::new();
    let expected = ledger.acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (cart, acked) in &expected {
        let stored = products(&http, &dev, cart).await;
        lost.extend(acked.difference(&stored).map(|p| format!("{cart}/{p}")));
    }
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());

    println!("--- every journal counts 1, 2, 3... with no gap");
    let db = dev.dir.path().join("strata").join("strata.db");
    let journals = journals(&db, "shopping-cart");
    let broken = broken_journals(&journals);
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
    let events: usize = journals.values().map(Vec::len).sum();
    assert!(
        events >= acked,
        "{events} events stored for {acked} acknowledged writes"
    );
    println!(
        "torture: seed {seed}, {:?} of chaos, kills {kills:?}, {acked} acknowledged writes checked, {events} events in {} journals, 0 lost",
        chaos,
        journals.len()
    );
}
