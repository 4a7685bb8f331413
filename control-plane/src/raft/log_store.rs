//! The durable Raft log: one append-only file of checksummed records (entries, truncations,
//! purges, votes, committed ids) in the node's data directory. An append is acknowledged
//! to openraft only after `fsync`; a torn tail left by a crash is cut off on reopening.
//!
//! Entries, votes, truncations and purges are synced before the call returns. The
//! committed id is only a hint (openraft re-learns it from the leader or a new commit),
//! so it is written without a sync and becomes durable with the next synced record:
//! one `fsync` per append instead of two. (openraft 0.9 awaits each append's flush
//! before it takes the next client write, so a flusher thread could not group commits.)
//!
//! Why a hand-written file rather than an embedded database: the log is written in
//! order and read mostly from memory (the registry is small), so a write-ahead file with
//! length + CRC32 framing gives fsync-per-batch durability with no extra dependency.
//! Every live entry is kept in memory; the file is rewritten (compacted) once most of
//! its records are dead (purged or truncated).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::{blocking, write_atomically, Entry, LogId, StorageError, TypeConfig, Vote};

const LOG_FILE: &str = "raft-log.wal";
/// Framing: little-endian payload length, then the CRC32 of the payload.
const HEADER_LEN: usize = 8;
/// A record larger than this is treated as corruption rather than allocated.
const MAX_RECORD_LEN: usize = 256 * 1024 * 1024;
/// Compact once the file holds this many more records than live entries.
const COMPACT_SLACK: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// Boxed: an entry is far larger than the other records.
    Entry(Box<Entry>),
    /// Entries at and after this index are gone.
    Truncate(u64),
    /// Entries up to and including this id are gone.
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
}

/// The log store handed to openraft; clones share one file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogFile>>,
    /// Observes how long each append takes to be written and synced.
    append_seconds: Option<prometheus::Histogram>,
}

struct LogFile {
    path: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Records in the file, live or dead: decides when to compact.
    records: usize,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying it into memory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut log = LogFile {
            path,
            file: file.try_clone()?,
            entries: BTreeMap::new(),
            last_purged: None,
            vote: None,
            committed: None,
            records: 0,
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let valid_len = log.replay(&bytes);
        if valid_len < bytes.len() {
            // Only an unacknowledged write can be torn: its fsync never returned.
            tracing::warn!(path = %log.path.display(), valid_len, file_len = bytes.len(), "cutting a torn tail off the raft log");
            file.set_len(valid_len as u64)?;
            file.sync_all()?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(log)),
            append_seconds: None,
        })
    }

    /// Times every append into `histogram` (the node's `strata_raft_append_seconds`).
    pub fn timing_appends(mut self, histogram: prometheus::Histogram) -> Self {
        self.append_seconds = Some(histogram);
        self
    }

    /// The last committed log id this node has persisted (for `GET /cluster`).
    pub fn committed(&self) -> Option<LogId> {
        self.lock().committed
    }

    fn lock(&self) -> MutexGuard<'_, LogFile> {
        // A panic while holding the lock cannot leave the map half-written in a way that
        // matters: the file is the truth and is replayed on restart.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LogFile {
    /// Applies every intact record and returns the length of the intact prefix.
    fn replay(&mut self, bytes: &[u8]) -> usize {
        let mut offset = 0;
        while let Some((record, len)) = decode(&bytes[offset..]) {
            self.apply(record);
            self.records += 1;
            offset += len;
        }
        offset
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Entry(entry) => {
                self.entries.insert(entry.log_id.index, *entry);
            }
            Record::Truncate(since) => {
                self.entries.split_off(&since);
            }
            Record::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
            Record::Vote(vote) => self.vote = Some(vote),
            Record::Committed(committed) => self.committed = committed,
        }
    }

    /// Appends records and fsyncs; only then are they applied in memory.
    fn write(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let buffer = encode_all(&records)?;
        blocking(|| {
            self.file.write_all(&buffer)?;
            self.file.sync_data()
        })?;
        self.applied(records)
    }

    /// Appends records without waiting for the disk: durable with the next synced write.
    fn write_unsynced(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let buffer = encode_all(&records)?;
        self.file.write_all(&buffer)?;
        self.applied(records)
    }

    fn applied(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        self.records += records.len();
        for record in records {
            self.apply(record);
        }
        if self.records > self.entries.len() * 2 + COMPACT_SLACK {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the live state, atomically.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let mut records = 0;
        let mut push = |record: &Record, buffer: &mut Vec<u8>| -> std::io::Result<()> {
            records += 1;
            encode(record, buffer)
        };
        if let Some(vote) = self.vote {
            push(&Record::Vote(vote), &mut buffer)?;
        }
        push(&Record::Committed(self.committed), &mut buffer)?;
        if let Some(purged) = self.last_purged {
            push(&Record::Purge(purged), &mut buffer)?;
        }
        for entry in self.entries.values() {
            push(&Record::Entry(Box::new(entry.clone())), &mut buffer)?;
        }
        blocking(|| write_atomically(&self.path, &buffer))?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = records;
        tracing::debug!(records, "compacted the raft log");
        Ok(())
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(self.last_purged)
    }
}

