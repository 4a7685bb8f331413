//! A history check on one service's settings while the leader is `kill -9`ed: several
//! clients write unique `target_concurrency` values and read them back through any node;
//! the recorded history must be linearizable as a single register, and every
//! acknowledged write must be in it (the checker: `strata_e2e::linearizability`).
//!
//! Needs `cargo build -p strata` first, like `cluster_processes`.

mod common;

use std::sync::Arc;

use common::{eventually, leader_of, start_cluster, Client, Node, TOKEN};
use strata_e2e::linearizability::{linearizable, Op, Record, Recorder, SettingRegister};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_history_is_linearizable_across_a_leader_kill() {
    let temp = tempfile::tempdir().unwrap();
    let client = Client(reqwest::Client::new());
    println!("logs in {}", temp.path().display());

    println!("--- start three nodes and create the service");
    let mut nodes: Vec<Node> = start_cluster(temp.path(), &client).await;
    assert_eq!(client.create(&nodes[0].api, "lin").await, Ok(201));

    println!("--- four clients write and read while the leader is killed");
    let apis: Vec<String> = nodes.iter().map(|node| node.api.clone()).collect();
    let recorder = Arc::new(Recorder::default());
    let register = SettingRegister {
        http: reqwest::Client::new(),
        service: "lin".into(),
        token: TOKEN.into(),
        pause: std::time::Duration::ZERO,
    };
    // The register starts at the service's default, read rather than assumed: a
    // read that comes before every write returns it.
    let initial = eventually("the setting's first value", || register.read(&apis[0])).await;
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (register, apis, recorder) = (register.clone(), apis.clone(), Arc::clone(&recorder));
            tokio::spawn(async move { register.client(id, apis, recorder, |seq| seq < 60).await })
        })
        .collect();
    // Kill once the clients have a history before the failure to compare with.
    eventually("some history before the kill", || {
        let recorded = recorder.len();
        async move { (recorded >= 40).then_some(()) }
    })
    .await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = eventually("a leader", || leader_of(&client, &all)).await;
    println!("--- kill -9 leader node {leader}");
    nodes.iter_mut().find(|node| node.id == leader).unwrap().kill9();
    let mut acknowledged = Vec::new();
    for handle in clients {
        acknowledged.extend(handle.await.unwrap());
    }

    println!("--- a final read through a survivor closes the history");
    let survivor = nodes.iter().find(|node| node.id != leader).unwrap().api.clone();
    let call = recorder.now();
    let last = eventually("a final read", || register.read(&survivor)).await;
    recorder.push(Record {
        op: Op::Read(last),
        call,
        ret: Some(recorder.now()),
    });

    let history = recorder.history();
    let unknown = history.iter().filter(|record| record.ret.is_none()).count();
    println!(
        "history: {} operations, {} acknowledged writes, {unknown} unknown",
        history.len(),
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 20, "too few acknowledged writes to say anything");
    // Every acknowledged write is part of the history the checker must place.
    for value in &acknowledged {
        assert!(history
            .iter()
            .any(|record| record.op == Op::Write(*value) && record.ret.is_some()));
    }
    assert!(
        linearizable(&history, initial),
        "the recorded history is not linearizable: {history:#?}"
    );
}
