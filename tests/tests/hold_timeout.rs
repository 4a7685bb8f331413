//! A service's own hold timeout, over real processes: `strata dev` whose gateway
//! holds requests for a service at zero 100 ms by default (`--hold-timeout`), the
//! cart deployed with `--hold-timeout 2m` and the likes function with 500ms, both
//! functions started only once a gate file exists, so a wake from zero lasts
//! exactly as long as the test keeps the gate shut. The likes request is answered
//! 503 / UNAVAILABLE (with Retry-After) when its 500 ms are up; the cart request,
//! sent before it, is still held after that (past the gateway's own 100 ms), and is
//! served once the gate opens. No timing is asserted.

use std::time::Duration;

use strata_e2e::{binary, dev::start_dev, free_port};
use tokio::time::Instant;

/// A service's command that starts its function only once `gate` exists.
fn gated(gate: &std::path::Path, function: &str) -> String {
    format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exec {}",
        gate.display(),
        binary(function).display()
    )
}

/// The gateway's count of requests held for `service`, from its admin listener.
async fn held(http: &reqwest::Client, admin: u16, service: &str) -> u64 {
    let text = http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("gateway metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with("strata_gateway_held_requests{"))
        .filter(|line| line.contains(&format!("service=\"{service}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_hold_timeout_is_refused_clearly_and_a_long_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let admin = free_port();
    let dev = start_dev(
        dir,
        &[
            "--hold-timeout",
            "100ms",
            "--gateway-admin-listen",
            &format!("127.0.0.1:{admin}"),
        ],
    );
    let http = reqwest::Client::new();
    let quick_to_zero = [
        "--min-scale",
        "0",
        "--stable-window",
        "1s",
        "--scale-to-zero-grace",
        "0s",
    ];
    let quick_to_zero = [&quick_to_zero[..], &["--keep-alive", "fixed"]].concat();

    // --- both deployed with their own hold timeouts; each runs discovery once
    dev.deploy_command(
        "cart",
        &gated(&gate, "shopping-cart"),
        &[&quick_to_zero[..], &["--hold-timeout", "2m"]].concat(),
    );
    dev.deploy_command(
        "likes",
        &gated(&gate, "likes"),
        &[&quick_to_zero[..], &["--hold-timeout", "500ms"]].concat(),
    );
    for name in ["cart", "likes"] {
        let service = dev
            .until_service(name, "discovered, then scaled to zero", Duration::from_secs(120), |s| {
                s["entities"].as_array().is_some_and(|e| !e.is_empty())
                    && s["desired_replicas"] == 0
                    && s["ready_replicas"] == 0
            })
            .await;
        assert_ne!(service["hold_timeout"], serde_json::Value::Null, "{service}");
    }

    // --- the gate shuts: no instance can become ready until it opens again
    std::fs::remove_file(&gate).unwrap();
    let cart = {
        let url = dev.url("/carts/c1");
        let http = http.clone();
        tokio::spawn(async move { http.get(url).send().await.expect("GetCart") })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while held(&http, admin, "cart").await == 0 {
        assert!(!cart.is_finished(), "the cart request was answered at zero");
        assert!(Instant::now() < deadline, "the gateway never held the cart request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- the likes request: its 500ms are up before it can wake
    let likes = http.get(dev.url("/posts/p1/likes")).send().await.expect("GetLikes");
    assert_eq!(likes.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(likes.headers().contains_key("retry-after"), "{:?}", likes.headers());
    let body: serde_json::Value = likes.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("likes did not become ready within 500ms"), "{body}");

    // --- the cart request, held since before, still waits past the gateway's 100ms
    assert!(
        !cart.is_finished(),
        "the cart request was let go with the likes request"
    );
    assert_eq!(held(&http, admin, "cart").await, 1);

    // --- the gate opens: the cart wakes and the held request is served
    std::fs::write(&gate, "").unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(120), cart)
        .await
        .expect("the held cart request was never answered")
        .unwrap();
    let status = answer.status();
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "{}",
        answer.text().await.unwrap_or_default()
    );
}
