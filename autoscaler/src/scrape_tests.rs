//! The exposition parser on real and malformed text, counter rates, and scrapes of a real
//! HTTP server on loopback.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::test_server::{refused_url, Response, TestServer};

const CART: &str = "com.example.shoppingcart.ShoppingCart";

/// What a sidecar serving the cart renders, histograms and unrelated metrics included.
const SIDECAR: &str = r#"# HELP strata_entities_active Entities with an open stream to the function
# TYPE strata_entities_active gauge
strata_entities_active 4
# HELP strata_proxy_in_flight_requests Requests being handled now
# TYPE strata_proxy_in_flight_requests gauge
strata_proxy_in_flight_requests{service="com.example.shoppingcart.ShoppingCart"} 3
strata_proxy_in_flight_requests{service="com.example.Other"} 0
# HELP strata_proxy_request_duration_seconds Request latency
# TYPE strata_proxy_request_duration_seconds histogram
strata_proxy_request_duration_seconds_bucket{method="AddItem",service="com.example.shoppingcart.ShoppingCart",le="0.0005"} 10
strata_proxy_request_duration_seconds_bucket{method="AddItem",service="com.example.shoppingcart.ShoppingCart",le="+Inf"} 120
strata_proxy_request_duration_seconds_sum{method="AddItem",service="com.example.shoppingcart.ShoppingCart"} 0.53
strata_proxy_request_duration_seconds_count{method="AddItem",service="com.example.shoppingcart.ShoppingCart"} 120
# HELP strata_proxy_requests_total Requests answered, by outcome
# TYPE strata_proxy_requests_total counter
strata_proxy_requests_total{code="0",method="AddItem",protocol="grpc",service="com.example.shoppingcart.ShoppingCart"} 120
strata_proxy_requests_total{code="0",method="GetCart",protocol="http",service="com.example.shoppingcart.ShoppingCart"} 30
strata_proxy_requests_total{code="3",method="AddItem",protocol="http",service="com.example.Other"} 2
"#;

fn counts(in_flight: f64, requests_total: f64) -> ServiceCounts {
    ServiceCounts {
        in_flight,
        requests_total,
    }
}

#[test]
fn parses_a_sidecar_exposition() {
    let metrics = InstanceMetrics::parse(SIDECAR).unwrap();
    assert_eq!(metrics.services.len(), 2);
    assert_eq!(metrics.services[CART], counts(3.0, 150.0));
    assert_eq!(metrics.services["com.example.Other"], counts(0.0, 2.0));
    assert_eq!(metrics.total(), counts(3.0, 152.0));
}

#[test]
fn parses_what_the_prometheus_crate_renders() {
    use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

    // The same names and labels as the proxy's metrics.rs.
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(REQUESTS_METRIC, "Requests answered, by outcome"),
        &["service", "method", "protocol", "code"],
    )
    .unwrap();
    let in_flight = IntGaugeVec::new(Opts::new(IN_FLIGHT_METRIC, "Requests being handled now"), &["service"]).unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    registry.register(Box::new(in_flight.clone())).unwrap();
    requests.with_label_values(&[CART, "AddItem", "grpc", "0"]).inc_by(7);
    requests
        .with_label_values(&[CART, "GetCart", "grpc-web", "5"])
        .inc_by(2);
    requests
        .with_label_values(&["weird \"quoted\"\\service", "M", "http", "0"])
        .inc();
    in_flight.with_label_values(&[CART]).set(5);

    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text).unwrap();
    let metrics = InstanceMetrics::parse(std::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!(metrics.services[CART], counts(5.0, 9.0));
    assert_eq!(metrics.services["weird \"quoted\"\\service"], counts(0.0, 1.0));
}

