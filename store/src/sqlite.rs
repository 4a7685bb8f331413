//! The SQLite store: one WAL-mode file that several processes may share. It owns
//! the file's schema, one writer thread doing group commit, and a small pool of
//! reader connections driven from tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost_types::Any;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::group_commit::{self, BatchOutcome, PendingWrite, WriteOp, WriteQueue, WriteReceiver};
use crate::sqlite_timers::{self, TIMER_SCHEMA};
use crate::{
    AttemptEnd, CrdtRecord, CrdtWrite, EntityKey, JournalEvent, JournalWrite, LogOffset, LoggedEvent, Recovery,
    Snapshot, Store, StoreError, StoreStats, StoredTimer, TimerAttempt, TimerChange, TimerCounts, TimerKey, TimerState,
    TimerStore,
};

/// The schema this code reads and writes; recorded in `strata_schema_version`.
/// Version 2 added CRDT states, the event log and subscriber offsets; version 3
/// timers.
const SCHEMA_VERSION: i64 = 3;

/// How long SQLite itself retries a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long opening the file keeps retrying while other processes hold it (for
/// example several sidecars creating the same file at once).
const OPEN_RETRY_FOR: Duration = Duration::from_secs(30);

/// Reads running at once; each holds one connection.
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strata_journal (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr INTEGER NOT NULL,
    type_url TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (persistence_id, entity_id, seq_nr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strata_snapshots (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr INTEGER NOT NULL,
    type_url TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (persistence_id, entity_id, seq_nr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strata_values (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (persistence_id, entity_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strata_crdts (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr INTEGER NOT NULL,
    type_url TEXT,
    bytes BLOB,
    PRIMARY KEY (persistence_id, entity_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strata_event_log (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    first_seq_nr INTEGER NOT NULL,
    last_seq_nr INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS strata_event_log_by_persistence_id ON strata_event_log (persistence_id, ord);
CREATE TABLE IF NOT EXISTS strata_subscriber_offsets (
    subscriber TEXT NOT NULL,
    persistence_id TEXT NOT NULL,
    tx INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    PRIMARY KEY (subscriber, persistence_id)
) WITHOUT ROWID;
";

/// Journals written before the event log existed (schema 1) enter it as one
/// write per entity, in entity order, before anything newer.
const LOG_EXISTING_JOURNALS: &str = "
INSERT INTO strata_event_log (persistence_id, entity_id, first_seq_nr, last_seq_nr)
SELECT persistence_id, entity_id, min(seq_nr), max(seq_nr) FROM strata_journal
GROUP BY persistence_id, entity_id ORDER BY persistence_id, entity_id;
";

/// Entity state in one SQLite file (WAL mode, `synchronous=FULL`).
pub struct SqliteStore {
    path: PathBuf,
    writes: WriteQueue,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the store file at `path`, with its parent folders.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(StoreError::Config(
                "the SQLite store needs a file path: an in-memory database cannot be shared".into(),
            ));
        }
        let setup_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || open_writer(&setup_path))
            .await
            .map_err(|_| StoreError::Unavailable("opening the SQLite file was interrupted".into()))??;

        let (writes, receiver) = group_commit::write_queue();
        std::thread::Builder::new()
            .name("strata-sqlite-writer".into())
            .spawn(move || run_writer(writer, receiver))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer thread: {e}")))?;
        info!(path = %path.display(), "sqlite store open");
        Ok(Self {
            readers: Arc::new(ReaderPool {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
            path,
            writes,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the group-commit writer.
    pub fn stats(&self) -> StoreStats {
        self.writes.stats()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn recover(&self, key: &EntityKey) -> Result<Recovery, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not recover the entity", move |conn| {
                // One read transaction, so the snapshot and the events come from the
                // same committed state.
                let tx = conn.transaction()?;
                let snapshot = read_latest_snapshot(&tx, &key)?;
                let from = snapshot.as_ref().map_or(i64::MIN, |s| s.seq_nr + 1);
                let events = read_events(&tx, &key, from)?;
                tx.commit()?;
                Ok(Recovery { snapshot, events })
            })
            .await
    }

    async fn events(&self, key: &EntityKey, from_seq_nr: i64) -> Result<Vec<JournalEvent>, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not read the journal", move |conn| {
                read_events(conn, &key, from_seq_nr)
            })
            .await
    }

    async fn events_before(
        &self,
        key: &EntityKey,
        before_seq_nr: i64,
        limit: u32,
    ) -> Result<Vec<JournalEvent>, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not read the journal", move |conn| {
                let mut select = conn.prepare_cached(
                    "SELECT seq_nr, type_url, bytes FROM strata_journal
                     WHERE persistence_id = ?1 AND entity_id = ?2 AND seq_nr < ?3
                     ORDER BY seq_nr DESC LIMIT ?4",
                )?;
                let rows = select.query_map(
                    params![key.persistence_id, key.entity_id, before_seq_nr, limit],
                    journal_event,
                )?;
                rows.collect()
            })
            .await
    }

    async fn latest_snapshot(&self, key: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not read the snapshot", move |conn| {
                read_latest_snapshot(conn, &key)
            })
            .await
    }

    async fn append(&self, write: JournalWrite) -> Result<(), StoreError> {
        if !write.needs_storing()? {
            return Ok(());
        }
        self.writes.submit(WriteOp::Append(write)).await
    }

    async fn load_value(&self, key: &EntityKey) -> Result<Option<Any>, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not read the value", move |conn| {
                conn.prepare_cached(
                    "SELECT type_url, bytes FROM strata_values
                     WHERE persistence_id = ?1 AND entity_id = ?2",
                )?
                .query_row(params![key.persistence_id, key.entity_id], |row| {
                    Ok(Any {
                        type_url: row.get(0)?,
                        value: row.get(1)?,
                    })
                })
                .optional()
            })
            .await
    }

    async fn save_value(&self, key: &EntityKey, value: Option<Any>) -> Result<(), StoreError> {
        self.writes
            .submit(WriteOp::SaveValue {
                key: key.clone(),
                value,
                timers: Vec::new(),
            })
            .await
    }

    async fn load_crdt(&self, key: &EntityKey) -> Result<Option<CrdtRecord>, StoreError> {
        let key = key.clone();
        self.readers
            .run("could not read the CRDT state", move |conn| {
                conn.prepare_cached(
                    "SELECT seq_nr, type_url, bytes FROM strata_crdts
                     WHERE persistence_id = ?1 AND entity_id = ?2",
                )?
                .query_row(params![key.persistence_id, key.entity_id], |row| {
                    let type_url: Option<String> = row.get(1)?;
                    let bytes: Option<Vec<u8>> = row.get(2)?;
                    Ok(CrdtRecord {
                        seq_nr: row.get(0)?,
                        state: type_url.map(|type_url| Any {
                            type_url,
                            value: bytes.unwrap_or_default(),
                        }),
                    })
                })
                .optional()
            })
            .await
    }

    async fn save_crdt(&self, write: CrdtWrite) -> Result<(), StoreError> {
        write.check()?;
        self.writes.submit(WriteOp::SaveCrdt(write)).await
    }

    async fn event_log(
        &self,
        persistence_id: &str,
        after: LogOffset,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let persistence_id = persistence_id.to_string();
        // One writer at a time commits, so the log's order is the commit order
        // and every position is final once visible; `tx` is always 0 here.
        let after = after.ord;
        self.readers
            .run("could not read the event log", move |conn| {
                let mut select = conn.prepare_cached(
                    "SELECT l.ord, j.entity_id, j.seq_nr, j.type_url, j.bytes
                     FROM (SELECT ord, entity_id, first_seq_nr, last_seq_nr FROM strata_event_log
                           WHERE persistence_id = ?1 AND ord > ?2 ORDER BY ord LIMIT ?3) l
                     JOIN strata_journal j
                       ON j.persistence_id = ?1 AND j.entity_id = l.entity_id
                      AND j.seq_nr BETWEEN l.first_seq_nr AND l.last_seq_nr
                     ORDER BY l.ord, j.seq_nr",
                )?;
                let rows = select.query_map(params![persistence_id, after, limit], |row| {
                    Ok(LoggedEvent {
                        offset: LogOffset {
                            tx: 0,
                            ord: row.get(0)?,
                        },
                        entity_id: row.get(1)?,
                        seq_nr: row.get(2)?,
                        payload: Any {
                            type_url: row.get(3)?,
                            value: row.get(4)?,
                        },
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn load_offset(&self, subscriber: &str, persistence_id: &str) -> Result<LogOffset, StoreError> {
        let (subscriber, persistence_id) = (subscriber.to_string(), persistence_id.to_string());
        self.readers
            .run("could not read the subscriber's offset", move |conn| {
                conn.prepare_cached(
                    "SELECT tx, ord FROM strata_subscriber_offsets
                     WHERE subscriber = ?1 AND persistence_id = ?2",
                )?
                .query_row(params![subscriber, persistence_id], |row| {
                    Ok(LogOffset {
                        tx: row.get(0)?,
                        ord: row.get(1)?,
                    })
                })
                .optional()
                .map(Option::unwrap_or_default)
            })
            .await
    }

    async fn save_offset(&self, subscriber: &str, persistence_id: &str, offset: LogOffset) -> Result<(), StoreError> {
        self.writes
            .submit(WriteOp::SaveOffset {
                subscriber: subscriber.to_string(),
                persistence_id: persistence_id.to_string(),
                offset,
            })
            .await
    }

    fn stats(&self) -> StoreStats {
        self.writes.stats()
    }

    fn timers(&self) -> Option<&dyn TimerStore> {
        Some(self)
    }
}

#[async_trait]
impl TimerStore for SqliteStore {
    async fn write_timers(&self, changes: Vec<TimerChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.writes.submit(WriteOp::WriteTimers(changes)).await
    }

    async fn save_value_with_timers(
        &self,
        key: &EntityKey,
        value: Option<Any>,
        timers: Vec<TimerChange>,
    ) -> Result<(), StoreError> {
        self.writes
            .submit(WriteOp::SaveValue {
                key: key.clone(),
                value,
                timers,
            })
            .await
    }

    async fn due_timers(
        &self,
        service: &str,
        shards: Option<Vec<u32>>,
        limit: u32,
    ) -> Result<Vec<StoredTimer>, StoreError> {
        let service = service.to_string();
        self.readers
            .run("could not read the due timers", move |conn| {
                sqlite_timers::due(conn, &service, shards.as_deref(), limit)
            })
            .await
    }

    async fn next_timer_due(&self, service: &str) -> Result<Option<i64>, StoreError> {
        let service = service.to_string();
        self.readers
            .run("could not read the next timer", move |conn| {
                sqlite_timers::next_due(conn, &service)
            })
            .await
    }

    async fn list_timers(&self, service: &str, state: TimerState, limit: u32) -> Result<Vec<StoredTimer>, StoreError> {
        let service = service.to_string();
        self.readers
            .run("could not read the timers", move |conn| {
                sqlite_timers::list(conn, &service, state, limit)
            })
            .await
    }

    async fn count_timers(&self, service: &str) -> Result<TimerCounts, StoreError> {
        let service = service.to_string();
        let (pending, failed) = self
            .readers
            .run("could not count the timers", move |conn| {
                sqlite_timers::count(conn, &service)
            })
            .await?;
        Ok(TimerCounts { pending, failed })
    }

    async fn claim_timer_shard(&self, service: &str, shard: u32, epoch: u64) -> Result<(), StoreError> {
        self.writes
            .submit(WriteOp::ClaimTimerShard {
                service: service.to_string(),
                shard,
                epoch,
            })
            .await
    }

    async fn begin_timer_attempt(&self, attempt: &TimerAttempt) -> Result<(), StoreError> {
        self.writes.submit(WriteOp::BeginTimerAttempt(attempt.clone())).await
    }

    async fn finish_timer(&self, key: &TimerKey, generation: i64, end: AttemptEnd) -> Result<(), StoreError> {
        self.writes
            .submit(WriteOp::FinishTimer {
                key: key.clone(),
                generation,
                end,
            })
            .await
    }
}

/// Reader connections, opened on demand and kept for reuse. The semaphore bounds
/// how many blocking threads reads occupy at once.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    async fn run<T, F>(self: &Arc<Self>, what: &'static str, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable(format!("{what}: the store is closing")))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            // The permit travels with the work: a cancelled caller still frees it
            // only when the read is really over.
            let _permit = permit;
            let mut conn = pool.take().map_err(|e| unavailable(what, &e))?;
            let result = read(&mut conn).map_err(|e| unavailable(what, &e));
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Unavailable(format!("{what}: the read was interrupted")))?
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = Connection::open(&self.path)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(conn)
            }
        }
    }
}

/// Opens the writer's connection: WAL mode, full sync, and the schema in place.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let cannot_open =
        |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("cannot open SQLite file {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| cannot_open(&e))?;
    }
    let conn = Connection::open(path).map_err(|e| cannot_open(&describe(&e)))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| cannot_open(&describe(&e)))?;
    // WAL lets readers (in this and other processes) run beside the writer; the
    // mode is stored in the file, so only the first opener really switches it.
    let mode: String = retry_busy(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
        .map_err(|e| cannot_open(&describe(&e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "SQLite file {} cannot use write-ahead logging (journal mode is {mode}); \
             put it on a local file system",
            path.display()
        )));
    }
    // FULL syncs the WAL on every commit: an acknowledged write survives a crash.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| cannot_open(&describe(&e)))?;
    create_schema(&conn).map_err(|e| match e {
        SchemaError::Sqlite(e) => cannot_open(&describe(&e)),
        SchemaError::TooNew(version) => StoreError::Config(format!(
            "SQLite file {} has schema version {version}, newer than this Strata \
             understands ({SCHEMA_VERSION}); upgrade Strata",
            path.display()
        )),
    })?;
    Ok(conn)
}

