//! Soak: steady AddItem load through `strata dev` over many more carts than a
//! sidecar may hold active (`STRATA_MAX_ACTIVE_ENTITIES`), so entities are
//! passivated and activated again all the time. Resident memory of the
//! sidecar and the function is sampled through the run and printed as a
//! curve, with the active entities, which never exceed the cap plus the
//! commands in flight (an evicted entity finishes those first). Once the load
//! stops, every entity passivates: the sidecar's count of open streams and its
//! estimate of the state they hold return to zero (state kept for an entity
//! after its passivation would show here). At the end every journal counts 1,
//! 2, 3... and sampled carts hold every acknowledged write.
//!
//! `STRATA_SOAK_SECONDS` sets the length (default 15 s, the smoke run in
//! `scripts/check`); `scripts/soak` runs the long one. Runs of 10 minutes or
//! more also assert that memory stays flat: the last third's average at most
//! 1.5 times the second third's.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    dev::{dev_command, Dev},
    free_port,
    load::{broken_journals, children, gauge, journals, rss_anon_kib, rss_kib, seconds, seed, Dice},
    wait_for_port, Process,
};

const CLIENTS: usize = 6;
const CARTS: u64 = 5_000;
const MAX_ACTIVE: &str = "200";

#[derive(Default)]
struct Ledger {
    acked: Mutex<BTreeMap<String, BTreeSet<String>>>,
    attempts: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

/// One client: AddItem of a new product to a random cart among many.
async fn client(id: usize, gateway: u16, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut dice = Dice(seed("STRATA_SOAK_SEED") ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("s{}", dice.below(CARTS));
        let product = format!("c{id}-{n}");
        ledger.attempts.fetch_add(1, Ordering::Relaxed);
        let reply = http
            .post(format!("http://127.0.0.1:{gateway}/cart/{cart}/items/add"))
            .json(&json!({"productId": product, "name": "Thing", "quantity": 1}))
            .send()
            .await;
        let failure = match reply {
            Ok(reply) if reply.status().is_success() => {
                ledger.acked.lock().unwrap().entry(cart).or_default().insert(product);
                continue;
            }
            Ok(reply) => {
                let status = reply.status().as_u16();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                format!("{status} {}", body["error"]["code"].as_str().unwrap_or("?"))
            }
            Err(error) => format!("transport: {error}"),
        };
        *ledger.failures.lock().unwrap().entry(failure).or_default() += 1;
    }
}

/// One point of the memory curve.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    active: u64,
    sidecar_kib: u64,
    /// The sidecar's heap and stacks (RssAnon), without its mapped binary.
    sidecar_anon_kib: u64,
    function_kib: u64,
    acked: u64,
}

