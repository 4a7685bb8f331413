//! The SQLite store's timers: the tables, the writes its writer thread applies
//! inside a batch's transaction (schedule, cancel, claim a shard, begin and
//! finish an attempt) and the reads. Owns the SQL only; batching and fencing
//! rules are the store's and `timers.rs`'s.

use prost_types::Any;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::timers::shards_json;
use crate::{AttemptEnd, StoredTimer, TimerAttempt, TimerChange, TimerKey, TimerState};

pub(crate) const TIMER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strata_timers (
    service TEXT NOT NULL,
    owner TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    attempt_at_ms INTEGER NOT NULL,
    target_service TEXT NOT NULL,
    target_method TEXT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (service, owner, entity_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS strata_timers_by_time ON strata_timers (service, state, attempt_at_ms);
CREATE TABLE IF NOT EXISTS strata_timer_shards (
    service TEXT NOT NULL,
    shard INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (service, shard)
) WITHOUT ROWID;
";

const COLUMNS: &str = "service, owner, entity_id, name, shard, due_ms, attempt_at_ms, target_service, \
                       target_method, type_url, bytes, attempts, max_attempts, generation, state, last_error";

/// Applies a command's timer changes in order.
pub(crate) fn apply_changes(conn: &Connection, changes: &[TimerChange]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            TimerChange::Schedule(timer) => {
                let key = &timer.key;
                conn.prepare_cached(
                    "INSERT INTO strata_timers (service, owner, entity_id, name, shard, due_ms, attempt_at_ms,
                         target_service, target_method, type_url, bytes, attempts, max_attempts, generation,
                         state, last_error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, 0, ?11, 1, 'pending', NULL)
                     ON CONFLICT (service, owner, entity_id, name) DO UPDATE SET
                         shard = excluded.shard, due_ms = excluded.due_ms, attempt_at_ms = excluded.attempt_at_ms,
                         target_service = excluded.target_service, target_method = excluded.target_method,
                         type_url = excluded.type_url, bytes = excluded.bytes, attempts = 0,
                         max_attempts = excluded.max_attempts, generation = strata_timers.generation + 1,
                         state = 'pending', last_error = NULL",
                )?
                .execute(params![
                    key.service,
                    key.owner,
                    key.entity_id,
                    key.name,
                    timer.shard,
                    timer.due_ms,
                    timer.call.service_name,
                    timer.call.method,
                    timer.call.payload.type_url,
                    timer.call.payload.value,
                    timer.max_attempts,
                ])?;
            }
            TimerChange::Cancel(key) => {
                conn.prepare_cached(
                    "DELETE FROM strata_timers WHERE service = ?1 AND owner = ?2 AND entity_id = ?3 AND name = ?4",
                )?
                .execute(params![key.service, key.owner, key.entity_id, key.name])?;
            }
        }
    }
    Ok(())
}

/// Raises the shard's epoch to `epoch`; `false` (nothing changed) when a newer
/// one holds it.
pub(crate) fn claim_shard(conn: &Connection, service: &str, shard: u32, epoch: u64) -> rusqlite::Result<bool> {
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let changed = conn
        .prepare_cached(
            "INSERT INTO strata_timer_shards (service, shard, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT (service, shard) DO UPDATE SET epoch = excluded.epoch WHERE excluded.epoch >= epoch",
        )?
        .execute(params![service, shard, epoch])?;
    Ok(changed > 0)
}

/// Counts an attempt and leases the timer; `false` (nothing changed) when the
/// timer is not the one read or its shard moved on.
pub(crate) fn begin_attempt(conn: &Connection, attempt: &TimerAttempt) -> rusqlite::Result<bool> {
    let key = &attempt.key;
    let epoch = attempt.epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
    let changed = conn
        .prepare_cached(
            "UPDATE strata_timers SET attempts = attempts + 1, attempt_at_ms = ?6
             WHERE service = ?1 AND owner = ?2 AND entity_id = ?3 AND name = ?4 AND generation = ?5
               AND state = 'pending'
               AND (?7 IS NULL OR ?7 = (SELECT s.epoch FROM strata_timer_shards s
                                        WHERE s.service = strata_timers.service AND s.shard = strata_timers.shard))",
        )?
        .execute(params![
            key.service,
            key.owner,
            key.entity_id,
            key.name,
            attempt.generation,
            attempt.lease_until_ms,
            epoch
        ])?;
    Ok(changed > 0)
}

