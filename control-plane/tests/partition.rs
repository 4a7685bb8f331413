//! In-process three-node cluster on the in-memory network: cut the leader off and see it
//! step down (refuse writes and reads) before the majority elects a new leader and keeps
//! writing; heal, and check that the old leader catches up and no replica diverges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use openraft::ServerState;
use strata_control_plane::api::{app, AppState, Tokens};
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::node::{ControlPlane, NodeConfig, NodeError, Timing};
use strata_control_plane::raft::mem_network::MemRouter;
use strata_control_plane::raft::{NodeId, NodeInfo};
use strata_control_plane::registry::{Command, Registry, ServiceSpec};
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_secs(30);
/// A refusal must come without waiting for the partition to heal (a hang guard, not a
/// latency bound).
const REFUSAL: Duration = Duration::from_secs(5);

fn info(node_id: NodeId) -> NodeInfo {
    NodeInfo {
        address: format!("mem-{node_id}"),
        api_address: format!("mem-{node_id}-api"),
    }
}

async fn start(router: &MemRouter, node_id: NodeId, dir: &std::path::Path) -> Arc<ControlPlane> {
    let config = NodeConfig {
        node_id,
        data_dir: dir.join(format!("node-{node_id}")),
        info: info(node_id),
        secret: ClusterSecret::new("test"),
        peer_tls: Default::default(),
        timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        },
    };
    let node = ControlPlane::start(config, router.network(node_id))
        .await
        .expect("node starts");
    router.register(node_id, node.raft().clone());
    node
}

/// Polls until `check` holds, failing the test at the deadline.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/v1/cluster` as the node answers it.
async fn cluster_view(node: &Arc<ControlPlane>) -> serde_json::Value {
    let app = app(AppState::new(Arc::clone(node), Tokens::default()));
    let request = Request::get("/api/v1/cluster").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn leader_among(nodes: &[&Arc<ControlPlane>]) -> Option<Arc<ControlPlane>> {
    nodes.iter().find(|node| node.is_leader()).map(|node| Arc::clone(node))
}

fn create(name: &str) -> Command {
    Command::CreateService(ServiceSpec {
        name: name.into(),
        runs: strata_control_plane::registry::RevisionSpec::command("run"),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_loses_and_catches_up_without_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let router = MemRouter::default();
    let nodes = vec![
        start(&router, 1, dir.path()).await,
        start(&router, 2, dir.path()).await,
        start(&router, 3, dir.path()).await,
    ];
    nodes[0]
        .raft()
        .initialize((1..=3).map(|id| (id, info(id))).collect::<BTreeMap<_, _>>())
        .await
        .unwrap();
    let all: Vec<&Arc<ControlPlane>> = nodes.iter().collect();

    println!("--- elect a leader and write");
    let leader = eventually("a leader", || leader_among(&all)).await;
    for i in 0..10 {
        leader
            .write(create(&format!("before-{i}")))
            .await
            .expect("write before the partition");
    }
    let old_term = leader.raft_status().term;

    println!(
        "--- cut the leader (node {}) off; a write it accepted now cannot commit",
        leader.node_id()
    );
    router.isolate(leader.node_id());
    let stale_write = {
        let old = Arc::clone(&leader);
        tokio::spawn(async move { old.write(create("during-partition-on-old-leader")).await })
    };

    println!("--- the cut-off leader steps down within its lease, before a new leader acts");
    let majority: Vec<&Arc<ControlPlane>> = nodes.iter().filter(|node| node.node_id() != leader.node_id()).collect();
    eventually("the cut-off leader to step down", || {
        (!leader.is_leader()).then_some(())
    })
    .await;
    let new_leader = eventually("a new leader on the majority side", || leader_among(&majority)).await;
    assert!(!leader.is_leader(), "two nodes must never act as leader at once");
    assert!(new_leader.raft_status().term > old_term);
    assert_eq!(leader.current_leader(), None, "the cut-off node knows no leader");
    assert!(!leader.leadership().borrow().leading);
    let cluster = cluster_view(&leader).await;
    assert_eq!(cluster["state"], "follower", "{cluster}");
    assert_eq!(cluster["leader"], serde_json::Value::Null, "{cluster}");

    println!("--- the cut-off node refuses writes and consistent reads at once (nothing proposed)");
    let refused = tokio::time::timeout(REFUSAL, leader.write(create("refused-on-old-leader")))
        .await
        .expect("a write on the cut-off leader is refused, not held");
    assert!(matches!(refused, Err(NodeError::NoLeader)), "{refused:?}");
    let refused = tokio::time::timeout(REFUSAL, leader.read_index())
        .await
        .expect("a read on the cut-off leader is refused, not held");
    assert!(matches!(refused, Err(NodeError::NoLeader)), "{refused:?}");

    println!("--- the majority keeps writing; the stale write stays unacknowledged");
    for i in 0..10 {
        new_leader
            .write(create(&format!("after-{i}")))
            .await
            .expect("majority write");
    }
    assert!(
        !stale_write.is_finished(),
        "a write on the cut-off leader must not be acknowledged"
    );

    println!("--- heal: the old leader steps down and catches up");
    router.heal(leader.node_id());
    eventually("the old leader to step down", || {
        let metrics = leader.raft_metrics();
        (metrics.state != ServerState::Leader && metrics.current_leader == Some(new_leader.node_id())).then_some(())
    })
    .await;
    let outcome = tokio::time::timeout(DEADLINE, stale_write)
        .await
        .expect("the stale write resolves")
        .unwrap();
    assert!(outcome.is_err(), "the stale write was never committed: {outcome:?}");

    let final_index = new_leader.read_index().await.unwrap();
    for node in &nodes {
        node.wait_applied(final_index, DEADLINE).await.unwrap();
    }
    let reference = new_leader.read(Registry::clone);
    assert_eq!(reference.services.len(), 20);
    assert!(!reference.services.contains_key("during-partition-on-old-leader"));
    assert!(!reference.services.contains_key("refused-on-old-leader"));
    for node in &nodes {
        node.read(|registry| assert_eq!(registry, &reference, "node {} diverged", node.node_id()));
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
