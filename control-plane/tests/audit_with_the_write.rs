//! A management write and its audit record are one Raft entry: three `strata
//! control-plane` processes; each round writes through the leader and `kill -9`s
//! it the moment the write is acknowledged (or, every other round, while the
//! write is still in flight). Afterwards every service that exists has its
//! record, and every acknowledged write is among them.
//!
//! Needs the `strata` binary next to the test executable's folder: run
//! `cargo build -p strata` before `cargo test -p strata-control-plane`.

mod common;

use std::collections::BTreeSet;

use common::{eventually, leader_of, start_cluster, Client, Node};

const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_keeps_its_record_when_the_leader_is_killed_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let client = Client(reqwest::Client::new());
    println!("logs in {}", temp.path().display());
    let mut nodes = start_cluster(temp.path(), &client).await;
    let mut acknowledged = BTreeSet::new();
    for round in 0..ROUNDS {
        let all: Vec<&Node> = nodes.iter().collect();
        let leader = eventually("a leader", || leader_of(&client, &all)).await;
        let index = nodes.iter().position(|node| node.id == leader).unwrap();
        let name = format!("audited-{round}");
        if round % 2 == 0 {
            let status = client.create(&nodes[index].api, &name).await.expect("create");
            nodes[index].kill9();
            assert_eq!(status, 201, "{name}");
            acknowledged.insert(name);
        } else {
            // In flight: the write may or may not commit; if it does, so does its record.
            let api = nodes[index].api.clone();
            let in_flight = {
                let client = Client(client.0.clone());
                tokio::spawn(async move { client.create(&api, &name).await })
            };
            nodes[index].kill9();
            let _ = in_flight.await;
        }
        println!("--- round {round}: leader node {leader} killed");
        // The new leader answers for the survivors; the killed node comes back.
        let survivors: Vec<&Node> = nodes.iter().filter(|node| node.id != leader).collect();
        eventually("a new leader", || leader_of(&client, &survivors)).await;
        nodes[index].spawn(&[]);
    }

    let all: Vec<&Node> = nodes.iter().collect();
    eventually("a leader", || leader_of(&client, &all)).await;
    let api = &nodes[0].api;
    let services = eventually("the services", || client.service_names(api)).await;
    let audit = eventually("the audit log", || client.get(api, "/api/v1/audit?limit=1000")).await;
    let recorded: BTreeSet<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["method"] == "POST" && record["status"] == 201)
        .filter_map(|record| record["target"].as_str().map(str::to_owned))
        .collect();
    let audited: BTreeSet<String> = services
        .into_iter()
        .filter(|name| name.starts_with("audited-"))
        .collect();
    assert!(
        acknowledged.is_subset(&audited),
        "acknowledged writes lost: {acknowledged:?} vs {audited:?}"
    );
    assert!(
        audited.is_subset(&recorded),
        "services without their audit record: {:?}",
        audited.difference(&recorded).collect::<Vec<_>>()
    );
}