pub(crate) fn finish(conn: &Connection, key: &TimerKey, generation: i64, end: &AttemptEnd) -> rusqlite::Result<()> {
    let key_params = params![key.service, key.owner, key.entity_id, key.name, generation];
    match end {
        AttemptEnd::Fired => conn
            .prepare_cached(
                "DELETE FROM strata_timers
                 WHERE service = ?1 AND owner = ?2 AND entity_id = ?3 AND name = ?4 AND generation = ?5",
            )?
            .execute(key_params)?,
        AttemptEnd::Retry { attempt_at_ms, error } => conn
            .prepare_cached(
                "UPDATE strata_timers SET attempt_at_ms = ?6, last_error = ?7
                 WHERE service = ?1 AND owner = ?2 AND entity_id = ?3 AND name = ?4 AND generation = ?5",
            )?
            .execute(params![
                key.service,
                key.owner,
                key.entity_id,
                key.name,
                generation,
                attempt_at_ms,
                error
            ])?,
        AttemptEnd::Failed { error, at_ms } => conn
            .prepare_cached(
                "UPDATE strata_timers SET state = 'failed', attempt_at_ms = ?6, last_error = ?7
                 WHERE service = ?1 AND owner = ?2 AND entity_id = ?3 AND name = ?4 AND generation = ?5",
            )?
            .execute(params![
                key.service,
                key.owner,
                key.entity_id,
                key.name,
                generation,
                at_ms,
                error
            ])?,
    };
    Ok(())
}

pub(crate) fn due(
    conn: &Connection,
    service: &str,
    shards: Option<&[u32]>,
    limit: u32,
) -> rusqlite::Result<Vec<StoredTimer>> {
    let shards = shards.map(shards_json);
    let mut select = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM strata_timers
         WHERE service = ?1 AND state = 'pending'
           AND (?2 IS NULL OR shard IN (SELECT value FROM json_each(?2)))
         ORDER BY attempt_at_ms LIMIT ?3"
    ))?;
    let rows = select.query_map(params![service, shards, limit], stored_timer)?;
    rows.collect()
}

pub(crate) fn next_due(conn: &Connection, service: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT min(attempt_at_ms) FROM strata_timers WHERE service = ?1 AND state = 'pending'")?
        .query_row(params![service], |row| row.get(0))
        .optional()
        .map(Option::flatten)
}

pub(crate) fn list(
    conn: &Connection,
    service: &str,
    state: TimerState,
    limit: u32,
) -> rusqlite::Result<Vec<StoredTimer>> {
    let order = match state {
        TimerState::Pending => "ASC",
        TimerState::Failed => "DESC",
    };
    let mut select = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM strata_timers WHERE service = ?1 AND state = ?2
         ORDER BY attempt_at_ms {order} LIMIT ?3"
    ))?;
    let rows = select.query_map(params![service, state.as_str(), limit], stored_timer)?;
    rows.collect()
}

pub(crate) fn count(conn: &Connection, service: &str) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached(
        "SELECT coalesce(sum(state = 'pending'), 0), coalesce(sum(state = 'failed'), 0)
         FROM strata_timers WHERE service = ?1",
    )?
    .query_row(params![service], |row| Ok((row.get(0)?, row.get(1)?)))
}

fn stored_timer(row: &Row<'_>) -> rusqlite::Result<StoredTimer> {
    let state: String = row.get(14)?;
    Ok(StoredTimer {
        key: TimerKey {
            service: row.get(0)?,
            owner: row.get(1)?,
            entity_id: row.get(2)?,
            name: row.get(3)?,
        },
        shard: row.get(4)?,
        due_ms: row.get(5)?,
        attempt_at_ms: row.get(6)?,
        call: crate::TimerCall {
            service_name: row.get(7)?,
            method: row.get(8)?,
            payload: Any {
                type_url: row.get(9)?,
                value: row.get(10)?,
            },
        },
        attempts: row.get(11)?,
        max_attempts: row.get(12)?,
        generation: row.get(13)?,
        state: TimerState::parse(&state),
        last_error: row.get(15)?,
    })
}
