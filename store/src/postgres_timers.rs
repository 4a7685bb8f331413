//! The PostgreSQL store's timers: the tables, the writer's prepared statements
//! (schedule, cancel, claim a shard, begin and finish an attempt, applied inside
//! a batch's transaction) and the reads. Owns the SQL only, as
//! `sqlite_timers.rs` does for SQLite.

use prost_types::Any;
use tokio_postgres::{Client, Row, Statement};

use crate::{AttemptEnd, StoredTimer, TimerAttempt, TimerCall, TimerChange, TimerKey, TimerState};

pub(crate) const TIMER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strata_timers (
    service TEXT NOT NULL,
    owner TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    due_ms BIGINT NOT NULL,
    attempt_at_ms BIGINT NOT NULL,
    target_service TEXT NOT NULL,
    target_method TEXT NOT NULL,
    type_url TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    generation BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    PRIMARY KEY (service, owner, entity_id, name)
);
CREATE INDEX IF NOT EXISTS strata_timers_by_time ON strata_timers (service, state, attempt_at_ms);
CREATE TABLE IF NOT EXISTS strata_timer_shards (
    service TEXT NOT NULL,
    shard INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (service, shard)
);
";

const COLUMNS: &str = "service, owner, entity_id, name, shard, due_ms, attempt_at_ms, target_service, \
                       target_method, type_url, bytes, attempts, max_attempts, generation, state, last_error";

/// The writer's timer statements, prepared once per connection.
pub(crate) struct TimerWrites {
    schedule: Statement,
    cancel: Statement,
    claim: Statement,
    begin: Statement,
    fired: Statement,
    retry: Statement,
    failed: Statement,
}

impl TimerWrites {
    pub(crate) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            schedule: client
                .prepare(
                    "INSERT INTO strata_timers AS t (service, owner, entity_id, name, shard, due_ms, attempt_at_ms,
                         target_service, target_method, type_url, bytes, attempts, max_attempts, generation,
                         state, last_error)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, 0, $11, 1, 'pending', NULL)
                     ON CONFLICT (service, owner, entity_id, name) DO UPDATE SET
                         shard = EXCLUDED.shard, due_ms = EXCLUDED.due_ms, attempt_at_ms = EXCLUDED.attempt_at_ms,
                         target_service = EXCLUDED.target_service, target_method = EXCLUDED.target_method,
                         type_url = EXCLUDED.type_url, bytes = EXCLUDED.bytes, attempts = 0,
                         max_attempts = EXCLUDED.max_attempts, generation = t.generation + 1,
                         state = 'pending', last_error = NULL",
                )
                .await?,
            cancel: client
                .prepare("DELETE FROM strata_timers WHERE service = $1 AND owner = $2 AND entity_id = $3 AND name = $4")
                .await?,
            claim: client
                .prepare(
                    "INSERT INTO strata_timer_shards AS s (service, shard, epoch) VALUES ($1, $2, $3)
                     ON CONFLICT (service, shard) DO UPDATE SET epoch = EXCLUDED.epoch WHERE EXCLUDED.epoch >= s.epoch",
                )
                .await?,
            begin: client
                .prepare(
                    "UPDATE strata_timers t SET attempts = attempts + 1, attempt_at_ms = $6
                     WHERE service = $1 AND owner = $2 AND entity_id = $3 AND name = $4 AND generation = $5
                       AND state = 'pending'
                       AND ($7::BIGINT IS NULL OR $7::BIGINT = (SELECT s.epoch FROM strata_timer_shards s
                                                               WHERE s.service = t.service AND s.shard = t.shard))",
                )
                .await?,
            fired: client
                .prepare(
                    "DELETE FROM strata_timers
                     WHERE service = $1 AND owner = $2 AND entity_id = $3 AND name = $4 AND generation = $5",
                )
                .await?,
            retry: client
                .prepare(
                    "UPDATE strata_timers SET attempt_at_ms = $6, last_error = $7
                     WHERE service = $1 AND owner = $2 AND entity_id = $3 AND name = $4 AND generation = $5",
                )
                .await?,
            failed: client
                .prepare(
                    "UPDATE strata_timers SET state = 'failed', attempt_at_ms = $6, last_error = $7
                     WHERE service = $1 AND owner = $2 AND entity_id = $3 AND name = $4 AND generation = $5",
                )
                .await?,
        })
    }

    /// Applies a command's timer changes in order.
    pub(crate) async fn apply(&self, client: &Client, changes: &[TimerChange]) -> Result<(), tokio_postgres::Error> {
        for change in changes {
            match change {
                TimerChange::Schedule(timer) => {
                    let key = &timer.key;
                    let shard = i32::try_from(timer.shard).unwrap_or(i32::MAX);
                    let max_attempts = i32::try_from(timer.max_attempts).unwrap_or(i32::MAX);
                    client
                        .execute(
                            &self.schedule,
                            &[
                                &key.service,
                                &key.owner,
                                &key.entity_id,
                                &key.name,
                                &shard,
                                &timer.due_ms,
                                &timer.call.service_name,
                                &timer.call.method,
                                &timer.call.payload.type_url,
                                &timer.call.payload.value,
                                &max_attempts,
                            ],
                        )
                        .await?;
                }
                TimerChange::Cancel(key) => {
                    client
                        .execute(&self.cancel, &[&key.service, &key.owner, &key.entity_id, &key.name])
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// `false` (nothing changed) when a newer epoch holds the shard.
    pub(crate) async fn claim(
        &self,
        client: &Client,
        service: &str,
        shard: u32,
        epoch: u64,
    ) -> Result<bool, tokio_postgres::Error> {
        let shard = i32::try_from(shard).unwrap_or(i32::MAX);
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        Ok(client.execute(&self.claim, &[&service, &shard, &epoch]).await? > 0)
    }

    /// `false` (nothing changed) when the timer is not the one read or its
    /// shard moved on.
    pub(crate) async fn begin(&self, client: &Client, attempt: &TimerAttempt) -> Result<bool, tokio_postgres::Error> {
        let key = &attempt.key;
        let epoch = attempt.epoch.map(|e| i64::try_from(e).unwrap_or(i64::MAX));
        let changed = client
            .execute(
                &self.begin,
                &[
                    &key.service,
                    &key.owner,
                    &key.entity_id,
                    &key.name,
                    &attempt.generation,
                    &attempt.lease_until_ms,
                    &epoch,
                ],
            )
            .await?;
        Ok(changed > 0)
    }

    pub(crate) async fn finish(
        &self,
        client: &Client,
        key: &TimerKey,
        generation: i64,
        end: &AttemptEnd,
    ) -> Result<(), tokio_postgres::Error> {
        let (service, owner, entity_id, name) = (&key.service, &key.owner, &key.entity_id, &key.name);
        match end {
            AttemptEnd::Fired => {
                client
                    .execute(&self.fired, &[service, owner, entity_id, name, &generation])
                    .await?
            }
            AttemptEnd::Retry { attempt_at_ms, error } => {
                client
                    .execute(
                        &self.retry,
                        &[service, owner, entity_id, name, &generation, attempt_at_ms, error],
                    )
                    .await?
            }
            AttemptEnd::Failed { error, at_ms } => {
                client
                    .execute(
                        &self.failed,
                        &[service, owner, entity_id, name, &generation, at_ms, error],
                    )
                    .await?
            }
        };
        Ok(())
    }
}

pub(crate) async fn due(
    client: &Client,
    service: &str,
    shards: Option<&[u32]>,
    limit: u32,
) -> Result<Vec<StoredTimer>, tokio_postgres::Error> {
    let shards: Option<Vec<i32>> = shards.map(|s| s.iter().map(|&n| i32::try_from(n).unwrap_or(i32::MAX)).collect());
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM strata_timers
                 WHERE service = $1 AND state = 'pending' AND ($2::INT[] IS NULL OR shard = ANY($2::INT[]))
                 ORDER BY attempt_at_ms LIMIT $3"
            ),
            &[&service, &shards, &i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(stored_timer).collect())
}

pub(crate) async fn next_due(client: &Client, service: &str) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT min(attempt_at_ms) FROM strata_timers WHERE service = $1 AND state = 'pending'",
            &[&service],
        )
        .await?;
    Ok(row.get(0))
}

