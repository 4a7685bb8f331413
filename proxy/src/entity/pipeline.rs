//! Write pipelining for one event-sourced entity: while one journal write is in
//! flight, later commands keep running and their events queue up; the queue goes
//! out as the next single write. Replies are released strictly in command order
//! and only once their events are durable, so a hot entity is not limited to one
//! fsync per command and nothing unwritten is ever acknowledged.

use std::time::Instant;

use prost_types::Any;
use strata_store::{EntityKey, JournalWrite, Snapshot, StoreError};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{protocol::store_failed, Shared};
use crate::error::ProxyError;

type ReplyTo = oneshot::Sender<Result<Any, ProxyError>>;

/// A reply held back until the write carrying its events is durable.
struct Held {
    reply: ReplyTo,
    answer: Result<Any, ProxyError>,
}

/// Commands whose events have not been handed to the store yet.
#[derive(Default)]
struct Batch {
    events: Vec<Any>,
    snapshot: Option<Snapshot>,
    held: Vec<Held>,
}

struct InFlight {
    task: JoinHandle<Result<(), StoreError>>,
    held: Vec<Held>,
}

pub(super) struct WritePipeline {
    key: EntityKey,
    service: String,
    /// The sequence number of the last event accepted from the function.
    last_seq_nr: i64,
    /// The sequence number of the first event in `queued`.
    queued_from: i64,
    queued: Batch,
    in_flight: Option<InFlight>,
}

impl WritePipeline {
    /// A pipeline for an entity whose journal ends at `last_seq_nr`.
    pub(super) fn new(key: EntityKey, service: String, last_seq_nr: i64) -> Self {
        Self {
            key,
            service,
            last_seq_nr,
            queued_from: last_seq_nr + 1,
            queued: Batch::default(),
            in_flight: None,
        }
    }

    /// Accepts one command's outcome: its events (numbered on from the last ones),
    /// its snapshot, and the answer to release once they are durable.
    pub(super) fn push(
        &mut self,
        shared: &Shared,
        reply: ReplyTo,
        answer: Result<Any, ProxyError>,
        events: Vec<Any>,
        snapshot: Option<Any>,
    ) {
        self.last_seq_nr += events.len() as i64;
        if let Some(payload) = snapshot {
            // The protocol only allows a snapshot with events (checked before),
            // and it includes them all.
            self.queued.snapshot = Some(Snapshot {
                seq_nr: self.last_seq_nr,
                payload,
            });
        }
        self.queued.events.extend(events);
        self.queued.held.push(Held { reply, answer });
        if self.in_flight.is_none() {
            self.start(shared);
        }
    }

    /// Whether a write is in flight (its completion must be awaited).
    pub(super) fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the write in flight. Cancel-safe: the write goes on if the
    /// caller stops waiting.
    pub(super) async fn written(&mut self) -> Result<(), StoreError> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(());
        };
        match (&mut in_flight.task).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("the write task stopped".into())),
        }
    }

    /// Handles the outcome of the write in flight: releases its replies and sends
    /// the next batch, or fails every held reply. `false` means the entity must
    /// restart (the function holds events that are not in the store).
    pub(super) fn complete(&mut self, shared: &Shared, result: Result<(), StoreError>) -> bool {
        let Some(in_flight) = self.in_flight.take() else {
            return true;
        };
        match result {
            Ok(()) => {
                release(in_flight.held);
                self.start(shared);
                true
            }
            Err(error) => {
                let failure = store_failed(error);
                for held in in_flight.held.into_iter().chain(std::mem::take(&mut self.queued.held)) {
                    let _ = held.reply.send(Err(failure.clone()));
                }
                self.queued = Batch::default();
                false
            }
        }
    }

    /// Waits until everything accepted is durable (or failed). `false` if a write
    /// failed.
    pub(super) async fn drain(&mut self, shared: &Shared) -> bool {
        while self.writing() {
            let result = self.written().await;
            if !self.complete(shared, result) {
                return false;
            }
        }
        true
    }

    /// Sends the queued batch as one write; a batch without events (reads,
    /// failures) is released at once, since nothing before it is pending.
    fn start(&mut self, shared: &Shared) {
        debug_assert!(self.in_flight.is_none());
        let batch = std::mem::take(&mut self.queued);
        let first_seq_nr = self.queued_from;
        self.queued_from = self.last_seq_nr + 1;
        if batch.events.is_empty() {
            release(batch.held);
            return;
        }
        let write = JournalWrite {
            key: self.key.clone(),
            first_seq_nr,
            events: batch.events,
            snapshot: batch.snapshot,
        };
        let store = shared.store.clone();
        let histogram = shared
            .metrics
            .persist_seconds
            .with_label_values(&[self.service.as_str()]);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = store.append(write).await;
            histogram.observe(started.elapsed().as_secs_f64());
            result
        });
        self.in_flight = Some(InFlight { task, held: batch.held });
    }
}

fn release(held: Vec<Held>) {
    for held in held {
        let _ = held.reply.send(held.answer);
    }
}
