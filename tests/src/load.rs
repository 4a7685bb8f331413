//! What the long-running harnesses (torture, soak) share: a seeded dice so a
//! run can be replayed, durations from the environment, the journals in a
//! SQLite file, and a process's resident memory. No load logic of its own.

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
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
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
