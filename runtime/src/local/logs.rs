//! The local runtime's instance logs: each child's output is read line by line and
//! appended to `<instance>.<process>.log` with the time it arrived in front
//! (`2026-12-07T12:00:00.123Z <line>`), and `LocalLogs` reads those files back for
//! the management API, following them while they grow. Naming and parsing are pure
//! functions; the rest is file reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use strata_control_plane::logs::{now_ms, parse_rfc3339_ms, rfc3339_ms, LogError, LogLine, LogQuery, LogSource};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// How often a followed log is read again for new lines and new instances.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The file an instance's process (`function` or `sidecar`) writes.
pub fn log_path(log_dir: &Path, id: &str, process: &str) -> PathBuf {
    log_dir.join(format!("{id}.{process}.log"))
}

/// The instance id and process a log file's name stands for.
fn parse_log_name(file_name: &str) -> Option<(&str, &'static str)> {
    let stem = file_name.strip_suffix(".log")?;
    for process in ["function", "sidecar"] {
        if let Some(id) = stem.strip_suffix(process).and_then(|rest| rest.strip_suffix('.')) {
            return Some((id, process));
        }
    }
    None
}

/// Whether instance `id` is one of `service`'s: the runtime names instances
/// `<service>-<8 hex digits>`, so `cart-x-0000abcd` is not `cart`'s.
fn belongs_to(id: &str, service: &str) -> bool {
    id.strip_prefix(service)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A stored line's time and text. A line without a time in front (written by
/// something else) takes the time of the line before it.
fn parse_line(stored: &str, previous_ms: u64) -> (u64, &str) {
    match stored.split_once(' ') {
        Some((time, text)) => match parse_rfc3339_ms(time) {
            Some(at_ms) => (at_ms, text),
            None => (previous_ms, stored),
        },
        None => match parse_rfc3339_ms(stored) {
            Some(at_ms) => (at_ms, ""),
            None => (previous_ms, stored),
        },
    }
}

/// Copies `output` (a child's stdout or stderr) line by line into `log`, each line
/// with the time it arrived in front, until the child closes it.
pub async fn stamp_lines(output: impl AsyncRead + Unpin, log: PathBuf) {
    let mut file = match tokio::fs::OpenOptions::new().create(true).append(true).open(&log).await {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, log = %log.display(), "cannot open an instance log");
            return;
        }
    };
    let mut lines = BufReader::new(output).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let stamped = format!("{} {line}\n", rfc3339_ms(now_ms()));
                if let Err(error) = file.write_all(stamped.as_bytes()).await {
                    tracing::warn!(%error, log = %log.display(), "cannot write an instance log");
                }
            }
            Ok(None) => break,
            Err(error) => {
                // Not UTF-8, or the pipe failed: say so in the log rather than lose the rest silently.
                let note = format!("{} [strata: output unreadable: {error}]\n", rfc3339_ms(now_ms()));
                let _ = file.write_all(note.as_bytes()).await;
                break;
            }
        }
    }
    let _ = file.flush().await;
}

/// The instance logs of the local runtime's folder.
pub struct LocalLogs {
    dir: PathBuf,
}

impl LocalLogs {
    pub fn new(dir: PathBuf) -> Self {
        LocalLogs { dir }
    }
}

/// Where a followed file has been read up to.
#[derive(Default)]
struct Cursor {
    offset: u64,
    last_ms: u64,
}

/// The log files of `query`'s instances in `dir`: (path, instance, process).
fn files(dir: &Path, query: &LogQuery) -> Vec<(PathBuf, String, &'static str)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, String, &'static str)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (id, process) = parse_log_name(&name)?;
            let wanted = match &query.instance {
                Some(instance) => id == instance,
                None => belongs_to(id, &query.service),
            };
            wanted.then(|| (entry.path(), id.to_owned(), process))
        })
        .collect();
    found.sort();
    found
}

/// Reads the complete lines of every file past its cursor, moving the cursors on,
/// and returns the lines the query wants, ordered by time.
fn read_new(dir: &Path, query: &LogQuery, cursors: &mut BTreeMap<PathBuf, Cursor>) -> Vec<LogLine> {
    use std::io::{Read, Seek, SeekFrom};
    let mut lines = Vec::new();
    for (path, instance, process) in files(dir, query) {
        let cursor = cursors.entry(path.clone()).or_default();
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(cursor.offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
            continue;
        }
        // A line still being written is read once it is whole.
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        cursor.offset += end as u64 + 1;
        for stored in String::from_utf8_lossy(&bytes[..end]).lines() {
            let (at_ms, text) = parse_line(stored, cursor.last_ms);
            cursor.last_ms = at_ms;
            if query.since_ms.is_none_or(|since| at_ms >= since) {
                lines.push(LogLine::new(&instance, process, at_ms, text));
            }
        }
    }
    // Stable: a file's lines keep their order when times are equal.
    lines.sort_by_key(|line| line.at_ms);
    lines
}

#[async_trait::async_trait]
impl LogSource for LocalLogs {
    async fn instances(&self, service: &str) -> Result<Vec<String>, LogError> {
        let query = LogQuery {
            service: service.to_owned(),
            instance: None,
            since_ms: None,
            follow: false,
        };
        let dir = self.dir.clone();
        let mut ids: Vec<String> = tokio::task::spawn_blocking(move || files(&dir, &query))
            .await
            .map_err(|error| LogError::Unavailable(error.to_string()))?
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        ids.dedup();
        Ok(ids)
    }

