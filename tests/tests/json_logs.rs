//! `STRATA_LOG_FORMAT=json` over real processes: the shopping cart and
//! `strata proxy` write one JSON object per line on stderr, and a line the
//! function logged while handling a traced command carries that call's trace id
//! and the id of the span it was written in.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};
use strata_e2e::{binary, free_port, start_function, Process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_trace_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let (function_port, http_port) = (free_port(), free_port());
    let function = start_function(
        "shopping-cart",
        function_port,
        &[("STRATA_LOG_FORMAT", "json"), ("RUST_LOG", "info,strata_sdk=debug")],
    );
    let mut command = Command::new(binary("strata"));
    command
        .arg("proxy")
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env(
            "STRATA_STORE",
            format!("sqlite://{}", dir.path().join("cart.db").display()),
        )
        .env("STRATA_LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    let mut proxy = Process::spawn("strata proxy", command);
    proxy.wait_serving(http_port, Duration::from_secs(30));

    // --- a command the cart refuses, sent with a client's traceparent
    let trace = "7bf92f3577b34da6a3ce929d0e0e4739";
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}/cart/ann/items/add"))
        .header("traceparent", format!("00-{trace}-4444444444444444-01"))
        .json(&json!({"productId": "apple", "name": "apple", "quantity": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);

    // --- the function's line about it names the trace and its span
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = function
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "command failed");
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSON line about the failed command:\n{}",
            function.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["trace_id"], trace, "{line}");
    let span_id = line["span_id"].as_str().unwrap_or_default();
    assert!(
        span_id.len() == 16 && span_id != "4444444444444444",
        "the function's own span: {line}"
    );
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["span"], "command");

    // --- every line either process wrote is one JSON object
    for (name, log) in [("shopping-cart", function.log()), ("strata proxy", proxy.log())] {
        assert!(!log.is_empty(), "{name} wrote nothing");
        for text in log.lines() {
            let parsed: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text}"));
            assert!(parsed.is_object() && parsed["timestamp"].is_string(), "{name}: {text}");
        }
    }
}
