//! A linearizability check of the control plane's registry: clients write
//! unique values into one service's setting and read it back through any node;
//! the recorded history must be linearizable as a single register, and every
//! acknowledged write must be in it. Used by the control plane's leader-kill
//! test and by the cluster torture.
//!
//! The checker is Wing & Gong's search with Lowe's memoization: repeatedly pick an
//! operation that no other pending operation precedes in real time (its call is before
//! every remaining return), apply it to the register model, and backtrack on a read
//! that does not match. (linearized set, register value) pairs already explored are not
//! explored again. A write whose outcome is unknown (timeout, connection reset, 5xx) may
//! take effect at any point after its call, or never: it has no return and may be left
//! out at the end. Reads that failed say nothing and are not recorded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write(u64),
    Read(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub op: Op,
    pub call: u128,
    /// `None`: the outcome is unknown (only for writes).
    pub ret: Option<u128>,
}

/// True if `history` is linearizable as one register holding `initial`.
pub fn linearizable(history: &[Record], initial: u64) -> bool {
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
    // The search recurses once per operation: a long run's history needs a deep stack.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("linearizability".into())
            .stack_size(1 << 30)
            .spawn_scoped(scope, || {
                let mut seen = HashSet::new();
                let mut done = Done(vec![0; history.len().div_ceil(64)]);
                search(&history, &mut done, initial, &mut seen)
            })
            .expect("a thread for the search")
            .join()
            .expect("the search finished")
    })
}

/// Which operations are linearized already, one bit each (a long run's
/// history has tens of thousands, and every explored state is remembered).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Done(Vec<u64>);

impl Done {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
}

fn search(history: &[Record], done: &mut Done, value: u64, seen: &mut HashSet<(Done, u64)>) -> bool {
    let pending: Vec<usize> = (0..history.len()).filter(|&i| !done.get(i)).collect();
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
        done.set(i, true);
        if search(history, done, next, seen) {
            return true;
        }
        done.set(i, false);
    }
    false
}

#[cfg(test)]
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

pub struct Recorder {
    start: Instant,
    history: Mutex<Vec<Record>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Microseconds since the recorder started.
    pub fn now(&self) -> u128 {
        self.start.elapsed().as_micros()
    }
    pub fn push(&self, record: Record) {
        self.history.lock().unwrap().push(record);
    }

    /// The operations recorded so far.
    pub fn len(&self) -> usize {
        self.history.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the history.
    pub fn history(&self) -> Vec<Record> {
        self.history.lock().unwrap().clone()
    }
}

/// One service's `target_concurrency` in the control plane's registry, read
/// and written through the management API of any node: the register whose
/// history the checker judges.
#[derive(Clone)]
pub struct SettingRegister {
    pub http: reqwest::Client,
    /// The service whose setting is written (it must exist).
    pub service: String,
    /// A token with write rights.
    pub token: String,
    /// A pause between one client's operations (a long run's history stays
    /// small enough to check).
    pub pause: Duration,
}

impl SettingRegister {
    pub async fn read(&self, api: &str) -> Option<u64> {
        let reply = self
            .http
            .get(format!("http://{api}/api/v1/services/{}", self.service))
            .bearer_auth(&self.token)
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

    /// `Some(true)`: acknowledged; `Some(false)`: certainly not applied (refused, never
    /// sent, or no leader to propose to); `None`: unknown.
    pub async fn write(&self, api: &str, value: u64) -> Option<bool> {
        let sent = self
            .http
            .patch(format!("http://{api}/api/v1/services/{}", self.service))
            .bearer_auth(&self.token)
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

    /// One client: alternately writes a value unique to it and reads, through the
    /// nodes in turn, recording each operation, until `more(seq)` is false.
    /// Returns the values whose writes were acknowledged.
    pub async fn client(
        &self,
        id: u64,
        apis: Vec<String>,
        recorder: Arc<Recorder>,
        more: impl Fn(u64) -> bool,
    ) -> Vec<u64> {
        let mut acknowledged = Vec::new();
        let mut seq = 0;
        while more(seq) {
            let api = &apis[((id + seq) as usize) % apis.len()];
            let call = recorder.now();
            if seq % 2 == 0 {
                let value = 1_000 + id * 100_000 + seq;
                match self.write(api, value).await {
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
            } else if let Some(value) = self.read(api).await {
                recorder.push(Record {
                    op: Op::Read(value),
                    call,
                    ret: Some(recorder.now()),
                });
            }
            seq += 1;
            tokio::time::sleep(self.pause).await;
        }
        acknowledged
    }
}
