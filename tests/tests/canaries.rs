//! Canaries through `strata dev` and the CLI. A revision deployed with
//! `--traffic 25` serves a stable slice of the carts: each cart answers from the
//! same revision on every call (the `strata-revision` header), some from the
//! canary and most from the serving revision; `strata promote` then serves the
//! canary everywhere. A canary that fails a fifth of its calls, deployed with
//! automatic analysis, is rolled back by the control plane on its own: the history
//! and the revision say why, and every cart answers from the serving revision again.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{
    binary,
    dev::{start_dev, Dev},
};

const CARTS: usize = 64;

fn deploy(dev: &Dev, extra: &[&str]) -> String {
    let cart = binary("value-cart").display().to_string();
    let mut args = vec![
        "deploy",
        "vcart",
        "--command",
        &cart,
        "--min-scale",
        "1",
        "--max-scale",
        "1",
    ];
    args.extend_from_slice(extra);
    dev.strata(&args)
}

/// Adds an item to `cart`: the status and the revision that answered.
async fn add(http: &reqwest::Client, dev: &Dev, cart: &str) -> (u16, Option<u64>) {
    let reply = http
        .post(dev.url(&format!("/vcart/{cart}/items/add")))
        .json(&json!({"productId": "p", "quantity": 1}))
        .send()
        .await
        .expect("the gateway answers");
    let revision = reply
        .headers()
        .get("strata-revision")
        .and_then(|value| value.to_str().ok()?.parse().ok());
    (reply.status().as_u16(), revision)
}

