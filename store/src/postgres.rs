//! The PostgreSQL store: the same tables as the SQLite store, shared by any number
//! of processes. It owns the schema, one writer task doing group commit on its own
//! connection, and reader connections (the URL's `pool_size` less the writer's);
//! all of them reconnect after a failure, over TLS as the URL's `sslmode` says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prost_types::Any;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Row, Statement};
use tracing::{debug, info, warn};

use crate::group_commit::{self, BatchOutcome, PendingWrite, WriteOp, WriteQueue, WriteReceiver};
use crate::postgres_timers::{self, TimerWrites, TIMER_SCHEMA};
use crate::postgres_tls::{self, PostgresTls};
use crate::postgres_url::PostgresOptions;
use crate::{
    AttemptEnd, CrdtRecord, CrdtWrite, EntityKey, JournalEvent, JournalWrite, LogOffset, LoggedEvent, Recovery,
    Snapshot, Store, StoreError, StoreStats, StoredTimer, TimerAttempt, TimerChange, TimerCounts, TimerKey, TimerState,
    TimerStore,
};

/// The schema this code reads and writes; recorded in `strata_schema_version`.
/// Version 2 added CRDT states, the event log and subscriber offsets; version 3
/// timers.
const SCHEMA_VERSION: i32 = 3;

/// How long to wait for a connection when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a read or a batch may take before the store reports itself
/// unavailable instead of hanging on a server that stopped answering.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serialises schema creation between processes (`pg_advisory_xact_lock`): two
/// concurrent `CREATE TABLE IF NOT EXISTS` can otherwise both try to create.
const SCHEMA_LOCK: i64 = 0x5354_5241_5441; // "STRATA"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strata_journal (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr BIGINT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (persistence_id, entity_id, seq_nr)
);
CREATE TABLE IF NOT EXISTS strata_snapshots (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr BIGINT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (persistence_id, entity_id, seq_nr)
);
CREATE TABLE IF NOT EXISTS strata_values (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (persistence_id, entity_id)
);
CREATE TABLE IF NOT EXISTS strata_crdts (
    persistence_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    seq_nr BIGINT NOT NULL,
    type_url TEXT,
    bytes BYTEA,
    PRIMARY KEY (persistence_id, entity_id)
);
-- Each journal write's place in its persistence id's log: ordered by the
-- writing transaction's id, then by a sequence. Readers only take writes of
-- transactions older than any still running (txid_snapshot_xmin), so a write
-- that commits late can never land behind a position already handed out.
CREATE TABLE IF NOT EXISTS strata_event_log (
    persistence_id TEXT NOT NULL,
    tx BIGINT NOT NULL,
    ord BIGSERIAL,
    entity_id TEXT NOT NULL,
    first_seq_nr BIGINT NOT NULL,
    last_seq_nr BIGINT NOT NULL,
    PRIMARY KEY (persistence_id, tx, ord)
);
CREATE TABLE IF NOT EXISTS strata_subscriber_offsets (
    subscriber TEXT NOT NULL,
    persistence_id TEXT NOT NULL,
    tx BIGINT NOT NULL,
    ord BIGINT NOT NULL,
    PRIMARY KEY (subscriber, persistence_id)
);
";

/// Journals written before the event log existed (schema 1) enter it as one
/// write per entity, before anything newer (transaction 0).
const LOG_EXISTING_JOURNALS: &str = "
INSERT INTO strata_event_log (persistence_id, tx, entity_id, first_seq_nr, last_seq_nr)
SELECT persistence_id, 0, entity_id, min(seq_nr), max(seq_nr) FROM strata_journal
GROUP BY persistence_id, entity_id ORDER BY persistence_id, entity_id;
";

