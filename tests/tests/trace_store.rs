//! The trace store without a collector: `strata dev` with no OTLP variables
//! keeps recent traces itself, fed by its gateway and its sidecars. A traced
//! call comes back from the API whole (gateway → sidecar → activation,
//! function, store write); a failed call is kept and found by the error
//! filter; under many calls the store stays within its byte ceiling (shown on
//! `/metrics`), evicting ordinary traces while the failed one stays. Unknown
//! traces are 404s and bad filters 400s. And the head sampling that makes the
//! store cheap: a call not sampled makes no spans, but its failure is still
//! listed (its ingress's record); a client's sampled `traceparent` is always
//! kept; the share of calls sampled is the one set; a call woken from zero is
//! traced from its cold start on, sampled or not.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_e2e::{
    binary,
    dev::{dev_command, Dev, TOKEN},
    free_port, Process,
};

/// Small, so a few hundred calls overflow it.
const CEILING: u64 = 100_000;

fn start_dev_without_collector(ceiling: u64, sample_ratio: &str) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut command = dev_command(&dir, gateway, api, &["--trace-store-bytes", &ceiling.to_string()]);
    command.env("STRATA_TRACE_SAMPLE_RATIO", sample_ratio);
    for variable in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_SERVICE_NAME",
    ] {
        command.env_remove(variable);
    }
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

/// `GET path` on the API: its status and JSON body.
async fn get(dev: &Dev, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1{path}", dev.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("API");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `path` until `check` holds of its 200 body.
async fn until(dev: &Dev, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(dev, path).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The list at `path` once it holds a trace.
async fn until_listed(dev: &Dev, path: &str, what: &str) -> Value {
    until(dev, path, what, |list| {
        list["traces"].as_array().is_some_and(|traces| !traces.is_empty())
    })
    .await
}

async fn metric(dev: &Dev, name: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", dev.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} on /metrics"))
}

async fn add(http: &reqwest::Client, dev: &Dev, user: &str, quantity: i64, trace: Option<&str>) -> u16 {
    add_with(
        http,
        dev,
        user,
        quantity,
        trace.map(|trace| format!("00-{trace}-00f067aa0ba902b7-01")),
    )
    .await
}