    async fn read(&self, query: LogQuery) -> Result<BoxStream<'static, LogLine>, LogError> {
        let dir = self.dir.clone();
        let follow = query.follow;
        let state = (dir, query, BTreeMap::<PathBuf, Cursor>::new(), true);
        let batches = stream::unfold(state, move |(dir, query, mut cursors, first)| async move {
            if !first {
                if !follow {
                    return None;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            let (batch, dir, query, cursors) = tokio::task::spawn_blocking(move || {
                let batch = read_new(&dir, &query, &mut cursors);
                (batch, dir, query, cursors)
            })
            .await
            .ok()?;
            Some((stream::iter(batch), (dir, query, cursors, false)))
        });
        Ok(batches.flatten().boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_are_named_by_instance_and_process() {
        assert_eq!(
            parse_log_name("cart-0a1b2c3d.function.log"),
            Some(("cart-0a1b2c3d", "function"))
        );
        assert_eq!(
            parse_log_name("cart-0a1b2c3d.sidecar.log"),
            Some(("cart-0a1b2c3d", "sidecar"))
        );
        assert_eq!(parse_log_name("cart-0a1b2c3d.other.log"), None);
        assert_eq!(parse_log_name("notes.txt"), None);
        assert_eq!(
            log_path(Path::new("/l"), "cart-0a1b2c3d", "function"),
            PathBuf::from("/l/cart-0a1b2c3d.function.log")
        );
    }

    #[test]
    fn an_instance_belongs_to_its_service_only() {
        assert!(belongs_to("cart-0a1b2c3d", "cart"));
        assert!(belongs_to("cart-x-0a1b2c3d", "cart-x"));
        assert!(
            !belongs_to("cart-x-0a1b2c3d", "cart"),
            "another service whose name starts alike"
        );
        assert!(!belongs_to("cart-0a1b2c3", "cart"));
        assert!(!belongs_to("carts-0a1b2c3d", "cart"));
    }

    #[test]
    fn a_line_without_a_time_takes_the_previous_lines() {
        assert_eq!(
            parse_line("1970-01-01T00:00:01.000Z hello world", 0),
            (1000, "hello world")
        );
        assert_eq!(parse_line("1970-01-01T00:00:01.000Z", 0), (1000, ""));
        assert_eq!(parse_line("panicked at main.rs", 1000), (1000, "panicked at main.rs"));
    }

    fn query(instance: Option<&str>, since_ms: Option<u64>) -> LogQuery {
        LogQuery {
            service: "cart".into(),
            instance: instance.map(str::to_owned),
            since_ms,
            follow: false,
        }
    }

    #[tokio::test]
    async fn lines_of_every_instance_come_back_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "cart-0000000a.function.log",
            "1970-01-01T00:00:01.000Z one\n1970-01-01T00:00:03.000Z three\n",
        );
        write(
            "cart-0000000a.sidecar.log",
            "1970-01-01T00:00:02.000Z two\n1970-01-01T00:00:04.000Z half a li",
        );
        write("cart-0000000b.function.log", "1970-01-01T00:00:05.000Z five\n");
        write(
            "cart-x-0000000c.function.log",
            "1970-01-01T00:00:06.000Z not the cart's\n",
        );
        let logs = LocalLogs::new(dir.path().to_owned());
        assert_eq!(
            logs.instances("cart").await.unwrap(),
            ["cart-0000000a", "cart-0000000b"]
        );

        let all: Vec<LogLine> = logs.read(query(None, None)).await.unwrap().collect().await;
        let texts: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|l| (l.instance.as_str(), l.process.as_str(), l.line.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("cart-0000000a", "function", "one"),
                ("cart-0000000a", "sidecar", "two"),
                ("cart-0000000a", "function", "three"),
                ("cart-0000000b", "function", "five"),
            ],
            "the unfinished line waits for its end"
        );
        assert_eq!(all[0].at, "1970-01-01T00:00:01.000Z");

        let one: Vec<LogLine> = logs
            .read(query(Some("cart-0000000b"), None))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(one.len(), 1);
        let recent: Vec<LogLine> = logs.read(query(None, Some(3000))).await.unwrap().collect().await;
        assert_eq!(
            recent.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["three", "five"]
        );
    }

    #[tokio::test]
    async fn a_followed_log_goes_on_with_new_lines_and_new_instances() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cart-0000000a.function.log"),
            "1970-01-01T00:00:01.000Z one\n",
        )
        .unwrap();
        let logs = LocalLogs::new(dir.path().to_owned());
        let mut lines = logs
            .read(LogQuery {
                follow: true,
                ..query(None, None)
            })
            .await
            .unwrap();
        assert_eq!(lines.next().await.unwrap().line, "one");
        let (reader, mut writer) = tokio::io::duplex(64);
        let stamping = tokio::spawn(stamp_lines(reader, dir.path().join("cart-0000000b.function.log")));
        writer.write_all(b"from a new instance\n").await.unwrap();
        let next = lines.next().await.unwrap();
        assert_eq!(
            (next.instance.as_str(), next.line.as_str()),
            ("cart-0000000b", "from a new instance")
        );
        assert!(next.at_ms > 0, "stamped with the time it arrived");
        drop(writer);
        stamping.await.unwrap();
    }
}