fn encode_all(records: &[Record]) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    for record in records {
        encode(record, &mut buffer)?;
    }
    Ok(buffer)
}

fn encode(record: &Record, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let payload = serde_json::to_vec(record)?;
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("raft log record too large"))?;
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buffer.extend_from_slice(&payload);
    Ok(())
}

/// Decodes one record from the front of `bytes`; `None` at the end or at a torn/corrupt record.
fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD_LEN {
        return None;
    }
    let payload = bytes.get(HEADER_LEN..HEADER_LEN + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let record = serde_json::from_slice(payload).ok()?;
    Some((record, HEADER_LEN + len))
}

fn write_error(error: std::io::Error) -> StorageError {
    StorageIOError::write_logs(&error).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.lock()
            .write(vec![Record::Vote(*vote)])
            .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for faster restarts: losing it costs nothing but re-learning it.
        self.lock()
            .write_unsynced(vec![Record::Committed(committed)])
            .map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let records: Vec<Record> = entries
            .into_iter()
            .map(|entry| Record::Entry(Box::new(entry)))
            .collect();
        let timer = self.append_seconds.as_ref().map(prometheus::Histogram::start_timer);
        // The write is synchronous, so the entries are both readable and durable here.
        let result = self.lock().write(records);
        drop(timer);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                callback.log_io_completed(Err(error));
                Err(write_error(std::io::Error::other(message)))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(since = %log_id, "truncating the raft log");
        self.lock()
            .write(vec![Record::Truncate(log_id.index)])
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(upto = %log_id, "purging the raft log");
        let mut log = self.lock();
        debug_assert!(log.last_purged.is_none_or(|purged| purged.index <= log_id.index));
        log.write(vec![Record::Purge(log_id)]).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::registry::{Command, Request};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request {
                at_ms: index,
                command: Command::RecordClusterEvent {
                    reason: format!("entry {index}"),
                },
            }),
        }
    }

    fn write_entries(store: &LogStore, entries: Vec<Entry>) {
        store
            .lock()
            .write(
                entries
                    .into_iter()
                    .map(|entry| Record::Entry(Box::new(entry)))
                    .collect(),
            )
            .unwrap();
    }

    #[test]
    fn reopening_replays_entries_vote_truncation_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            write_entries(&store, (1..=10).map(|i| entry(1, i)).collect());
            let mut log = store.lock();
            log.write(vec![Record::Vote(Vote::new(3, 2))]).unwrap();
            log.write(vec![
                Record::Truncate(8),
                Record::Purge(LogId::new(CommittedLeaderId::new(1, 1), 3)),
            ])
            .unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        let log = store.lock();
        assert_eq!(log.entries.keys().copied().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert_eq!(log.vote, Some(Vote::new(3, 2)));
        assert_eq!(log.last_purged.map(|id| id.index), Some(3));
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_intact_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            write_entries(&store, (1..=3).map(|i| entry(1, i)).collect());
        }
        let path = dir.path().join(LOG_FILE);
        let intact_len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of writing entry 4: its header and half its payload.
        let mut torn = Vec::new();
        encode(&Record::Entry(Box::new(entry(1, 4))), &mut torn).unwrap();
        torn.truncate(torn.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.lock().entries.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), intact_len);
        write_entries(&store, vec![entry(1, 4)]);
        drop(store);
        assert_eq!(LogStore::open(dir.path()).unwrap().lock().entries.len(), 4);
    }

    #[test]
    fn a_corrupt_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            write_entries(&store, (1..=3).map(|i| entry(1, i)).collect());
        }
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(LogStore::open(dir.path()).unwrap().lock().entries.len(), 2);
    }

    #[test]
    fn compaction_keeps_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        write_entries(&store, (1..=20).map(|i| entry(1, i)).collect());
        {
            let mut log = store.lock();
            log.write(vec![
                Record::Vote(Vote::new(2, 1)),
                Record::Purge(LogId::new(CommittedLeaderId::new(1, 1), 15)),
            ])
            .unwrap();
            log.compact().unwrap();
            assert_eq!(log.records, 1 + 1 + 1 + 5);
        }
        write_entries(&store, vec![entry(1, 21)]);
        drop(store);
        let reopened = LogStore::open(dir.path()).unwrap();
        let log = reopened.lock();
        assert_eq!(
            log.entries.keys().copied().collect::<Vec<_>>(),
            vec![16, 17, 18, 19, 20, 21]
        );
        assert_eq!(log.vote, Some(Vote::new(2, 1)));
    }
}