/// As [`add`], with the `traceparent` given whole (its flag too).
async fn add_with(http: &reqwest::Client, dev: &Dev, user: &str, quantity: i64, traceparent: Option<String>) -> u16 {
    let mut request = http
        .post(dev.url(&format!("/cart/{user}/items/add")))
        .json(&json!({"productId": "p", "name": "Thing", "quantity": quantity}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().await.expect("answer").status().as_u16()
}

/// The one span of `trace` whose name starts with `prefix`.
fn span<'a>(trace: &'a Value, prefix: &str) -> &'a Value {
    let found: Vec<&Value> = trace["span_list"]
        .as_array()
        .expect("spans")
        .iter()
        .filter(|span| span["name"].as_str().is_some_and(|name| name.starts_with(prefix)))
        .collect();
    assert_eq!(found.len(), 1, "one {prefix:?} span in {trace:#}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_dev_keeps_recent_traces_within_its_ceiling() {
    // The default share of calls sampled: only the clients' sampled ones are traced.
    let dev = start_dev_without_collector(CEILING, "0.01");
    deploy_cart(&dev).await;
    let http = reqwest::Client::new();

    // --- a traced call: the store has it whole, gateway -> sidecar -> its steps
    let traced = "4bf92f3577b34da6a3ce929d0e0e4737";
    assert_eq!(add(&http, &dev, "ann", 2, Some(traced)).await, 200);
    let trace = until(&dev, &format!("/traces/{traced}"), "the traced call's trace", |trace| {
        let names: Vec<&str> = trace["span_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|span| span["name"].as_str())
            .collect();
        ["gateway", "sidecar", "activate", "function", "store write"]
            .iter()
            .all(|prefix| names.iter().any(|name| name.starts_with(prefix)))
    })
    .await;
    let gateway = span(&trace, "gateway com.example.shoppingcart.ShoppingCart/AddItem");
    assert_eq!(
        gateway["parent_span_id"], "00f067aa0ba902b7",
        "the client's span is its parent"
    );
    assert_eq!(gateway["service"], Value::Null, "the gateway serves every service");
    let sidecar = span(&trace, "sidecar com.example.shoppingcart.ShoppingCart/AddItem");
    assert_eq!(sidecar["parent_span_id"], gateway["span_id"]);
    assert_eq!(sidecar["service"], "cart");
    assert_eq!(sidecar["attributes"]["strata.entity_id"], "ann");
    for step in ["activate", "function", "store write"] {
        assert_eq!(span(&trace, step)["parent_span_id"], sidecar["span_id"], "{step}");
    }
    assert_eq!(trace["status"], "ok");
    assert_eq!(trace["entity_ids"], json!(["ann"]));
    let listed = until_listed(&dev, "/services/cart/traces?entity_id=ann", "the trace listed").await;
    assert_eq!(listed["traces"][0]["trace_id"], traced);
    assert_eq!(listed["store_max_bytes"], CEILING);

    // --- a failed call (the function's Failure) is kept, marked as an error
    let failing = "0af7651916cd43dd8448eb211c80319c";
    assert_eq!(add(&http, &dev, "bob", 0, Some(failing)).await, 500);
    let failed = until_listed(&dev, "/services/cart/traces?status=error", "the failed call listed").await;
    assert_eq!(failed["traces"][0]["trace_id"], failing);
    assert_eq!(failed["traces"][0]["kept_because"], "failed");
    let (_, whole) = get(&dev, &format!("/traces/{failing}")).await;
    let sidecar = span(&whole, "sidecar");
    assert_eq!(sidecar["status"], "error");
    assert!(
        sidecar["status_message"]
            .as_str()
            .unwrap_or_default()
            .contains("must be greater than zero"),
        "{sidecar:#}"
    );

    // --- many traced calls: the ceiling holds, ordinary traces go, the failed one stays
    for n in 0..400 {
        let trace = format!("{:032x}", 0x5eed_0000 + n);
        assert_eq!(
            add(&http, &dev, &format!("user-{}", n % 20), 1, Some(&trace)).await,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&dev, "strata_trace_store_traces_evicted_total").await == 0 {
        assert!(Instant::now() < deadline, "nothing was ever evicted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&dev, "strata_trace_store_max_bytes").await, CEILING);
    let held = metric(&dev, "strata_trace_store_bytes").await;
    assert!(held <= CEILING, "{held} bytes held over a ceiling of {CEILING}");
    let (status, _) = get(&dev, &format!("/traces/{failing}")).await;
    assert_eq!(status, 200, "the failed trace outlives the ordinary ones");
    let (status, _) = get(&dev, &format!("/traces/{traced}")).await;
    assert_eq!(status, 404, "the first ordinary trace was evicted");

    // --- bad input: an unknown trace, a malformed id, bad filters, an unknown service
    let (status, body) = get(&dev, "/traces/ffffffffffffffffffffffffffffffff").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&dev, "/traces/not-a-trace").await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("id")), "{body}");
    for (query, field) in [
        ("status=fine", "status"),
        ("min_duration=slow", "min_duration"),
        ("since=yesterday", "since"),
        ("limit=1000", "limit"),
    ] {
        let (status, body) = get(&dev, &format!("/services/cart/traces?{query}")).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {body}"
        );
    }
    let (status, body) = get(&dev, "/services/nope/traces").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("cart"),
        "{body}"
    );
}

