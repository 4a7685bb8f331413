//! Load that watches revisions: AddItem clients that record, for every answer,
//! the cart, when the call began and ended and which revision served it (the
//! `strata-revision` header), and the check that each cart's revisions switch
//! once and never back. Shared by the rollout tests of `strata dev` and of the
//! Kubernetes operator.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::load::{Dice, Ledger};

/// One answered call: to which cart, when it began and ended, which revision served it.
pub struct Served {
    pub cart: String,
    pub began: Instant,
    pub ended: Instant,
    pub revision: u64,
}

/// What the clients were told.
#[derive(Default)]
pub struct Record {
    pub ledger: Ledger,
    pub served: Mutex<Vec<Served>>,
}

impl Record {
    /// Waits until `more` further writes are acknowledged.
    pub async fn until_acked(&self, more: usize) {
        let target = self.ledger.acked_total() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ledger.acked_total() < target {
            assert!(
                Instant::now() < deadline,
                "no {more} acknowledged writes within 60 s; failures {:?}",
                self.ledger.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The calls served, by revision.
    pub fn by_revision(&self) -> BTreeMap<u64, u64> {
        self.served
            .lock()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut by, call| {
                *by.entry(call.revision).or_default() += 1;
                by
            })
    }
}

impl Record {
    /// Checks a rollout from revision 1 to 2 and, from `rollback_at`, a rollback
    /// to 1 under this load: no call failed, both revisions served the rollout, and
    /// no cart went back to a revision it had left. Returns the calls served.
    pub fn assert_each_cart_switched_once(&self, rollback_at: Instant) -> Vec<Served> {
        let failures = self.ledger.failures.lock().unwrap().clone();
        println!(
            "{} calls, {} acknowledged; by revision {:?}",
            self.ledger.attempts.load(Ordering::Relaxed),
            self.ledger.acked_total(),
            self.by_revision()
        );
        assert!(failures.is_empty(), "calls failed during the rollouts: {failures:?}");
        let served = std::mem::take(&mut *self.served.lock().unwrap());
        let (rollout, rollback): (Vec<&Served>, Vec<&Served>) =
            served.iter().partition(|call| call.began < rollback_at);
        let back = switched_back(&rollout, |seen, before| seen < before);
        assert!(
            back.is_empty(),
            "carts went back to revision 1 in the rollout: {back:?}"
        );
        let back = switched_back(&rollback, |seen, before| seen > before);
        assert!(
            back.is_empty(),
            "carts went back to revision 2 in the rollback: {back:?}"
        );
        assert!(
            rollout.iter().any(|c| c.revision == 1) && rollout.iter().any(|c| c.revision == 2),
            "the rollout's calls saw both revisions"
        );
        assert!(!rollback.is_empty(), "the rollback's calls were served");
        served
    }
}

/// AddItem to random carts `r0`..`r{carts - 1}` at `base` until `stop`, recording
/// every answer with its revision. An answer without `strata-revision` is a failure.
pub async fn client(id: usize, base: String, carts: u64, record: Arc<Record>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut dice = Dice((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("r{}", dice.below(carts));
        let product = format!("c{id}-{n}");
        record.ledger.attempts.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let reply = http
            .post(format!("{base}/cart/{cart}/items/add"))
            .json(&json!({"productId": product, "name": "Thing", "quantity": 1}))
            .send()
            .await;
        let ended = Instant::now();
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                record.ledger.fail(format!("transport: {error}"));
                continue;
            }
        };
        let status = reply.status();
        let revision = reply
            .headers()
            .get("strata-revision")
            .and_then(|value| value.to_str().ok()?.parse().ok());
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            record.ledger.fail(format!("{status} {body}"));
            continue;
        }
        let Some(revision) = revision else {
            record.ledger.fail("an answer without strata-revision".into());
            continue;
        };
        record.ledger.ack(&cart, &product);
        record.served.lock().unwrap().push(Served {
            cart,
            began,
            ended,
            revision,
        });
    }
}

/// For each cart, a call that began after another one ended must not see a
/// revision `backwards` of it: earlier in a rollout, later in a rollback. Returns
/// the violations.
pub fn switched_back(served: &[&Served], backwards: impl Fn(u64, u64) -> bool) -> Vec<String> {
    let mut by_cart: BTreeMap<&str, Vec<&Served>> = BTreeMap::new();
    for call in served {
        by_cart.entry(&call.cart).or_default().push(call);
    }
    let mut violations = Vec::new();
    for (cart, calls) in by_cart {
        let mut ended: Vec<&Served> = calls.clone();
        ended.sort_by_key(|call| call.ended);
        let mut began: Vec<&Served> = calls;
        began.sort_by_key(|call| call.began);
        // Sweep by start: everything that ended before this call began is before it.
        let mut before: Option<u64> = None;
        let mut next = 0;
        for call in began {
            while next < ended.len() && ended[next].ended < call.began {
                let revision = ended[next].revision;
                before = Some(match before {
                    Some(seen) if backwards(revision, seen) => seen,
                    _ => revision,
                });
                next += 1;
            }
            if let Some(seen) = before.filter(|&seen| backwards(call.revision, seen)) {
                violations.push(format!("{cart}: revision {} after {seen}", call.revision));
            }
        }
    }
    violations
}
