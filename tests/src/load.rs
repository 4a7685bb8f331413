//! What the long-running harnesses (torture, cluster torture, soak) share: a
//! seeded dice so a run can be replayed, durations from the environment, the
//! AddItem clients and their ledger of acknowledged writes, the journals in a
//! SQLite file or a PostgreSQL database, a process's resident memory and a
//! sidecar's gauges.

use std::{collections::BTreeMap, path::Path, time::Duration};

/// A small deterministic generator (xorshift), so a failing run can be
/// replayed by its seed.
pub struct Dice(pub u64);

impl Dice {
    pub fn roll(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n
    }
}

/// The seed in `variable`, else one from the clock (never 0).
pub fn seed(variable: &str) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(1)
        })
}

/// Seconds from `variable`, else `default`.
pub fn seconds(variable: &str, default: u64) -> Duration {
    let seconds = std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(seconds)
}

/// The journal of every entity of `persistence_id` in the SQLite file `db`:
/// entity id -> its sequence numbers in order.
pub fn journals(db: &Path, persistence_id: &str) -> BTreeMap<String, Vec<i64>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT entity_id, seq_nr FROM strata_journal WHERE persistence_id = ?1 \
             ORDER BY entity_id, seq_nr",
        )
        .unwrap();
    let mut journals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let rows = statement
        .query_map([persistence_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .unwrap();
    for row in rows {
        let (entity, seq) = row.unwrap();
        journals.entry(entity).or_default().push(seq);
    }
    journals
}

/// The journals that do not count 1, 2, 3... (a gap or a fork), by entity.
pub fn broken_journals(journals: &BTreeMap<String, Vec<i64>>) -> Vec<String> {
    journals
        .iter()
        .filter(|(_, seqs)| !seqs.iter().copied().eq(1..=seqs.len() as i64))
        .map(|(entity, seqs)| format!("{entity}: {seqs:?}"))
        .collect()
}

/// Children of `parent` whose command line matches `pattern` (pgrep).
pub fn children(parent: u32, pattern: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Resident memory of process `pid` in KiB (VmRSS), if it is alive.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// One unlabelled metric from a sidecar's or gateway's admin listener
/// (`host:port`).
pub async fn gauge(admin: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The anonymous part of `pid`'s resident memory in KiB (RssAnon: heap and
/// stacks, without the mapped binary and libraries), if it is alive.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What AddItem clients were told: the product ids of every acknowledged
/// AddItem per cart, and how the other requests failed ("STATUS CODE",
/// "connect" or "transport").
#[derive(Default)]
pub struct Ledger {
    pub acked: std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
    pub attempts: std::sync::atomic::AtomicU64,
    pub failures: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    pub fn ack(&self, cart: &str, product: &str) {
        let mut acked = self.acked.lock().unwrap();
        acked.entry(cart.to_owned()).or_default().insert(product.to_owned());
    }

    pub fn fail(&self, kind: String) {
        *self.failures.lock().unwrap().entry(kind).or_default() += 1;
    }

    pub fn acked_total(&self) -> usize {
        self.acked
            .lock()
            .unwrap()
            .values()
            .map(std::collections::BTreeSet::len)
            .sum()
    }

    /// The failures answered with a 500 (none are allowed while processes die:
    /// a dying process is an outage, 503, never the function's own failure).
    pub fn server_errors(&self) -> BTreeMap<String, u64> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .filter(|(kind, _)| kind.starts_with("500"))
            .map(|(kind, count)| (kind.clone(), *count))
            .collect()
    }
}

/// One AddItem client of the shopping cart served at `base` (e.g.
/// `http://127.0.0.1:9000`): a new product (quantity 1) into one of `carts`
/// random carts `t0`, `t1`..., again and again until `stop`, recording what
/// was acknowledged. Its dice come from `seed` and its id.
pub async fn add_items(
    id: usize,
    base: String,
    carts: u64,
    seed: u64,
    ledger: std::sync::Arc<Ledger>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut dice = Dice(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("t{}", dice.below(carts));
        let product = format!("c{id}-{n}");
        ledger.attempts.fetch_add(1, Ordering::Relaxed);
        let reply = http
            .post(format!("{base}/cart/{cart}/items/add"))
            .json(&serde_json::json!({"productId": product, "name": "Thing", "quantity": 1}))
            .send()
            .await;
        match reply {
            Ok(reply) if reply.status().is_success() => ledger.ack(&cart, &product),
            Ok(reply) => {
                let status = reply.status().as_u16();
                let body: serde_json::Value = reply.json().await.unwrap_or(serde_json::Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
                ledger.fail(format!("{status} {code}"));
            }
            Err(error) => {
                ledger.fail(if error.is_connect() {
                    "connect".into()
                } else {
                    "transport".into()
                });
                // The entry point is down: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The product ids in `cart`, read at `base` (retried for up to a minute
/// while instances come back).
pub async fn cart_products(http: &reqwest::Client, base: &str, cart: &str) -> std::collections::BTreeSet<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http.get(format!("{base}/carts/{cart}")).send().await;
        if let Ok(reply) = reply {
            if reply.status().is_success() {
                let body: serde_json::Value = reply.json().await.unwrap();
                return body["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item["productId"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
        assert!(std::time::Instant::now() < deadline, "cart {cart} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The acknowledged products missing from their carts at `base`, as `cart/product`.
pub async fn lost_writes(ledger: &Ledger, base: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let expected = ledger.acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (cart, acked) in &expected {
        let stored = cart_products(&http, base, cart).await;
        lost.extend(acked.difference(&stored).map(|p| format!("{cart}/{p}")));
    }
    lost
}

/// The journal of every entity of `persistence_id` in the PostgreSQL database
/// at `url`: entity id -> its sequence numbers in order.
pub async fn postgres_journals(url: &str, persistence_id: &str) -> BTreeMap<String, Vec<i64>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT entity_id, seq_nr FROM strata_journal WHERE persistence_id = $1 ORDER BY entity_id, seq_nr",
            &[&persistence_id],
        )
        .await
        .expect("read the journals");
    let mut journals: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in rows {
        journals.entry(row.get(0)).or_default().push(row.get(1));
    }
    journals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_or_a_fork_is_a_broken_journal() {
        let journals: BTreeMap<String, Vec<i64>> = [
            ("ok".to_string(), vec![1, 2, 3]),
            ("gap".to_string(), vec![1, 3]),
            ("fork".to_string(), vec![1, 2, 2]),
        ]
        .into_iter()
        .collect();
        assert_eq!(broken_journals(&journals), ["fork: [1, 2, 2]", "gap: [1, 3]"]);
    }

    #[test]
    fn reads_this_process_resident_memory() {
        let (rss, anon) = (rss_kib(std::process::id()), rss_anon_kib(std::process::id()));
        assert!(rss.is_some_and(|kib| kib > 0) && anon.is_some_and(|kib| kib > 0 && Some(kib) <= rss));
    }
}
