//! Write pipelining for one event-sourced entity: while one journal write is in
//! flight, later commands keep running and their events queue up; the queue goes
//! out as the next single write. Outcomes are released strictly in command order
//! and only once their events are durable, so a hot entity is not limited to one
//! fsync per command and nothing unwritten is ever acknowledged (nor any forward
//! or side effect started for it).

use std::time::Instant;

use prost_types::Any;
use strata_store::{EntityKey, JournalWrite, Snapshot, StoreError, TimerChange};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{
    conversation::store_failed,
    session::{ReplyTo, SessionContext},
};
use crate::{
    call::{CallContext, Outcome},
    error::ProxyError,
    trace,
};

/// A result held back until the write carrying its events is durable.
struct Held {
    reply: ReplyTo,
    answer: Result<Outcome, ProxyError>,
}

/// Commands whose events have not been handed to the store yet.
#[derive(Default)]
struct Batch {
    events: Vec<Any>,
    snapshot: Option<Snapshot>,
    /// The commands' timer changes, in command order: stored with their events.
    timers: Vec<TimerChange>,
    held: Vec<Held>,
    /// The trace of the batch's first traced command: its store write's span
    /// is a step of that command.
    trace: Option<CallContext>,
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
    /// its snapshot, its timer changes, and the answer to release once they are
    /// durable.
    pub(super) fn push(
        &mut self,
        ctx: &SessionContext,
        reply: ReplyTo,
        answer: Result<Outcome, ProxyError>,
        events: Vec<Any>,
        snapshot: Option<Any>,
        timers: Vec<TimerChange>,
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
        self.queued.timers.extend(timers);
        self.queued.held.push(Held { reply, answer });
        if self.in_flight.is_none() {
            self.start(ctx);
        }
    }

