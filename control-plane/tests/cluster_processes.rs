//! Three `strata control-plane` processes on loopback: create 100 services, `kill -9`
//! the leader, write again through a new leader (the time it took is printed), restart
//! the killed node, then stop and restart the whole cluster and find the registry whole.
//!
//! Needs the `strata` binary next to the test executable's folder: run
//! `cargo build -p strata` before `cargo test -p strata-control-plane`.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::{eventually, leader_of, start_cluster, Client, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_survive_leader_kill_and_full_restart() {
    let temp = tempfile::tempdir().unwrap();
    let client = Client(reqwest::Client::new());
    println!("logs in {}", temp.path().display());

    println!("--- bootstrap node 1, join nodes 2 and 3");
    let mut nodes = start_cluster(temp.path(), &client).await;

    println!("--- create 100 services through every node");
    for i in 0..100 {
        let api = &nodes[i % 3].api;
        let status = client.create(api, &format!("svc-{i}")).await.expect("create");
        assert_eq!(status, 201, "svc-{i} through {api}");
    }

    println!("--- a body over the limit sent to a follower is 413, not forwarded empty");
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = eventually("a leader", || leader_of(&client, &all)).await;
    let follower = nodes.iter().find(|node| node.id != leader).unwrap();
    let oversized = format!(r#"{{"name":"big","command":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let reply = client
        .0
        .post(format!("http://{}/api/v1/services", follower.api))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 413);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    println!("--- a follower asks the leader for metric series; only the leader tracks replication");
    let series = client
        .get(&follower.api, "/api/v1/services/svc-0/metrics?window=1m")
        .await
        .expect("metric series through a follower");
    assert_eq!(
        (series["service"].clone(), series["window"].clone()),
        ("svc-0".into(), "1m".into())
    );
    let leader_api = &nodes.iter().find(|node| node.id == leader).unwrap().api;
    let matched = |cluster: serde_json::Value| -> Vec<bool> {
        cluster["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| member["matched_index"].is_u64())
            .collect()
    };
    let at_leader = eventually("the leader's view", || client.get(leader_api, "/api/v1/cluster")).await;
    assert_eq!(matched(at_leader), vec![true; 3]);
    let at_follower = client.get(&follower.api, "/api/v1/cluster").await.unwrap();
    assert_eq!(matched(at_follower), vec![false; 3]);

    println!("--- kill -9 the leader");
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = eventually("a leader", || leader_of(&client, &all)).await;
    let leader_index = nodes.iter().position(|node| node.id == leader).unwrap();
    nodes[leader_index].kill9();
    let killed_at = Instant::now();

    println!("--- write again through the survivors");
    let survivors: Vec<String> = nodes
        .iter()
        .filter(|node| node.id != leader)
        .map(|node| node.api.clone())
        .collect();
    let mut attempt = 0;
    eventually("a write after the leader died", || {
        attempt += 1;
        let api = survivors[attempt % survivors.len()].clone();
        let client = &client;
        // 409 means an earlier attempt committed but its answer was lost: still success.
        async move {
            client
                .create(&api, "after-failover")
                .await
                .ok()
                .filter(|status| *status == 201 || *status == 409)
        }
    })
    .await;
    let failover = killed_at.elapsed();
    println!(
        "failover: writes succeeded again {} ms after kill -9 of leader node {leader}",
        failover.as_millis()
    );

    let expected: BTreeSet<String> = (0..100)
        .map(|i| format!("svc-{i}"))
        .chain(std::iter::once("after-failover".to_owned()))
        .collect();
    for api in &survivors {
        assert_eq!(
            client.service_names(api).await.as_ref(),
            Some(&expected),
            "registry on {api}"
        );
    }

    println!("--- restart the killed node with only its data directory");
    nodes[leader_index].spawn(&[]);
    let restarted_api = nodes[leader_index].api.clone();
    eventually("the restarted node to catch up", || async {
        client
            .service_names(&restarted_api)
            .await
            .filter(|names| *names == expected)
    })
    .await;

    println!("--- stop all three, start them again");
    for node in nodes.iter_mut() {
        node.stop();
    }
    for node in nodes.iter_mut() {
        node.spawn(&[]);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    eventually("a leader after the full restart", || leader_of(&client, &all)).await;
    for node in &nodes {
        let names = eventually("the registry after the full restart", || {
            client.service_names(&node.api)
        })
        .await;
        assert_eq!(names, expected, "registry on node {}", node.id);
    }

    println!("--- the audit log kept every acknowledged write through the kill -9 and the restarts");
    let audit = eventually("the audit log", || {
        client.get(&nodes[0].api, "/api/v1/audit?limit=1000")
    })
    .await;
    let audited: BTreeSet<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["method"] == "POST" && record["status"] == 201 && record["principal"] == "admin token")
        .filter_map(|record| record["target"].as_str().map(str::to_owned))
        .collect();
    let created_before_the_kill: BTreeSet<String> = (0..100).map(|i| format!("svc-{i}")).collect();
    assert!(
        created_before_the_kill.is_subset(&audited),
        "missing from the audit log: {:?}",
        created_before_the_kill.difference(&audited).collect::<Vec<_>>()
    );
}
