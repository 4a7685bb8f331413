//! The group-commit queue both stores share: writes from many callers wait in one
//! channel, one writer takes everything queued and commits it in one transaction,
//! then answers each caller. This module owns the batching and the counters, not SQL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prost_types::Any;
use tokio::sync::{mpsc, oneshot};

use crate::{
    AttemptEnd, CrdtWrite, EntityKey, JournalWrite, LogOffset, StoreError, StoreStats, TimerAttempt, TimerChange,
    TimerKey,
};

/// The most writes one transaction carries: large enough that one fsync serves
/// hundreds of commands, small enough that one transaction stays short.
pub(crate) const MAX_BATCH: usize = 512;

/// Writes waiting for the writer before callers are made to wait to enqueue.
const QUEUE_CAPACITY: usize = 4096;

/// One write as the writer applies it.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Append(JournalWrite),
    SaveValue {
        key: EntityKey,
        value: Option<Any>,
        timers: Vec<TimerChange>,
    },
    SaveCrdt(CrdtWrite),
    SaveOffset {
        subscriber: String,
        persistence_id: String,
        offset: LogOffset,
    },
    WriteTimers(Vec<TimerChange>),
    ClaimTimerShard {
        service: String,
        shard: u32,
        epoch: u64,
    },
    BeginTimerAttempt(TimerAttempt),
    FinishTimer {
        key: TimerKey,
        generation: i64,
        end: AttemptEnd,
    },
}

/// A write waiting in the queue with the way back to its caller.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub op: WriteOp,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// How a batch ended.
pub(crate) enum BatchOutcome {
    /// The transaction committed; one result per write, in batch order. A write
    /// that failed inside it was rolled back to its savepoint and stored nothing.
    Committed(Vec<Result<(), StoreError>>),
    /// The transaction did not commit: every write in the batch fails with this.
    Failed(StoreError),
}

#[derive(Debug, Default)]
struct Counters {
    writes_queued: AtomicU64,
    writes_committed: AtomicU64,
    conflicts: AtomicU64,
    transactions: AtomicU64,
    failed_transactions: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            writes_queued: self.writes_queued.load(Ordering::Relaxed),
            writes_committed: self.writes_committed.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            failed_transactions: self.failed_transactions.load(Ordering::Relaxed),
        }
    }
}

/// The callers' end of the queue.
#[derive(Debug, Clone)]
pub(crate) struct WriteQueue {
    tx: mpsc::Sender<PendingWrite>,
    counters: Arc<Counters>,
}

/// The writer's end of the queue.
pub(crate) struct WriteReceiver {
    rx: mpsc::Receiver<PendingWrite>,
    counters: Arc<Counters>,
}

/// A new queue. The writer stops when every [`WriteQueue`] is dropped and the
/// queue is empty.
pub(crate) fn write_queue() -> (WriteQueue, WriteReceiver) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let counters = Arc::new(Counters::default());
    (
        WriteQueue {
            tx,
            counters: counters.clone(),
        },
        WriteReceiver { rx, counters },
    )
}

impl WriteQueue {
    /// Queues a write and waits until the writer has committed it (or failed).
    pub async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(PendingWrite { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        self.counters.writes_queued.fetch_add(1, Ordering::Relaxed);
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped before confirming the write".into()))?
    }

    pub fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
}

impl WriteReceiver {
    /// Waits for the next batch on a dedicated thread; `None` once every caller is gone.
    pub fn next_batch_blocking(&mut self) -> Option<Vec<PendingWrite>> {
        let first = self.rx.blocking_recv()?;
        Some(self.fill(first))
    }

    /// Waits for the next batch on the runtime; `None` once every caller is gone.
    pub async fn next_batch(&mut self) -> Option<Vec<PendingWrite>> {
        let first = self.rx.recv().await?;
        Some(self.fill(first))
    }

    /// Takes whatever else is already queued: the writes that arrived while the
    /// previous transaction was being synced share the next one.
    fn fill(&mut self, first: PendingWrite) -> Vec<PendingWrite> {
        let mut batch = Vec::with_capacity(self.rx.len().min(MAX_BATCH) + 1);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        batch
    }

    /// Answers every caller of a batch and counts the outcome.
    pub fn answer(&self, batch: Vec<PendingWrite>, outcome: BatchOutcome) {
        let counters = &self.counters;
        match outcome {
            BatchOutcome::Committed(results) => {
                debug_assert_eq!(results.len(), batch.len(), "one result per write");
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                for (write, result) in batch.into_iter().zip(results) {
                    match &result {
                        Ok(()) => counters.writes_committed.fetch_add(1, Ordering::Relaxed),
                        Err(StoreError::Conflict { .. }) => counters.conflicts.fetch_add(1, Ordering::Relaxed),
                        Err(_) => 0,
                    };
                    // A caller that stopped waiting no longer needs the answer.
                    let _ = write.reply.send(result);
                }
            }
            BatchOutcome::Failed(error) => {
                counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
                let message = error.to_string();
                tracing::warn!(writes = batch.len(), error = %message, "write batch failed");
                for write in batch {
                    let _ = write
                        .reply
                        .send(Err(StoreError::Unavailable(unavailable_message(&error))));
                }
            }
        }
    }
}

/// The message every caller of a failed batch gets: the cause without the
/// "store unavailable" prefix that the error's own display adds again.
fn unavailable_message(error: &StoreError) -> String {
    match error {
        StoreError::Unavailable(message) | StoreError::Config(message) => message.clone(),
        StoreError::Conflict { .. } | StoreError::Stale(_) => error.to_string(),
    }
}