/// Waits until the instances are `wanted` (revision, ready) pairs in any order and
/// no shard is being handed off.
async fn until_instances(dev: &Dev, wanted: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut wanted = wanted.to_vec();
    wanted.sort_unstable();
    loop {
        let instances = dev.api("/services/vcart/instances").await;
        let instances = instances["instances"].as_array().cloned().unwrap_or_default();
        let mut ready: Vec<u64> = instances
            .iter()
            .filter(|i| i["state"] == "ready")
            .filter_map(|i| i["revision"].as_u64())
            .collect();
        ready.sort_unstable();
        let shards = dev.api("/services/vcart/shards").await;
        let settled = shards["shards"].as_array().is_some_and(|shards| {
            shards
                .iter()
                .all(|s| s["handoff_to"].is_null() && !s["owner"].is_null())
        });
        if ready == wanted && instances.len() == wanted.len() && settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instances never became {wanted:?}: {instances:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The revision each cart answers from, over `rounds` calls each; a cart that
/// answers from two revisions fails the test.
async fn revisions_of_carts(http: &reqwest::Client, dev: &Dev, rounds: usize) -> BTreeMap<String, u64> {
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for round in 0..rounds {
        for n in 0..CARTS {
            let cart = format!("c{n}");
            let (status, revision) = add(http, dev, &cart).await;
            assert_eq!(status, 200, "{cart} in round {round}");
            let revision = revision.expect("every answer names its revision");
            let first = *seen.entry(cart.clone()).or_insert(revision);
            assert_eq!(
                first, revision,
                "{cart} answered from revision {first}, then {revision}"
            );
        }
    }
    seen
}

fn rollout_reasons(history: &Value) -> Vec<String> {
    history["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["kind"] == "rollout")
        .filter_map(|event| event["reason"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_serves_the_same_carts_on_every_call_and_promoting_serves_it_everywhere() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    deploy(&dev, &["--env", "LABEL=one"]);
    until_instances(&dev, &[1]).await;
    let http = reqwest::Client::new();

    let deployed = deploy(&dev, &["--env", "LABEL=two", "--traffic", "25"]);
    assert!(deployed.contains("deployed vcart as a canary"), "{deployed}");
    assert!(
        deployed.contains("vcart: revision 2 serves 25% of the traffic (16 shard(s)), revision 1 the rest"),
        "{deployed}"
    );
    until_instances(&dev, &[1, 2]).await;
    let listed = dev.strata(&["revisions", "vcart"]);
    assert!(listed.lines().any(|line| line.starts_with("2         25%")), "{listed}");

    // --- each cart answers from one revision, call after call; a quarter of the
    // shards (so some carts, far from all) are the canary's
    let seen = revisions_of_carts(&http, &dev, 3).await;
    let on_canary = seen.values().filter(|&&revision| revision == 2).count();
    println!("{on_canary} of {CARTS} carts on the canary");
    assert!(
        (3..=40).contains(&on_canary),
        "{on_canary} of {CARTS} carts on a 25% canary"
    );
    assert!(seen.values().all(|&revision| revision == 1 || revision == 2));

    // --- promote under a light load: no call fails, then every cart answers from 2
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|client| {
            let (http, url, stop, failed) = (http.clone(), dev.url(""), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let reply = http
                        .post(format!("{url}/vcart/c{}/items/add", (client * 16 + n) % CARTS))
                        .json(&json!({"productId": "p", "quantity": 1}))
                        .send()
                        .await;
                    if !reply.is_ok_and(|reply| reply.status().is_success()) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let promoted = dev.strata(&["promote", "vcart"]);
    assert!(
        promoted.contains("vcart now serves revision 2 everywhere"),
        "{promoted}"
    );
    until_instances(&dev, &[2]).await;
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "calls failed during the promotion");
    let seen = revisions_of_carts(&http, &dev, 1).await;
    assert!(seen.values().all(|&revision| revision == 2), "{seen:?}");
    let reasons = rollout_reasons(&dev.api("/services/vcart/history").await);
    assert!(
        reasons.iter().any(|r| r.starts_with("canary revision 2 promoted by")),
        "{reasons:?}"
    );

    // --- bad input: a canary of a revision that serves, a split that does not add up
    let refused = dev.cli(&["traffic", "vcart", "2=10"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("serves already"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let refused = dev.cli(&["traffic", "vcart", "2=80", "1=10"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not add up"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `strata dev` with revision 1 of the cart serving and revision 2 deployed with
/// `extra` as a 50% canary judged over 30 s once it has 20 calls; both run.
/// Returns what the deploy printed.
async fn a_canary_under_analysis(extra: &[&str]) -> (Dev, String) {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    deploy(&dev, &[]);
    until_instances(&dev, &[1]).await;
    let mut args = extra.to_vec();
    args.extend(["--traffic", "50", "--canary-min-calls", "20", "--canary-window", "30s"]);
    let deployed = deploy(&dev, &args);
    until_instances(&dev, &[1, 2]).await;
    (dev, deployed)
}

/// Calls every cart until the control plane has judged the canary (revision 2) and
/// rolled it back; its reason, and how many calls were made and failed before.
async fn until_rolled_back(http: &reqwest::Client, dev: &Dev) -> (String, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut calls, mut failures) = (0u64, 0u64);
    loop {
        for n in 0..CARTS {
            let (status, _) = add(http, dev, &format!("c{n}")).await;
            calls += 1;
            failures += u64::from(status != 200);
        }
        let reasons = rollout_reasons(&dev.api("/services/vcart/history").await);
        if let Some(reason) = reasons.iter().find(|r| r.starts_with("canary revision 2 rolled back:")) {
            return (reason.clone(), calls, failures);
        }
        assert!(
            Instant::now() < deadline,
            "the canary was never rolled back ({failures} of {calls} calls failed): {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_failing_a_fifth_of_its_calls_is_rolled_back_on_its_own() {
    let (dev, deployed) = a_canary_under_analysis(&["--env", "FAIL_EVERY=5", "--canary-max-error-rate", "5%"]).await;
    assert!(
        deployed.contains("rolled back on its own above 5.0% errors"),
        "{deployed}"
    );
    let http = reqwest::Client::new();

    let (reason, calls, failures) = until_rolled_back(&http, &dev).await;
    println!("{failures} of {calls} calls failed before the rollback: {reason}");
    assert!(failures > 0, "the canary failed calls");
    assert!(reason.contains("its error rate over the last 30 s was"), "{reason}");
    assert!(reason.ends_with("revision 1 serves everything"), "{reason}");
    let revisions = dev.api("/services/vcart/revisions").await;
    assert!(revisions["canary"].is_null(), "{revisions}");
    assert_eq!(revisions["serving"], json!(1), "{revisions}");
    let two = revisions["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == json!(2))
        .expect("revision 2 is kept");
    assert!(
        two["failure"].as_str().is_some_and(|f| f.contains("error rate")),
        "{two}"
    );

    // --- revision 1 serves every cart again, and no call fails
    until_instances(&dev, &[1]).await;
    let seen = revisions_of_carts(&http, &dev, 2).await;
    assert!(seen.values().all(|&revision| revision == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_slower_than_twice_the_serving_revisions_p99_is_rolled_back_on_its_own() {
    let (dev, deployed) = a_canary_under_analysis(&[
        "--env",
        "SLOW_MS=60",
        "--canary-max-error-rate",
        "50%",
        "--canary-max-p99-ratio",
        "2",
    ])
    .await;
    assert!(
        deployed.contains("rolled back on its own above 50.0% errors or a p99 above 2 times revision 1's"),
        "{deployed}"
    );
    let http = reqwest::Client::new();

    let (reason, calls, failures) = until_rolled_back(&http, &dev).await;
    println!("{calls} calls before the rollback: {reason}");
    assert_eq!(failures, 0, "a slow canary fails no call");
    assert!(reason.contains("its p99 latency over the last 30 s was"), "{reason}");
    assert!(reason.contains("above 2 times revision 1's"), "{reason}");
    let revisions = dev.api("/services/vcart/revisions").await;
    assert!(revisions["canary"].is_null(), "{revisions}");
    assert_eq!(revisions["serving"], json!(1), "{revisions}");
}