pub(crate) async fn list(
    client: &Client,
    service: &str,
    state: TimerState,
    limit: u32,
) -> Result<Vec<StoredTimer>, tokio_postgres::Error> {
    let order = match state {
        TimerState::Pending => "ASC",
        TimerState::Failed => "DESC",
    };
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM strata_timers WHERE service = $1 AND state = $2
                 ORDER BY attempt_at_ms {order} LIMIT $3"
            ),
            &[&service, &state.as_str(), &i64::from(limit)],
        )
        .await?;
    Ok(rows.iter().map(stored_timer).collect())
}

pub(crate) async fn count(client: &Client, service: &str) -> Result<(u64, u64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'failed')
             FROM strata_timers WHERE service = $1",
            &[&service],
        )
        .await?;
    let (pending, failed): (i64, i64) = (row.get(0), row.get(1));
    Ok((pending.max(0) as u64, failed.max(0) as u64))
}

fn stored_timer(row: &Row) -> StoredTimer {
    let shard: i32 = row.get(4);
    let attempts: i32 = row.get(11);
    let max_attempts: i32 = row.get(12);
    let state: String = row.get(14);
    StoredTimer {
        key: TimerKey {
            service: row.get(0),
            owner: row.get(1),
            entity_id: row.get(2),
            name: row.get(3),
        },
        shard: shard.max(0) as u32,
        due_ms: row.get(5),
        attempt_at_ms: row.get(6),
        call: TimerCall {
            service_name: row.get(7),
            method: row.get(8),
            payload: Any {
                type_url: row.get(9),
                value: row.get(10),
            },
        },
        attempts: attempts.max(0) as u32,
        max_attempts: max_attempts.max(0) as u32,
        generation: row.get(13),
        state: TimerState::parse(&state),
        last_error: row.get(15),
    }
}
