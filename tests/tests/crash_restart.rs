//! A crash costs a handful of calls, not a second of them: under four AddItem
//! clients on one instance of the cart in `strata dev`, `kill -9` of the function
//! (and, separately, of its sidecar) fails at most 50 calls (the ones in flight
//! when it died, and the few that reached the dead instance before it was
//! replaced), the replacement starts at once (no backoff for a first crash) and
//! serves, the calls that came meanwhile are held for it rather than refused, and
//! every acknowledged write is in its cart.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use strata_e2e::{
    dev::{start_dev, Dev},
    load::{add_items, children, lost_writes, Ledger},
};

const CLIENTS: usize = 4;
const CARTS: u64 = 8;
/// The bound: at most this many failed calls per crash.
const MOST_FAILED: u64 = 50;

fn kill9(pid: u32) {
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

fn failed(ledger: &Ledger) -> u64 {
    ledger.failures.lock().unwrap().values().sum()
}

/// Waits until `more` further writes are acknowledged (the service serves again).
async fn until_acked(ledger: &Ledger, more: usize, what: &str) {
    let target = ledger.acked_total() + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.acked_total() < target {
        assert!(
            Instant::now() < deadline,
            "{what}: no {more} acknowledged writes within 60 s; failures {:?}",
            ledger.failures.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the one process of the instance that `pattern` names, under load, and
/// returns how many calls failed for it.
async fn crash(dev: &Dev, ledger: &Ledger, pattern: &str) -> u64 {
    let pids = children(dev.process.pid(), pattern);
    assert_eq!(pids.len(), 1, "one {pattern} runs: {pids:?}");
    until_acked(ledger, 200, "before the crash").await;
    let before = failed(ledger);
    kill9(pids[0]);
    until_acked(ledger, 500, &format!("after kill -9 of the {pattern}")).await;
    let replaced = children(dev.process.pid(), pattern);
    assert!(
        !replaced.is_empty() && !replaced.contains(&pids[0]),
        "the {pattern} was replaced: {replaced:?}"
    );
    failed(ledger) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_function_or_sidecar_costs_at_most_fifty_calls() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    dev.deploy(&["--min-scale", "1", "--max-scale", "1"]);
    dev.until("the instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let base = format!("http://127.0.0.1:{}", dev.gateway);
            tokio::spawn(add_items(id, base, CARTS, 7, ledger.clone(), stop.clone()))
        })
        .collect();

    let function = crash(&dev, &ledger, "shopping-cart").await;
    println!("kill -9 of the function: {function} failed calls");
    let sidecar = crash(&dev, &ledger, "strata proxy").await;
    println!("kill -9 of the sidecar: {sidecar} failed calls");

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = ledger.failures.lock().unwrap().clone();
    println!(
        "{} AddItems, {} acknowledged; failures {failures:?}",
        ledger.attempts.load(Ordering::Relaxed),
        ledger.acked_total()
    );
    assert!(
        function <= MOST_FAILED,
        "kill -9 of the function failed {function} calls (at most {MOST_FAILED}): {failures:?}"
    );
    assert!(
        sidecar <= MOST_FAILED,
        "kill -9 of the sidecar failed {sidecar} calls (at most {MOST_FAILED}): {failures:?}"
    );
    let server_errors = ledger.server_errors();
    assert!(server_errors.is_empty(), "500s while processes died: {server_errors:?}");
    let lost = lost_writes(&ledger, &dev.url("")).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
}