enum SchemaError {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Creates the tables if missing. `BEGIN IMMEDIATE` takes the write lock first, so
/// processes opening a new file at once create it one after the other.
fn create_schema(conn: &Connection) -> Result<(), SchemaError> {
    retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE"))?;
    let result = (|| {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS strata_schema_version (version INTEGER NOT NULL)")?;
        let version: Option<i64> =
            conn.query_row("SELECT max(version) FROM strata_schema_version", [], |r| r.get(0))?;
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(SchemaError::TooNew(v)),
            Some(v) if v < SCHEMA_VERSION => {
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(TIMER_SCHEMA)?;
                if v < 2 {
                    conn.execute_batch(LOG_EXISTING_JOURNALS)?;
                }
                conn.execute(
                    "INSERT INTO strata_schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(_) => {
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(TIMER_SCHEMA)?;
            }
            None => {
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(TIMER_SCHEMA)?;
                conn.execute(
                    "INSERT INTO strata_schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Retries while another connection holds the lock beyond the busy timeout.
fn retry_busy<T>(mut attempt: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + OPEN_RETRY_FOR;
    loop {
        match attempt() {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                debug!("sqlite file busy, retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The writer thread: one batch, one transaction, until every caller is gone.
fn run_writer(mut conn: Connection, mut receiver: WriteReceiver) {
    while let Some(batch) = receiver.next_batch_blocking() {
        let outcome = commit_batch(&mut conn, &batch);
        receiver.answer(batch, outcome);
    }
    debug!("sqlite writer stopped");
}

fn commit_batch(conn: &mut Connection, batch: &[PendingWrite]) -> BatchOutcome {
    // A transaction left open by an earlier failure would make BEGIN fail forever.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return BatchOutcome::Failed(unavailable("could not start a write transaction", &e));
    }
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        // A savepoint per write: a conflicting write is undone alone while the
        // others in the batch still commit.
        let result = conn
            .execute_batch("SAVEPOINT write")
            .map_err(WriteError::Sqlite)
            .and_then(|()| apply(conn, &write.op));
        let closed = match &result {
            Ok(()) => conn.execute_batch("RELEASE write"),
            Err(_) => conn.execute_batch("ROLLBACK TO write; RELEASE write"),
        };
        if let Err(e) = closed {
            let _ = conn.execute_batch("ROLLBACK");
            return BatchOutcome::Failed(unavailable("could not write the batch", &e));
        }
        results.push(result.map_err(|e| e.into_store_error(&write.op)));
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return BatchOutcome::Failed(unavailable("could not commit the batch", &e));
    }
    BatchOutcome::Committed(results)
}

enum WriteError {
    Conflict(i64),
    /// A timer write that found something newer (see [`StoreError::Stale`]).
    Stale,
    Sqlite(rusqlite::Error),
}

impl WriteError {
    fn into_store_error(self, op: &WriteOp) -> StoreError {
        match (self, op) {
            (Self::Conflict(seq_nr), WriteOp::Append(write)) => StoreError::Conflict {
                entity_id: write.key.entity_id.clone(),
                seq_nr,
            },
            (Self::Conflict(seq_nr), WriteOp::SaveCrdt(write)) => StoreError::Conflict {
                entity_id: write.key.entity_id.clone(),
                seq_nr,
            },
            (Self::Conflict(seq_nr), _) => StoreError::Conflict {
                entity_id: String::new(),
                seq_nr,
            },
            (Self::Stale, WriteOp::ClaimTimerShard { service, shard, epoch }) => StoreError::Stale(format!(
                "shard {shard} of {service} is held at an epoch newer than {epoch}"
            )),
            (Self::Stale, _) => StoreError::Stale(
                "the timer was replaced, cancelled or failed, or its shard moved, since it was read".into(),
            ),
            (Self::Sqlite(e), WriteOp::Append(_)) => unavailable("could not append events", &e),
            (Self::Sqlite(e), WriteOp::SaveValue { .. }) => unavailable("could not save the value", &e),
            (Self::Sqlite(e), WriteOp::SaveCrdt(_)) => unavailable("could not save the CRDT state", &e),
            (Self::Sqlite(e), WriteOp::SaveOffset { .. }) => unavailable("could not save the offset", &e),
            (Self::Sqlite(e), _) => unavailable("could not write the timers", &e),
        }
    }
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<(), WriteError> {
    match op {
        WriteOp::Append(write) => {
            append(conn, write)?;
            sqlite_timers::apply_changes(conn, &write.timers).map_err(WriteError::Sqlite)
        }
        WriteOp::SaveValue { key, value, timers } => save_value(conn, key, value.as_ref())
            .and_then(|()| sqlite_timers::apply_changes(conn, timers))
            .map_err(WriteError::Sqlite),
        WriteOp::SaveCrdt(write) => save_crdt(conn, write),
        WriteOp::SaveOffset {
            subscriber,
            persistence_id,
            offset,
        } => save_offset(conn, subscriber, persistence_id, *offset).map_err(WriteError::Sqlite),
        WriteOp::WriteTimers(changes) => sqlite_timers::apply_changes(conn, changes).map_err(WriteError::Sqlite),
        WriteOp::ClaimTimerShard { service, shard, epoch } => {
            match sqlite_timers::claim_shard(conn, service, *shard, *epoch).map_err(WriteError::Sqlite)? {
                true => Ok(()),
                false => Err(WriteError::Stale),
            }
        }
        WriteOp::BeginTimerAttempt(attempt) => {
            match sqlite_timers::begin_attempt(conn, attempt).map_err(WriteError::Sqlite)? {
                true => Ok(()),
                false => Err(WriteError::Stale),
            }
        }
        WriteOp::FinishTimer { key, generation, end } => {
            sqlite_timers::finish(conn, key, *generation, end).map_err(WriteError::Sqlite)
        }
    }
}

fn save_crdt(conn: &Connection, write: &CrdtWrite) -> Result<(), WriteError> {
    let key = &write.key;
    let type_url = write.state.as_ref().map(|s| s.type_url.as_str());
    let bytes = write.state.as_ref().map(|s| s.value.as_slice());
    let saved = if write.seq_nr == 1 {
        match conn
            .prepare_cached(
                "INSERT INTO strata_crdts (persistence_id, entity_id, seq_nr, type_url, bytes)
                 VALUES (?1, ?2, 1, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![key.persistence_id, key.entity_id, type_url, bytes]))
        {
            Err(e) if is_primary_key_violation(&e) => 0,
            other => other.map_err(WriteError::Sqlite)?,
        }
    } else {
        conn.prepare_cached(
            "UPDATE strata_crdts SET seq_nr = ?3, type_url = ?4, bytes = ?5
             WHERE persistence_id = ?1 AND entity_id = ?2 AND seq_nr = ?3 - 1",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.persistence_id,
                key.entity_id,
                write.seq_nr,
                type_url,
                bytes
            ])
        })
        .map_err(WriteError::Sqlite)?
    };
    if saved == 0 {
        return Err(WriteError::Conflict(write.seq_nr));
    }
    Ok(())
}

fn save_offset(conn: &Connection, subscriber: &str, persistence_id: &str, offset: LogOffset) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO strata_subscriber_offsets (subscriber, persistence_id, tx, ord)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (subscriber, persistence_id) DO UPDATE SET tx = excluded.tx, ord = excluded.ord
         WHERE (excluded.tx, excluded.ord) > (tx, ord)",
    )?
    .execute(params![subscriber, persistence_id, offset.tx, offset.ord])
    .map(drop)
}

fn append(conn: &Connection, write: &JournalWrite) -> Result<(), WriteError> {
    let key = &write.key;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO strata_journal (persistence_id, entity_id, seq_nr, type_url, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(WriteError::Sqlite)?;
    for (seq_nr, event) in (write.first_seq_nr..).zip(&write.events) {
        let inserted = insert.execute(params![
            key.persistence_id,
            key.entity_id,
            seq_nr,
            event.type_url,
            event.value
        ]);
        match inserted {
            Ok(_) => {}
            Err(e) if is_primary_key_violation(&e) => return Err(WriteError::Conflict(seq_nr)),
            Err(e) => return Err(WriteError::Sqlite(e)),
        }
    }
    if !write.events.is_empty() {
        // The write's place in its persistence id's event log, in commit order.
        conn.prepare_cached(
            "INSERT INTO strata_event_log (persistence_id, entity_id, first_seq_nr, last_seq_nr)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.persistence_id,
                key.entity_id,
                write.first_seq_nr,
                write.last_seq_nr()
            ])
        })
        .map_err(WriteError::Sqlite)?;
    }
    if let Some(snapshot) = &write.snapshot {
        let seq_nr = snapshot.seq_nr;
        conn.prepare_cached(
            "INSERT INTO strata_snapshots (persistence_id, entity_id, seq_nr, type_url, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (persistence_id, entity_id, seq_nr)
             DO UPDATE SET type_url = excluded.type_url, bytes = excluded.bytes",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.persistence_id,
                key.entity_id,
                seq_nr,
                snapshot.payload.type_url,
                snapshot.payload.value
            ])
        })
        .map_err(WriteError::Sqlite)?;
        // Recovery needs only the latest snapshot; older ones are dead weight.
        conn.prepare_cached(
            "DELETE FROM strata_snapshots
             WHERE persistence_id = ?1 AND entity_id = ?2 AND seq_nr < ?3",
        )
        .and_then(|mut s| s.execute(params![key.persistence_id, key.entity_id, seq_nr]))
        .map_err(WriteError::Sqlite)?;
    }
    Ok(())
}

