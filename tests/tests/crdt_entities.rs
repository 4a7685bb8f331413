//! CRDT entities end to end: the likes example (a PNCounter per post) keeps its
//! count across `kill -9` of the sidecar and across scale to zero and back
//! (through `strata dev`, SQLite), and across `kill -9` of a standalone proxy
//! and the function on PostgreSQL. Bad deltas from a function (`rogue-crdt`)
//! get their status and code and cost no data.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{binary, dev::start_dev, free_port, start_function, start_proxy, Http};

/// Asks until the gateway answers 200 (an instance is being replaced or woken
/// meanwhile), then returns that answer.
async fn likes_when_served(http: &Http, post: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = http.get(&format!("/posts/{post}/likes")).await;
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the likes of {post} were never served again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn likes_survive_kill_9_of_the_sidecar_and_scale_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    dev.deploy_command(
        "likes",
        &binary("likes").display().to_string(),
        &[
            "--min-scale",
            "0",
            "--max-scale",
            "1",
            "--scale-to-zero-grace",
            "2s",
            "--stable-window",
            "4s",
        ],
    );
    dev.until_service("likes", "the first instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let http = Http::new(dev.gateway);

    // --- likes and unlikes, each answered with the count
    for expected in 1..=3 {
        assert_eq!(
            http.post("/posts/p1/like", json!({})).await,
            (200, json!({"likes": expected}))
        );
    }
    assert_eq!(
        http.post("/posts/p1/unlike", json!({})).await,
        (200, json!({"likes": 2}))
    );
    assert_eq!(http.post("/posts/p2/like", json!({})).await, (200, json!({"likes": 1})));
    assert_eq!(http.get("/posts/p1/likes").await, (200, json!({"likes": 2})));
    // A post nobody liked has none; taking one back is the function's failure
    // and changes nothing.
    assert_eq!(http.get("/posts/p3/likes").await, (200, json!({"likes": 0})));
    let (status, body) = http.post("/posts/p3/unlike", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no likes to take back"),
        "{body}"
    );

    // --- kill -9 the sidecar: the replacement serves the persisted counts
    let pid = dev.sidecar_of("likes").pid;
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert_eq!(likes_when_served(&http, "p1").await, json!({"likes": 2}));
    assert_eq!(http.get("/posts/p2/likes").await, (200, json!({"likes": 1})));
    assert_eq!(http.post("/posts/p1/like", json!({})).await, (200, json!({"likes": 3})));

    // --- idle: to zero; the next request wakes it with every count intact
    dev.until_service("likes", "scaled to zero", Duration::from_secs(90), |s| {
        s["desired_replicas"] == 0 && s["ready_replicas"] == 0
    })
    .await;
    assert_eq!(likes_when_served(&http, "p1").await, json!({"likes": 3}));
    assert_eq!(http.get("/posts/p2/likes").await, (200, json!({"likes": 1})));
    assert_eq!(
        http.post("/posts/p2/unlike", json!({})).await,
        (200, json!({"likes": 0}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn likes_on_postgres_survive_kill_9_of_proxy_and_function() {
    let Some(store) = strata_e2e::fresh_postgres_database("likes_e2e").await else {
        return;
    };
    let (function_port, http_port) = (free_port(), free_port());
    let mut function = start_function("likes", function_port, &[]);
    let mut proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = Http::new(http_port);
    for expected in 1..=4 {
        assert_eq!(
            http.post("/posts/pg/like", json!({})).await,
            (200, json!({"likes": expected}))
        );
    }
    assert_eq!(
        http.post("/posts/pg/unlike", json!({})).await,
        (200, json!({"likes": 3}))
    );

    proxy.kill();
    function.kill();
    let _function = start_function("likes", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    assert_eq!(likes_when_served(&http, "pg").await, json!({"likes": 3}));
    assert_eq!(http.post("/posts/pg/like", json!({})).await, (200, json!({"likes": 4})));
}

async fn add(http: &Http, cart: &str, product: &str, quantity: i32) -> (u16, Value) {
    http.post(
        &format!("/cart/{cart}/items/add"),
        json!({"productId": product, "name": "Thing", "quantity": quantity}),
    )
    .await
}

/// Waits until the rogue function's log has a line containing `text`.
async fn logged(log: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = content.lines().rev().find(|l| l.contains(text)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "never logged {text:?}: {content}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_deltas_are_refused_with_their_codes_and_cost_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store = format!("sqlite://{}", dir.path().join("crdt.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_function("rogue-crdt", function_port, &[("ROGUE_LOG", log.to_str().unwrap())]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = Http::new(http_port);

    // --- a counter, then a GSet delta for it: 500 INTERNAL, reported to the
    // function, the entity restarted with the stored counter
    assert_eq!(add(&http, "c1", "p", 5).await.0, 200);
    let (status, body) = add(&http, "c1", "gset", 1).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("GSet delta cannot change a PNCounter"), "{message}");
    logged(&log, "reported: protocol violation by entity c1").await;
    assert_eq!(add(&http, "c1", "p", 2).await.0, 200);
    let init = logged(&log, "init c1 Some").await;
    assert!(init.contains("change: 5"), "restarted with the stored counter: {init}");

    // --- an ORMap keyed by a double: refused, nothing stored
    let (status, body) = add(&http, "m1", "float-key", 1).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("floating-point"),
        "{body}"
    );
    logged(&log, "init m1 None").await;

    // --- deleted for good: changes get 410 NOT_FOUND
    assert_eq!(add(&http, "d1", "p", 1).await.0, 200);
    assert_eq!(http.post("/cart/d1/items/p/remove", json!({})).await.0, 200);
    let (status, body) = add(&http, "d1", "p", 1).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("was deleted"),
        "{body}"
    );

    // --- in the store: the good writes only; the refused ones stored nothing
    let stored = strata_store::open(&store).await.unwrap();
    let load = |id: &'static str| {
        let stored = stored.clone();
        async move {
            stored
                .load_crdt(&strata_store::EntityKey::new("rogue-crdt", id))
                .await
                .unwrap()
        }
    };
    assert_eq!(load("c1").await.unwrap().seq_nr, 2, "two good writes to c1");
    assert_eq!(load("m1").await, None, "nothing of the refused map");
    let deleted = load("d1").await.unwrap();
    assert_eq!((deleted.seq_nr, deleted.state), (2, None), "d1 is a tombstone");
}
