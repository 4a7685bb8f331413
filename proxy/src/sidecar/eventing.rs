//! Eventing from event logs: feeds every action method subscribed with
//! `(cloudstate.eventing).in.event_log = "<persistence id>"` each event of that
//! entity type, as the method's input, in the order the journal writes committed
//! (so in sequence order per entity), at least once.
//!
//! A method takes the events of its input type, or every event if its input is
//! `google.protobuf.Any` (the only way to take JSON events), so several methods
//! may share one event log, each with its own offset. A server-streamed method
//! is called with the one event and its answers are drained.
//!
//! One runner per subscription reads the store's event log after the
//! subscriber's stored offset, calls the method through the sidecar's own
//! dispatcher (so a forward or side effects the action asks for are performed
//! like any call's), and saves the offset only once every event of a journal
//! write was handled. A failed delivery is counted, logged and retried with
//! backoff; the runner never moves past an event that failed.
//!
//! Which instance runs a subscription: a standalone sidecar runs all of its
//! function's; in a deployment, the instance that owns shard
//! [`SUBSCRIPTION_SHARD`] of its service does, so exactly one instance runs
//! them and they move with that shard (a shard move may let two overlap for a
//! moment: at least once, and offsets only move forward). A service at zero
//! instances consumes nothing; the sidecars that write its event logs wake it
//! (`wake`: one poke per subscriber a second, and a sweep for one left
//! behind), and it catches up from its offset. Each delivery counts as a request of the subscriber's service (in
//! flight while it runs, then `strata_proxy_requests_total` with protocol
//! `event_log`), so the autoscaler keeps a subscriber that is catching up and
//! lets it go back to zero after its windows once it has.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use strata_proto::cloudstate::{metadata_entry, Metadata, MetadataEntry};
use strata_store::{LogOffset, LoggedEvent, Store, StoreError};
use strata_tasks::Tasks;
use tokio::sync::watch;

use crate::{
    backoff::Backoff,
    call::{Call, CallContext, Commands, StreamedCall},
    error::ProxyError,
    ingress::Measure,
    metrics::Metrics,
    model::Subscription,
    sidecar::membership::Ownership,
};

/// The shard of the subscribing service whose owner runs its subscriptions.
pub const SUBSCRIPTION_SHARD: u32 = 0;

/// The `protocol` label of deliveries in the request metrics.
pub const DELIVERY_PROTOCOL: &str = "event_log";

/// How many journal writes one read of the event log takes.
const BATCH_WRITES: u32 = 100;

/// Metadata keys of a delivered event: CloudEvents' binary-mode attributes, as
/// CloudState's proxy sent them, plus the `sequence` extension.
pub mod keys {
    pub const SPEC_VERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    /// The persistence id.
    pub const SOURCE: &str = "ce-source";
    /// The event's message type.
    pub const TYPE: &str = "ce-type";
    /// The entity id.
    pub const SUBJECT: &str = "ce-subject";
    /// The event's sequence number in its entity's journal.
    pub const SEQUENCE: &str = "ce-sequence";
}

/// Pacing of a runner: how often an idle one reads the log again, and how its
/// retries of a failed delivery or store call back off.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub idle: Backoff,
    pub retry: Backoff,
}

impl Default for Pacing {
    /// Idle reads 20 ms doubling to 500 ms; retries 100 ms doubling to 10 s.
    fn default() -> Self {
        Pacing {
            idle: Backoff::new(Duration::from_millis(20), Duration::from_millis(500)),
            retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
        }
    }
}

/// Runs the subscriptions of one sidecar's function.
pub struct Eventing {
    pub store: Arc<dyn Store>,
    /// The sidecar's dispatcher: the action's call and what it asks for next.
    pub commands: Arc<dyn Commands>,
    pub metrics: Arc<Metrics>,
    /// The shards this instance owns; `None` for a standalone sidecar.
    pub ownership: Option<watch::Receiver<Ownership>>,
    pub pacing: Pacing,
}

