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
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use strata_e2e::{
    dev::{start_dev, start_dev_on},
    load::{add_items, broken_journals, children, journals, lost_writes, seconds, seed, Dice, Ledger},
};

const CARTS: u64 = 16;
const CLIENTS: usize = 8;

fn chaos_duration() -> Duration {
    seconds("STRATA_TORTURE_SECONDS", 20)
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
        .map(|id| {
            let base = format!("http://127.0.0.1:{}", dev.gateway);
            tokio::spawn(add_items(id, base, CARTS, seed, ledger.clone(), stop.clone()))
        })
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
    let server_errors = ledger.server_errors();
    assert!(server_errors.is_empty(), "500s while processes died: {server_errors:?}");

    println!("--- every acknowledged AddItem is in its cart");
    let lost = lost_writes(&ledger, &dev.url("")).await;
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