fn save_value(conn: &Connection, key: &EntityKey, value: Option<&Any>) -> rusqlite::Result<()> {
    match value {
        Some(value) => conn
            .prepare_cached(
                "INSERT INTO strata_values (persistence_id, entity_id, type_url, bytes)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (persistence_id, entity_id)
                 DO UPDATE SET type_url = excluded.type_url, bytes = excluded.bytes",
            )?
            .execute(params![key.persistence_id, key.entity_id, value.type_url, value.value]),
        None => conn
            .prepare_cached("DELETE FROM strata_values WHERE persistence_id = ?1 AND entity_id = ?2")?
            .execute(params![key.persistence_id, key.entity_id]),
    }
    .map(drop)
}

fn read_latest_snapshot(conn: &Connection, key: &EntityKey) -> rusqlite::Result<Option<Snapshot>> {
    conn.prepare_cached(
        "SELECT seq_nr, type_url, bytes FROM strata_snapshots
         WHERE persistence_id = ?1 AND entity_id = ?2
         ORDER BY seq_nr DESC LIMIT 1",
    )?
    .query_row(params![key.persistence_id, key.entity_id], |row| {
        Ok(Snapshot {
            seq_nr: row.get(0)?,
            payload: Any {
                type_url: row.get(1)?,
                value: row.get(2)?,
            },
        })
    })
    .optional()
}

