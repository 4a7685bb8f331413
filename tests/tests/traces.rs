//! Tracing over real processes: `strata dev` exporting over OTLP/gRPC to a
//! receiver in the test (`strata_e2e::otlp`, on the `opentelemetry-proto`
//! definitions). A call that carries a client's `traceparent` through the
//! gateway to the cart, and a checkout that forwards to the cart, are each one
//! trace continuing the client's, with the gateway, sidecar, activation,
//! function, store write and forward spans in the right parent order, and the
//! function's own span (from strata-sdk, exported by the function process) a
//! child of the sidecar's call into it: the function saw the `traceparent`. A
//! malformed `traceparent` starts a new trace and is counted; a request that
//! wakes a service from zero has a cold-start span covering the hold; an OTLP
//! endpoint that is down costs no failed call, only spans counted as dropped.

use std::{process::Command, time::Duration};

use serde_json::json;
use strata_e2e::{
    binary,
    dev::{dev_command, Dev},
    free_port,
    otlp::{ReceivedSpan, Receiver},
    Process,
};

/// `strata dev` with the OTLP variables set to reach `endpoint`, its gateway's
/// metrics on `admin`. The functions it starts inherit the variables.
fn start_traced_dev(endpoint: &str, admin: u16) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let admin_listen = format!("127.0.0.1:{admin}");
    let mut command: Command = dev_command(&dir, gateway, api, &["--gateway-admin-listen", &admin_listen]);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_SERVICE_NAME");
    let mut process = Process::spawn("strata dev", command);
    process.wait_serving(gateway, Duration::from_secs(30));
    process.wait_serving(api, Duration::from_secs(30));
    Dev {
        dir,
        process,
        gateway,
        api,
    }
}

async fn deploy_ready(dev: &Dev, name: &str, binary_name: &str, args: &[&str]) {
    dev.deploy_command(name, &binary(binary_name).display().to_string(), args);
    dev.until_service(name, &format!("{name} is ready"), Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
}

/// The value of a counter on the gateway's `/metrics`.
async fn gateway_counter(admin: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("gateway metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn named<'a>(spans: &'a [ReceivedSpan], prefix: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name.starts_with(prefix)).collect()
}

/// The one span whose name starts with `prefix` and whose parent is `parent`.
fn child<'a>(spans: &'a [ReceivedSpan], prefix: &str, parent: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = named(spans, prefix)
        .into_iter()
        .filter(|s| s.parent_span_id == parent)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {prefix:?} span under {parent}, found {found:#?} among {spans:#?}"
    );
    found[0]
}

fn find_child<'a>(spans: &'a [ReceivedSpan], prefix: &str, parent: Option<&str>) -> Option<&'a ReceivedSpan> {
    let parent = parent?;
    named(spans, prefix).into_iter().find(|s| s.parent_span_id == parent)
}

