//! Where the CPU goes: the processor time every process on the machine used
//! during a run, read from `/proc` before and after it and grouped by the part
//! of a system each process is (the load generator, Strata's gateway, its
//! sidecar, the function, PostgreSQL, ...), per request answered. Only one
//! system is loaded at a time, so the parts busy in a run are that system's;
//! "anything else" is the rest of the machine (other builds, kernel threads).

use std::collections::{BTreeMap, HashMap};

/// Linux reports process times in ticks of `USER_HZ`, 100 a second on every
/// architecture it runs this on.
const TICKS_PER_SECOND: f64 = 100.0;

/// The part for every process that belongs to no system under test.
pub const ELSEWHERE: &str = "anything else";

/// The parts, in the order the report shows them.
pub const PARTS: [&str; 8] = [
    "load generator",
    "strata dev (gateway, control plane)",
    "sidecar",
    "function",
    "PostgreSQL",
    "stateless function",
    "Restate",
    ELSEWHERE,
];

/// CPU ticks used so far by every process, with the part it belongs to.
pub struct Snapshot(HashMap<u32, (&'static str, u64)>);

/// Microseconds of CPU per request answered, by part.
pub type PerRequest = BTreeMap<&'static str, f64>;

impl Snapshot {
    pub fn take() -> Snapshot {
        let me = std::process::id();
        let mut processes = HashMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Snapshot(processes);
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((command, ticks)) = parse_stat(&stat) else {
                continue;
            };
            let part = if pid == me {
                "load generator"
            } else {
                part_of(command, || {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .ok()
                        .and_then(|line| line.split(|b| *b == 0).nth(1).map(<[u8]>::to_vec))
                        .map(|arg| String::from_utf8_lossy(&arg).into_owned())
                })
            };
            processes.insert(pid, (part, ticks));
        }
        Snapshot(processes)
    }

    /// What every part used since `before`, per request of `requests`.
    pub fn since(&self, before: &Snapshot, requests: u64) -> PerRequest {
        let mut used: PerRequest = BTreeMap::new();
        for (pid, (part, ticks)) in &self.0 {
            // A process that started during the run used all of its ticks in it.
            let earlier = before.0.get(pid).filter(|(was, _)| was == part).map_or(0, |(_, t)| *t);
            *used.entry(part).or_default() += ticks.saturating_sub(earlier) as f64;
        }
        for ticks in used.values_mut() {
            *ticks = *ticks / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64;
        }
        used
    }
}

/// The command name and the user plus system ticks of a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may itself hold spaces or parentheses.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let command = stat.get(open + 1..close)?;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = stat.get(close + 2..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((command, utime + stime))
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
    fn a_stat_line_gives_its_name_and_cpu_ticks() {
        let line = "4242 (shopping-cart) S 1 4242 4242 0 -1 4194560 900 0 0 0 1500 250 0 0 20 0 3 0 100 \
                    1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("shopping-cart", 1750)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1 1";
        assert_eq!(parse_stat(odd), Some(("a (b) c", 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

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

    #[test]
    fn use_is_what_each_part_added_per_request() {
        let before = Snapshot(HashMap::from([(1, ("sidecar", 100)), (2, ("function", 50))]));
        let after = Snapshot(HashMap::from([
            (1, ("sidecar", 150)),
            (2, ("function", 60)),
            // started during the run
            (3, ("PostgreSQL", 5)),
        ]));
        let used = after.since(&before, 1000);
        // 50 ticks = 0.5 s over 1000 requests = 500 us each.
        assert_eq!(used["sidecar"], 500.0);
        assert_eq!(used["function"], 100.0);
        assert_eq!(used["PostgreSQL"], 50.0);
    }

    #[test]
    fn this_process_is_the_load_generator() {
        let snapshot = Snapshot::take();
        assert_eq!(
            snapshot.0.get(&std::process::id()).map(|(part, _)| *part),
            Some("load generator")
        );
    }
}
