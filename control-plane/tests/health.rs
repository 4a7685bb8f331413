//! What a kubelet's probes ask a control-plane node on its API port, without a
//! token: `/healthz` answers while the process serves; `/readyz` only once the
//! node knows a leader (a node that has joined nothing is alive but not ready).
//! And a node whose entity store is not up starts anyway: it serves, and its
//! entity reads answer 503 until the store opens.

use std::time::{Duration, Instant};

use strata_control_plane::api::Tokens;
use strata_control_plane::server::{self, RunningServer, ServerConfig};

fn config(dir: &std::path::Path, bootstrap: bool) -> ServerConfig {
    ServerConfig {
        node_id: Some(1),
        data_dir: dir.to_owned(),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".into()),
        bootstrap,
        cluster_secret: "health-secret".into(),
        tokens: Tokens {
            admin: Some("health-admin".into()),
            read_only: None,
        },
        ..ServerConfig::default()
    }
}

async fn get(server: &RunningServer, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", server.api_address()))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_a_leader_is_known_alive_before() {
    let (alone_dir, leader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    println!("--- a node that neither bootstraps nor joins: alive, not ready");
    let alone = server::start(config(alone_dir.path(), false)).await.unwrap();
    assert_eq!(get(&alone, "/healthz").await, (200, "ok".into()));
    assert_eq!(
        get(&alone, "/readyz").await,
        (
            503,
            "not ready: this node knows no leader (it has not joined a cluster yet, or the cluster is electing one)"
                .into()
        )
    );

    println!("--- a node that bootstraps: ready once it leads");
    let leader = server::start(config(leader_dir.path(), true)).await.unwrap();
    let mut leadership = leader.node().leadership();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leader.node().is_leader() {
        assert!(Instant::now() < deadline, "the one-node cluster never elected itself");
        let _ = tokio::time::timeout(Duration::from_secs(1), leadership.changed()).await;
    }
    assert_eq!(get(&leader, "/readyz").await, (200, "ready: this node leads".into()));
    alone.shutdown().await;
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_not_up_does_not_stop_the_start_and_a_bad_one_does() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let server = server::start(ServerConfig {
        store_url: Some(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
        ..config(dir.path(), true)
    })
    .await
    .expect("a store that is not up yet does not stop the start");
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/services/cart/entities/alice",
            server.api_address()
        ))
        .bearer_auth("health-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "the entity store is not up yet; the control plane keeps trying to open it"
    );
    server.shutdown().await;

    let refused = server::start(ServerConfig {
        store_url: Some("postgres://postgres@127.0.0.1/db?sslmode=verify-full".into()),
        ..config(tempfile::tempdir().unwrap().path(), true)
    })
    .await;
    let message = refused
        .err()
        .expect("a store URL that cannot work fails the start")
        .to_string();
    assert!(
        message.starts_with("--store: ") && message.contains("sslrootcert"),
        "{message}"
    );
}
