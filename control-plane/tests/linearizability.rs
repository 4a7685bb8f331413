//! A history check on one service's settings while the leader is `kill -9`ed: several
//! clients write unique `target_concurrency` values and read them back through any node;
//! the recorded history must be linearizable as a single register, and every
//! acknowledged write must be in it.
//!
//! The checker is Wing & Gong's search with Lowe's memoization: repeatedly pick an
//! operation that no other pending operation precedes in real time (its call is before
//! every remaining return), apply it to the register model, and backtrack on a read
//! that does not match. (linearized set, register value) pairs already explored are not
//! explored again. A write whose outcome is unknown (timeout, connection reset, 5xx) may
//! take effect at any point after its call, or never: it has no return and may be left
//! out at the end. Reads that failed say nothing and are not recorded.
//!
//! Needs `cargo build -p strata` first, like `cluster_processes`.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, leader_of, start_cluster, Client, Node, TOKEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write(u64),
    Read(u64),
}

#[derive(Debug, Clone, Copy)]
struct Record {
    op: Op,
    call: u128,
    /// `None`: the outcome is unknown (only for writes).
    ret: Option<u128>,
}

/// True if `history` is linearizable as one register holding `initial`.
fn linearizable(history: &[Record], initial: u64) -> bool {
    // An unknown write that no read observed can always be left out: in any linearization
    // that places it, no read falls between it and the next write. Dropping such writes
    // keeps the answer and keeps the search small.
    let observed: HashSet<u64> = history
        .iter()
        .filter_map(|record| {
            if let Op::Read(value) = record.op {
                Some(value)
            } else {
                None
            }
        })
        .collect();
    let history: Vec<Record> = history
        .iter()
        .copied()
        .filter(|record| record.ret.is_some() || matches!(record.op, Op::Write(value) if observed.contains(&value)))
        .collect();
    let mut seen: HashSet<(Vec<bool>, u64)> = HashSet::new();
    let mut done = vec![false; history.len()];
    search(&history, &mut done, initial, &mut seen)
}

fn search(history: &[Record], done: &mut Vec<bool>, value: u64, seen: &mut HashSet<(Vec<bool>, u64)>) -> bool {
    let pending: Vec<usize> = (0..history.len()).filter(|&i| !done[i]).collect();
    // Finished when only unknown-outcome writes are left: they may never have happened.
    if pending.iter().all(|&i| history[i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done.clone(), value)) {
        return false;
    }
    let earliest_return = pending
        .iter()
        .filter_map(|&i| history[i].ret)
        .min()
        .unwrap_or(u128::MAX);
    for &i in &pending {
        let record = history[i];
        if record.call > earliest_return {
            continue; // some pending operation returned before this one was even called
        }
        let next = match record.op {
            Op::Write(written) => written,
            Op::Read(read) if read == value => value,
            Op::Read(_) => continue,
        };
        done[i] = true;
        if search(history, done, next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
}

#[test]
fn checker_accepts_linearizable_and_rejects_stale_histories() {
    let w = |v, call, ret| Record {
        op: Op::Write(v),
        call,
        ret,
    };
    let r = |v, call, ret| Record {
        op: Op::Read(v),
        call,
        ret: Some(ret),
    };
    // Overlapping write and read: the read may see either value.
    assert!(linearizable(&[w(1, 0, Some(10)), r(0, 5, 6)], 0));
    assert!(linearizable(&[w(1, 0, Some(10)), r(1, 5, 6)], 0));
    // A read after an acknowledged write must not see the old value.
    assert!(!linearizable(&[w(1, 0, Some(10)), r(0, 11, 12)], 0));
    // Two sequential reads cannot go back in time.
    assert!(!linearizable(
        &[w(1, 0, Some(10)), w(2, 0, Some(10)), r(2, 11, 12), r(1, 13, 14)],
        0
    ));
    // An unknown write may have happened...
    assert!(linearizable(&[w(1, 0, None), r(1, 20, 21)], 0));
    // ...or not.
    assert!(linearizable(&[w(1, 0, None), r(0, 20, 21)], 0));
    // But not before it was called.
    assert!(!linearizable(&[r(1, 0, 1), w(1, 5, None)], 0));
}

struct Recorder {
    start: Instant,
    history: Mutex<Vec<Record>>,
}

impl Recorder {
    fn now(&self) -> u128 {
        self.start.elapsed().as_micros()
    }
    fn push(&self, record: Record) {
        self.history.lock().unwrap().push(record);
    }
}

async fn read_setting(http: &reqwest::Client, api: &str) -> Option<u64> {
    let reply = http
        .get(format!("http://{api}/api/v1/services/lin"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    if !reply.status().is_success() {
        return None;
    }
    let body: serde_json::Value = reply.json().await.ok()?;
    body["target_concurrency"].as_u64()
}

/// `Some(true)`: acknowledged; `Some(false)`: certainly not applied (refused, never sent,
/// or no leader to propose to); `None`: unknown.
async fn write_setting(http: &reqwest::Client, api: &str, value: u64) -> Option<bool> {
    let sent = http
        .patch(format!("http://{api}/api/v1/services/lin"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "target_concurrency": value }))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    let reply = match sent {
        Ok(reply) => reply,
        Err(error) if error.is_connect() => return Some(false),
        Err(_) => return None,
    };
    match reply.status().as_u16() {
        200 => Some(true),
        400..=499 => Some(false),
        503 => {
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            (body["error"]["code"] == "leader_unavailable").then_some(false)
        }
        _ => None,
    }
}

async fn client_loop(id: u64, apis: Vec<String>, recorder: Arc<Recorder>, operations: u64) -> Vec<u64> {
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for seq in 0..operations {
        let api = &apis[((id + seq) as usize) % apis.len()];
        let call = recorder.now();
        if seq % 2 == 0 {
            let value = 1_000 + id * 100_000 + seq;
            match write_setting(&http, api, value).await {
                Some(true) => {
                    recorder.push(Record {
                        op: Op::Write(value),
                        call,
                        ret: Some(recorder.now()),
                    });
                    acknowledged.push(value);
                }
                Some(false) => {}
                None => recorder.push(Record {
                    op: Op::Write(value),
                    call,
                    ret: None,
                }),
            }
        } else if let Some(value) = read_setting(&http, api).await {
            recorder.push(Record {
                op: Op::Read(value),
                call,
                ret: Some(recorder.now()),
            });
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_history_is_linearizable_across_a_leader_kill() {
    let temp = tempfile::tempdir().unwrap();
    let client = Client(reqwest::Client::new());
    println!("logs in {}", temp.path().display());

    println!("--- start three nodes and create the service");
    let mut nodes: Vec<Node> = start_cluster(temp.path(), &client).await;
    assert_eq!(client.create(&nodes[0].api, "lin").await, Ok(201));
    let initial = 100; // the default target concurrency

    println!("--- four clients write and read while the leader is killed");
    let apis: Vec<String> = nodes.iter().map(|node| node.api.clone()).collect();
    let recorder = Arc::new(Recorder {
        start: Instant::now(),
        history: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..4)
        .map(|id| tokio::spawn(client_loop(id, apis.clone(), Arc::clone(&recorder), 60)))
        .collect();
    // Kill once the clients have a history before the failure to compare with.
    eventually("some history before the kill", || {
        let recorded = recorder.history.lock().unwrap().len();
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
    let http = reqwest::Client::new();
    let call = recorder.now();
    let last = eventually("a final read", || read_setting(&http, &survivor)).await;
    recorder.push(Record {
        op: Op::Read(last),
        call,
        ret: Some(recorder.now()),
    });

    let history = recorder.history.lock().unwrap().clone();
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
