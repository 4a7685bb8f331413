//! The management API driven with `oneshot` (no sockets) against a real one-node
//! cluster: status codes, error bodies, tokens, shapes that scripts rely on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata_control_plane::api::{app, AppState, Tokens};
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::node::{ControlPlane, NodeConfig, Timing};
use strata_control_plane::raft::mem_network::MemRouter;
use strata_control_plane::raft::NodeInfo;
use tower::ServiceExt;

const ADMIN: &str = "admin-token";
const READER: &str = "reader-token";

struct Harness {
    _dir: tempfile::TempDir,
    node: Arc<ControlPlane>,
    app: Router,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::default();
    let info = NodeInfo {
        address: "mem-1".into(),
        api_address: "mem-1-api".into(),
    };
    let config = NodeConfig {
        node_id: 1,
        data_dir: dir.path().to_owned(),
        info,
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
    let tokens = Tokens {
        admin: Some(ADMIN.into()),
        read_only: Some(READER.into()),
    };
    let app = app(AppState::new(node.clone(), tokens));
    Harness { _dir: dir, node, app }
}

async fn call(app: &Router, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |text| Body::from(text.to_owned())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    (status, value)
}

async fn admin(app: &Router, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    call(app, method, path, Some(ADMIN), body).await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn service_lifecycle_has_the_documented_shapes() {
    let h = harness().await;
    let (status, created) = admin(
        &h.app,
        "POST",
        "/api/v1/services",
        Some(r#"{"name":"cart","command":"./cart","max_scale":3}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in [
        "name",
        "command",
        "min_scale",
        "max_scale",
        "target_concurrency",
        "desired_replicas",
        "ready_replicas",
        "status",
    ] {
        assert!(created.get(field).is_some(), "missing {field} in {created}");
    }
    assert_eq!(created["scale_to_zero_grace"], "30s");
    assert_eq!(
        (&created["target_concurrency"], &created["keep_alive"]),
        (&json!(70), &json!("histogram")),
        "Knative's effective target; the idle-time histogram"
    );
    assert_eq!(
        created["idle_times"],
        json!({"samples": 0, "out_of_bounds": 0, "predictable": false,
               "unpredictable": "too_few_samples", "prewarm": null, "keep_alive": null})
    );
    assert_eq!(
        (created["desired_replicas"].as_u64(), created["ready_replicas"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(created["status"], "pending");

    let (status, list) = admin(&h.app, "GET", "/api/v1/services", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["services"][0]["name"], "cart");

    let (status, patched) = admin(
        &h.app,
        "PATCH",
        "/api/v1/services/cart",
        Some(r#"{"min_scale":2,"scale_to_zero_grace":"5m","keep_alive":"fixed","prewarm_percentile":10}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (
            &patched["keep_alive"],
            &patched["prewarm_percentile"],
            &patched["keep_alive_percentile"]
        ),
        (&json!("fixed"), &json!(10), &json!(99))
    );
    assert_eq!(
        (
            patched["revision"].as_u64(),
            patched["generation"].as_u64(),
            patched["desired_replicas"].as_u64()
        ),
        (Some(1), Some(2), Some(2)),
        "settings alone make no new revision"
    );
    assert_eq!(patched["scale_to_zero_grace"], "5m");
    assert_eq!(
        patched["stable_window"],
        serde_json::Value::Null,
        "unset: the platform's default"
    );

    let (status, shards) = admin(&h.app, "GET", "/api/v1/services/cart/shards", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shards["shard_count"], 64);
    assert_eq!(shards["shards"][0], json!({"shard": 0, "owner": null, "epoch": 0}));

    let (status, instances) = admin(&h.app, "GET", "/api/v1/services/cart/instances", None).await;
    assert_eq!((status, instances), (StatusCode::OK, json!({"instances": []})));

    let (status, _) = admin(&h.app, "DELETE", "/api/v1/services/cart", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin(&h.app, "GET", "/api/v1/services/cart", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    h.node.shutdown().await;
}

/// A service spec whose command is over the API's 1 MiB body limit.
static OVERSIZED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!(r#"{{"name":"big","command":"{}"}}"#, "x".repeat(1024 * 1024 + 1)));

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_code() {
    let h = harness().await;
    admin(
        &h.app,
        "POST",
        "/api/v1/services",
        Some(r#"{"name":"cart","command":"./cart"}"#),
    )
    .await;
    let cases: &[(&str, &str, Option<&str>, StatusCode, &str)] = &[
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"Bad_Name","command":"x"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"cart","command":"x"}"#),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(OVERSIZED.as_str()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","colour":"red"}"#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","min_scale":4,"max_scale":2}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","min_scale":-1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","scale_to_zero_grace":"soon"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","stable_window":"500ms"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/services",
            Some(r#"{"name":"x","command":"y","keep_alive":"sometimes"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "PATCH",
            "/api/v1/services/cart",
            Some(r#"{"keep_alive_percentile":101}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        ("GET", "/api/v1/services/nope", None, StatusCode::NOT_FOUND, "not_found"),
        (
            "PATCH",
            "/api/v1/services/nope",
            Some(r#"{"min_scale":1}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/services/cart",
            Some(r#"{"max_scale":-3}"#),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "PATCH",
            "/api/v1/services/cart",
            Some(r#"{"name":"renamed"}"#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "DELETE",
            "/api/v1/services/nope",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/services/nope/shards",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("GET", "/api/v1/nowhere", None, StatusCode::NOT_FOUND, "not_found"),
        (
            "DELETE",
            "/api/v1/cluster/members/1",
            None,
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "DELETE",
            "/api/v1/cluster/members/9",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, expected_status, expected_code) in cases {
        let (status, reply) = admin(&h.app, method, path, *body).await;
        assert_eq!(
            (status, error_code(&reply)),
            (*expected_status, *expected_code),
            "{method} {path} {body:?}: {reply}"
        );
        assert!(!reply["error"]["message"].as_str().unwrap_or_default().is_empty());
    }
    // Nothing refused reached the registry.
    let (_, list) = admin(&h.app, "GET", "/api/v1/services", None).await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(1));
    h.node.shutdown().await;
}

#[tokio::test]
async fn tokens_decide_who_may_read_and_write() {
    let h = harness().await;
    let create = Some(r#"{"name":"cart","command":"./cart"}"#);
    let (status, body) = call(&h.app, "GET", "/api/v1/services", None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, _) = call(&h.app, "GET", "/api/v1/services", Some("guess"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&h.app, "POST", "/api/v1/services", Some(READER), create).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "permission_denied")
    );
    let (status, _) = call(&h.app, "GET", "/api/v1/services", Some(READER), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&h.app, "POST", "/api/v1/services", Some(ADMIN), create).await;
    assert_eq!(status, StatusCode::CREATED);
    h.node.shutdown().await;
}

#[tokio::test]
async fn cluster_view_and_openapi_document() {
    let h = harness().await;
    let (status, cluster) = admin(&h.app, "GET", "/api/v1/cluster", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster["leader"], 1);
    let mut members = cluster["members"].clone();
    // How far the leader knows a member's log is whatever the log holds now.
    let matched = members[0]
        .as_object_mut()
        .and_then(|member| member.remove("matched_index"));
    assert!(matched.is_some_and(|index| index.as_u64().is_some()), "{cluster}");
    assert_eq!(
        members,
        json!([{"node_id": 1, "address": "mem-1", "api_address": "mem-1-api", "role": "voter", "is_leader": true}])
    );
    assert!(cluster["term"].as_u64().is_some() && cluster["applied_index"].as_u64().is_some());

    let (status, doc) = call(&h.app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/services",
        "/api/v1/services/{name}",
        "/api/v1/services/{name}/shards",
        "/api/v1/cluster",
        "/api/v1/cluster/members",
        "/api/v1/events",
        "/api/v1/schedules",
        "/api/v1/schedules/{name}",
        "/api/v1/services/{name}/timers",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("ServiceView").is_some());
    h.node.shutdown().await;
}

#[tokio::test]
async fn events_stream_replays_history_as_server_sent_events() {
    let h = harness().await;
    admin(
        &h.app,
        "POST",
        "/api/v1/services",
        Some(r#"{"name":"cart","command":"./cart"}"#),
    )
    .await;
    let request = Request::get("/api/v1/events")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("service_created") {
        assert!(Instant::now() < deadline, "no service_created event in {seen:?}");
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("event: registry"), "{seen}");
    // A live event arrives on the open stream too.
    admin(&h.app, "DELETE", "/api/v1/services/cart", None).await;
    while !seen.contains("service_deleted") {
        assert!(Instant::now() < deadline, "no live service_deleted event in {seen:?}");
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    h.node.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_records_every_write_with_who_and_outcome() {
    let h = harness().await;
    let (status, _) = admin(
        &h.app,
        "POST",
        "/api/v1/services",
        Some(r#"{"name":"cart","command":"./cart"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = admin(&h.app, "PATCH", "/api/v1/services/cart", Some(r#"{"max_scale":0}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&h.app, "DELETE", "/api/v1/services/cart", Some(READER), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&h.app, "DELETE", "/api/v1/services/cart", Some("wrong"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin(&h.app, "GET", "/api/v1/services", None).await;
    assert_eq!(status, StatusCode::OK);

    // Reads are not audited; a token nobody holds is not a principal (and could flood the log).
    let (status, page) = call(&h.app, "GET", "/api/v1/audit", Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seen: Vec<(String, String, String, Value, u64)> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| {
            (
                record["principal"].as_str().unwrap().to_owned(),
                record["method"].as_str().unwrap().to_owned(),
                record["path"].as_str().unwrap().to_owned(),
                record["target"].clone(),
                record["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("admin token", "POST", "/api/v1/services", json!("cart"), 201),
        ("admin token", "PATCH", "/api/v1/services/cart", json!("cart"), 400),
        ("read-only token", "DELETE", "/api/v1/services/cart", json!("cart"), 403),
    ]
    .map(|(who, method, path, target, status)| (who.to_owned(), method.to_owned(), path.to_owned(), target, status));
    assert_eq!(seen, expected);
    assert_eq!(page["next_after"], Value::Null);
    let at_ms = page["records"][0]["at_ms"].as_u64().unwrap();
    assert!(at_ms > 1_600_000_000_000, "at_ms is wall-clock milliseconds: {at_ms}");
    assert_eq!(h.node.read(|registry| registry.audit.len()), 3, "kept in the registry");

    // --- paged
    let (_, first) = admin(&h.app, "GET", "/api/v1/audit?limit=2", None).await;
    assert_eq!(first["records"].as_array().unwrap().len(), 2);
    let after = first["next_after"].as_u64().expect("a next page");
    let (_, rest) = admin(&h.app, "GET", &format!("/api/v1/audit?after={after}"), None).await;
    assert_eq!(rest["records"][0]["status"], 403);
    assert_eq!(rest["next_after"], Value::Null);
    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x"] {
        let (status, _) = admin(&h.app, "GET", &format!("/api/v1/audit?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (status, _) = call(&h.app, "GET", "/api/v1/audit", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // --- documented
    let (_, document) = call(&h.app, "GET", "/api/v1/openapi.json", None, None).await;
    assert!(
        document["paths"]["/api/v1/audit"]["get"].is_object(),
        "not in the OpenAPI document"
    );
}