    /// Names the command whose outcome comes next, so the write carrying it is
    /// traced as a step of it (of the first such command of a batch).
    pub(super) fn traced(&mut self, context: &CallContext) {
        if self.queued.trace.is_none() && context.trace.is_some() {
            self.queued.trace = Some(*context);
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
    pub(super) fn complete(&mut self, ctx: &SessionContext, result: Result<(), StoreError>) -> bool {
        let Some(in_flight) = self.in_flight.take() else {
            return true;
        };
        match result {
            Ok(()) => {
                release(in_flight.held);
                self.start(ctx);
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
    pub(super) async fn drain(&mut self, ctx: &SessionContext) -> bool {
        while self.writing() {
            let result = self.written().await;
            if !self.complete(ctx, result) {
                return false;
            }
        }
        true
    }

    /// Sends the queued batch as one write; a batch without events or timers
    /// (reads, failures) is released at once, since nothing before it is pending.
    fn start(&mut self, ctx: &SessionContext) {
        debug_assert!(self.in_flight.is_none());
        let batch = std::mem::take(&mut self.queued);
        let first_seq_nr = self.queued_from;
        self.queued_from = self.last_seq_nr + 1;
        if batch.events.is_empty() && batch.timers.is_empty() {
            release(batch.held);
            return;
        }
        let with_timers = !batch.timers.is_empty();
        let bytes = batch.events.iter().map(prost::Message::encoded_len).sum::<usize>()
            + batch
                .snapshot
                .as_ref()
                .map_or(0, |s| prost::Message::encoded_len(&s.payload));
        let span = match &batch.trace {
            Some(context) => trace::leaf(context, || trace::store_write(&self.key.entity_id, bytes)),
            None => trace::store_write(&self.key.entity_id, bytes),
        };
        let write = JournalWrite {
            key: self.key.clone(),
            first_seq_nr,
            events: batch.events,
            snapshot: batch.snapshot,
            timers: batch.timers,
        };
        let store = ctx.store.clone();
        let scope = ctx.timers.clone();
        let histogram = ctx.metrics.persist_seconds.with_label_values(&[self.service.as_str()]);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = store.append(write).instrument(span.clone()).await;
            histogram.observe(started.elapsed().as_secs_f64());
            if let Err(error) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", tracing::field::display(error));
            }
            if with_timers && result.is_ok() {
                scope.stored();
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use strata_store::{JournalEvent, Recovery, Store};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::{
        call::Answer, metrics::Metrics, model::Catalog, sidecar::entity::session::DEFAULT_COMMAND_TIMEOUT,
        sidecar::function::FunctionClient,
    };

    /// A store whose appends wait until the test lets each one finish, with the
    /// outcome the test chooses. Records every write it was given.
    struct GatedStore {
        writes: mpsc::UnboundedSender<(JournalWrite, oneshot::Sender<Result<(), StoreError>>)>,
    }

    #[async_trait]
    impl Store for GatedStore {
        async fn recover(&self, _: &EntityKey) -> Result<Recovery, StoreError> {
            Ok(Recovery::default())
        }
        async fn events(&self, _: &EntityKey, _: i64) -> Result<Vec<JournalEvent>, StoreError> {
            Ok(Vec::new())
        }
        async fn latest_snapshot(&self, _: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
            Ok(None)
        }
        async fn append(&self, write: JournalWrite) -> Result<(), StoreError> {
            let (done, outcome) = oneshot::channel();
            self.writes.send((write, done)).expect("test alive");
            outcome.await.expect("test decides")
        }
        async fn load_value(&self, _: &EntityKey) -> Result<Option<Any>, StoreError> {
            Ok(None)
        }
        async fn save_value(&self, _: &EntityKey, _: Option<Any>) -> Result<(), StoreError> {
            Ok(())
        }
    }

    type Writes = mpsc::UnboundedReceiver<(JournalWrite, oneshot::Sender<Result<(), StoreError>>)>;

    fn setup() -> (SessionContext, Writes, WritePipeline) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = SessionContext {
            detached: tokio::sync::mpsc::unbounded_channel().0,
            function: FunctionClient::new("127.0.0.1", 9).unwrap(),
            store: Arc::new(GatedStore { writes: tx }),
            metrics: Arc::new(Metrics::new()),
            targets: Arc::new(Catalog::default()),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            instance_id: "test".into(),
            timers: Arc::new(crate::sidecar::timer_scope::TimerScope::standalone()),
        };
        let pipeline = WritePipeline::new(EntityKey::new("cart", "hot"), "Cart".into(), 10);
        (ctx, rx, pipeline)
    }

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: Vec::new(),
        }
    }

    fn command(
        pipeline: &mut WritePipeline,
        ctx: &SessionContext,
        answer: &str,
        events: &[&str],
        snapshot: Option<&str>,
    ) -> oneshot::Receiver<Result<Outcome, ProxyError>> {
        let (reply, released) = oneshot::channel();
        let events = events.iter().map(|e| any(e)).collect();
        pipeline.push(ctx, reply, Ok(reply_of(answer)), events, snapshot.map(any), Vec::new());
        released
    }

    fn cancel(name: &str) -> TimerChange {
        TimerChange::Cancel(strata_store::TimerKey {
            service: "svc".into(),
            owner: "Cart".into(),
            entity_id: "hot".into(),
            name: name.into(),
        })
    }

    #[tokio::test]
    async fn timers_ride_in_the_write_of_their_command_even_without_events() {
        let (ctx, mut writes, mut pipeline) = setup();
        // --- a command with an event and a timer: one write carries both
        let (reply, mut first) = oneshot::channel();
        pipeline.push(
            &ctx,
            reply,
            Ok(reply_of("a")),
            vec![any("e1")],
            None,
            vec![cancel("t1")],
        );
        let (write, finish) = writes.recv().await.unwrap();
        assert_eq!((write.events.len(), write.timers.clone()), (1, vec![cancel("t1")]));
        // --- a command with only a timer waits for the next write, and is released after it
        let (reply, mut second) = oneshot::channel();
        pipeline.push(&ctx, reply, Ok(reply_of("b")), vec![], None, vec![cancel("t2")]);
        finish.send(Ok(())).unwrap();
        let result = pipeline.written().await;
        assert!(pipeline.complete(&ctx, result));
        assert!(first.try_recv().is_ok());
        let (write, finish) = writes.recv().await.unwrap();
        assert_eq!((write.first_seq_nr, write.events.len()), (12, 0));
        assert_eq!(write.timers, vec![cancel("t2")]);
        assert!(second.try_recv().is_err(), "released only once its timer is durable");
        finish.send(Ok(())).unwrap();
        let result = pipeline.written().await;
        assert!(pipeline.complete(&ctx, result));
        assert_eq!(second.try_recv().unwrap().unwrap(), reply_of("b"));
    }

    fn reply_of(answer: &str) -> Outcome {
        Outcome::reply(Answer::new(any(answer)))
    }

    #[tokio::test]
    async fn replies_wait_for_their_write_and_later_commands_share_the_next_one() {
        let (ctx, mut writes, mut pipeline) = setup();

        // --- the first command's events go out at once, as seq 11
        let mut a = command(&mut pipeline, &ctx, "a", &["e1"], None);
        let (first, finish_first) = writes.recv().await.unwrap();
        assert_eq!((first.first_seq_nr, first.events.len()), (11, 1));

        // --- while it is in flight, two more commands and a read queue up
        let mut b = command(&mut pipeline, &ctx, "b", &["e2", "e3"], None);
        let mut c = command(&mut pipeline, &ctx, "c", &["e4"], Some("snap"));
        let mut read = command(&mut pipeline, &ctx, "read", &[], None);
        assert!(a.try_recv().is_err(), "nothing is released before it is durable");
        assert!(writes.try_recv().is_err(), "one write in flight at a time");

        // --- the first write lands: only its reply is released; the queue goes out as one write
        finish_first.send(Ok(())).unwrap();
        let result = pipeline.written().await;
        assert!(pipeline.complete(&ctx, result));
        assert_eq!(a.try_recv().unwrap().unwrap(), reply_of("a"));
        let (second, finish_second) = writes.recv().await.unwrap();
        assert_eq!(second.first_seq_nr, 12);
        assert_eq!(second.events, vec![any("e2"), any("e3"), any("e4")]);
        let snapshot = second.snapshot.clone().unwrap();
        assert_eq!((snapshot.seq_nr, snapshot.payload), (14, any("snap")));
        assert!(b.try_recv().is_err() && c.try_recv().is_err() && read.try_recv().is_err());

        // --- the second write lands: the rest are released, in order
        finish_second.send(Ok(())).unwrap();
        assert!(pipeline.drain(&ctx).await);
        assert_eq!(b.try_recv().unwrap().unwrap(), reply_of("b"));
        assert_eq!(c.try_recv().unwrap().unwrap(), reply_of("c"));
        assert_eq!(read.try_recv().unwrap().unwrap(), reply_of("read"));
        assert!(!pipeline.writing());

        // --- with nothing pending, a read is answered at once
        let mut idle_read = command(&mut pipeline, &ctx, "r2", &[], None);
        assert_eq!(idle_read.try_recv().unwrap().unwrap(), reply_of("r2"));
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_held_reply() {
        let (ctx, mut writes, mut pipeline) = setup();
        let mut a = command(&mut pipeline, &ctx, "a", &["e1"], None);
        let mut b = command(&mut pipeline, &ctx, "b", &["e2"], None);
        let mut read = command(&mut pipeline, &ctx, "read", &[], None);
        let (_, finish) = writes.recv().await.unwrap();
        finish
            .send(Err(StoreError::Conflict {
                entity_id: "hot".into(),
                seq_nr: 11,
            }))
            .unwrap();
        assert!(!pipeline.drain(&ctx).await, "the entity must restart");
        for held in [&mut a, &mut b, &mut read] {
            assert!(matches!(held.try_recv().unwrap(), Err(ProxyError::Aborted(_))));
        }
        assert!(writes.try_recv().is_err(), "nothing after a failed write is written");
    }
}
