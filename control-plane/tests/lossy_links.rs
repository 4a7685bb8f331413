//! Delay and loss between three `strata control-plane` processes, without `tc
//! netem`: every node advertises relays (`strata_e2e::relay`) instead of its own
//! Raft and API addresses, so everything one node sends another (Raft RPCs,
//! follower-to-leader forwards) crosses a relay that holds each chunk and cuts
//! a share of connections. With a round trip below the heartbeat interval (and
//! so far below the election timeout) the cluster keeps making progress; every
//! acknowledged write survives, and the history of one service's setting,
//! written and read by four clients through every node, is linearizable (the
//! checker of `strata_e2e::linearizability`).
//!
//! openraft fails every replication RPC that takes longer than one heartbeat
//! interval, so the nodes run with `--raft-heartbeat 100ms` (elections after
//! 400-800 ms): with the default 50 ms, this 60 ms round trip stalls the
//! cluster completely (no write acknowledged), although it is far below the
//! default election timeout.
//!
//! Needs `cargo build -p strata` first, like `cluster_processes`.

mod common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use common::{eventually, start_cluster_on, Client, Listen, TOKEN};
use strata_e2e::{
    linearizability::{linearizable, Op, Record, Recorder, SettingRegister},
    load::seed,
    relay::Relay,
};

/// One way; a round trip between two nodes is twice this, below the heartbeat
/// interval the nodes run with.
const DELAY: Duration = Duration::from_millis(30);
const HEARTBEAT: &str = "100ms";
/// The share of connections refused and of chunks that cut their connection.
const LOSS: f64 = 0.01;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_and_loss_between_nodes_lose_nothing_and_the_history_stays_linearizable() {
    let temp = tempfile::tempdir().unwrap();
    let client = Client(reqwest::Client::new());
    println!("logs in {}", temp.path().display());
    let dice = seed("STRATA_LOSSY_SEED");
    println!("seed {dice} (STRATA_LOSSY_SEED replays the relays' losses)");

    println!("--- three nodes, each reached by its peers only through relays");
    let mut relays = Vec::new();
    let mut listens = Vec::new();
    for node in 0..3u64 {
        let listen = Listen::loopback();
        let raft = Relay::start("127.0.0.1", listen.raft.parse().unwrap(), dice ^ (2 * node + 1)).await;
        let api = Relay::start("127.0.0.1", listen.api.parse().unwrap(), dice ^ (2 * node + 2)).await;
        listens.push(Listen {
            extra: vec![
                "--raft-heartbeat".into(),
                HEARTBEAT.into(),
                "--advertise".into(),
                raft.address.to_string(),
                "--api-advertise".into(),
                api.address.to_string(),
            ],
            ..listen
        });
        relays.extend([raft, api]);
    }
    let nodes = start_cluster_on(temp.path(), &client, listens).await;
    let apis: Vec<String> = nodes.iter().map(|node| node.api.clone()).collect();
    assert_eq!(client.create(&apis[0], "lossy").await, Ok(201));

    println!(
        "--- every link {DELAY:?} each way, {:.0}% of connections lost",
        LOSS * 100.0
    );
    for relay in &relays {
        relay.set_delay(DELAY);
        relay.set_loss(LOSS);
    }
    let recorder = Arc::new(Recorder::default());
    let register = SettingRegister {
        http: reqwest::Client::new(),
        service: "lossy".into(),
        token: TOKEN.into(),
        pause: Duration::ZERO,
    };
    // The register starts at the service's default, read rather than assumed: a
    // read that comes before every write returns it. (It said 100 here while the
    // default is 70; a run whose first read beat every write failed.)
    let initial = eventually("the setting's first value", || register.read(&apis[0])).await;
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (register, apis, recorder) = (register.clone(), apis.clone(), Arc::clone(&recorder));
            tokio::spawn(async move { register.client(id, apis, recorder, |seq| seq < 40).await })
        })
        .collect();
    // Services created through every node while the links are bad: each one
    // acknowledged must be on every node afterwards.
    let mut created = BTreeSet::new();
    for i in 0..12 {
        let name = format!("during-{i}");
        if let Ok(201) = client.create(&apis[i % 3], &name).await {
            created.insert(name);
        }
    }
    let mut acknowledged = Vec::new();
    for handle in clients {
        acknowledged.extend(handle.await.unwrap());
    }
    let cut: u64 = relays.iter().map(Relay::cut).sum();
    println!(
        "while lossy: {} of 80 setting writes and {} of 12 creates acknowledged; {cut} connections refused or cut",
        acknowledged.len(),
        created.len()
    );
    // Progress: with the delay below the election timeout, most writes go through.
    assert!(
        acknowledged.len() >= 40,
        "only {} of 80 writes acknowledged: the cluster stalled",
        acknowledged.len()
    );
    assert!(
        !created.is_empty(),
        "no create was acknowledged while the links were bad"
    );

    println!("--- links healed: a final read closes the history; every node holds every acknowledged create");
    for relay in &relays {
        relay.set_delay(Duration::ZERO);
        relay.set_loss(0.0);
    }
    let call = recorder.now();
    let last = eventually("a final read", || register.read(&apis[0])).await;
    recorder.push(Record {
        op: Op::Read(last),
        call,
        ret: Some(recorder.now()),
    });
    for api in &apis {
        eventually("every acknowledged create on the node", || async {
            client.service_names(api).await.filter(|names| created.is_subset(names))
        })
        .await;
    }

    let history = recorder.history();
    let unknown = history.iter().filter(|record| record.ret.is_none()).count();
    println!(
        "history: {} operations, {} acknowledged writes, {unknown} unknown",
        history.len(),
        acknowledged.len()
    );
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
