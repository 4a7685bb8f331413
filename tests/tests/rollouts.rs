//! Rollouts and rollbacks under load through `strata dev`: 32 clients add items to
//! 64 carts through the gateway while a deploy moves the cart to a new revision and
//! a rollback moves it back. No call fails; every acknowledged write is in its cart;
//! every answer names the revision that served it (`strata-revision`), and for each
//! cart the revisions switch once and never back (judged by real time: a call that
//! began after another ended never sees an earlier revision in a rollout, nor a
//! later one in a rollback). A revision whose function crashes at start stops its
//! own rollout: the serving revision goes on serving, and the history says why.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    binary,
    dev::{start_dev, write_script, Dev},
    load::lost_writes,
    revision_load::{client, Record},
};

const CLIENTS: usize = 32;
const CARTS: u64 = 64;
const WRAPPER: &str = "run-cart.sh";

/// The cart, or (with `CRASH` set) a function that exits at once.
fn write_wrapper(dir: &Path) {
    let body = format!(
        "if [ -n \"$CRASH\" ]; then echo 'crashing as asked' >&2; exit 3; fi\nexec {}\n",
        binary("shopping-cart").display()
    );
    write_script(dir, WRAPPER, &body);
}

async fn instances(dev: &Dev) -> Vec<Value> {
    dev.api("/services/cart/instances").await["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every instance of the cart runs `revision` and `count` are ready,
/// the older ones stopped.
async fn until_only(dev: &Dev, revision: u64, count: usize, record: &Record) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = instances(dev).await;
        let settled = now.len() == count
            && now
                .iter()
                .all(|i| i["revision"] == json!(revision) && i["state"] == "ready");
        let shards = dev.api("/services/cart/shards").await;
        let handing_off = shards["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().any(|s| !s["handoff_to"].is_null()));
        if settled && !handing_off {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "revision {revision} never took over: {now:?}; failures {:?}",
            record.ledger.failures.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_and_a_rollback_under_load_fail_no_call_and_switch_each_cart_once() {
    let dir = tempfile::tempdir().unwrap();
    write_wrapper(dir.path());
    let dev = start_dev(dir, &[]);
    let deploy = |env: &str| {
        dev.strata(&[
            "deploy",
            "cart",
            "--command",
            &format!("./{WRAPPER}"),
            "--env",
            env,
            "--min-scale",
            "2",
            "--max-scale",
            "2",
        ])
    };
    let record = Arc::new(Record::default());
    deploy("LABEL=one");
    until_only(&dev, 1, 2, &record).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, dev.url(""), CARTS, record.clone(), stop.clone())))
        .collect();
    record.until_acked(300).await;

    // --- the rollout: revision 2 takes over while the clients write
    let deployed = deploy("LABEL=two");
    assert!(deployed.contains("(revision 2,"), "{deployed}");
    until_only(&dev, 2, 2, &record).await;
    record.until_acked(300).await;
    let rollback_at = Instant::now();

    // --- the rollback: revision 1 again
    let rolled = dev.strata(&["rollback", "cart"]);
    assert!(rolled.contains("cart now serves revision 1"), "{rolled}");
    until_only(&dev, 1, 2, &record).await;
    record.until_acked(300).await;

    // --- a revision that crashes at start: its rollout stops, revision 1 serves on
    let deployed = deploy("CRASH=1");
    assert!(deployed.contains("(revision 3,"), "{deployed}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let stopped = loop {
        let events = dev.api("/services/cart/history").await;
        let found = events["events"].as_array().and_then(|events| {
            events
                .iter()
                .filter_map(|e| e["reason"].as_str())
                .find(|reason| reason.starts_with("rollout to revision 3 stopped"))
                .map(str::to_owned)
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the crashing revision's rollout never stopped: {events}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stopped.ends_with("revision 1 serves"), "{stopped}");
    let revisions = dev.api("/services/cart/revisions").await;
    assert_eq!(revisions["serving"], json!(1), "{revisions}");
    let three = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == json!(3))
        .expect("revision 3 is kept");
    assert!(
        three["failure"].as_str().is_some_and(|f| f.contains("exit status: 3")),
        "{three}"
    );
    record.until_acked(300).await;
    until_only(&dev, 1, 2, &record).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let served = record.assert_each_cart_switched_once(rollback_at);
    assert!(
        !served.iter().any(|c| c.revision == 3),
        "the crashing revision served nothing"
    );
    let lost = lost_writes(&record.ledger, &dev.url("")).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
}
