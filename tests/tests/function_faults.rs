//! A user function that crashes mid-command or breaks the protocol: the caller gets
//! a clear error, nothing partial is stored, the function hears about violations,
//! and the proxy keeps serving every other entity.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};
use strata_e2e::{binary, free_port, start_proxy, wait_for_port, Process};
use strata_store::EntityKey;

fn start_rogue(port: u16, log: &std::path::Path, hang: bool) -> Process {
    let mut command = Command::new(binary("rogue-function"));
    command.env("PORT", port.to_string()).env("ROGUE_LOG", log);
    if hang {
        command.env("ROGUE_HANG", "1");
    }
    let process = Process::spawn("rogue-function", command);
    assert!(wait_for_port(port, Duration::from_secs(20)));
    process
}

async fn add(http: &reqwest::Client, port: u16, user: &str) -> (u16, Value) {
    let response = http
        .post(format!("http://127.0.0.1:{port}/cart/{user}/items/add"))
        .json(&json!({"productId": "p", "name": "P", "quantity": 1}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_for_log(log: &std::path::Path, needle: &str) -> String {
    for _ in 0..500 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{needle:?} never appeared in the rogue function's log");
}

#[tokio::test(flavor = "multi_thread")]
async fn function_killed_mid_command() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store_url = format!("sqlite://{}", dir.path().join("s.db").display());
    let function_port = free_port();
    let http_port = free_port();
    let mut rogue = start_rogue(function_port, &log, true);
    let _proxy = start_proxy(function_port, http_port, &store_url, &[]);
    let http = reqwest::Client::new();

    // --- a command is in the function's hands when the function is killed
    let call = tokio::spawn({
        let http = http.clone();
        async move { add(&http, http_port, "hang").await }
    });
    wait_for_log(&log, "holding command 1 for hang").await;
    rogue.kill();
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE");

    // --- no partial events were stored
    let store = strata_store::open(&store_url).await.unwrap();
    let key = EntityKey::new("rogue-cart", "hang");
    assert!(store.events(&key, 1).await.unwrap().is_empty());

    // --- the function is back: the next command on the same entity works
    let _rogue = start_rogue(function_port, &log, false);
    let (status, body) = add(&http, http_port, "hang").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(store.events(&key, 1).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_violations_fail_the_entity_not_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store_url = format!("sqlite://{}", dir.path().join("s.db").display());
    let function_port = free_port();
    let http_port = free_port();
    let _rogue = start_rogue(function_port, &log, false);
    let _proxy = start_proxy(function_port, http_port, &store_url, &[]);
    let http = reqwest::Client::new();
    let store = strata_store::open(&store_url).await.unwrap();

    // --- a reply with the wrong command id
    let (status, body) = add(&http, http_port, "wrong-id").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    wait_for_log(&log, "reported: protocol violation by entity wrong-id").await;
    assert!(store
        .events(&EntityKey::new("rogue-cart", "wrong-id"), 1)
        .await
        .unwrap()
        .is_empty());

    // --- a snapshot without events
    let (status, body) = add(&http, http_port, "snapshot-only").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    let text = wait_for_log(&log, "reported: protocol violation by entity snapshot-only").await;
    assert!(text.contains("snapshot but no events"), "{text}");
    assert!(store
        .latest_snapshot(&EntityKey::new("rogue-cart", "snapshot-only"))
        .await
        .unwrap()
        .is_none());

    // --- every other entity is still served
    for user in ["fine-1", "fine-2"] {
        let (status, body) = add(&http, http_port, user).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptors_that_conflict_are_refused_at_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let function_port = free_port();
    let mut command = Command::new(binary("rogue-function"));
    command
        .env("PORT", function_port.to_string())
        .env("ROGUE_CONFLICT", "1");
    let _rogue = Process::spawn("rogue-function", command);
    assert!(wait_for_port(function_port, Duration::from_secs(20)));

    // --- the proxy refuses to serve a function that sends two different files
    // under one name, and says which
    let output = Command::new(binary("strata"))
        .arg("proxy")
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", free_port().to_string())
        .env(
            "STRATA_STORE",
            format!("sqlite://{}", dir.path().join("s.db").display()),
        )
        .output()
        .expect("strata proxy");
    assert!(
        !output.status.success(),
        "the proxy must not serve conflicting descriptors"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "the function's descriptors cannot be read: the descriptor set holds two different files named \
             \"shoppingcart.proto\": one defines services com.example.shoppingcart.ShoppingCart, the other \
             services com.example.shoppingcart.ShoppingBasket"
        ),
        "{stderr}"
    );
}