async fn post(http: &reqwest::Client, url: String, traceparent: &str, body: serde_json::Value) -> u16 {
    http.post(url)
        .header("traceparent", traceparent)
        .json(&body)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_its_forward_are_one_trace_from_the_gateway_into_the_function() {
    let receiver = Receiver::start().await;
    let admin = free_port();
    let dev = start_traced_dev(&receiver.endpoint(), admin);
    deploy_ready(&dev, "cart", "shopping-cart", &["--min-scale", "1"]).await;
    deploy_ready(&dev, "checkout", "checkout", &["--min-scale", "1"]).await;
    let http = reqwest::Client::new();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";

    // --- a client's traced call adds an item to a cart never seen before
    let status = post(
        &http,
        dev.url("/cart/ann/items/add"),
        &format!("00-{trace}-{client_span}-01"),
        json!({"productId": "apple", "name": "apple", "quantity": 2}),
    )
    .await;
    assert_eq!(status, 200);

    // --- gateway -> sidecar -> activation, function (-> the function's own
    // span), store write: all in the client's trace, each under the right parent
    let spans = receiver
        .until(trace, "the add's spans", Duration::from_secs(30), |spans| {
            let gateway = find_child(
                spans,
                "gateway com.example.shoppingcart.ShoppingCart/AddItem",
                Some(client_span),
            );
            let sidecar = find_child(spans, "sidecar", gateway.map(|s| s.span_id.as_str()));
            let function = find_child(spans, "function", sidecar.map(|s| s.span_id.as_str()));
            let sidecar = sidecar.map(|s| s.span_id.as_str());
            find_child(spans, "handle AddItem", function.map(|s| s.span_id.as_str())).is_some()
                && find_child(spans, "activate", sidecar).is_some()
                && find_child(spans, "store write", sidecar).is_some()
        })
        .await;
    let gateway = child(
        &spans,
        "gateway com.example.shoppingcart.ShoppingCart/AddItem",
        client_span,
    );
    assert_eq!(gateway.service, "strata");
    let sidecar = child(
        &spans,
        "sidecar com.example.shoppingcart.ShoppingCart/AddItem",
        &gateway.span_id,
    );
    assert_eq!(sidecar.attribute("strata.entity_id"), Some("ann"));
    let activation = child(&spans, "activate", &sidecar.span_id);
    assert_eq!(activation.attribute("strata.events_read"), Some("0"), "{activation:?}");
    let function = child(
        &spans,
        "function com.example.shoppingcart.ShoppingCart/AddItem",
        &sidecar.span_id,
    );
    let handled = child(&spans, "handle AddItem", &function.span_id);
    assert_eq!(
        handled.service, "shopping-cart",
        "the function's own span, from its process"
    );
    let write = child(&spans, "store write", &sidecar.span_id);
    let bytes: u64 = write
        .attribute("strata.bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 0, "the write's size: {write:?}");
    assert!(
        gateway.start_unix_nanos <= sidecar.start_unix_nanos && sidecar.end_unix_nanos <= gateway.end_unix_nanos,
        "the sidecar's span lies within the gateway's"
    );

    // --- the checkout reviews the cart: a forward from one service to another
    let review_span = "1111111111111111";
    let answer = http
        .get(dev.url("/checkout/ann"))
        .header("traceparent", format!("00-{trace}-{review_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let spans = receiver
        .until(trace, "the review's spans", Duration::from_secs(30), |spans| {
            let gateway = find_child(spans, "gateway", Some(review_span));
            let sidecar = find_child(
                spans,
                "sidecar com.example.checkout",
                gateway.map(|s| s.span_id.as_str()),
            );
            let forward = find_child(spans, "forward", sidecar.map(|s| s.span_id.as_str()));
            let target = find_child(
                spans,
                "sidecar com.example.shoppingcart",
                forward.map(|s| s.span_id.as_str()),
            );
            let sidecar = sidecar.map(|s| s.span_id.as_str());
            let function = find_child(spans, "function com.example.checkout", sidecar);
            find_child(
                spans,
                "function com.example.shoppingcart",
                target.map(|s| s.span_id.as_str()),
            )
            .is_some()
                && find_child(spans, "handle Review", function.map(|s| s.span_id.as_str())).is_some()
        })
        .await;
    let gateway = child(&spans, "gateway com.example.checkout.Checkout/Review", review_span);
    let sidecar = child(&spans, "sidecar com.example.checkout.Checkout/Review", &gateway.span_id);
    let function = child(
        &spans,
        "function com.example.checkout.Checkout/Review",
        &sidecar.span_id,
    );
    let handled = child(&spans, "handle Review", &function.span_id);
    assert_eq!(handled.service, "checkout");
    let forward = child(
        &spans,
        "forward com.example.shoppingcart.ShoppingCart.GetCart",
        &sidecar.span_id,
    );
    let target = child(
        &spans,
        "sidecar com.example.shoppingcart.ShoppingCart/GetCart",
        &forward.span_id,
    );
    child(
        &spans,
        "function com.example.shoppingcart.ShoppingCart/GetCart",
        &target.span_id,
    );
    assert!(
        function.end_unix_nanos <= forward.start_unix_nanos,
        "the forward follows the function's answer"
    );
    assert!(spans.iter().all(|s| s.trace_id == trace));

    // --- a malformed traceparent starts a new trace: the call succeeds and is counted
    let before = gateway_counter(admin, "strata_trace_context_malformed_total").await;
    let status = post(
        &http,
        dev.url("/cart/bob/items/add"),
        "00-not-a-trace-01",
        json!({"productId": "pear", "name": "pear", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        gateway_counter(admin, "strata_trace_context_malformed_total").await,
        before + 1.0
    );
    let fresh = receiver
        .until_any("a new trace for the malformed call", Duration::from_secs(30), |spans| {
            spans.iter().any(|s| {
                s.name
                    .starts_with("gateway com.example.shoppingcart.ShoppingCart/AddItem")
                    && s.parent_span_id.is_empty()
                    && s.trace_id != trace
            })
        })
        .await;
    assert!(!fresh.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_wakes_a_service_from_zero_has_a_cold_start_span() {
    let receiver = Receiver::start().await;
    let dev = start_traced_dev(&receiver.endpoint(), free_port());
    dev.deploy(&[
        "--min-scale",
        "0",
        "--scale-to-zero-grace",
        "5s",
        "--stable-window",
        "6s",
    ]);
    dev.until("scaled to zero", Duration::from_secs(120), |s| {
        s["ready_replicas"] == 0 && s["desired_replicas"] == 0
    })
    .await;

    // --- one traced request wakes the cart
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let client_span = "2222222222222222";
    let status = post(
        &reqwest::Client::new(),
        dev.url("/cart/cold/items/add"),
        &format!("00-{trace}-{client_span}-01"),
        json!({"productId": "fig", "name": "fig", "quantity": 1}),
    )
    .await;
    assert_eq!(status, 200);

    // --- the gateway's span holds a cold start that ends before the sidecar
    // (which did not exist when the request arrived) saw the call
    let spans = receiver
        .until(trace, "the cold start's spans", Duration::from_secs(30), |spans| {
            let gateway = find_child(spans, "gateway", Some(client_span)).map(|s| s.span_id.as_str());
            find_child(spans, "cold start cart", gateway).is_some() && find_child(spans, "sidecar", gateway).is_some()
        })
        .await;
    let gateway = child(&spans, "gateway", client_span);
    let cold = child(&spans, "cold start cart", &gateway.span_id);
    let sidecar = child(&spans, "sidecar", &gateway.span_id);
    assert_eq!(cold.attribute("strata.cold_start"), Some("true"));
    assert!(cold.end_unix_nanos > cold.start_unix_nanos);
    assert!(
        gateway.start_unix_nanos <= cold.start_unix_nanos && cold.end_unix_nanos <= sidecar.start_unix_nanos,
        "the hold spans the wait for the instance: {cold:?} then {sidecar:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_endpoint_that_is_down_costs_no_call() {
    // Nothing listens there.
    let admin = free_port();
    let dev = start_traced_dev(&format!("http://127.0.0.1:{}", free_port()), admin);
    deploy_ready(&dev, "cart", "shopping-cart", &["--min-scale", "1"]).await;
    let http = reqwest::Client::new();

    // --- every call is answered
    for i in 0..50 {
        let status = post(
            &http,
            dev.url(&format!("/cart/down-{}/items/add", i % 5)),
            "00-6bf92f3577b34da6a3ce929d0e0e4738-3333333333333333-01",
            json!({"productId": "kiwi", "name": "kiwi", "quantity": 1}),
        )
        .await;
        assert_eq!(status, 200, "call {i}");
    }

    // --- and the spans the endpoint never took are counted as dropped
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dropped = gateway_counter(admin, "strata_trace_spans_dropped_total").await;
        if dropped > 0.0 {
            assert_eq!(gateway_counter(admin, "strata_trace_spans_exported_total").await, 0.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no span counted as dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