impl Eventing {
    /// Starts one runner per subscription on `tasks`; each stops with them (a
    /// delivery cut short comes again: at least once).
    pub fn spawn(self: &Arc<Self>, subscriptions: &[Subscription], tasks: &Tasks) {
        for subscription in subscriptions {
            tracing::info!(
                subscriber = %subscription.subscriber(),
                event_log = %subscription.event_log,
                "subscribing to an event log"
            );
            let (eventing, subscription, stopping) = (self.clone(), subscription.clone(), tasks.stopping());
            tasks.spawn("event log subscription", async move {
                tokio::select! {
                    () = stopping.wait() => {}
                    () = eventing.run(subscription) => {}
                }
            });
        }
    }

    /// Consumes while this instance runs subscriptions; waits while it does not.
    pub async fn run(&self, subscription: Subscription) {
        let subscriber = subscription.subscriber();
        let running = self.metrics.subscriptions_running.with_label_values(&[&subscriber]);
        running.set(0);
        loop {
            if !self.wait_to_lead(true).await {
                return;
            }
            tracing::info!(%subscriber, "this instance runs the subscription");
            running.set(1);
            let still_led = tokio::select! {
                () = self.consume(&subscription) => true,
                led = self.wait_to_lead(false) => led,
            };
            running.set(0);
            if !still_led {
                return;
            }
            tracing::info!(%subscriber, "the subscription moved to another instance");
        }
    }

    /// Waits until this instance runs subscriptions (`leading`) or stops
    /// running them (`!leading`); `false` once the sidecar is shutting down.
    async fn wait_to_lead(&self, leading: bool) -> bool {
        match &self.ownership {
            None if leading => true,
            None => std::future::pending().await,
            Some(ownership) => ownership
                .clone()
                .wait_for(|o| runs_subscriptions(Some(o)) == leading)
                .await
                .is_ok(),
        }
    }

    /// Reads and delivers for ever, from the stored offset on.
    async fn consume(&self, subscription: &Subscription) {
        let subscriber = subscription.subscriber();
        let event_log = subscription.event_log.as_str();
        let mut pacing = self.pacing.clone();
        let mut offset = self
            .store_retrying(&subscriber, &mut pacing.retry, || {
                self.store.load_offset(&subscriber, event_log)
            })
            .await;
        tracing::debug!(%subscriber, ?offset, "resuming from the stored offset");
        loop {
            let events = self
                .store_retrying(&subscriber, &mut pacing.retry, || {
                    self.store.event_log(event_log, offset, BATCH_WRITES)
                })
                .await;
            if events.is_empty() {
                pacing.idle.wait().await;
                continue;
            }
            pacing.idle.reset();
            for write in journal_writes(events) {
                for event in write
                    .events
                    .iter()
                    .filter(|e| subscription.accepts(&e.payload.type_url))
                {
                    self.deliver(subscription, event, &mut pacing.retry).await;
                }
                self.store_retrying(&subscriber, &mut pacing.retry, || {
                    self.store.save_offset(&subscriber, event_log, write.offset)
                })
                .await;
                offset = write.offset;
            }
        }
    }

    /// Delivers one event until the action takes it.
    async fn deliver(&self, subscription: &Subscription, event: &LoggedEvent, retry: &mut Backoff) {
        let subscriber = subscription.subscriber();
        loop {
            // A delivery is a request of the subscriber's service to the autoscaler
            // (in flight while it runs, then counted by outcome), so a subscriber
            // that was woken to catch up is kept until it has.
            let mut measure = Measure::start(&self.metrics, Some(subscription.method.clone()), DELIVERY_PROTOCOL);
            let delivered = self.call(delivery(subscription, event)).await;
            measure.finish(delivered.as_ref().err());
            drop(measure);
            match delivered {
                Ok(()) => {
                    self.metrics.events_delivered.with_label_values(&[&subscriber]).inc();
                    retry.reset();
                    return;
                }
                Err(error) => {
                    self.metrics.event_failures.with_label_values(&[&subscriber]).inc();
                    tracing::warn!(
                        %subscriber,
                        entity_id = %event.entity_id,
                        seq_nr = event.seq_nr,
                        %error,
                        retry_in = ?retry.peek(),
                        "the subscriber failed on an event; retrying it"
                    );
                    retry.wait().await;
                }
            }
        }
    }

