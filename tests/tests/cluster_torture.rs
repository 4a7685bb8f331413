//! Cluster torture: the shopping cart deployed as in production (three
//! `strata control-plane` nodes, a `strata gateway`, two sidecars with their
//! functions, PostgreSQL as the store; every process separate, on loopback).
//! AddItem clients load it through the gateway, and registry clients write and
//! read one service's setting through every node, while any process is killed
//! with `kill -9` at random and PostgreSQL crashes and restarts. Afterwards:
//! no request was answered 500, every acknowledged AddItem is in its cart,
//! every journal counts 1, 2, 3..., and the registry's history is linearizable.
//! The sidecars and the gateway are given every node's address; they must
//! fail over on their own, since control-plane nodes stay down for a while.
//!
//! `STRATA_TORTURE_SECONDS` sets how long the chaos lasts (default 20 s, the
//! smoke run in `scripts/check`); `scripts/torture` runs the long one.
//! `STRATA_TORTURE_SEED` replays a run's choices. Needs PostgreSQL installed
//! (`scripts/postgres.sh` installs it) and the workspace's binaries built.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use strata_e2e::{
    cluster::{Cluster, SERVICE, TOKEN},
    linearizability::{linearizable, Op, Record, Recorder, SettingRegister},
    load::{add_items, broken_journals, lost_writes, postgres_journals, seconds, seed, Dice, Ledger},
};

const CARTS: u64 = 16;
const CLIENTS: usize = 6;
const REGISTRY_CLIENTS: u64 = 2;

/// What the chaos did, for the report.
#[derive(Default, Debug)]
struct Kills {
    control_plane: u32,
    gateway: u32,
    sidecars: u32,
    functions: u32,
    postgres: u32,
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `name` through any node (retried while the cluster forms).
async fn create_service(http: &reqwest::Client, apis: &[String], name: &str) {
    until(&format!("service {name} created"), || async {
        for api in apis {
            let reply = http
                .post(format!("http://{api}/api/v1/services"))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"name": name, "command": "./run", "min_scale": 0}))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(reply) = reply {
                if reply.status() == 201 || reply.status() == 409 {
                    return Some(());
                }
            }
        }
        None
    })
    .await
}

