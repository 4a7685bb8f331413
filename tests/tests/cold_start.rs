//! The cold start a user meets: `strata dev`, the cart deployed with
//! `--min-scale 0 --scale-to-zero-grace 5s --stable-window 6s`, wait until no
//! instance is ready, then one request through the gateway. It is answered with
//! the cart's state, and the gateway never had to re-route it: the new instance
//! accepts the shards it was just given instead of answering "not owner" (which
//! used to cost the request a 2 s wait). No timing is asserted.

use std::time::Duration;

use strata_e2e::{
    dev::{add, start_dev, total, Dev},
    free_port,
};

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