    /// One call of the subscriber: unary, or server-streamed (every answer is
    /// settled, and the call succeeds once its stream ends without an error).
    async fn call(&self, call: Call) -> Result<(), ProxyError> {
        if !call.method.descriptor.is_server_streaming() {
            return self.commands.unary(call).await.map(drop);
        }
        let Call {
            method,
            payload,
            metadata,
            context,
            ..
        } = call;
        let mut answers = self
            .commands
            .streamed(StreamedCall {
                method,
                requests: futures::stream::once(async move { Ok(payload) }).boxed(),
                metadata,
                context,
            })
            .await?;
        while let Some(answer) = answers.next().await {
            answer?;
        }
        Ok(())
    }

    /// Runs one store call until it succeeds, logging each failure.
    async fn store_retrying<T, F, Fut>(&self, subscriber: &str, retry: &mut Backoff, call: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            match call().await {
                Ok(value) => return value,
                Err(error) => {
                    tracing::warn!(%subscriber, %error, retry_in = ?retry.peek(), "event log unavailable; retrying");
                    retry.wait().await;
                }
            }
        }
    }
}

/// Whether an instance owning these shards runs its function's subscriptions
/// (`None`: a standalone sidecar, which does).
pub fn runs_subscriptions(ownership: Option<&Ownership>) -> bool {
    ownership.is_none_or(|o| o.owns_shard(SUBSCRIPTION_SHARD))
}

/// The events of one journal write, and the offset that marks it handled.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalWrite {
    pub offset: LogOffset,
    pub events: Vec<LoggedEvent>,
}

/// Groups events as the log hands them out (in log order) into their writes.
pub fn journal_writes(events: Vec<LoggedEvent>) -> Vec<JournalWrite> {
    let mut writes: Vec<JournalWrite> = Vec::new();
    for event in events {
        match writes.last_mut() {
            Some(write) if write.offset == event.offset => write.events.push(event),
            _ => writes.push(JournalWrite {
                offset: event.offset,
                events: vec![event],
            }),
        }
    }
    writes
}

/// The call that hands `event` to the subscribed method: the event as its
/// input (JSON events' `json.cloudstate.io/...` payloads as they are), with
/// CloudEvents metadata naming its entity and sequence number.
pub fn delivery(subscription: &Subscription, event: &LoggedEvent) -> Call {
    Call {
        method: subscription.method.clone(),
        entity_id: None,
        payload: event.payload.clone(),
        metadata: Some(event_metadata(&subscription.event_log, event)),
        context: CallContext::default(),
    }
}

/// The metadata of a delivered event (see [`keys`]).
pub fn event_metadata(persistence_id: &str, event: &LoggedEvent) -> Metadata {
    let type_name = event
        .payload
        .type_url
        .rsplit_once('/')
        .map_or(event.payload.type_url.as_str(), |(_, name)| name);
    let entries = [
        (keys::SPEC_VERSION, "1.0".to_owned()),
        (
            keys::ID,
            format!("{persistence_id}/{}/{}", event.entity_id, event.seq_nr),
        ),
        (keys::SOURCE, persistence_id.to_owned()),
        (keys::TYPE, type_name.to_owned()),
        (keys::SUBJECT, event.entity_id.clone()),
        (keys::SEQUENCE, event.seq_nr.to_string()),
    ];
    Metadata {
        entries: entries
            .into_iter()
            .map(|(key, value)| MetadataEntry {
                key: key.to_owned(),
                value: Some(metadata_entry::Value::StringValue(value)),
            })
            .collect(),
    }
}

#[cfg(test)]
#[path = "eventing_tests.rs"]
mod tests;