#[test]
fn accepts_the_corners_of_the_text_format() {
    let text = "\r\n   \n# a free comment\n\
        strata_proxy_in_flight_requests{ service = \"a\\nb\" , } 1.5e0 1700000000000\r\n\
        strata_proxy_in_flight_requests{service=\"c\",extra=\"\\q\"}\t2\n\
        other_metric NaN\n\
        other_metric{le=\"+Inf\"} -Inf\n\
        other:metric_total +Inf\n";
    let metrics = InstanceMetrics::parse(text).unwrap();
    assert_eq!(metrics.services["a\nb"], counts(1.5, 0.0));
    assert_eq!(metrics.services["c"], counts(2.0, 0.0));

    let sample = parse_line(r#"m{path="\\q\"x\""} 3"#).unwrap().unwrap();
    assert_eq!(sample.labels, vec![("path".to_owned(), r#"\q"x""#.to_owned())]);
    assert_eq!(parse_line("m{} 3").unwrap().unwrap().labels, vec![]);
    assert_eq!(parse_line("# TYPE m gauge").unwrap(), None);
}

#[test]
fn malformed_lines_fail_with_their_line_number() {
    let cases = [
        (
            "strata_proxy_in_flight_requests{service=\"a\"}",
            1,
            "strata_proxy_in_flight_requests has no value",
        ),
        (
            "ok 1\n{service=\"a\"} 1",
            2,
            "expected a metric name at \"{service=\\\"a\\\"} 1\"",
        ),
        ("9metric 1", 1, "expected a metric name"),
        ("m{service=\"a} 1", 1, "unterminated value for label service"),
        ("m{service=a} 1", 1, "expected a quoted value for label service"),
        ("m{service} 1", 1, "expected '=' after label service"),
        ("m{=\"a\"} 1", 1, "expected a label name"),
        ("m{a=\"1\" b=\"2\"} 1", 1, "expected ',' or '}' after label a"),
        ("m{a=\"1\"}1", 1, "expected a space and a value after m"),
        ("m one", 1, "m has an invalid value \"one\""),
        ("m 1 2 3", 1, "unexpected \"3\" after the value of m"),
        ("m 1 yesterday", 1, "m has an invalid timestamp \"yesterday\""),
        ("m inf", 1, "m has an invalid value \"inf\""),
        ("\n\nm 1 1.5", 3, "m has an invalid timestamp \"1.5\""),
        (
            "strata_proxy_requests_total{code=\"0\"} 1",
            1,
            "strata_proxy_requests_total has no service label",
        ),
        (
            "strata_proxy_in_flight_requests{service=\"a\"} -1",
            1,
            "has value -1, not a count",
        ),
        (
            "strata_proxy_in_flight_requests{service=\"a\"} NaN",
            1,
            "has value NaN, not a count",
        ),
        (
            "strata_proxy_requests_total{service=\"a\"} +Inf",
            1,
            "has value inf, not a count",
        ),
    ];
    for (text, line, message) in cases {
        let error = InstanceMetrics::parse(text).expect_err(text);
        assert_eq!(error.line, line, "{text}: {error}");
        assert!(
            error.message.contains(message),
            "{text}: {error} does not mention {message:?}"
        );
    }
}

#[test]
fn garbage_errors_stay_short() {
    let garbage = "x".repeat(1_000) + "{";
    let error = InstanceMetrics::parse(&garbage).unwrap_err();
    assert!(error.to_string().len() < 200, "{error}");
    let html = "<html>502 Bad Gateway</html>";
    let error = InstanceMetrics::parse(html).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: expected a metric name at \"<html>502 Bad Gateway</html>\""
    );
}

proptest! {
    #[test]
    fn parsing_never_panics(text in ".{0,200}") {
        let _ = InstanceMetrics::parse(&text);
    }

    #[test]
    fn parsing_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = InstanceMetrics::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn rendered_counts_read_back(in_flight in 0u32..10_000, total in 0u64..1_000_000_000) {
        let text = format!(
            "{IN_FLIGHT_METRIC}{{service=\"s\"}} {in_flight}\n{REQUESTS_METRIC}{{service=\"s\",code=\"0\"}} {total}\n"
        );
        let metrics = InstanceMetrics::parse(&text).unwrap();
        prop_assert_eq!(metrics.services["s"], counts(f64::from(in_flight), total as f64));
    }
}

#[test]
fn counter_rates_come_from_deltas_and_survive_resets() {
    let mut rate = CounterRate::default();
    assert_eq!(rate.observe(Timestamp::from_secs(1), 100.0), None);
    assert_eq!(rate.observe(Timestamp::from_secs(2), 130.0), Some(30.0));
    assert_eq!(rate.observe(Timestamp::from_secs(4), 150.0), Some(10.0));
    // Same instant: no rate, and the baseline stays at second 4.
    assert_eq!(rate.observe(Timestamp::from_secs(4), 170.0), None);
    assert_eq!(rate.observe(Timestamp::from_millis(4_500), 160.0), Some(20.0));
    // The sidecar restarted: its counter starts again from zero.
    assert_eq!(rate.observe(Timestamp::from_secs(5), 8.0), Some(16.0));
    assert_eq!(rate.observe(Timestamp::from_secs(6), 8.0), Some(0.0));
}

fn scraper() -> Scraper {
    Scraper::new(Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn scrapes_a_real_endpoint() {
    let server = TestServer::start(Response::ok(SIDECAR)).await;
    let metrics = scraper().scrape(&server.url).await.unwrap();
    assert_eq!(metrics.total(), counts(3.0, 152.0));
}

#[tokio::test]
async fn scrape_errors_say_what_went_wrong() {
    let server = TestServer::start(Response {
        status: 500,
        body: b"oops".to_vec(),
        content_length: true,
    })
    .await;
    let error = scraper().scrape(&server.url).await.unwrap_err();
    assert!(matches!(error, ScrapeError::Status { status: 500, .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!("metrics endpoint {} answered HTTP 500", server.url)
    );

    server.set(Response::ok("m{service=\"a} 1\n")).await;
    let error = scraper().scrape(&server.url).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "metrics from {} are malformed: line 1: unterminated value for label service",
            server.url
        )
    );

    server.set(Response::ok(vec![0xff, 0xfe, b' ', b'1'])).await;
    let error = scraper().scrape(&server.url).await.unwrap_err();
    assert!(matches!(error, ScrapeError::NotText { .. }), "{error}");

    let huge = vec![b'#'; MAX_EXPOSITION_BYTES + 1];
    server.set(Response::ok(huge.clone())).await;
    let error = scraper().scrape(&server.url).await.unwrap_err();
    assert!(matches!(error, ScrapeError::TooLarge { .. }), "{error}");
    server
        .set(Response {
            status: 200,
            body: huge,
            content_length: false,
        })
        .await;
    let error = scraper().scrape(&server.url).await.unwrap_err();
    assert!(matches!(error, ScrapeError::TooLarge { .. }), "{error}");

    let refused = refused_url().await;
    let error = scraper().scrape(&refused).await.unwrap_err();
    assert!(matches!(error, ScrapeError::Fetch { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("could not fetch metrics from {refused}: ")),
        "{error}"
    );

    let error = scraper().scrape("not a url").await.unwrap_err();
    assert!(matches!(error, ScrapeError::Fetch { .. }), "{error}");
}
