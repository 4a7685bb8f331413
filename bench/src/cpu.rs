//! Where the CPU goes: the processor time every process on the machine used
//! during a run, read from `/proc` before and after it, per request answered,
//! grouped by the part of the loaded system each process is (its gateway, its
//! sidecar, the function, PostgreSQL, ...). A system is the process trees it
//! started (and the PostgreSQL server, for the systems that use it); the load
//! generator is this process; every other process on the machine, the idle
//! systems beside the loaded one included, is "anything else".

use std::collections::{BTreeMap, HashMap};

use strata_e2e::procfs;

/// Linux reports process times in ticks of `USER_HZ`, 100 a second on every
/// architecture it runs this on.
const TICKS_PER_SECOND: f64 = 100.0;

/// The part for every process that belongs to no system under test.
pub const ELSEWHERE: &str = "anything else";
/// The part for this process, the benchmark's client.
pub const LOAD_GENERATOR: &str = "load generator";

/// The parts, in the order the report shows them.
pub const PARTS: [&str; 8] = [
    LOAD_GENERATOR,
    "strata dev (gateway, control plane)",
    "sidecar",
    "function",
    "PostgreSQL",
    "stateless function",
    "Restate",
    ELSEWHERE,
];

/// The processes a system runs: the trees under `roots`, and PostgreSQL's
/// server processes when it uses them.
#[derive(Debug, Clone, Default)]
pub struct System {
    pub roots: Vec<u32>,
    pub postgres: bool,
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    parent: u32,
    part: &'static str,
    ticks: u64,
}

/// CPU ticks used so far by every process.
pub struct Snapshot(HashMap<u32, Seen>);

/// Microseconds of CPU per request answered, by part.
pub type PerRequest = BTreeMap<&'static str, f64>;

impl Snapshot {
    pub fn take() -> Snapshot {
        let me = std::process::id();
        let mut processes = HashMap::new();
        for pid in procfs::pids() {
            let Some(stat) = procfs::stat(pid) else {
                continue;
            };
            let part = if pid == me {
                LOAD_GENERATOR
            } else {
                part_of(&stat.command, || procfs::cmdline(pid).into_iter().nth(1))
            };
            processes.insert(
                pid,
                Seen {
                    parent: stat.parent,
                    part,
                    ticks: stat.ticks,
                },
            );
        }
        Snapshot(processes)
    }

    /// What every part of `system` used since `before`, per request of
    /// `requests`; the rest of the machine is "anything else".
    pub fn since(&self, before: &Snapshot, requests: u64, system: &System) -> PerRequest {
        let mut used: PerRequest = BTreeMap::new();
        for (pid, seen) in &self.0 {
            // A process that started during the run used all of its ticks in it.
            let earlier = before
                .0
                .get(pid)
                .filter(|was| was.part == seen.part)
                .map_or(0, |was| was.ticks);
            let part = match seen.part {
                LOAD_GENERATOR => LOAD_GENERATOR,
                "PostgreSQL" if system.postgres => "PostgreSQL",
                part if self.descends(*pid, &system.roots) => part,
                _ => ELSEWHERE,
            };
            *used.entry(part).or_default() += seen.ticks.saturating_sub(earlier) as f64;
        }
        for ticks in used.values_mut() {
            *ticks = *ticks / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64;
        }
        used
    }

    /// Whether `pid` is one of `roots` or runs under one of them.
    fn descends(&self, mut pid: u32, roots: &[u32]) -> bool {
        // Bounded: a parent link always points to an older process, but a
        // snapshot read while processes come and go may hold a stale one.
        for _ in 0..64 {
            if roots.contains(&pid) {
                return true;
            }
            match self.0.get(&pid) {
                Some(seen) if seen.parent != 0 && seen.parent != pid => pid = seen.parent,
                _ => return false,
            }
        }
        false
    }
}

/// The part a process is, from its command name (and, for `strata`, its
/// subcommand, read only when needed).
fn part_of(command: &str, subcommand: impl FnOnce() -> Option<String>) -> &'static str {
    match command {
        "strata" => match subcommand().as_deref() {
            Some("dev") => "strata dev (gateway, control plane)",
            Some("proxy") => "sidecar",
            _ => ELSEWHERE,
        },
        "shopping-cart" => "function",
        "postgres" => "PostgreSQL",
        "pg-cart" => "stateless function",
        name if name.starts_with("restate") => "Restate",
        _ => ELSEWHERE,
    }
}

/// The median of each part over several runs (a part missing from a run
/// counts as zero in it).
pub fn median(runs: &[PerRequest]) -> PerRequest {
    let mut medians = BTreeMap::new();
    for part in PARTS {
        let samples: Vec<f64> = runs.iter().map(|run| run.get(part).copied().unwrap_or(0.0)).collect();
        medians.insert(part, crate::stats::median(&samples));
    }
    medians
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_grouped_by_what_they_are() {
        assert_eq!(
            part_of("strata", || Some("dev".into())),
            "strata dev (gateway, control plane)"
        );
        assert_eq!(part_of("strata", || Some("proxy".into())), "sidecar");
        assert_eq!(part_of("strata", || Some("deploy".into())), "anything else");
        assert_eq!(part_of("postgres", || unreachable!()), "PostgreSQL");
        assert_eq!(part_of("restate-server", || unreachable!()), "Restate");
        assert_eq!(part_of("rustc", || unreachable!()), "anything else");
    }

    fn seen(parent: u32, part: &'static str, ticks: u64) -> Seen {
        Seen { parent, part, ticks }
    }

    #[test]
    fn use_is_what_each_part_of_the_system_added_per_request() {
        // 10: strata dev, with its sidecar (11) and function (12); 20: an idle
        // system beside it; 30: PostgreSQL; 40: this process.
        let before = Snapshot(HashMap::from([
            (10, seen(1, "strata dev (gateway, control plane)", 0)),
            (11, seen(10, "sidecar", 100)),
            (12, seen(10, "function", 50)),
            (20, seen(1, "stateless function", 0)),
            (40, seen(1, "load generator", 0)),
        ]));
        let after = Snapshot(HashMap::from([
            (10, seen(1, "strata dev (gateway, control plane)", 20)),
            (11, seen(10, "sidecar", 150)),
            (12, seen(10, "function", 60)),
            (20, seen(1, "stateless function", 3)),
            // started during the run
            (30, seen(1, "PostgreSQL", 5)),
            (40, seen(1, "load generator", 8)),
        ]));
        let strata = System {
            roots: vec![10],
            postgres: false,
        };
        let used = after.since(&before, 1000, &strata);
        // 50 ticks = 0.5 s over 1000 requests = 500 us each.
        assert_eq!(used["sidecar"], 500.0);
        assert_eq!(used["function"], 100.0);
        assert_eq!(used["strata dev (gateway, control plane)"], 200.0);
        assert_eq!(used["load generator"], 80.0);
        // The idle system and the PostgreSQL this one does not use.
        assert_eq!(used[ELSEWHERE], 80.0);

        let with_postgres = System {
            roots: vec![20],
            postgres: true,
        };
        let used = after.since(&before, 1000, &with_postgres);
        assert_eq!(used["PostgreSQL"], 50.0);
        assert_eq!(used["stateless function"], 30.0);
        assert_eq!(used[ELSEWHERE], 20.0 * 10.0 + 500.0 + 100.0);
    }

    #[test]
    fn this_process_is_the_load_generator() {
        let snapshot = Snapshot::take();
        assert_eq!(
            snapshot.0.get(&std::process::id()).map(|seen| seen.part),
            Some("load generator")
        );
    }
}
