//! The cold start a user meets: `strata dev`, the cart deployed with
//! `--min-scale 0 --scale-to-zero-grace 5s --stable-window 6s`, wait until no
//! instance is ready, then one request through the gateway. It is answered with
//! the cart's state, and the gateway never had to re-route it: the new instance
//! accepts the shards it was just given instead of answering "not owner" (which
//! used to cost the request a 2 s wait). And a request sent the moment
//! `strata deploy` returns, before the gateway's routes know the new service,
//! waits for them instead of being answered 404. No timing is asserted.

use std::time::Duration;

use strata_e2e::{
    dev::{add, start_dev, total, Dev, TOKEN},
    free_port,
};
use tokio::time::Instant;

/// How often the gateway re-routed calls to `service` because an instance
/// said "not owner", from the gateway's Prometheus metrics on its admin
/// listener (`admin`, never the port that serves users).
async fn not_owner_reroutes(http: &reqwest::Client, admin: u16, service: &str) -> u64 {
    let response = http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("gateway metrics");
    assert!(response.status().is_success(), "gateway metrics: {}", response.status());
    let text = response.text().await.expect("metrics text");
    assert!(
        text.contains("strata_cold_start_seconds"),
        "not the gateway's metrics: {text}"
    );
    text.lines()
        .filter(|line| line.starts_with("strata_gateway_reroutes_total{"))
        .filter(|line| line.contains("reason=\"not_owner\"") && line.contains(&format!("service=\"{service}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn wait_for_zero(dev: &Dev) {
    dev.until("scaled to zero", Duration::from_secs(120), |s| {
        s["ready_replicas"] == 0 && s["desired_replicas"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_zero_is_answered_without_rerouting() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let dev = start_dev(dir, &["--gateway-admin-listen", &format!("127.0.0.1:{admin}")]);
    let http = reqwest::Client::new();

    // --- deploy as the user did; the first instance runs discovery
    dev.deploy(&[
        "--min-scale",
        "0",
        "--scale-to-zero-grace",
        "5s",
        "--stable-window",
        "6s",
    ]);
    dev.until("the first instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let response = add(&http, &dev, "z1", 3).await;
    assert!(response.status().is_success(), "AddItem: {}", response.status());

    // --- idle until no instance is ready, then GET /carts/z1 wakes it
    wait_for_zero(&dev).await;
    assert_eq!(total(&http, &dev, "z1").await, 3, "the cart's state after a cold start");

    // --- again, with a write as the waking request
    wait_for_zero(&dev).await;
    let response = add(&http, &dev, "z1", 2).await;
    assert!(response.status().is_success(), "AddItem at zero: {}", response.status());
    assert_eq!(total(&http, &dev, "z1").await, 5);

    // --- no request waited for the new instance to learn its own shards
    assert_eq!(not_owner_reroutes(&http, admin, "cart").await, 0);
}

/// Deletes the cart service and waits until the gateway has forgotten it
/// (its routes answer 404), so the next deploy starts from nothing again.
async fn delete_and_forget(http: &reqwest::Client, dev: &Dev) {
    let deleted = http
        .delete(format!("http://127.0.0.1:{}/api/v1/services/cart", dev.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("DELETE service");
    assert!(deleted.status().is_success(), "delete: {}", deleted.status());
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let status = http.get(dev.url("/carts/z1")).send().await.expect("GetCart").status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return;
        }
        assert!(
            Instant::now() < limit,
            "the gateway still routes the deleted cart: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_deploy_is_served_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    let http = reqwest::Client::new();
    for round in 0..4 {
        // --- deploy, and call the moment the command returns: the gateway's
        // routes may not know the service yet, its first instance is starting
        dev.deploy(&[]);
        let calls = (0..8).map(|_| {
            let http = http.clone();
            let url = dev.url("/carts/z1");
            tokio::spawn(async move { http.get(url).send().await.expect("GetCart") })
        });
        for call in futures::future::join_all(calls).await {
            let response = call.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(
                status,
                reqwest::StatusCode::OK,
                "round {round}: GetCart right after deploy: {body}"
            );
        }
        delete_and_forget(&http, &dev).await;
    }
}
