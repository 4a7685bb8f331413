//! What Linux's `/proc` says of the processes on this machine: their ids, their
//! parent, command name and CPU time (`/proc/PID/stat`) and their command lines.
//! Shared by the harness (which sidecars `strata dev` runs) and the benchmarks
//! (where the CPU goes).

/// What a `/proc/PID/stat` line says of its process.
#[derive(Debug, PartialEq)]
pub struct Stat {
    pub command: String,
    pub parent: u32,
    /// User plus system time, in ticks of `USER_HZ`.
    pub ticks: u64,
}

/// Every process id in `/proc` now.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's `stat`, if it still runs.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process's command line, word by word (empty if it is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

pub fn parse_stat(stat: &str) -> Option<Stat> {
    // The name is in parentheses and may itself hold spaces or parentheses.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let command = stat.get(open + 1..close)?.to_string();
    // After the name: state is field 3, the parent 4; utime and stime are
    // fields 14 and 15.
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        command,
        parent,
        ticks: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_parent_and_cpu_ticks() {
        let line = "4242 (shopping-cart) S 1 4242 4242 0 -1 4194560 900 0 0 0 1500 250 0 0 20 0 3 0 100 \
                    1000000 500 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            (stat.command.as_str(), stat.parent, stat.ticks),
            ("shopping-cart", 1, 1750)
        );
        let odd = "7 (a (b) c) R 3 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1 1";
        let stat = parse_stat(odd).unwrap();
        assert_eq!((stat.command.as_str(), stat.parent, stat.ticks), ("a (b) c", 3, 7));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_in_proc() {
        let me = std::process::id();
        assert!(pids().contains(&me));
        assert!(stat(me).is_some());
        assert!(!cmdline(me).is_empty());
    }
}
