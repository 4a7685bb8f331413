//! The management API over TLS (rustls), with a throwaway CA and server certificate
//! made by rcgen: a client that trusts the CA gets answers over HTTP/1.1 and HTTP/2
//! (ALPN), a second node joins and forwards writes to the leader over TLS, and a
//! plain-text client or one that does not trust the CA gets nothing. `curl --cacert`
//! is tried too when curl is installed.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_control_plane::api::Tokens;
use strata_control_plane::node::Timing;
use strata_control_plane::server::{self, RunningServer, ServerConfig, ServerError};
use strata_tls::TlsFiles;

const ADMIN: &str = "tls-test-admin";

/// Writes `ca.pem`, `server.pem` and `server.key` (for 127.0.0.1 and localhost) into `dir`.
fn throwaway_pki(dir: &Path) {
    strata_e2e::pki::Pki::create(dir);
}

fn config(dir: &Path, node_id: u64) -> ServerConfig {
    ServerConfig {
        node_id: Some(node_id),
        data_dir: dir.join(format!("node-{node_id}")),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".into()),
        cluster_secret: "tls-test-secret".into(),
        tokens: Tokens {
            admin: Some(ADMIN.into()),
            read_only: None,
        },
        tls: Some(TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }),
        tls_ca: Some(dir.join("ca.pem")),
        raft_timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        },
        ..ServerConfig::default()
    }
}

fn trusting_client(dir: &Path) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    reqwest::Client::builder().add_root_certificate(ca)
}

async fn until_leader(server: &RunningServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.node().is_leader() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_tls_to_clients_and_between_nodes() {
    let dir = tempfile::tempdir().unwrap();
    throwaway_pki(dir.path());
    let first = server::start(ServerConfig {
        bootstrap: true,
        ..config(dir.path(), 1)
    })
    .await
    .expect("a node with TLS starts");
    until_leader(&first).await;
    let first_api = format!("127.0.0.1:{}", first.api_address().port());

    println!("--- HTTP/1.1 and HTTP/2 over TLS, for a client that trusts the CA");
    let http1 = trusting_client(dir.path()).http1_only().build().unwrap();
    let reply = http1
        .get(format!("https://{first_api}/api/v1/cluster"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(
        (reply.status().as_u16(), reply.version()),
        (200, reqwest::Version::HTTP_11)
    );
    let http2 = trusting_client(dir.path()).build().unwrap();
    let reply = http2
        .get(format!("https://{first_api}/api/v1/cluster"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("an HTTPS answer");
    assert_eq!(
        (reply.status().as_u16(), reply.version()),
        (200, reqwest::Version::HTTP_2),
        "ALPN picks HTTP/2"
    );

    println!("--- plain text, or no trust in the CA: no answer");
    let plain = reqwest::Client::new()
        .get(format!("http://{first_api}/api/v1/cluster"))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "a plain-text request got an answer: {plain:?}");
    let untrusting = reqwest::Client::new()
        .get(format!("https://{first_api}/api/v1/cluster"))
        .send()
        .await;
    assert!(untrusting.is_err(), "a client that does not trust the CA got an answer");

    println!("--- a second node joins over TLS; a write to it is forwarded to the leader over TLS");
    let second = server::start(ServerConfig {
        join: Some(format!("https://{first_api}")),
        ..config(dir.path(), 2)
    })
    .await
    .expect("joins over TLS");
    let second_api = format!("127.0.0.1:{}", second.api_address().port());
    let created = http2
        .post(format!("https://{second_api}/api/v1/services"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "cart", "command": "./cart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201, "{:?}", created.text().await);
    let listed: serde_json::Value = http2
        .get(format!("https://{second_api}/api/v1/services"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["services"][0]["name"], "cart",
        "a linearizable read through the follower"
    );

    println!("--- curl --cacert, when curl is installed");
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--cacert",
        ])
        .arg(dir.path().join("ca.pem"))
        .arg(format!("https://{first_api}/api/v1/openapi.json"))
        .output();
    match curl {
        Ok(output) => assert_eq!(String::from_utf8_lossy(&output.stdout), "200 2", "{output:?}"),
        Err(error) => println!("curl not run: {error}"),
    }

    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let refused = server::start(ServerConfig {
        bootstrap: true,
        ..config(dir.path(), 1)
    })
    .await;
    match refused {
        Err(ServerError::Config(message)) => assert!(message.contains("--tls-cert"), "{message}"),
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("started without its certificate"),
    }
}
