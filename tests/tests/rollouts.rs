//! Rollouts and rollbacks under load through `strata dev`: 32 clients add items to
//! 64 carts through the gateway while a deploy moves the cart to a new revision and
//! a rollback moves it back. No call fails; every acknowledged write is in its cart;
//! every answer names the revision that served it (`strata-revision`), and for each
//! cart the revisions switch once and never back (judged by real time: a call that
//! began after another ended never sees an earlier revision in a rollout, nor a
//! later one in a rollback). A revision whose function crashes at start stops its
//! own rollout: the serving revision goes on serving, and the history says why.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    binary,
    dev::{start_dev, write_script, Dev},
    load::{lost_writes, Dice, Ledger},
};

const CLIENTS: usize = 32;
const CARTS: u64 = 64;
const WRAPPER: &str = "run-cart.sh";

/// One answered call: to which cart, when it began and ended, which revision served it.
struct Served {
    cart: String,
    began: Instant,
    ended: Instant,
    revision: u64,
}

#[derive(Default)]
struct Record {
    ledger: Ledger,
    served: Mutex<Vec<Served>>,
}

/// The cart, or (with `CRASH` set) a function that exits at once.
fn write_wrapper(dir: &Path) {
    let body = format!(
        "if [ -n \"$CRASH\" ]; then echo 'crashing as asked' >&2; exit 3; fi\nexec {}\n",
        binary("shopping-cart").display()
    );
    write_script(dir, WRAPPER, &body);
}

/// AddItem to random carts until `stop`, recording every answer with its revision.
async fn client(id: usize, base: String, record: Arc<Record>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut dice = Dice((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("r{}", dice.below(CARTS));
        let product = format!("c{id}-{n}");
        record.ledger.attempts.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let reply = http
            .post(format!("{base}/cart/{cart}/items/add"))
            .json(&json!({"productId": product, "name": "Thing", "quantity": 1}))
            .send()
            .await;
        let ended = Instant::now();
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                record.ledger.fail(format!("transport: {error}"));
                continue;
            }
        };
        let status = reply.status();
        let revision = reply
            .headers()
            .get("strata-revision")
            .and_then(|value| value.to_str().ok()?.parse().ok());
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            record.ledger.fail(format!("{status} {body}"));
            continue;
        }
        let Some(revision) = revision else {
            record.ledger.fail("an answer without strata-revision".into());
            continue;
        };
        record.ledger.ack(&cart, &product);
        record.served.lock().unwrap().push(Served {
            cart,
            began,
            ended,
            revision,
        });
    }
}

/// For each cart, a call that began after another one ended must not see a
/// revision `backwards` of it: earlier in a rollout, later in a rollback. Returns
/// the violations.
fn switched_back(served: &[&Served], backwards: impl Fn(u64, u64) -> bool) -> Vec<String> {
    let mut by_cart: BTreeMap<&str, Vec<&Served>> = BTreeMap::new();
    for call in served {
        by_cart.entry(&call.cart).or_default().push(call);
    }
    let mut violations = Vec::new();
    for (cart, calls) in by_cart {
        let mut ended: Vec<&Served> = calls.clone();
        ended.sort_by_key(|call| call.ended);
        let mut began: Vec<&Served> = calls;
        began.sort_by_key(|call| call.began);
        // Sweep by start: everything that ended before this call began is before it.
        let mut before: Option<u64> = None;
        let mut next = 0;
        for call in began {
            while next < ended.len() && ended[next].ended < call.began {
                let revision = ended[next].revision;
                before = Some(match before {
                    Some(seen) if backwards(revision, seen) => seen,
                    _ => revision,
                });
                next += 1;
            }
            if let Some(seen) = before.filter(|&seen| backwards(call.revision, seen)) {
                violations.push(format!("{cart}: revision {} after {seen}", call.revision));
            }
        }
    }
    violations
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

/// Waits until `more` further writes are acknowledged.
async fn until_acked(record: &Record, more: usize) {
    let target = record.ledger.acked_total() + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while record.ledger.acked_total() < target {
        assert!(
            Instant::now() < deadline,
            "no {more} acknowledged writes within 60 s; failures {:?}",
            record.ledger.failures.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        .map(|id| tokio::spawn(client(id, dev.url(""), record.clone(), stop.clone())))
        .collect();
    until_acked(&record, 300).await;

    // --- the rollout: revision 2 takes over while the clients write
    let deployed = deploy("LABEL=two");
    assert!(deployed.contains("(revision 2,"), "{deployed}");
    until_only(&dev, 2, 2, &record).await;
    until_acked(&record, 300).await;
    let rollback_at = Instant::now();

    // --- the rollback: revision 1 again
    let rolled = dev.strata(&["rollback", "cart"]);
    assert!(rolled.contains("cart now serves revision 1"), "{rolled}");
    until_only(&dev, 1, 2, &record).await;
    until_acked(&record, 300).await;

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
    until_acked(&record, 300).await;
    until_only(&dev, 1, 2, &record).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = record.ledger.failures.lock().unwrap().clone();
    let served = std::mem::take(&mut *record.served.lock().unwrap());
    println!(
        "{} calls, {} acknowledged; by revision {:?}",
        record.ledger.attempts.load(Ordering::Relaxed),
        record.ledger.acked_total(),
        served.iter().fold(BTreeMap::<u64, u64>::new(), |mut by, call| {
            *by.entry(call.revision).or_default() += 1;
            by
        })
    );
    assert!(failures.is_empty(), "calls failed during the rollouts: {failures:?}");
    let (rollout, rollback): (Vec<&Served>, Vec<&Served>) = served.iter().partition(|call| call.began < rollback_at);
    let back = switched_back(&rollout, |seen, before| seen < before);
    assert!(
        back.is_empty(),
        "carts went back to revision 1 in the rollout: {back:?}"
    );
    let back = switched_back(&rollback, |seen, before| seen > before);
    assert!(
        back.is_empty(),
        "carts went back to revision 2 in the rollback: {back:?}"
    );
    assert!(
        rollout.iter().any(|c| c.revision == 1) && rollout.iter().any(|c| c.revision == 2),
        "the rollout's calls saw both revisions"
    );
    assert!(
        rollback.iter().any(|c| c.revision == 2) || rollback.iter().any(|c| c.revision == 1),
        "the rollback's calls were served"
    );
    assert!(
        !served.iter().any(|c| c.revision == 3),
        "the crashing revision served nothing"
    );
    let lost = lost_writes(&record.ledger, &dev.url("")).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
}