async fn deploy_cart(dev: &Dev) {
    dev.deploy_command(
        "cart",
        &binary("shopping-cart").display().to_string(),
        &["--min-scale", "1"],
    );
    dev.until("the cart is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
}

/// The kept traces of the cart, up to 200.
async fn cart_traces(dev: &Dev) -> Vec<Value> {
    let (status, list) = get(dev, "/services/cart/traces?limit=200").await;
    assert_eq!(status, 200, "{list}");
    list["traces"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_traces_a_share_of_calls_and_keeps_a_record_of_the_failed_rest() {
    let dev = start_dev_without_collector(32 * 1024 * 1024, "0.2");
    deploy_cart(&dev).await;
    let http = reqwest::Client::new();
    let unsampled = |trace: &str| Some(format!("00-{trace}-00f067aa0ba902b7-00"));

    // --- unsampled calls (the client's flag is clear): one succeeds, one fails
    let quiet = "1af7651916cd43dd8448eb211c80319c";
    let broken = "2af7651916cd43dd8448eb211c80319c";
    assert_eq!(add_with(&http, &dev, "ann", 1, unsampled(quiet)).await, 200);
    assert_eq!(add_with(&http, &dev, "ann", 0, unsampled(broken)).await, 500);
    let failed = until_listed(
        &dev,
        "/services/cart/traces?status=error",
        "the unsampled failure listed",
    )
    .await;
    let listed = &failed["traces"][0];
    assert_eq!(listed["trace_id"], broken);
    assert_eq!(listed["sampled"], false, "{listed}");
    assert_eq!(listed["kept_because"], "failed");
    assert_eq!(listed["entity_ids"], json!(["ann"]));
    let (status, record) = get(&dev, &format!("/traces/{broken}")).await;
    assert_eq!(status, 200, "{record}");
    let spans = record["span_list"].as_array().expect("spans");
    assert_eq!(
        spans.len(),
        1,
        "the gateway's record alone, no span of any hop: {record:#}"
    );
    assert_eq!(
        spans[0]["name"],
        "gateway com.example.shoppingcart.ShoppingCart/AddItem"
    );
    assert_eq!(spans[0]["status"], "error");
    assert_eq!(
        spans[0]["parent_span_id"], "00f067aa0ba902b7",
        "its client's span is its parent"
    );
    // The record of the failure was sent after the quiet call's would have been:
    // the quiet call, neither slow (too few calls to judge) nor failed, left nothing.
    let (status, body) = get(&dev, &format!("/traces/{quiet}")).await;
    assert_eq!(status, 404, "an unsampled call that went well is not kept: {body}");

    // --- a client's sampled traceparent is always traced, whatever the share
    let wanted: Vec<String> = (0..10).map(|n| format!("{:032x}", 0xc1e0_0000u64 + n)).collect();
    for trace in &wanted {
        assert_eq!(add(&http, &dev, "bob", 1, Some(trace)).await, 200);
    }
    for trace in &wanted {
        let kept = until(
            &dev,
            &format!("/traces/{trace}"),
            "the client's sampled trace",
            |trace| trace["span_list"].as_array().is_some_and(|spans| spans.len() >= 4),
        )
        .await;
        assert_eq!(kept["sampled"], true);
    }

    // --- calls without a traceparent: about one in five is traced
    const CALLS: usize = 150;
    let before: usize = cart_traces(&dev).await.iter().filter(|t| t["sampled"] == true).count();
    for n in 0..CALLS {
        assert_eq!(add(&http, &dev, &format!("user-{}", n % 10), 1, None).await, 200);
    }
    // A last sampled call: once it is kept, every earlier call's spans have
    // arrived (each process sends its spans in order) and been decided.
    let marker = "fa7e0000000000000000000000000001";
    assert_eq!(add(&http, &dev, "marker", 1, Some(marker)).await, 200);
    until(&dev, &format!("/traces/{marker}"), "the marker's trace", |trace| {
        trace["span_list"].as_array().is_some_and(|spans| spans.len() >= 4)
    })
    .await;
    let traces = cart_traces(&dev).await;
    let sampled = traces.iter().filter(|t| t["sampled"] == true).count() - before - 1;
    assert!(
        (10..=60).contains(&sampled),
        "{sampled} of {CALLS} calls traced at a share of 0.2"
    );
    for trace in traces.iter().filter(|t| t["sampled"] == true) {
        assert!(
            trace["spans"].as_u64().unwrap() >= 4,
            "a traced call has every hop's spans: {trace}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_wakes_a_service_from_zero_is_traced_though_not_sampled() {
    // No call is sampled: only the cold start makes the woken call traced.
    let dev = start_dev_without_collector(32 * 1024 * 1024, "0");
    dev.deploy_command(
        "cart",
        &binary("shopping-cart").display().to_string(),
        &[
            "--min-scale",
            "0",
            "--scale-to-zero-grace",
            "5s",
            "--stable-window",
            "6s",
        ],
    );
    dev.until("scaled to zero", Duration::from_secs(120), |s| {
        s["ready_replicas"] == 0 && s["desired_replicas"] == 0
    })
    .await;

    // --- a call without a traceparent wakes the cart
    assert_eq!(add(&reqwest::Client::new(), &dev, "cold", 1, None).await, 200);
    let listed = until_listed(
        &dev,
        "/services/cart/traces?cold_start=true",
        "the cold start's trace listed",
    )
    .await;
    let id = listed["traces"][0]["trace_id"].as_str().expect("an id").to_string();
    let trace = until(&dev, &format!("/traces/{id}"), "the woken call's steps", |trace| {
        let names: Vec<&str> = trace["span_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|span| span["name"].as_str())
            .collect();
        ["cold start cart", "sidecar", "function"]
            .iter()
            .all(|prefix| names.iter().any(|name| name.starts_with(prefix)))
    })
    .await;
    let cold = span(&trace, "cold start cart");
    let sidecar = span(&trace, "sidecar");
    assert_eq!(
        cold["parent_span_id"], sidecar["parent_span_id"],
        "both hang under the gateway's (unsampled) place in the trace"
    );
    assert_eq!(cold["attributes"]["strata.cold_start"], "true");
    let (_, none) = get(&dev, "/services/cart/traces?cold_start=false").await;
    assert!(
        none["traces"]
            .as_array()
            .is_some_and(|traces| traces.iter().all(|t| t["trace_id"] != id.as_str())),
        "{none}"
    );
}
