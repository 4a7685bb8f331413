//! In-process three-node cluster on the in-memory network: cut the leader off, let the
//! majority elect a new leader and keep writing, heal, and check that the old leader
//! catches up and no replica diverges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::node::{ControlPlane, NodeConfig, Timing};
use strata_control_plane::raft::mem_network::MemRouter;
use strata_control_plane::raft::{NodeId, NodeInfo};
use strata_control_plane::registry::{Command, ServiceSpec};

const DEADLINE: Duration = Duration::from_secs(30);

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
        timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        },
    };
    let node = ControlPlane::start(config, router.network(node_id))
        .await
        .expect("node starts");
    router.register(node_id, node.raft.clone());
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

fn leader_among(nodes: &[&Arc<ControlPlane>]) -> Option<Arc<ControlPlane>> {
    nodes.iter().find(|node| node.is_leader()).map(|node| Arc::clone(node))
}

fn create(name: &str) -> Command {
    Command::CreateService(ServiceSpec {
        name: name.into(),
        command: Some("run".into()),
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
        .raft
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
    let old_term = leader.raft.metrics().borrow().current_term;

    println!("--- cut the leader (node {}) off", leader.node_id);
    router.isolate(leader.node_id);
    let majority: Vec<&Arc<ControlPlane>> = nodes.iter().filter(|node| node.node_id != leader.node_id).collect();
    let new_leader = eventually("a new leader on the majority side", || leader_among(&majority)).await;
    assert!(new_leader.raft.metrics().borrow().current_term > old_term);

    println!("--- the old leader can no longer commit; the majority keeps writing");
    let stale_write = {
        let old = Arc::clone(&leader);
        tokio::spawn(async move { old.write(create("during-partition-on-old-leader")).await })
    };
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
    router.heal(leader.node_id);
    eventually("the old leader to step down", || {
        let metrics = leader.raft.metrics().borrow().clone();
        (metrics.state != ServerState::Leader && metrics.current_leader == Some(new_leader.node_id)).then_some(())
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
    let reference = new_leader.state_machine.read().registry.clone();
    assert_eq!(reference.services.len(), 20);
    assert!(!reference.services.contains_key("during-partition-on-old-leader"));
    for node in &nodes {
        let state = node.state_machine.read();
        assert_eq!(state.registry, reference, "node {} diverged", node.node_id);
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