fn read_events(conn: &Connection, key: &EntityKey, from_seq_nr: i64) -> rusqlite::Result<Vec<JournalEvent>> {
    let mut select = conn.prepare_cached(
        "SELECT seq_nr, type_url, bytes FROM strata_journal
         WHERE persistence_id = ?1 AND entity_id = ?2 AND seq_nr >= ?3
         ORDER BY seq_nr",
    )?;
    let rows = select.query_map(params![key.persistence_id, key.entity_id, from_seq_nr], journal_event)?;
    rows.collect()
}

/// A journal row selected as `seq_nr, type_url, bytes`.
fn journal_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEvent> {
    Ok(JournalEvent {
        seq_nr: row.get(0)?,
        payload: Any {
            type_url: row.get(1)?,
            value: row.get(2)?,
        },
    })
}

fn is_primary_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error()
        .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// What SQLite reported, without statement text: the error class, e.g. "database
/// is locked" or "disk I/O error".
fn describe(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => rusqlite::ffi::code_to_str(failure.extended_code).to_owned(),
        _ => "unexpected SQLite error".to_owned(),
    }
}

/// An [`StoreError::Unavailable`] saying what failed; the full error goes to the log.
fn unavailable(what: &str, e: &rusqlite::Error) -> StoreError {
    warn!(error = %e, operation = what, "sqlite operation failed");
    StoreError::Unavailable(format!("{what}: {}", describe(e)))
}
