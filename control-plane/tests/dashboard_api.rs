//! The API the dashboard needs, driven with `oneshot` against a real one-node cluster:
//! entities read from a real SQLite store and decoded with the cart's descriptors,
//! metric series and their bounds, the token's rights, the Raft view, `/metrics`
//! checked by `promtool`, and the embedded UI (types, caching, fallback, no escape).

use std::io::Write;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine;
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Value};
use strata_control_plane::api::{app, ui_is_built, AppState, Tokens};
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::metrics_history::Sample;
use strata_control_plane::node::{now_ms, ControlPlane, NodeConfig, Timing};
use strata_control_plane::raft::mem_network::MemRouter;
use strata_control_plane::raft::NodeInfo;
use strata_control_plane::registry::{Command, EntityInfo};
use strata_store::{EntityKey, JournalWrite, Snapshot, SqliteStore, Store};
use tower::ServiceExt;

const ADMIN: &str = "admin-token";
const READER: &str = "reader-token";

struct Harness {
    _dir: tempfile::TempDir,
    node: Arc<ControlPlane>,
    store: Arc<dyn Store>,
    app: Router,
}

async fn harness(with_store: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::default();
    let config = NodeConfig {
        node_id: 1,
        data_dir: dir.path().join("node"),
        info: NodeInfo {
            address: "mem-1".into(),
            api_address: "mem-1-api".into(),
        },
        secret: ClusterSecret::new("test"),
        peer_tls: Default::default(),
        timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        },
    };
    let node = ControlPlane::start(config, router.network(1)).await.unwrap();
    router.register(1, node.raft().clone());
    node.bootstrap().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.is_leader() {
        assert!(Instant::now() < deadline, "the single node never became leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("strata.db")).await.unwrap());
    let tokens = Tokens {
        admin: Some(ADMIN.into()),
        read_only: Some(READER.into()),
    };
    let state = AppState::new(node.clone(), tokens).with_store(with_store.then(|| store.clone()));
    Harness {
        _dir: dir,
        node,
        store,
        app: app(state),
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> Reply {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

/// The shopping cart's descriptors, compiled like the example compiles them.
fn cart_descriptors() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut compiler = protox::Compiler::new([root.join("examples/shopping-cart/proto"), root.join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["shoppingcart.proto", "domain.proto"]).unwrap();
    compiler.encode_file_descriptor_set()
}

fn message(pool: &DescriptorPool, name: &str, json: Value) -> prost_types::Any {
    let descriptor = pool.get_message_by_name(name).unwrap();
    let message = DynamicMessage::deserialize(descriptor, json).unwrap();
    prost_types::Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

/// Registers the cart with its descriptors, as a ready instance would.
async fn register_cart(node: &ControlPlane, descriptors: &[u8]) {
    node.write(Command::CreateService(strata_control_plane::registry::ServiceSpec {
        name: "cart".into(),
        runs: strata_control_plane::registry::RevisionSpec::command("./cart"),
        ..Default::default()
    }))
    .await
    .unwrap();
    node.write(Command::RegisterInstance {
        id: "cart-1".into(),
        service: "cart".into(),
        address: "127.0.0.1:1".into(),
        admin_address: String::new(),
        revision: 0,
    })
    .await
    .unwrap();
    node.write(Command::InstanceReady {
        id: "cart-1".into(),
        descriptor_set: Some(base64::engine::general_purpose::STANDARD.encode(descriptors)),
        subscriptions: vec![],
        entities: vec![EntityInfo {
            entity_type: "cloudstate.eventsourced.EventSourced".into(),
            service_name: "com.example.shoppingcart.ShoppingCart".into(),
            persistence_id: "shopping-cart".into(),
        }],
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn entities_are_read_from_the_store_and_decoded() {
    let h = harness(true).await;
    let descriptors = cart_descriptors();
    let pool = DescriptorPool::decode(descriptors.as_slice()).unwrap();
    register_cart(&h.node, &descriptors).await;

    // --- an entity with 7 events and a snapshot at 5, written as a sidecar writes them
    let key = EntityKey::new("shopping-cart", "alice");
    let added = |n: i64| {
        message(
            &pool,
            "com.example.shoppingcart.persistence.ItemAdded",
            json!({"item": {"productId": format!("p{n}"), "name": "Thing", "quantity": n}}),
        )
    };
    let snapshot = message(
        &pool,
        "com.example.shoppingcart.persistence.Cart",
        json!({"items": [{"productId": "p1", "name": "Thing", "quantity": 15}]}),
    );
    h.store
        .append(JournalWrite {
            key: key.clone(),
            first_seq_nr: 1,
            events: (1..=5).map(added).collect(),
            snapshot: Some(Snapshot {
                seq_nr: 5,
                payload: snapshot,
            }),
            timers: Vec::new(),
        })
        .await
        .unwrap();
    h.store
        .append(JournalWrite {
            key: key.clone(),
            first_seq_nr: 6,
            events: (6..=7).map(added).collect(),
            snapshot: None,
            timers: Vec::new(),
        })
        .await
        .unwrap();

    // --- the state is the latest snapshot, decoded
    let reply = get(&h.app, "/api/v1/services/cart/entities/alice", Some(READER)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let entity = reply.json();
    assert_eq!(entity["entity_type"], "event_sourced");
    assert_eq!(entity["persistence_id"], "shopping-cart");
    assert_eq!(entity["grpc_service"], "com.example.shoppingcart.ShoppingCart");
    assert_eq!(entity["snapshot_seq_nr"], 5);
    assert_eq!(entity["last_seq_nr"], 7);
    assert_eq!(
        entity["state"]["type_name"],
        "com.example.shoppingcart.persistence.Cart"
    );
    assert_eq!(entity["state"]["value"]["items"][0]["quantity"], 15);

    // --- the journal, newest first, in pages
    let page = get(
        &h.app,
        "/api/v1/services/cart/entities/alice/events?limit=3",
        Some(READER),
    )
    .await
    .json();
    let seqs = |page: &Value| -> Vec<i64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq_nr"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&page), vec![7, 6, 5]);
    assert_eq!(
        page["events"][0]["type_name"],
        "com.example.shoppingcart.persistence.ItemAdded"
    );
    assert_eq!(page["events"][0]["value"]["item"]["productId"], "p7");
    assert_eq!(page["next_before"], 5);
    let older = get(
        &h.app,
        "/api/v1/services/cart/entities/alice/events?limit=3&before=5",
        Some(READER),
    )
    .await
    .json();
    assert_eq!(seqs(&older), vec![4, 3, 2]);
    let last = get(
        &h.app,
        "/api/v1/services/cart/entities/alice/events?limit=3&before=2",
        Some(READER),
    )
    .await
    .json();
    assert_eq!((seqs(&last), last["next_before"].clone()), (vec![1], Value::Null));

    // --- bad input: unknown entity, unknown service, page bounds
    for (path, status, field) in [
        ("/api/v1/services/cart/entities/bob", StatusCode::NOT_FOUND, None),
        ("/api/v1/services/cart/entities/bob/events", StatusCode::NOT_FOUND, None),
        ("/api/v1/services/nope/entities/alice", StatusCode::NOT_FOUND, None),
        (
            "/api/v1/services/cart/entities/alice/events?limit=0",
            StatusCode::BAD_REQUEST,
            Some("limit"),
        ),
        (
            "/api/v1/services/cart/entities/alice/events?limit=101",
            StatusCode::BAD_REQUEST,
            Some("limit"),
        ),
        (
            "/api/v1/services/cart/entities/alice/events?before=0",
            StatusCode::BAD_REQUEST,
            Some("before"),
        ),
        (
            "/api/v1/services/cart/entities/alice?entity=com.example.Other",
            StatusCode::BAD_REQUEST,
            Some("entity"),
        ),
        (
            "/api/v1/services/cart/entities/alice/events?limit=many",
            StatusCode::BAD_REQUEST,
            None,
        ),
    ] {
        let reply = get(&h.app, path, Some(READER)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        if let Some(field) = field {
            assert_eq!(reply.json()["error"]["field"], field, "{path}");
        }
    }
    let unknown = get(&h.app, "/api/v1/services/cart/entities/bob", Some(READER)).await;
    assert!(unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("no such entity"));
}

#[tokio::test]
async fn without_a_store_entity_reads_say_so() {
    let h = harness(false).await;
    register_cart(&h.node, &cart_descriptors()).await;
    let reply = get(&h.app, "/api/v1/services/cart/entities/alice", Some(ADMIN)).await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(reply.json()["error"]["code"], "no_store");
}

fn sample(at_ms: u64, requests_per_second: f64) -> Sample {
    Sample {
        at_ms,
        requests_per_second: Some(requests_per_second),
        concurrency: Some(1.0),
        desired_replicas: 2,
        ready_replicas: 1,
        latency_p50_ms: Some(1.5),
        latency_p99_ms: Some(9.0),
        cold_starts: 0,
        cold_start_ms: None,
    }
}

#[tokio::test]
async fn metric_series_cover_the_asked_window_and_refuse_others() {
    let h = harness(true).await;
    register_cart(&h.node, &cart_descriptors()).await;
    let now = now_ms();
    // Two minutes ago, then the last 20 seconds.
    h.node.history().record("cart", sample(now - 120_000, 1.0));
    for second in (0..20).rev() {
        h.node.history().record("cart", sample(now - second * 1000, 42.0));
    }

    let reply = get(&h.app, "/api/v1/services/cart/metrics?window=30s", Some(READER)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let series = reply.json();
    assert_eq!(
        (series["service"].clone(), series["window"].clone()),
        (json!("cart"), json!("30s"))
    );
    assert_eq!(series["interval_ms"], 1000);
    let samples = series["samples"].as_array().unwrap();
    assert!((19..=20).contains(&samples.len()), "{} samples", samples.len());
    assert!(samples.iter().all(|s| s["requests_per_second"] == 42.0));
    assert_eq!(samples[0]["latency_p99_ms"], 9.0);
    let all = get(&h.app, "/api/v1/services/cart/metrics", Some(READER)).await.json();
    assert_eq!(all["window"], "15m");
    assert_eq!(all["samples"].as_array().unwrap().len(), 21);

    for (path, status) in [
        ("/api/v1/services/cart/metrics?window=5s", StatusCode::BAD_REQUEST),
        ("/api/v1/services/cart/metrics?window=1h", StatusCode::BAD_REQUEST),
        ("/api/v1/services/cart/metrics?window=soon", StatusCode::BAD_REQUEST),
        ("/api/v1/services/nope/metrics", StatusCode::NOT_FOUND),
    ] {
        let reply = get(&h.app, path, Some(READER)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
    }
    let refused = get(&h.app, "/api/v1/services/cart/metrics?window=1h", Some(READER)).await;
    assert_eq!(refused.json()["error"]["field"], "window");
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("between 10s and 15m"));
}

#[tokio::test]
async fn access_tells_the_dashboard_what_a_token_may_do() {
    let h = harness(false).await;
    assert_eq!(
        get(&h.app, "/api/v1/access", Some(ADMIN)).await.json(),
        json!({"access": "admin"})
    );
    assert_eq!(
        get(&h.app, "/api/v1/access", Some(READER)).await.json(),
        json!({"access": "read_only"})
    );
    assert_eq!(
        get(&h.app, "/api/v1/access", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&h.app, "/api/v1/access", Some("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn cluster_view_marks_the_leader_and_its_replication() {
    let h = harness(false).await;
    let cluster = get(&h.app, "/api/v1/cluster", Some(READER)).await.json();
    assert_eq!(cluster["leader"], 1);
    let member = &cluster["members"][0];
    assert_eq!(member["is_leader"], true);
    assert!(member["matched_index"].as_u64().is_some(), "{cluster}");
    assert!(cluster["committed_index"].as_u64().is_some());
    assert!(cluster["applied_index"].as_u64().is_some());

    let document = get(&h.app, "/api/v1/openapi.json", None).await.json();
    for path in [
        "/api/v1/services/{name}/metrics",
        "/api/v1/services/{name}/entities/{entity_id}",
        "/api/v1/services/{name}/entities/{entity_id}/events",
        "/api/v1/access",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// `promtool check metrics` on a text, or `None` where promtool is not installed (and
/// STRATA_REQUIRE_PROMTOOL is not set).
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Process::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("STRATA_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (apt-get install prometheus): {error}"
            );
            eprintln!("promtool not found; skipping its check (scripts/check installs it)");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), said))
}

#[tokio::test]
async fn metrics_exposition_passes_promtool() {
    let h = harness(false).await;
    register_cart(&h.node, &cart_descriptors()).await;
    h.node
        .write(Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 3,
            reason: "test".into(),
        })
        .await
        .unwrap();
    let refused = h.node.write(Command::DeleteService { name: "nope".into() }).await;
    assert!(refused.is_err());

    // The counters follow applied effects asynchronously: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let reply = get(&h.app, "/metrics", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("content-type").starts_with("text/plain"));
        let text = reply.text();
        if text.contains("strata_scale_decisions_total{change=\"up\",service=\"cart\"} 1") {
            break text;
        }
        assert!(Instant::now() < deadline, "scale decision never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for expected in [
        "strata_raft_term 1",
        "strata_raft_leader 1",
        "strata_raft_leader_changes_total 1",
        "strata_raft_append_seconds_count",
        "strata_raft_committed_index",
        "strata_raft_applied_index",
        "strata_registry_writes_total{command=\"create_service\",outcome=\"applied\"} 1",
        "strata_registry_writes_total{command=\"delete_service\",outcome=\"refused\"} 1",
        "strata_service_desired_replicas{service=\"cart\"} 3",
        "strata_service_ready_replicas{service=\"cart\"} 1",
        "strata_instance_starts_total{service=\"cart\"} 1",
        "strata_service_cold_start_seconds_count{service=\"cart\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    if let Some((ok, said)) = promtool(&text) {
        assert!(ok, "promtool check metrics failed: {said}\n{text}");
    }
}

#[tokio::test]
async fn the_dashboard_is_served_at_ui() {
    let h = harness(false).await;
    if std::env::var_os("STRATA_REQUIRE_UI").is_some() {
        assert!(
            ui_is_built(),
            "web-ui/dist was not built into this binary (scripts/web-ui.sh)"
        );
    }
    let root = get(&h.app, "/", None).await;
    assert_eq!(
        (root.status, root.header("location")),
        (StatusCode::TEMPORARY_REDIRECT, "/ui/")
    );
    let bare = get(&h.app, "/ui", None).await;
    assert_eq!(bare.header("location"), "/ui/");

    // Never outside the embedded folder, whatever the path says.
    for path in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/assets/..%2f..%2fCargo.toml",
        "/ui/.gitignore",
        "/ui/no-such-file.js",
    ] {
        let reply = get(&h.app, path, None).await;
        assert!(
            matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
            "{path}: {}",
            reply.status
        );
        assert!(!reply.text().contains("[workspace]"), "{path} escaped");
    }

    let index = get(&h.app, "/ui/", None).await;
    if !ui_is_built() {
        assert_eq!(index.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(index.text().contains("npm ci"), "{}", index.text());
        return;
    }
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(index.header("cache-control"), "no-cache");
    // Client-side routes get the app.
    let route = get(&h.app, "/ui/services/cart", None).await;
    assert_eq!((route.status, route.body.clone()), (StatusCode::OK, index.body.clone()));
    // Hashed assets: the right type and cached for good.
    let html = index.text();
    let script = html
        .split('"')
        .find(|part| part.starts_with("/ui/assets/") && part.ends_with(".js"))
        .expect("index.html loads a script from /ui/assets/");
    let asset = get(&h.app, script, None).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(asset.header("cache-control"), "public, max-age=31536000, immutable");
    let stylesheet = html
        .split('"')
        .find(|part| part.starts_with("/ui/assets/") && part.ends_with(".css"))
        .expect("index.html links a stylesheet");
    assert_eq!(
        get(&h.app, stylesheet, None).await.header("content-type"),
        "text/css; charset=utf-8"
    );
}

/// A sidecar's `/metrics` on loopback whose exposition the test sets.
async fn exposition_server(text: Arc<std::sync::Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.lock().unwrap().clone();
            async move { text }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/metrics")
}

fn exposition(requests: u64, in_flight: u64, fast: u64, slow: u64) -> String {
    format!(
        "strata_proxy_requests_total{{service=\"com.example.shoppingcart.ShoppingCart\",method=\"AddItem\",protocol=\"http\",code=\"OK\"}} {requests}\n\
         strata_proxy_in_flight_requests{{service=\"com.example.shoppingcart.ShoppingCart\"}} {in_flight}\n\
         strata_proxy_request_duration_seconds_bucket{{service=\"com.example.shoppingcart.ShoppingCart\",method=\"AddItem\",le=\"0.001\"}} {fast}\n\
         strata_proxy_request_duration_seconds_bucket{{service=\"com.example.shoppingcart.ShoppingCart\",method=\"AddItem\",le=\"0.01\"}} {}\n\
         strata_proxy_request_duration_seconds_bucket{{service=\"com.example.shoppingcart.ShoppingCart\",method=\"AddItem\",le=\"+Inf\"}} {}\n",
        fast + slow,
        fast + slow
    )
}

#[tokio::test]
async fn every_autoscaler_scrape_becomes_a_sample() {
    use strata_autoscaler::collector::{MetricsSource, PrometheusSource, SCRAPE_TIMEOUT};
    use strata_autoscaler::window::Timestamp;
    use strata_control_plane::metrics_history::RecordingSource;

    let h = harness(false).await;
    register_cart(&h.node, &cart_descriptors()).await;
    let text = Arc::new(std::sync::Mutex::new(exposition(10, 2, 0, 0)));
    let url = exposition_server(text.clone()).await;
    // The cart's cold start (created, then its instance ready) is counted from the
    // registry's effects, asynchronously: wait until it has been.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h
        .node
        .read(|registry| h.node.telemetry().render(&h.node.raft_status(), registry))
        .contains("strata_service_cold_start_seconds_count{service=\"cart\"} 1")
    {
        assert!(Instant::now() < deadline, "the cold start was never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The production wiring: the autoscaler's own Prometheus source, recorded.
    let source = RecordingSource::new(PrometheusSource::new(SCRAPE_TIMEOUT).unwrap(), h.node.clone());

    // --- first round: a concurrency, but no rate or latency yet (nothing to compare)
    let load = source
        .observe("cart", std::slice::from_ref(&url), Timestamp::from_secs(1))
        .await
        .expect("the instance was scraped");
    assert_eq!(load.concurrency, 2.0);
    // --- a second later: 20 more requests, 10 under 1 ms and 10 under 10 ms
    *text.lock().unwrap() = exposition(30, 3, 10, 10);
    let load = source
        .observe("cart", std::slice::from_ref(&url), Timestamp::from_secs(2))
        .await
        .unwrap();
    assert_eq!((load.concurrency, load.requests_per_second), (3.0, 20.0));

    let samples = h.node.history().since("cart", 0);
    assert_eq!(samples.len(), 2);
    let (first, second) = (&samples[0], &samples[1]);
    assert_eq!((first.concurrency, first.latency_p50_ms), (Some(2.0), None));
    assert_eq!(second.requests_per_second, Some(20.0));
    assert_eq!(second.concurrency, Some(3.0));
    assert_eq!((second.desired_replicas, second.ready_replicas), (1, 1));
    let close = |value: Option<f64>, expected: f64| value.is_some_and(|value| (value - expected).abs() < 1e-9);
    assert!(close(second.latency_p50_ms, 1.0), "{:?}", second.latency_p50_ms);
    assert!(close(second.latency_p99_ms, 9.82), "{:?}", second.latency_p99_ms);
    // The cold start shows in the first sample after it.
    assert_eq!((first.cold_starts, second.cold_starts), (1, 0));

    // --- no instance at all: measured as idle, not as a gap
    source.observe("cart", &[], Timestamp::from_secs(3)).await;
    let idle = h.node.history().since("cart", 0).pop().unwrap();
    assert_eq!((idle.requests_per_second, idle.concurrency), (Some(0.0), Some(0.0)));
}

#[tokio::test]
async fn a_value_entity_shows_its_value_and_has_no_journal() {
    let h = harness(true).await;
    let descriptors = cart_descriptors();
    let pool = DescriptorPool::decode(descriptors.as_slice()).unwrap();
    h.node
        .write(Command::CreateService(strata_control_plane::registry::ServiceSpec {
            name: "values".into(),
            runs: strata_control_plane::registry::RevisionSpec::command("./values"),
            ..Default::default()
        }))
        .await
        .unwrap();
    h.node
        .write(Command::RegisterInstance {
            id: "values-1".into(),
            service: "values".into(),
            address: "127.0.0.1:1".into(),
            admin_address: String::new(),
            revision: 0,
        })
        .await
        .unwrap();
    h.node
        .write(Command::InstanceReady {
            id: "values-1".into(),
            descriptor_set: Some(base64::engine::general_purpose::STANDARD.encode(&descriptors)),
            subscriptions: vec![],
            entities: vec![EntityInfo {
                entity_type: "cloudstate.valueentity.ValueEntity".into(),
                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                persistence_id: "value-cart".into(),
            }],
        })
        .await
        .unwrap();
    let value = message(
        &pool,
        "com.example.shoppingcart.persistence.Cart",
        json!({"items": [{"productId": "apple", "name": "Apple", "quantity": 3}]}),
    );
    h.store
        .save_value(&EntityKey::new("value-cart", "carol"), Some(value))
        .await
        .unwrap();

    let entity = get(&h.app, "/api/v1/services/values/entities/carol", Some(READER)).await;
    assert_eq!(entity.status, StatusCode::OK, "{}", entity.text());
    let entity = entity.json();
    assert_eq!(entity["entity_type"], "value");
    assert_eq!(entity["state"]["value"]["items"][0]["productId"], "apple");
    assert_eq!(entity["last_seq_nr"], Value::Null);
    let events = get(&h.app, "/api/v1/services/values/entities/carol/events", Some(READER)).await;
    assert_eq!(events.status, StatusCode::BAD_REQUEST, "{}", events.text());
    let missing = get(&h.app, "/api/v1/services/values/entities/dave", Some(READER)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
