//! A node embedded with `server::start`, as `strata dev` runs it: free ports reported,
//! extra routes beside the API, a task attached to the node, a clean shutdown that ends
//! open event streams, and a restart from the same data directory.

use std::time::{Duration, Instant};

use axum::routing::get;
use strata_control_plane::api::Tokens;
use strata_control_plane::node::Timing;
use strata_control_plane::registry::{Command, ServiceSpec};
use strata_control_plane::server::{self, RunningServer, ServerConfig};

const DEADLINE: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        node_id: Some(1),
        data_dir: dir.to_owned(),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".into()),
        bootstrap: true,
        cluster_secret: "embedded-secret".into(),
        tokens: Tokens {
            admin: Some("embedded-admin".into()),
            read_only: None,
        },
        raft_timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        },
        extra_routes: Some(axum::Router::new().route("/ui/hello", get(|| async { "hello from the dashboard" }))),
        ..ServerConfig::default()
    }
}

async fn leading(server: &RunningServer) {
    let deadline = Instant::now() + DEADLINE;
    let mut leadership = server.node().leadership();
    while !server.node().is_leader() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(!remaining.is_zero(), "the embedded node never led");
        let _ = tokio::time::timeout(remaining, leadership.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_serves_extra_routes_runs_tasks_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    println!("--- start on free ports");
    let server = server::start(config(dir.path())).await.expect("the node starts");
    assert_ne!(server.api_address().port(), 0);
    assert_ne!(server.raft_address().port(), 0);
    leading(&server).await;
    let api = server.api_address();

    println!("--- the API and the extra routes share the listener; only the API wants a token");
    let hello = http.get(format!("http://{api}/ui/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), "hello from the dashboard");
    let anonymous = http.get(format!("http://{api}/api/v1/cluster")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let cluster: serde_json::Value = http
        .get(format!("http://{api}/api/v1/cluster"))
        .bearer_auth("embedded-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cluster["state"], "leader");
    assert_eq!(
        cluster["members"][0]["api_address"],
        api.to_string(),
        "membership records the real port"
    );

    println!("--- write through the node handle and see the effect on a subscription");
    let node = server.node();
    let mut effects = node.subscribe();
    node.write(Command::CreateService(ServiceSpec {
        name: "cart".into(),
        runs: strata_control_plane::registry::RevisionSpec::command("./cart"),
        ..Default::default()
    }))
    .await
    .expect("write");
    let applied = tokio::time::timeout(DEADLINE, effects.recv()).await.unwrap().unwrap();
    assert!(!applied.effects.is_empty());
    assert!(node.read(|registry| registry.services.contains_key("cart")));

    println!("--- an attached task and an open event stream both end on shutdown");
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let stopping = server.stopping();
    server.spawn("test-task", async move {
        stopping.wait().await;
        let _ = ended_tx.send(());
    });
    let mut events = http
        .get(format!("http://{api}/api/v1/events"))
        .bearer_auth("embedded-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap();
    assert!(first.is_some(), "the stream replays the history");
    let stream_end = tokio::spawn(async move { while let Ok(Some(_)) = events.chunk().await {} });
    server.shutdown().await;
    ended_rx
        .await
        .expect("the attached task saw the stop signal and finished");
    tokio::time::timeout(DEADLINE, stream_end)
        .await
        .expect("the event stream ends with the server")
        .unwrap();
    assert!(
        http.get(format!("http://{api}/ui/hello")).send().await.is_err(),
        "nothing listens after shutdown"
    );

    println!("--- restart from the same data directory: the registry is there");
    let again = server::start(config(dir.path())).await.expect("the node restarts");
    leading(&again).await;
    assert!(again.node().read(|registry| registry.services.contains_key("cart")));
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let no_secret = server::start(ServerConfig {
        cluster_secret: String::new(),
        ..config(dir.path())
    })
    .await;
    let message = no_secret.err().expect("refused").to_string();
    assert!(message.contains("cluster secret"), "{message}");

    let bad_heartbeats = server::start(ServerConfig {
        heartbeat_interval: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(1),
        ..config(dir.path())
    })
    .await;
    let message = bad_heartbeats.err().expect("refused").to_string();
    assert!(message.contains("heartbeat timeout"), "{message}");
}