/// Entity state in a PostgreSQL database (the tables live in the first schema of
/// the connection's `search_path`).
pub struct PostgresStore {
    writes: WriteQueue,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?...]`, see
    /// [`PostgresOptions`]) and creates the tables if they are missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let PostgresOptions {
            mut config,
            tls,
            pool_size,
        } = PostgresOptions::parse(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("strata");
        }
        let server = Arc::new(Server {
            config,
            tls: PostgresTls::new(&tls)?,
        });

        let client = match tokio::time::timeout(OPERATION_TIMEOUT, open_client(&server)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(first_connection_error(&e)),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "could not connect to PostgreSQL: it did not answer in time".into(),
                ))
            }
        };
        tokio::time::timeout(OPERATION_TIMEOUT, create_schema(&client))
            .await
            .map_err(|_| {
                StoreError::Unavailable("could not create the tables: PostgreSQL did not answer in time".into())
            })??;
        let writer = connect_timed(WriteConn::prepare(client)).await?;

        let (writes, receiver) = group_commit::write_queue();
        tokio::spawn(run_writer(server.clone(), Some(writer), receiver));
        info!(hosts = ?server.config.get_hosts(), sslmode = ?tls, pool_size, "postgres store open");
        Ok(Self {
            writes,
            readers: Arc::new(ReaderPool {
                server,
                slots: (1..pool_size).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// Counters of the group-commit writer.
    pub fn stats(&self) -> StoreStats {
        self.writes.stats()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn recover(&self, key: &EntityKey) -> Result<Recovery, StoreError> {
        let what = "could not recover the entity";
        // The snapshot first, then the events after it: a write landing in between
        // only adds events, so the pair is always a valid recovery.
        let (snapshot, events) = self
            .readers
            .read(what, |conn| {
                let key = key.clone();
                async move {
                    let snapshot = conn
                        .client
                        .query_opt(&conn.latest_snapshot, &[&key.persistence_id, &key.entity_id])
                        .await?
                        .map(|row| to_snapshot(&row));
                    let from = snapshot.as_ref().map_or(i64::MIN, |s| s.seq_nr + 1);
                    let events = conn
                        .client
                        .query(&conn.events, &[&key.persistence_id, &key.entity_id, &from])
                        .await?;
                    Ok((snapshot, events))
                }
            })
            .await?;
        Ok(Recovery {
            snapshot,
            events: events.iter().map(to_event).collect(),
        })
    }

    async fn events(&self, key: &EntityKey, from_seq_nr: i64) -> Result<Vec<JournalEvent>, StoreError> {
        let rows = self
            .readers
            .read("could not read the journal", |conn| {
                let key = key.clone();
                async move {
                    conn.client
                        .query(&conn.events, &[&key.persistence_id, &key.entity_id, &from_seq_nr])
                        .await
                }
            })
            .await?;
        Ok(rows.iter().map(to_event).collect())
    }

    async fn events_before(
        &self,
        key: &EntityKey,
        before_seq_nr: i64,
        limit: u32,
    ) -> Result<Vec<JournalEvent>, StoreError> {
        let limit = i64::from(limit);
        let rows = self
            .readers
            .read("could not read the journal", |conn| {
                let key = key.clone();
                async move {
                    conn.client
                        .query(
                            &conn.events_before,
                            &[&key.persistence_id, &key.entity_id, &before_seq_nr, &limit],
                        )
                        .await
                }
            })
            .await?;
        Ok(rows.iter().map(to_event).collect())
    }

    async fn latest_snapshot(&self, key: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
        let row = self
            .readers
            .read("could not read the snapshot", |conn| {
                let key = key.clone();
                async move {
                    conn.client
                        .query_opt(&conn.latest_snapshot, &[&key.persistence_id, &key.entity_id])
                        .await
                }
            })
            .await?;
        Ok(row.map(|row| to_snapshot(&row)))
    }

    async fn append(&self, write: JournalWrite) -> Result<(), StoreError> {
        if !write.needs_storing()? {
            return Ok(());
        }
        self.writes.submit(WriteOp::Append(write)).await
    }

    async fn load_value(&self, key: &EntityKey) -> Result<Option<Any>, StoreError> {
        let row = self
            .readers
            .read("could not read the value", |conn| {
                let key = key.clone();
                async move {
                    conn.client
                        .query_opt(&conn.value, &[&key.persistence_id, &key.entity_id])
                        .await
                }
            })
            .await?;
        Ok(row.map(|row| Any {
            type_url: row.get(0),
            value: row.get(1),
        }))
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
        let row = self
            .readers
            .read("could not read the CRDT state", |conn| {
                let key = key.clone();
                async move {
                    conn.client
                        .query_opt(&conn.crdt, &[&key.persistence_id, &key.entity_id])
                        .await
                }
            })
            .await?;
        Ok(row.map(|row| {
            let type_url: Option<String> = row.get(1);
            let bytes: Option<Vec<u8>> = row.get(2);
            CrdtRecord {
                seq_nr: row.get(0),
                state: type_url.map(|type_url| Any {
                    type_url,
                    value: bytes.unwrap_or_default(),
                }),
            }
        }))
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
        let limit = i64::from(limit);
        let rows = self
            .readers
            .read("could not read the event log", |conn| {
                let persistence_id = persistence_id.to_string();
                async move {
                    conn.client
                        .query(&conn.event_log, &[&persistence_id, &after.tx, &after.ord, &limit])
                        .await
                }
            })
            .await?;
        Ok(rows
            .iter()
            .map(|row| LoggedEvent {
                offset: LogOffset {
                    tx: row.get(0),
                    ord: row.get(1),
                },
                entity_id: row.get(2),
                seq_nr: row.get(3),
                payload: Any {
                    type_url: row.get(4),
                    value: row.get(5),
                },
            })
            .collect())
    }

    async fn load_offset(&self, subscriber: &str, persistence_id: &str) -> Result<LogOffset, StoreError> {
        let row = self
            .readers
            .read("could not read the subscriber's offset", |conn| {
                let (subscriber, persistence_id) = (subscriber.to_string(), persistence_id.to_string());
                async move {
                    conn.client
                        .query_opt(&conn.offset, &[&subscriber, &persistence_id])
                        .await
                }
            })
            .await?;
        Ok(row.map_or(LogOffset::START, |row| LogOffset {
            tx: row.get(0),
            ord: row.get(1),
        }))
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
impl TimerStore for PostgresStore {
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
        self.readers
            .read("could not read the due timers", |conn| async move {
                postgres_timers::due(&conn.client, service, shards.as_deref(), limit).await
            })
            .await
    }

    async fn next_timer_due(&self, service: &str) -> Result<Option<i64>, StoreError> {
        self.readers
            .read("could not read the next timer", |conn| async move {
                postgres_timers::next_due(&conn.client, service).await
            })
            .await
    }

    async fn list_timers(&self, service: &str, state: TimerState, limit: u32) -> Result<Vec<StoredTimer>, StoreError> {
        self.readers
            .read("could not read the timers", |conn| async move {
                postgres_timers::list(&conn.client, service, state, limit).await
            })
            .await
    }

    async fn count_timers(&self, service: &str) -> Result<TimerCounts, StoreError> {
        let (pending, failed) = self
            .readers
            .read("could not count the timers", |conn| async move {
                postgres_timers::count(&conn.client, service).await
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

/// Where connections go and how they are secured.
struct Server {
    config: Config,
    tls: PostgresTls,
}

/// Connects and drives the connection on its own task.
async fn open_client(server: &Server) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = server.config.connect(server.tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates the tables if missing and checks the schema version.
async fn create_schema(client: &Client) -> Result<(), StoreError> {
    let what = "could not create the tables";
    let first = try_create_schema(client).await;
    // Even with the advisory lock, a process that does not take it may race us;
    // one retry settles that race.
    let result = match first {
        Err(SchemaError::Postgres(e))
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) || e.code() == Some(&SqlState::DUPLICATE_TABLE) =>
        {
            debug!("tables created concurrently by another process, checking again");
            try_create_schema(client).await
        }
        other => other,
    };
    result.map_err(|e| match e {
        SchemaError::Postgres(e) => pg_error(what, &e),
        SchemaError::TooNew(version) => StoreError::Config(format!(
            "the database has strata schema version {version}, newer than this Strata \
             understands ({SCHEMA_VERSION}); upgrade Strata"
        )),
    })
}

enum SchemaError {
    Postgres(tokio_postgres::Error),
    TooNew(i32),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Postgres(e)
    }
}

async fn try_create_schema(client: &Client) -> Result<(), SchemaError> {
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS strata_schema_version (version INTEGER NOT NULL)")
            .await?;
        let version: Option<i32> = client
            .query_one("SELECT max(version) FROM strata_schema_version", &[])
            .await?
            .get(0);
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(SchemaError::TooNew(v)),
            Some(v) if v < SCHEMA_VERSION => {
                client.batch_execute(SCHEMA).await?;
                client.batch_execute(TIMER_SCHEMA).await?;
                if v < 2 {
                    client.batch_execute(LOG_EXISTING_JOURNALS).await?;
                }
                client
                    .execute(
                        "INSERT INTO strata_schema_version (version) VALUES ($1)",
                        &[&SCHEMA_VERSION],
                    )
                    .await?;
            }
            Some(_) => {
                client.batch_execute(SCHEMA).await?;
                client.batch_execute(TIMER_SCHEMA).await?;
            }
            None => {
                client.batch_execute(SCHEMA).await?;
                client.batch_execute(TIMER_SCHEMA).await?;
                client
                    .execute(
                        "INSERT INTO strata_schema_version (version) VALUES ($1)",
                        &[&SCHEMA_VERSION],
                    )
                    .await?;
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(client.batch_execute("COMMIT").await?),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// A reader connection with its statements prepared once.
struct ReadConn {
    client: Client,
    latest_snapshot: Statement,
    events: Statement,
    events_before: Statement,
    value: Statement,
    crdt: Statement,
    event_log: Statement,
    offset: Statement,
}

impl ReadConn {
    async fn connect(server: &Server) -> Result<Self, tokio_postgres::Error> {
        let client = open_client(server).await?;
        Ok(Self {
            latest_snapshot: client
                .prepare(
                    "SELECT seq_nr, type_url, bytes FROM strata_snapshots
                     WHERE persistence_id = $1 AND entity_id = $2
                     ORDER BY seq_nr DESC LIMIT 1",
                )
                .await?,
            events: client
                .prepare(
                    "SELECT seq_nr, type_url, bytes FROM strata_journal
                     WHERE persistence_id = $1 AND entity_id = $2 AND seq_nr >= $3
                     ORDER BY seq_nr",
                )
                .await?,
            events_before: client
                .prepare(
                    "SELECT seq_nr, type_url, bytes FROM strata_journal
                     WHERE persistence_id = $1 AND entity_id = $2 AND seq_nr < $3
                     ORDER BY seq_nr DESC LIMIT $4",
                )
                .await?,
            value: client
                .prepare(
                    "SELECT type_url, bytes FROM strata_values
                     WHERE persistence_id = $1 AND entity_id = $2",
                )
                .await?,
            crdt: client
                .prepare(
                    "SELECT seq_nr, type_url, bytes FROM strata_crdts
                     WHERE persistence_id = $1 AND entity_id = $2",
                )
                .await?,
            event_log: client
                .prepare(
                    "SELECT l.tx, l.ord, j.entity_id, j.seq_nr, j.type_url, j.bytes
                     FROM (SELECT tx, ord, entity_id, first_seq_nr, last_seq_nr FROM strata_event_log
                           WHERE persistence_id = $1 AND (tx, ord) > ($2, $3)
                             AND tx < txid_snapshot_xmin(txid_current_snapshot())
                           ORDER BY tx, ord LIMIT $4) l
                     JOIN strata_journal j
                       ON j.persistence_id = $1 AND j.entity_id = l.entity_id
                      AND j.seq_nr BETWEEN l.first_seq_nr AND l.last_seq_nr
                     ORDER BY l.tx, l.ord, j.seq_nr",
                )
                .await?,
            offset: client
                .prepare(
                    "SELECT tx, ord FROM strata_subscriber_offsets
                     WHERE subscriber = $1 AND persistence_id = $2",
                )
                .await?,
            client,
        })
    }
}

/// A few reader connections, used in turn and reopened when they fail.
struct ReaderPool {
    server: Arc<Server>,
    slots: Vec<Mutex<Option<Arc<ReadConn>>>>,
    next: AtomicUsize,
}

impl ReaderPool {
    async fn read<T, F, Fut>(&self, what: &str, query: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<ReadConn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let conn = {
            let mut slot = slot.lock().await;
            match slot.as_ref() {
                Some(conn) if !conn.client.is_closed() => conn.clone(),
                _ => {
                    let conn = connect_timed(ReadConn::connect(&self.server)).await?;
                    let conn = Arc::new(conn);
                    *slot = Some(conn.clone());
                    conn
                }
            }
        };
        let result = timed(what, query(conn.clone())).await;
        if result.is_err() {
            // Reads do not fail on a healthy connection: start afresh next time.
            let mut slot = slot.lock().await;
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                *slot = None;
            }
        }
        result
    }
}

/// The writer's connection with its statements prepared once.
struct WriteConn {
    client: Client,
    insert_events: Statement,
    upsert_snapshot: Statement,
    upsert_value: Statement,
    delete_value: Statement,
    log_write: Statement,
    insert_crdt: Statement,
    update_crdt: Statement,
    save_offset: Statement,
    timers: TimerWrites,
}

impl WriteConn {
    async fn connect(server: &Server) -> Result<Self, tokio_postgres::Error> {
        Self::prepare(open_client(server).await?).await
    }

    async fn prepare(client: Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            // One statement for all the events of a write. DO NOTHING plus RETURNING
            // reveals a taken sequence number without aborting the transaction.
            insert_events: client
                .prepare(
                    "INSERT INTO strata_journal (persistence_id, entity_id, seq_nr, type_url, bytes)
                     SELECT $1::TEXT, $2::TEXT, e.seq_nr, e.type_url, e.bytes
                     FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::BYTEA[]) AS e(seq_nr, type_url, bytes)
                     ON CONFLICT DO NOTHING
                     RETURNING seq_nr",
                )
                .await?,
            // Recovery needs only the latest snapshot: older ones go in the same statement.
            upsert_snapshot: client
                .prepare(
                    "WITH pruned AS (
                         DELETE FROM strata_snapshots
                         WHERE persistence_id = $1 AND entity_id = $2 AND seq_nr < $3
                     )
                     INSERT INTO strata_snapshots (persistence_id, entity_id, seq_nr, type_url, bytes)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (persistence_id, entity_id, seq_nr)
                     DO UPDATE SET type_url = EXCLUDED.type_url, bytes = EXCLUDED.bytes",
                )
                .await?,
            upsert_value: client
                .prepare(
                    "INSERT INTO strata_values (persistence_id, entity_id, type_url, bytes)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (persistence_id, entity_id)
                     DO UPDATE SET type_url = EXCLUDED.type_url, bytes = EXCLUDED.bytes",
                )
                .await?,
            delete_value: client
                .prepare("DELETE FROM strata_values WHERE persistence_id = $1 AND entity_id = $2")
                .await?,
            log_write: client
                .prepare(
                    "INSERT INTO strata_event_log (persistence_id, tx, entity_id, first_seq_nr, last_seq_nr)
                     VALUES ($1, txid_current(), $2, $3, $4)",
                )
                .await?,
            insert_crdt: client
                .prepare(
                    "INSERT INTO strata_crdts (persistence_id, entity_id, seq_nr, type_url, bytes)
                     VALUES ($1, $2, 1, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            update_crdt: client
                .prepare(
                    "UPDATE strata_crdts SET seq_nr = $3::BIGINT, type_url = $4, bytes = $5
                     WHERE persistence_id = $1 AND entity_id = $2 AND seq_nr = $3::BIGINT - 1",
                )
                .await?,
            save_offset: client
                .prepare(
                    "INSERT INTO strata_subscriber_offsets AS o (subscriber, persistence_id, tx, ord)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (subscriber, persistence_id) DO UPDATE SET tx = EXCLUDED.tx, ord = EXCLUDED.ord
                     WHERE (EXCLUDED.tx, EXCLUDED.ord) > (o.tx, o.ord)",
                )
                .await?,
            timers: TimerWrites::prepare(&client).await?,
            client,
        })
    }
}

/// The writer task: one batch, one transaction. A failed batch drops the
/// connection (the server rolls back what was open); the next batch reconnects.
async fn run_writer(server: Arc<Server>, mut conn: Option<WriteConn>, mut receiver: WriteReceiver) {
    while let Some(batch) = receiver.next_batch().await {
        if conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            conn = None;
        }
        let writer = match conn.as_mut() {
            Some(writer) => writer,
            None => match connect_timed(WriteConn::connect(&server)).await {
                Ok(writer) => conn.insert(writer),
                Err(e) => {
                    receiver.answer(batch, BatchOutcome::Failed(e));
                    continue;
                }
            },
        };
        let outcome = match tokio::time::timeout(OPERATION_TIMEOUT, commit_batch(writer, &batch)).await {
            Ok(outcome) => outcome,
            Err(_) => BatchOutcome::Failed(StoreError::Unavailable("PostgreSQL did not answer in time".into())),
        };
        if matches!(outcome, BatchOutcome::Failed(_)) {
            conn = None;
        }
        receiver.answer(batch, outcome);
    }
    debug!("postgres writer stopped");
}

/// One batch in one transaction. First optimistically, every write sent at
/// once (pipelined on the connection: the batch costs about one round trip,
/// not four per write); if any write fails, that transaction is rolled back and
/// the batch is written again one write at a time, each in a savepoint, so a
/// conflicting write fails alone.
async fn commit_batch(conn: &WriteConn, batch: &[PendingWrite]) -> BatchOutcome {
    if batch.len() > 1 {
        if let Some(outcome) = commit_pipelined(conn, batch).await {
            return outcome;
        }
    }
    commit_one_by_one(conn, batch).await
}

/// Every write of `batch` at once; `None` when one failed (nothing was kept).
async fn commit_pipelined(conn: &WriteConn, batch: &[PendingWrite]) -> Option<BatchOutcome> {
    let client = &conn.client;
    if let Err(e) = client.batch_execute("BEGIN").await {
        return Some(BatchOutcome::Failed(pg_error(
            "could not start a write transaction",
            &e,
        )));
    }
    // Polled together, the statements go out without waiting for each other's
    // answers; the server runs them in the order they were sent.
    let results = futures::future::join_all(batch.iter().map(|write| apply(conn, &write.op))).await;
    if results.iter().all(Result::is_ok) {
        return Some(match client.batch_execute("COMMIT").await {
            Ok(()) => BatchOutcome::Committed(results),
            Err(e) => BatchOutcome::Failed(pg_error("could not commit the batch", &e)),
        });
    }
    match client.batch_execute("ROLLBACK").await {
        Ok(()) => None,
        Err(e) => Some(BatchOutcome::Failed(pg_error("could not roll the batch back", &e))),
    }
}

/// `batch` one write after another, each in a savepoint.
async fn commit_one_by_one(conn: &WriteConn, batch: &[PendingWrite]) -> BatchOutcome {
    let client = &conn.client;
    if let Err(e) = client.batch_execute("BEGIN").await {
        return BatchOutcome::Failed(pg_error("could not start a write transaction", &e));
    }
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        // A savepoint per write: a conflicting or failing write is undone alone
        // while the others in the batch still commit.
        if let Err(e) = client.batch_execute("SAVEPOINT write").await {
            return BatchOutcome::Failed(pg_error("could not write the batch", &e));
        }
        let result = apply(conn, &write.op).await;
        let closed = match &result {
            Ok(()) => client.batch_execute("RELEASE SAVEPOINT write").await,
            Err(_) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write")
                    .await
            }
        };
        if let Err(e) = closed {
            return BatchOutcome::Failed(pg_error("could not write the batch", &e));
        }
        results.push(result);
    }
    if let Err(e) = client.batch_execute("COMMIT").await {
        return BatchOutcome::Failed(pg_error("could not commit the batch", &e));
    }
    BatchOutcome::Committed(results)
}

async fn apply(conn: &WriteConn, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::Append(write) => {
            append(conn, write).await?;
            timer_writes(conn.timers.apply(&conn.client, &write.timers).await)
        }
        WriteOp::SaveValue { key, value, timers } => {
            let saved = match value {
                Some(value) => {
                    conn.client
                        .execute(
                            &conn.upsert_value,
                            &[&key.persistence_id, &key.entity_id, &value.type_url, &value.value],
                        )
                        .await
                }
                None => {
                    conn.client
                        .execute(&conn.delete_value, &[&key.persistence_id, &key.entity_id])
                        .await
                }
            };
            saved.map(drop).map_err(|e| pg_error("could not save the value", &e))?;
            timer_writes(conn.timers.apply(&conn.client, timers).await)
        }
        WriteOp::SaveCrdt(write) => save_crdt(conn, write).await,
        WriteOp::SaveOffset {
            subscriber,
            persistence_id,
            offset,
        } => conn
            .client
            .execute(
                &conn.save_offset,
                &[subscriber, persistence_id, &offset.tx, &offset.ord],
            )
            .await
            .map(drop)
            .map_err(|e| pg_error("could not save the offset", &e)),
        WriteOp::WriteTimers(changes) => timer_writes(conn.timers.apply(&conn.client, changes).await),
        WriteOp::ClaimTimerShard { service, shard, epoch } => {
            match timer_writes(conn.timers.claim(&conn.client, service, *shard, *epoch).await)? {
                true => Ok(()),
                false => Err(StoreError::Stale(format!(
                    "shard {shard} of {service} is held at an epoch newer than {epoch}"
                ))),
            }
        }
        WriteOp::BeginTimerAttempt(attempt) => match timer_writes(conn.timers.begin(&conn.client, attempt).await)? {
            true => Ok(()),
            false => Err(StoreError::Stale(
                "the timer was replaced, cancelled or failed, or its shard moved, since it was read".into(),
            )),
        },
        WriteOp::FinishTimer { key, generation, end } => {
            timer_writes(conn.timers.finish(&conn.client, key, *generation, end).await)
        }
    }
}

fn timer_writes<T>(result: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
    result.map_err(|e| pg_error("could not write the timers", &e))
}

async fn save_crdt(conn: &WriteConn, write: &CrdtWrite) -> Result<(), StoreError> {
    let key = &write.key;
    let type_url = write.state.as_ref().map(|s| s.type_url.as_str());
    let bytes = write.state.as_ref().map(|s| s.value.as_slice());
    let saved = if write.seq_nr == 1 {
        conn.client
            .execute(
                &conn.insert_crdt,
                &[&key.persistence_id, &key.entity_id, &type_url, &bytes],
            )
            .await
    } else {
        conn.client
            .execute(
                &conn.update_crdt,
                &[&key.persistence_id, &key.entity_id, &write.seq_nr, &type_url, &bytes],
            )
            .await
    }
    .map_err(|e| pg_error("could not save the CRDT state", &e))?;
    if saved == 0 {
        return Err(StoreError::Conflict {
            entity_id: key.entity_id.clone(),
            seq_nr: write.seq_nr,
        });
    }
    Ok(())
}

async fn append(conn: &WriteConn, write: &JournalWrite) -> Result<(), StoreError> {
    let key = &write.key;
    let what = "could not append events";
    let seq_nrs: Vec<i64> = (write.first_seq_nr..).take(write.events.len()).collect();
    let type_urls: Vec<&str> = write.events.iter().map(|e| e.type_url.as_str()).collect();
    let bytes: Vec<&[u8]> = write.events.iter().map(|e| e.value.as_slice()).collect();
    let inserted = conn
        .client
        .query(
            &conn.insert_events,
            &[&key.persistence_id, &key.entity_id, &seq_nrs, &type_urls, &bytes],
        )
        .await
        .map_err(|e| pg_error(what, &e))?;
    if inserted.len() < seq_nrs.len() {
        let inserted: std::collections::HashSet<i64> = inserted.iter().map(|row| row.get(0)).collect();
        let taken = seq_nrs
            .iter()
            .copied()
            .find(|seq_nr| !inserted.contains(seq_nr))
            .unwrap_or(write.first_seq_nr);
        return Err(StoreError::Conflict {
            entity_id: key.entity_id.clone(),
            seq_nr: taken,
        });
    }
    if !write.events.is_empty() {
        conn.client
            .execute(
                &conn.log_write,
                &[
                    &key.persistence_id,
                    &key.entity_id,
                    &write.first_seq_nr,
                    &write.last_seq_nr(),
                ],
            )
            .await
            .map_err(|e| pg_error(what, &e))?;
    }
    if let Some(snapshot) = &write.snapshot {
        conn.client
            .execute(
                &conn.upsert_snapshot,
                &[
                    &key.persistence_id,
                    &key.entity_id,
                    &snapshot.seq_nr,
                    &snapshot.payload.type_url,
                    &snapshot.payload.value,
                ],
            )
            .await
            .map_err(|e| pg_error(what, &e))?;
    }
    Ok(())
}

fn to_event(row: &Row) -> JournalEvent {
    JournalEvent {
        seq_nr: row.get(0),
        payload: Any {
            type_url: row.get(1),
            value: row.get(2),
        },
    }
}

fn to_snapshot(row: &Row) -> Snapshot {
    Snapshot {
        seq_nr: row.get(0),
        payload: Any {
            type_url: row.get(1),
            value: row.get(2),
        },
    }
}

/// Runs a database step under [`OPERATION_TIMEOUT`], mapping failure to
/// [`StoreError::Unavailable`].
async fn timed<T>(
    what: &str,
    step: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, step).await {
        Ok(result) => result.map_err(|e| pg_error(what, &e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: PostgreSQL did not answer in time"
        ))),
    }
}

/// Opens a connection under [`OPERATION_TIMEOUT`]; a failure is
/// [`StoreError::Unavailable`] (the next operation tries again).
async fn connect_timed<T>(
    step: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    timed("could not connect to PostgreSQL", step).await
}

/// Why the store's first connection failed. A certificate the URL's `sslmode` and
/// CA refuse, or credentials the server refuses, are the URL's to fix
/// ([`StoreError::Config`]: waiting does not help); anything else may pass (a
/// server still starting, a network not there yet).
fn first_connection_error(e: &tokio_postgres::Error) -> StoreError {
    if let Some(untrusted) = postgres_tls::untrusted(e) {
        warn!(error = %untrusted, "postgres refused: its certificate is not trusted");
        return StoreError::Config(format!("{untrusted}; check sslmode and sslrootcert in the store URL"));
    }
    let refused = [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::INVALID_CATALOG_NAME,
    ];
    match e.as_db_error() {
        // The server's words here name the user, database or pg_hba rule, never SQL.
        Some(db) if refused.contains(db.code()) => StoreError::Config(format!(
            "PostgreSQL refused the connection ({}): {}; check the user, password, database and sslmode in the store URL",
            db.code().code(),
            db.message()
        )),
        _ => pg_error("could not connect to PostgreSQL", e),
    }
}

/// An [`StoreError::Unavailable`] saying what failed; server errors are reduced to
/// their SQLSTATE code (their text can quote SQL), the full error goes to the log.
fn pg_error(what: &str, e: &tokio_postgres::Error) -> StoreError {
    warn!(error = %e, operation = what, "postgres operation failed");
    let cause = match e.as_db_error() {
        Some(db) => format!("database error {}", db.code().code()),
        None if e.is_closed() => "the connection to PostgreSQL is closed".to_owned(),
        None => e.to_string(),
    };
    StoreError::Unavailable(format!("{what}: {cause}"))
}
