//! `strata dev` end to end: the whole platform as one real process, the Rust cart
//! deployed through the CLI, load through the gateway. It scales out with shards
//! on every instance, scales down under load failing no request, loses nothing
//! acknowledged when an instance is killed, goes
//! to zero when idle, wakes on the next request, answers a burst at zero by starting
//! several instances together, and refuses (never hangs) what overflows the hold
//! queue. No orphaned process survives `kill -9` of strata dev.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::binary;
use strata_e2e::dev::{add, start_dev, start_dev_on, total};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_kill_scale_to_zero_and_wake() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    let http = reqwest::Client::new();

    // --- deploy the cart: initial scale 1 so discovery runs
    dev.deploy(&[
        "--min-scale",
        "0",
        "--max-scale",
        "3",
        "--target-concurrency",
        "2",
        "--scale-to-zero-grace",
        "3s",
        "--stable-window",
        "5s",
    ]);
    let service = dev
        .until("the first instance is ready", Duration::from_secs(30), |s| {
            s["ready_replicas"] == 1
        })
        .await;
    assert_eq!(
        service["stable_window"], "5s",
        "per-service autoscaler settings are visible: {service}"
    );

    // --- concurrent load: it scales out, with shards on each instance
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..24 {
        let (http, acked, stop) = (http.clone(), acked.clone(), stop.clone());
        let url = dev.url("");
        clients.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let user = format!("load-{c}-{}", n % 5);
                let response = http
                    .post(format!("{url}/cart/{user}/items/add"))
                    .json(&json!({"productId": "p", "name": "Thing", "quantity": 1}))
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    *acked.lock().unwrap().entry(user).or_default() += 1;
                }
            }
        }));
    }
    dev.until("scaled out to 2+ ready instances", Duration::from_secs(60), |s| {
        s["ready_replicas"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let shards = dev.api("/services/cart/shards").await;
    let owners: BTreeSet<&str> = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["owner"].as_str())
        .collect();
    assert!(owners.len() >= 2, "shards should spread over the instances: {shards}");

    // --- kill -9 one instance's sidecar under load: it is replaced
    let sidecar = dev.sidecars().into_iter().next().expect("a running sidecar");
    let (pid, victim) = (
        sidecar.pid,
        sidecar.arg("--instance-id").expect("an instance id").to_string(),
    );
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let instances = dev.api("/services/cart/instances").await;
        let ids: Vec<&str> = instances["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready")
            .filter_map(|i| i["id"].as_str())
            .collect();
        if !ids.contains(&victim.as_str()) && ids.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{victim} was not replaced: {instances}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --- stop the load: every acknowledged AddItem is in its cart
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.values().sum::<i64>() > 50,
        "too little load got through: {acked:?}"
    );
    for (user, count) in &acked {
        let stored = total(&http, &dev, user).await;
        assert!(
            stored >= *count,
            "cart {user}: {count} acknowledged but {stored} stored"
        );
    }

    // --- idle: it goes to zero
    dev.until("scaled to zero", Duration::from_secs(90), |s| {
        s["desired_replicas"] == 0 && s["ready_replicas"] == 0
    })
    .await;

    // --- a request at zero wakes it and gets the right answer
    let user = acked.keys().next().unwrap().clone();
    let started = Instant::now();
    let stored = total(&http, &dev, &user).await;
    assert!(stored >= acked[&user], "after waking, cart {user} has {stored}");
    eprintln!("cold start through the gateway took {:?}", started.elapsed());
    let service = dev.service().await;
    assert!(service["ready_replicas"].as_u64().unwrap_or(0) >= 1, "{service}");

    // --- the gateway speaks gRPC too, with the same answer
    let mut grpc = strata_e2e::cart_client(dev.gateway).await;
    let cart = grpc
        .get_cart(strata_e2e::shoppingcart::GetShoppingCart { user_id: user.clone() })
        .await
        .expect("gRPC GetCart through the gateway")
        .into_inner();
    assert_eq!(cart.items.iter().map(|i| i.quantity as i64).sum::<i64>(), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_at_zero_starts_several_instances_together_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    let http = reqwest::Client::new();
    // The function takes a second to start, so the first instance cannot be ready before
    // the gateway has reported the whole burst: what is asked for is what the burst
    // needs, not a race with the first cold start.
    let cart = binary("shopping-cart").display().to_string();
    dev.deploy_command(
        "cart",
        &format!("sleep 1; exec {cart}"),
        &[
            "--min-scale",
            "0",
            "--max-scale",
            "4",
            "--target-concurrency",
            "1",
            "--stable-window",
            "2s",
            "--scale-to-zero-grace",
            "1s",
        ],
    );
    dev.until("the first instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    // --- no traffic: to zero once the 2 s window has seen none and the 1 s grace passed
    dev.until("scaled to zero", Duration::from_secs(60), |s| {
        s["desired_replicas"] == 0 && s["ready_replicas"] == 0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.api("/services/cart/instances").await["instances"] != json!([]) {
        assert!(Instant::now() < deadline, "the last instance was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = dev
        .events()
        .await
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0);

    // --- six requests at once at zero, target 1 per instance: all are held and served
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let (http, url) = (http.clone(), dev.url(&format!("/carts/burst-{i}")));
            tokio::spawn(async move {
                let response = http.get(url).send().await.expect("answered");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    for call in burst {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "no request of the burst is refused: {body}");
        assert_eq!(body, json!({"items": []}));
    }

    // --- the history: sized by the held requests, several instances started before the
    // first one was ready
    let events: Vec<Value> = dev
        .events()
        .await
        .into_iter()
        .filter(|e| e["id"].as_u64().is_some_and(|id| id > before) && e["service"] == "cart")
        .collect();
    let scales: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "scale")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        scales.first().is_some_and(
            |reason| reason.starts_with("desired replicas 0 -> ") && reason.contains("held at the gateway")
        ),
        "{scales:?}"
    );
    assert!(
        scales.iter().any(|reason| reason.contains(" -> 4: ")),
        "six held at target 1 ask for max scale 4: {scales:?}"
    );
    let first_ready = events
        .iter()
        .position(|e| e["kind"] == "instance_ready")
        .expect("an instance became ready");
    let starting_together = events[..first_ready]
        .iter()
        .filter(|e| e["kind"] == "instance_registered")
        .count();
    assert!(
        starting_together >= 2,
        "several instances start before the first is ready: {events:#?}"
    );
    eprintln!("{starting_together} instances registered before the first was ready; scale events {scales:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_hold_queue_answers_503_and_kill_9_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = start_dev(dir, &["--hold-capacity", "2", "--hold-timeout", "20s"]);
    let http = reqwest::Client::new();
    dev.deploy(&["--min-scale", "0", "--scale-to-zero-grace", "2s"]);
    dev.until("ready once", Duration::from_secs(30), |s| s["ready_replicas"] == 1)
        .await;
    assert_eq!(add(&http, &dev, "held", 1).await.status(), 200);
    dev.until("scaled to zero", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 0 && s["desired_replicas"] == 0
    })
    .await;

    // --- twelve requests at zero: two wait, the rest are refused at once with Retry-After
    let mut calls = Vec::new();
    for _ in 0..12 {
        let http = http.clone();
        let url = dev.url("/carts/held");
        calls.push(tokio::spawn(async move {
            let response = tokio::time::timeout(Duration::from_secs(40), http.get(url).send())
                .await
                .expect("no request may hang")
                .expect("answered");
            (
                response.status().as_u16(),
                response.headers().get("retry-after").cloned(),
            )
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            (200, _) => ok += 1,
            (503, retry_after) => {
                assert!(retry_after.is_some(), "a 503 tells when to retry");
                refused += 1;
            }
            (status, _) => panic!("unexpected status {status}"),
        }
    }
    assert!(
        ok >= 2,
        "the held requests are served once an instance is ready ({ok} ok)"
    );
    assert!(refused >= 1, "the overflow is refused ({refused} refused)");
    assert_eq!(ok + refused, 12);

    // --- kill -9 strata dev: none of its instances outlive it
    dev.until("an instance is running", Duration::from_secs(30), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let pid = dev.process.pid();
    let children = Command::new("pgrep").args(["-P", &pid.to_string()]).output().unwrap();
    let children: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(!children.is_empty(), "strata dev runs its instances as child processes");
    dev.process.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<&String> = children
            .iter()
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned children survived kill -9: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- start it again on the same data: the service is back and the cart intact
    let (gateway, api) = (dev.gateway, dev.api);
    let dir = std::mem::replace(&mut dev.dir, tempfile::tempdir().unwrap());
    drop(dev);
    let dev = start_dev_on(dir, gateway, api, &[]);
    let service = dev
        .until("the registry came back", Duration::from_secs(30), |s| {
            s["name"] == "cart"
        })
        .await;
    assert_eq!(service["min_scale"], 0, "{service}");
    // The first requests may meet the old instance's routes, which the runtime
    // removes at once: 503s are allowed, a wrong answer is not.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http.get(dev.url("/carts/held")).send().await.expect("GetCart");
        if response.status() == 200 {
            let cart: Value = response.json().await.unwrap();
            assert_eq!(cart["items"][0]["quantity"], 1, "the cart survived kill -9: {cart}");
            break;
        }
        assert_eq!(response.status(), 503, "only retryable answers while it restarts");
        assert!(Instant::now() < deadline, "the cart never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_commands_back_off_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &["--ready-timeout", "2s"]);
    dev.deploy_command("missing", "/nonexistent/function-binary", &["--min-scale", "1"]);
    dev.deploy_command("crashing", "false", &["--min-scale", "1"]);
    dev.deploy_command("sleepy", "sleep 600", &["--min-scale", "1"]);
    tokio::time::sleep(Duration::from_secs(8)).await;

    let events = dev.events().await;
    let failures = |service: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["kind"] == "instance_failed" && e["service"] == service)
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    };
    // --- a command that does not exist: a clear reason, and backoff, not a storm
    let missing = failures("missing");
    assert!(!missing.is_empty(), "no failure recorded: {events:?}");
    assert!(missing[0].contains("cannot start the command"), "{missing:?}");
    assert!(missing.len() <= 6, "restarted too often in 8s: {missing:?}");
    // --- a command that exits at once
    let crashing = failures("crashing");
    assert!(
        !crashing.is_empty(),
        "no failure recorded for the crashing command: {events:?}"
    );
    assert!(crashing[0].contains("exited"), "{crashing:?}");
    assert!(crashing.len() <= 6, "restarted too often in 8s: {crashing:?}");
    // --- a function that never becomes ready: stopped after the timeout, with why
    let sleepy = failures("sleepy");
    assert!(
        sleepy.iter().any(|r| r.contains("did not become ready within")),
        "{sleepy:?}"
    );
    let sleepy_service = dev.api("/services/sleepy").await;
    assert_eq!(sleepy_service["ready_replicas"], 0, "{sleepy_service}");

    // --- requests for services nobody deployed: 404 / UNIMPLEMENTED from the gateway
    let response = reqwest::get(dev.url("/nothing/here")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNIMPLEMENTED", "{body}");
    let mut grpc = strata_e2e::cart_client(dev.gateway).await;
    let status = grpc
        .get_cart(strata_e2e::shoppingcart::GetShoppingCart { user_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

/// Scaling down while requests flow: the leaving instance's shards move to the
/// one that stays and the calls under way finish, so no client sees an error
/// and every acknowledged write is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_down_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    // A call stuck on the leaving instance is a failure, never a hung test.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let fixed = |n: &str| ["--min-scale", n, "--max-scale", n].map(str::to_string);
    dev.deploy(&fixed("2").iter().map(String::as_str).collect::<Vec<_>>());
    dev.until("two instances ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 2
    })
    .await;

    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (http, acked, failures, stop) = (http.clone(), acked.clone(), failures.clone(), stop.clone());
        let url = dev.url("");
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let user = format!("down-{c}-{}", n % 7);
                let response = http
                    .post(format!("{url}/cart/{user}/items/add"))
                    .json(&json!({"productId": "p", "name": "Thing", "quantity": 1}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => *acked.lock().unwrap().entry(user).or_default() += 1,
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        failures.lock().unwrap().push(format!("{status}: {body}"))
                    }
                    Err(error) => failures.lock().unwrap().push(error.to_string()),
                }
            }
        }));
    }
    let acked_so_far = || acked.lock().unwrap().values().sum::<i64>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_so_far() < 200 {
        assert!(
            Instant::now() < deadline,
            "the load does not get through: {}",
            acked_so_far()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- down to one instance, the load still running, until the other's
    // sidecar process has exited
    let sidecars = || dev.sidecars().len();
    assert_eq!(sidecars(), 2);
    dev.deploy(&fixed("1").iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(60);
    while sidecars() > 1 {
        assert!(Instant::now() < deadline, "no sidecar stopped: {}", dev.service().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("scaled down with {} writes acknowledged", acked_so_far());
    let after = acked_so_far();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_so_far() < after + 200 {
        assert!(Instant::now() < deadline, "the load stopped after the scale-down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} requests failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    let acked = acked.lock().unwrap().clone();
    for (user, count) in &acked {
        let stored = total(&http, &dev, user).await;
        assert_eq!(stored, *count, "cart {user}: {count} acknowledged, {stored} stored");
    }
}
