//! CRDT entities end to end: the likes example (a PNCounter per post) keeps its
//! count across `kill -9` of the sidecar and across scale to zero and back
//! (through `strata dev`, SQLite), and across `kill -9` of a standalone proxy
//! and the function on PostgreSQL.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::{binary, dev::start_dev, free_port, start_function, start_proxy, Http};

/// The pid of the one sidecar `strata dev` (pid `parent`) runs.
fn sidecar_pid(parent: u32) -> u32 {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-f", "strata proxy --user-function-port"])
        .output()
        .expect("pgrep");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().next().expect("a running sidecar").trim().parse().unwrap()
}

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
    let pid = sidecar_pid(dev.process.pid());
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
    assert_eq!(http.post("/posts/pg/unlike", json!({})).await, (200, json!({"likes": 3})));

    proxy.kill();
    function.kill();
    let _function = start_function("likes", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    assert_eq!(likes_when_served(&http, "pg").await, json!({"likes": 3}));
    assert_eq!(http.post("/posts/pg/like", json!({})).await, (200, json!({"likes": 4})));
}