fn mean(samples: &[Sample]) -> f64 {
    samples.iter().map(|s| s.sidecar_kib as f64).sum::<f64>() / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_flat_under_entity_churn() {
    let length = seconds("STRATA_SOAK_SECONDS", 15);
    let every = if length >= Duration::from_secs(300) {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    println!("--- soak for {length:?}: {CLIENTS} clients over {CARTS} carts, at most {MAX_ACTIVE} active");
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut command = dev_command(&dir, gateway, api, &[]);
    command.env("STRATA_MAX_ACTIVE_ENTITIES", MAX_ACTIVE);
    let process = Process::spawn("strata dev", command);
    assert!(wait_for_port(gateway, Duration::from_secs(30)), "no gateway");
    assert!(wait_for_port(api, Duration::from_secs(30)), "no API");
    let dev = Dev {
        dir,
        process,
        gateway,
        api,
    };
    dev.deploy(&["--min-scale", "1", "--max-scale", "1"]);
    dev.until("the instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let instances = dev.api("/services/cart/instances").await;
    let admin = instances["instances"][0]["admin_address"].as_str().unwrap().to_owned();
    let platform = dev.process.pid();
    let sidecar = *children(platform, "strata proxy").first().expect("a sidecar");
    let function = *children(platform, "shopping-cart").first().expect("a function");

    println!("--- load");
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, gateway, ledger.clone(), stop.clone())))
        .collect();
    let started = Instant::now();
    let mut curve = Vec::new();
    let mut ticks = tokio::time::interval(every);
    while started.elapsed() < length {
        ticks.tick().await;
        let acked = ledger.acked.lock().unwrap().values().map(|p| p.len() as u64).sum();
        let sample = Sample {
            at: started.elapsed(),
            active: gauge(&admin, "strata_entities_active").await,
            sidecar_kib: rss_kib(sidecar).expect("the sidecar died during the soak"),
            sidecar_anon_kib: rss_anon_kib(sidecar).unwrap_or_default(),
            function_kib: rss_kib(function).expect("the function died during the soak"),
            acked,
        };
        println!(
            "soak: t={:>5}s active={} sidecar_rss={} KiB (anon {} KiB) function_rss={} KiB acked={}",
            sample.at.as_secs(),
            sample.active,
            sample.sidecar_kib,
            sample.sidecar_anon_kib,
            sample.function_kib,
            sample.acked
        );
        curve.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    // The cap bounds the entities the sidecar admits; one evicted to admit
    // another keeps its stream until it has answered the commands already in
    // its mailbox, and an actor with an empty mailbox closes at once. So the
    // open streams are at most the cap plus the commands in flight, which the
    // clients bound (each has one outstanding request).
    let cap: u64 = MAX_ACTIVE.parse().unwrap();
    let bound = cap + CLIENTS as u64;
    let most = curve.iter().map(|s| s.active).max().unwrap_or(0);
    assert!(
        most <= bound,
        "{most} entities had a stream open at once; the cap is {cap} and {CLIENTS} commands can be in flight"
    );
    for client in clients {
        client.await.unwrap();
    }

    let attempts = ledger.attempts.load(Ordering::Relaxed);
    let acked = ledger.acked.lock().unwrap().clone();
    let acked_total: usize = acked.values().map(BTreeSet::len).sum();
    let failures = ledger.failures.lock().unwrap().clone();
    println!(
        "soak: {attempts} AddItems, {acked_total} acknowledged over {} carts; failures {failures:?}",
        acked.len()
    );
    assert!(acked_total > 0, "nothing was acknowledged: {failures:?}");
    // Nothing is killed here: every failure is a defect, except a write that
    // raced its own entity's passivation (409, the fencing that keeps journals whole).
    let unexpected: BTreeMap<_, _> = failures.iter().filter(|(kind, _)| *kind != "409 ABORTED").collect();
    assert!(
        unexpected.is_empty(),
        "failures without any fault injected: {unexpected:?}"
    );

    println!("--- idle: every entity passivates, and nothing of them stays counted");
    let idle_by = Instant::now() + Duration::from_secs(120);
    loop {
        let (active, bytes) = (
            gauge(&admin, "strata_entities_active").await,
            gauge(&admin, "strata_entities_active_bytes").await,
        );
        if (active, bytes) == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < idle_by,
            "{active} entities with open streams and {bytes} bytes of their state still counted two minutes after the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "soak: idle sidecar_rss={} KiB (anon {} KiB)",
        rss_kib(sidecar).unwrap_or_default(),
        rss_anon_kib(sidecar).unwrap_or_default()
    );

    println!("--- every journal counts 1, 2, 3...");
    let journals = journals(&dev.dir.path().join("strata").join("strata.db"), "shopping-cart");
    let broken = broken_journals(&journals);
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
    let events: usize = journals.values().map(Vec::len).sum();
    assert!(
        events >= acked_total,
        "{events} events for {acked_total} acknowledged writes"
    );

    println!("--- sampled carts hold every acknowledged write");
    let http = reqwest::Client::new();
    let mut dice = Dice(seed("STRATA_SOAK_SEED"));
    let carts: Vec<&String> = acked.keys().collect();
    for _ in 0..20.min(carts.len()) {
        let cart = carts[dice.below(carts.len() as u64) as usize];
        let body: Value = http
            .get(dev.url(&format!("/carts/{cart}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored: BTreeSet<String> = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["productId"].as_str().map(str::to_owned))
            .collect();
        let lost: Vec<_> = acked[cart].difference(&stored).collect();
        assert!(lost.is_empty(), "cart {cart} lost {lost:?}");
    }

    if length >= Duration::from_secs(600) && curve.len() >= 6 {
        let third = curve.len() / 3;
        let (middle, last) = (mean(&curve[third..2 * third]), mean(&curve[2 * third..]));
        println!("soak: sidecar RSS mean {middle:.0} KiB in the second third, {last:.0} KiB in the last");
        assert!(
            last <= middle * 1.5,
            "the sidecar's memory grew: {middle:.0} -> {last:.0} KiB"
        );
    }
}