/// Whether the gateway serves the cart (a read answered 200).
async fn serving(http: &reqwest::Client, cluster: &Cluster) -> Option<()> {
    let reply = http
        .get(format!("{}/carts/warmup", cluster.gateway_url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    reply.status().is_success().then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_and_the_registry_survive_kill_9_of_any_process() {
    if std::env::var_os("STRATA_TEST_POSTGRES_URL").is_none() && std::env::var_os("STRATA_REQUIRE_POSTGRES").is_none() {
        // The same switch as the other PostgreSQL tests: the gate sets it.
        eprintln!(
            "skipping: the cluster torture runs with PostgreSQL (STRATA_TEST_POSTGRES_URL or STRATA_REQUIRE_POSTGRES)"
        );
        return;
    }
    let seed = seed("STRATA_TORTURE_SEED");
    let chaos = seconds("STRATA_TORTURE_SECONDS", 20);
    println!("--- seed {seed}, chaos for {chaos:?}");
    let mut dice = Dice(seed);
    let http = reqwest::Client::new();

    println!("--- PostgreSQL and three control-plane nodes");
    let mut cluster = Cluster::start_control_plane();
    println!("logs and data in {}", cluster.dir.path().display());
    cluster.create_database().await;
    let apis = cluster.apis();
    create_service(&http, &apis, SERVICE).await;
    create_service(&http, &apis, "lin").await;
    println!("--- a gateway and two instances given every node's address");
    cluster.start_data_plane(2);
    until("the gateway serves the cart", || serving(&http, &cluster)).await;

    println!("--- load: {CLIENTS} cart clients, {REGISTRY_CLIENTS} registry clients");
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(add_items(
                id,
                cluster.gateway_url(),
                CARTS,
                seed,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let recorder = Arc::new(Recorder::default());
    let register = SettingRegister {
        http: http.clone(),
        service: "lin".into(),
        token: TOKEN.into(),
        pause: std::time::Duration::from_millis(20),
    };
    let initial = until("the setting's first value", || register.read(&apis[0])).await;
    let registry_clients: Vec<_> = (0..REGISTRY_CLIENTS)
        .map(|id| {
            let (register, apis, recorder, stop) = (register.clone(), apis.clone(), recorder.clone(), stop.clone());
            tokio::spawn(async move {
                register
                    .client(id, apis, recorder, |_| !stop.load(Ordering::Relaxed))
                    .await
            })
        })
        .collect();

    println!("--- chaos: kill -9 any process, crash PostgreSQL");
    let mut kills = Kills::default();
    let mut down_node: Option<usize> = None;
    let started = Instant::now();
    while started.elapsed() < chaos {
        tokio::time::sleep(Duration::from_millis(1000 + dice.below(2000))).await;
        match dice.below(10) {
            // At most one control-plane node down at a time, so a majority
            // remains; it stays down until the next pick of this kind.
            0 | 1 => match down_node.take() {
                Some(index) => cluster.nodes[index].restart(),
                None => {
                    let index = dice.below(3) as usize;
                    cluster.nodes[index].kill9();
                    down_node = Some(index);
                    kills.control_plane += 1;
                }
            },
            2 => {
                cluster.kill9_gateway();
                kills.gateway += 1;
            }
            3 | 4 => {
                let index = dice.below(cluster.instances.len() as u64) as usize;
                cluster.instances[index].kill9_sidecar();
                kills.sidecars += 1;
            }
            5 | 6 => {
                let index = dice.below(cluster.instances.len() as u64) as usize;
                cluster.instances[index].kill9_function();
                kills.functions += 1;
            }
            7 => {
                cluster.postgres.crash();
                kills.postgres += 1;
                tokio::time::sleep(Duration::from_millis(500 + dice.below(1500))).await;
                cluster.postgres.restart();
            }
            _ => {}
        }
        cluster.revive();
    }

    println!("--- heal: every node up, the data plane revived");
    if let Some(index) = down_node {
        cluster.nodes[index].restart();
    }
    for node in &mut cluster.nodes {
        if node.is_down() {
            node.restart();
        }
    }
    cluster.revive();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let mut acknowledged_settings = Vec::new();
    for client in registry_clients {
        acknowledged_settings.extend(client.await.unwrap());
    }
    let attempts = ledger.attempts.load(Ordering::Relaxed);
    let acked = ledger.acked_total();
    let failures = ledger.failures.lock().unwrap().clone();
    println!("kills {kills:?}; {attempts} AddItems, {acked} acknowledged; failures {failures:?}");
    assert!(acked > 0, "nothing was acknowledged: {failures:?}");
    let server_errors = ledger.server_errors();
    assert!(server_errors.is_empty(), "500s while processes died: {server_errors:?}");

    println!("--- every acknowledged AddItem is in its cart");
    let deadline = Instant::now() + Duration::from_secs(90);
    while serving(&http, &cluster).await.is_none() {
        assert!(Instant::now() < deadline, "the gateway never served the cart again");
        cluster.revive();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lost = lost_writes(&ledger, &cluster.gateway_url()).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());

    println!("--- every journal counts 1, 2, 3... with no gap");
    let journals = postgres_journals(&cluster.store, "shopping-cart").await;
    let broken = broken_journals(&journals);
    assert!(broken.is_empty(), "journals with a gap or a fork: {broken:?}");
    let events: usize = journals.values().map(Vec::len).sum();
    assert!(
        events >= acked,
        "{events} events stored for {acked} acknowledged writes"
    );

    println!("--- the registry's history is linearizable");
    let call = recorder.now();
    let last = until("a final read of the setting", || register.read(&apis[0])).await;
    recorder.push(Record {
        op: Op::Read(last),
        call,
        ret: Some(recorder.now()),
    });
    let history = recorder.history();
    for value in &acknowledged_settings {
        assert!(
            history
                .iter()
                .any(|record| record.op == Op::Write(*value) && record.ret.is_some()),
            "acknowledged setting {value} is missing from the history"
        );
    }
    assert!(
        linearizable(&history, initial),
        "the registry's history is not linearizable: {history:#?}"
    );
    println!(
        "cluster torture: seed {seed}, {chaos:?} of chaos, kills {kills:?}, {acked} acknowledged writes checked, \
         {events} events in {} journals, 0 lost; registry history of {} operations ({} acknowledged writes) linearizable",
        journals.len(),
        history.len(),
        acknowledged_settings.len()
    );
}
