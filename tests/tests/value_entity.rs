//! A value entity end to end: the value is loaded into Init, replaced on update and
//! removed on delete, each durable before the reply, across kill -9.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};
use strata_e2e::{binary, free_port, start_proxy, wait_for_port, Process};
use strata_store::EntityKey;

fn start_value_cart(port: u16) -> Process {
    start_value_cart_with(port, &[])
}

fn start_value_cart_with(port: u16, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(binary("value-cart"));
    command.env("PORT", port.to_string()).envs(env.iter().copied());
    let process = Process::spawn("value-cart", command);
    assert!(wait_for_port(port, Duration::from_secs(20)));
    process
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn value_is_updated_deleted_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("v.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let mut function = start_value_cart(function_port);
    let mut proxy = start_proxy(function_port, http_port, &store_url, &[]);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{http_port}{path}");

    // --- two updates of one value
    for quantity in [2, 3] {
        let (status, body) = call(
            http.post(url("/vcart/val/items/add"))
                .json(&json!({"productId": "p", "quantity": quantity})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let store = strata_store::open(&store_url).await.unwrap();
    let key = EntityKey::new("value-cart", "val");
    assert!(
        store.load_value(&key).await.unwrap().is_some(),
        "the value is stored before the reply"
    );

    // --- kill -9 both; the value comes back through Init
    proxy.kill();
    function.kill();
    let _function = start_value_cart(function_port);
    let _proxy = start_proxy(function_port, http_port, &store_url, &[]);
    let (status, cart) = call(http.get(url("/vcarts/val"))).await;
    assert_eq!(status, 200);
    assert_eq!(cart, json!({"items": [{"productId": "p", "quantity": 5}]}));

    // --- the key in the body: present works, missing or empty is 400 INVALID_ARGUMENT
    let (status, body) = call(
        http.post(url("/vcart-items"))
            .json(&json!({"userId": "val", "productId": "q", "quantity": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for missing in [
        json!({"productId": "q", "quantity": 1}),
        json!({"userId": "", "quantity": 1}),
    ] {
        let (status, body) = call(http.post(url("/vcart-items")).json(&missing)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "INVALID_ARGUMENT", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("user_id"), "{body}");
    }
    let (_, cart) = call(http.get(url("/vcarts/val"))).await;
    assert_eq!(cart["items"][1], json!({"productId": "q", "quantity": 1}));

    // --- a failed command changes nothing
    let (status, _) = call(
        http.post(url("/vcart/val/items/add"))
            .json(&json!({"productId": "p", "quantity": 0})),
    )
    .await;
    assert_eq!(status, 500);
    let (_, cart) = call(http.get(url("/vcarts/val"))).await;
    assert_eq!(cart["items"][0]["quantity"], 5);

    // --- delete: gone from the store, and the entity reads as empty
    let (status, _) = call(http.post(url("/vcart/val/remove"))).await;
    assert_eq!(status, 200);
    assert!(store.load_value(&key).await.unwrap().is_none());
    let (_, cart) = call(http.get(url("/vcarts/val"))).await;
    assert_eq!(cart, json!({"items": []}));
}

/// Reads one metric from the proxy's /metrics (on its admin port), summed over
/// its labels; `name` is matched whole (`strata_entities_active` is not
/// `strata_entities_active_bytes`).
async fn metric(http: &reqwest::Client, port: u16, name: &str) -> f64 {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_entities_passivate_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("v.db").display());
    let (function_port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let _function = start_value_cart_with(function_port, &[("PASSIVATION_MS", "300")]);
    let _proxy = start_proxy(
        function_port,
        http_port,
        &store_url,
        &["--admin-port", &admin_port.to_string()],
    );
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{http_port}{path}");

    // --- three entities become active
    for user in ["a", "b", "c"] {
        let (status, _) = call(
            http.post(url(&format!("/vcart/{user}/items/add")))
                .json(&json!({"productId": "p", "quantity": 1})),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert_eq!(metric(&http, admin_port, "strata_entities_active").await, 3.0);

    // --- idle past their timeout: all three passivate
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(&http, admin_port, "strata_entity_passivations_total").await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "entities never passivated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&http, admin_port, "strata_entities_active").await, 0.0);

    // --- the next command activates the entity again from the store
    let (status, cart) = call(http.get(url("/vcarts/b"))).await;
    assert_eq!(status, 200);
    assert_eq!(cart["items"][0]["quantity"], 1);
    assert_eq!(metric(&http, admin_port, "strata_entity_activations_total").await, 4.0);
    assert!(metric(&http, admin_port, "strata_proxy_requests_total").await >= 4.0);
}
