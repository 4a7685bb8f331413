//! The gRPC Raft transport on loopback: a peer with the cluster secret is served, a
//! stranger with another secret can neither ping nor vote (and the node's term is
//! untouched by its attempt).

use std::time::{Duration, Instant};

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::Vote;
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::node::{ControlPlane, NodeConfig, Timing};
use strata_control_plane::raft::network::{ping, GrpcNetwork};
use strata_control_plane::raft::transport::TransportService;
use strata_control_plane::raft::NodeInfo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_with_the_cluster_secret_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let secret = ClusterSecret::new("right");
    let info = NodeInfo {
        address: address.clone(),
        api_address: "unused".into(),
    };
    let node = ControlPlane::start(
        NodeConfig {
            node_id: 1,
            data_dir: dir.path().to_owned(),
            info,
            secret: secret.clone(),
            peer_tls: Default::default(),
            timing: Timing::default(),
        },
        GrpcNetwork {
            node_id: 1,
            secret: secret.clone(),
            tls: Default::default(),
        },
    )
    .await
    .unwrap();
    node.bootstrap().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.is_leader() {
        assert!(Instant::now() < deadline, "never became leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = TransportService::server(1, node.raft().clone(), secret.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    println!("--- a peer with the secret is answered");
    ping(&address, 2, &secret, 1, &Default::default())
        .await
        .expect("the right secret is accepted");

    println!("--- the node says who it is, so it cannot be added under another id");
    let mistaken = ping(&address, 2, &secret, 100, &Default::default())
        .await
        .expect_err("node 1 is not node 100");
    assert!(mistaken.contains("is node 1, not node 100"), "{mistaken}");

    println!("--- a stranger is refused");
    let stranger = ClusterSecret::new("wrong");
    let refusal = ping(&address, 9, &stranger, 1, &Default::default())
        .await
        .expect_err("a wrong secret is refused");
    assert!(refusal.contains("secret"), "{refusal}");

    let term_before = node.raft_status().term;
    let mut network = GrpcNetwork {
        node_id: 9,
        secret: stranger,
        tls: Default::default(),
    };
    let mut connection = network
        .new_client(
            1,
            &NodeInfo {
                address: address.clone(),
                api_address: String::new(),
            },
        )
        .await;
    let vote = VoteRequest::new(Vote::new(term_before + 5, 9), None);
    let result = connection.vote(vote, RPCOption::new(Duration::from_secs(5))).await;
    assert!(
        result.is_err(),
        "a stranger's vote request must not be answered: {result:?}"
    );
    assert_eq!(node.raft_status().term, term_before, "a stranger moved the term");
    assert!(node.is_leader(), "a stranger unseated the leader");
    node.shutdown().await;
}
