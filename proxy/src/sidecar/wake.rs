//! Waking event-log subscribers from zero: a managed sidecar that commits a
//! journal write to an event log pokes every deployed service that subscribes to
//! that log and has no ready instance, at most once per subscriber per
//! [`WAKE_INTERVAL`] however many events it writes, so events wake a projection
//! as a request would (Knative eventing's answer: delivering an event is a request).
//!
//! A poke can be lost (the control plane between leaders) and a write can land
//! just as a subscriber's last instance goes away (it was ready, so nobody
//! poked). So the writing service's owner of shard 0 also sweeps every
//! [`SWEEP_INTERVAL`]: a subscriber at zero whose stored offset lags behind a log
//! this service writes is poked through the same pacer.
//!
//! Owns the rule (which subscribers, how often) and its shell: a store that
//! notices committed journal writes, the sweep, and one task that pokes. Not
//! the delivery (`eventing`, run by the woken subscriber from its stored
//! offset) nor the scaling (the control plane's autoscaler, which counts
//! deliveries as requests and so keeps the subscriber while it catches up and
//! lets it go after).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use prost_types::Any;
use strata_proto::strata::controlplane::v1::PokeRequest;
use strata_store::{
    CrdtRecord, CrdtWrite, EntityKey, JournalEvent, JournalWrite, LogOffset, LoggedEvent, Recovery, Snapshot, Store,
    StoreError, StoreStats, TimerStore,
};
use strata_tasks::Tasks;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    model::Subscription,
    routing::control_plane::ControlPlaneClient,
    routing::routes::{RouteTable, ServiceTable},
    sidecar::eventing::runs_subscriptions,
    sidecar::membership::Ownership,
};

/// How often one subscriber is poked at most while events for it keep coming (the
/// gateway's held requests are reported at the same pace).
pub const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the writing service looks for subscribers at zero left behind.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How many pokes may wait to be sent.
const POKE_QUEUE: usize = 64;

/// Every subscription of a deployed service with no ready instance, by the
/// routes (their models list their subscriptions). A service with a ready
/// instance consumes already; one still starting is poked again, which
/// changes nothing; one whose first instance never reported has told nobody.
fn asleep(routes: &RouteTable) -> impl Iterator<Item = (&ServiceTable, &Subscription)> {
    routes
        .services
        .values()
        .filter(|service| service.ready.is_empty())
        .flat_map(|service| {
            let subscriptions = service.model.as_ref().map(|model| model.subscriptions.as_slice());
            subscriptions
                .unwrap_or_default()
                .iter()
                .map(move |subscription| (service, subscription))
        })
}

/// The deployed services at zero that subscribe to `event_log`, sorted, each once.
pub fn subscribers_at_zero<'a>(routes: &'a RouteTable, event_log: &str) -> Vec<&'a str> {
    let mut subscribers: Vec<&str> = asleep(routes)
        .filter(|(_, subscription)| subscription.event_log == event_log)
        .map(|(service, _)| service.name.as_str())
        .collect();
    subscribers.sort_unstable();
    subscribers.dedup();
    subscribers
}

/// One subscription of a service at zero to an event log: the service, the
/// subscriber's offset name (`package.Service.Method`) and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sleeping {
    pub service: String,
    pub subscriber: String,
    pub event_log: String,
}

/// The subscriptions of services at zero to any of `logs` (the event logs this
/// sidecar's service writes), sorted.
pub fn sleeping_subscriptions(routes: &RouteTable, logs: &[String]) -> Vec<Sleeping> {
    let mut sleeping: Vec<Sleeping> = asleep(routes)
        .filter(|(_, subscription)| logs.contains(&subscription.event_log))
        .map(|(service, subscription)| Sleeping {
            service: service.name.clone(),
            subscriber: subscription.subscriber(),
            event_log: subscription.event_log.clone(),
        })
        .collect();
    sleeping.sort_by(|a, b| (&a.service, &a.subscriber).cmp(&(&b.service, &b.subscriber)));
    sleeping
}

/// When each subscriber was last poked: one poke per subscriber per interval.
#[derive(Debug)]
pub struct WakePacer {
    interval: Duration,
    last: HashMap<String, Instant>,
}

impl WakePacer {
    pub fn new(interval: Duration) -> Self {
        WakePacer {
            interval,
            last: HashMap::new(),
        }
    }

    /// Which of `subscribers` to poke at `now`: those not poked within the
    /// interval (each is then counted as poked).
    pub fn due<'a>(&mut self, subscribers: impl IntoIterator<Item = &'a str>, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for subscriber in subscribers {
            let recent = self
                .last
                .get(subscriber)
                .is_some_and(|last| now.saturating_duration_since(*last) < self.interval);
            if !recent {
                self.last.insert(subscriber.to_owned(), now);
                due.push(subscriber.to_owned());
            }
        }
        due
    }
}

/// A poke to send: the subscriber and the event log written.
pub type Wake = (String, String);

/// Notices journal writes and hands due pokes to the poking task.
pub struct Waker {
    routes: watch::Receiver<Arc<RouteTable>>,
    pacer: Mutex<WakePacer>,
    pokes: mpsc::Sender<Wake>,
}

impl Waker {
    /// Starts the task that pokes through `client` on `tasks`.
    pub fn start(routes: watch::Receiver<Arc<RouteTable>>, client: ControlPlaneClient, tasks: &Tasks) -> Arc<Self> {
        let (waker, due) = Waker::new(routes, WAKE_INTERVAL);
        let stopping = tasks.stopping();
        tasks.spawn("event-log subscriber waker", async move {
            tokio::select! {
                () = stopping.wait() => {}
                () = poke_each(client, due) => {}
            }
        });
        waker
    }

    /// A waker and the pokes it finds due, for a task to send.
    pub fn new(routes: watch::Receiver<Arc<RouteTable>>, interval: Duration) -> (Arc<Self>, mpsc::Receiver<Wake>) {
        // The pacer lets one message per subscriber per interval through, but
        // while the control plane is slow to answer they would pile up: the
        // queue is bounded, and a poke that finds it full is dropped (the
        // next write after the interval, or the sweep, pokes again).
        let (pokes, due) = mpsc::channel(POKE_QUEUE);
        let waker = Arc::new(Waker {
            routes,
            pacer: Mutex::new(WakePacer::new(interval)),
            pokes,
        });
        (waker, due)
    }

    /// A journal write to `event_log` committed: wake its subscribers at zero
    /// that were not poked within the interval. Never waits.
    pub fn written(&self, event_log: &str) {
        let subscribers: Vec<String> = {
            let routes = self.routes.borrow();
            subscribers_at_zero(&routes, event_log)
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        // Nearly always: nobody subscribed is asleep, and the pacer's lock is not taken.
        if subscribers.is_empty() {
            return;
        }
        self.wake(subscribers.iter().map(String::as_str), event_log);
    }

    /// Pokes those of `subscribers` not poked within the interval, for `event_log`.
    fn wake<'a>(&self, subscribers: impl IntoIterator<Item = &'a str>, event_log: &str) {
        let due = {
            let mut pacer = self.pacer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pacer.due(subscribers, Instant::now())
        };
        for subscriber in due {
            if self.pokes.try_send((subscriber, event_log.to_owned())).is_err() {
                tracing::debug!(%event_log, "the wake queue is full; a later write or sweep pokes again");
            }
        }
    }

    /// One sweep: wakes each subscriber at zero whose stored offset lags
    /// behind one of `logs` (the event logs this service writes). A store
    /// error skips that subscription until the next sweep.
    pub async fn sweep(&self, store: &dyn Store, logs: &[String]) {
        let sleeping = sleeping_subscriptions(&self.routes.borrow(), logs);
        for Sleeping {
            service,
            subscriber,
            event_log,
        } in sleeping
        {
            let behind = async {
                let offset = store.load_offset(&subscriber, &event_log).await?;
                Ok::<_, StoreError>(!store.event_log(&event_log, offset, 1).await?.is_empty())
            };
            match behind.await {
                Ok(true) => {
                    tracing::debug!(%service, %subscriber, %event_log, "a subscriber at zero lags behind its log");
                    self.wake([service.as_str()], &event_log);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%service, %subscriber, %event_log, %error, "cannot tell whether a subscriber at zero lags");
                }
            }
        }
    }
}

/// Sweeps every [`SWEEP_INTERVAL`] while this instance owns shard 0 of its
/// service (one instance of the writing service does it), until `tasks` stop.
pub fn spawn_sweeps(
    waker: Arc<Waker>,
    store: Arc<dyn Store>,
    logs: Vec<String>,
    ownership: watch::Receiver<Ownership>,
    tasks: &Tasks,
) {
    if logs.is_empty() {
        return;
    }
    let stopping = tasks.stopping();
    tasks.spawn("event-log lag sweep", async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = stopping.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {}
            }
            if runs_subscriptions(Some(&ownership.borrow())) {
                waker.sweep(store.as_ref(), &logs).await;
            }
        }
    });
}

/// Sends each poke in turn. A failed one is logged and not retried: the next
/// write to the log after the interval pokes again.
async fn poke_each(client: ControlPlaneClient, mut due: mpsc::Receiver<Wake>) {
    while let Some((subscriber, event_log)) = due.recv().await {
        let request = PokeRequest {
            service: subscriber.clone(),
            held: 1,
            event_log: event_log.clone(),
        };
        match client.poke(request).await {
            Ok(answer) => tracing::info!(
                %subscriber,
                %event_log,
                desired_replicas = answer.desired_replicas,
                "events written: woke a subscriber at zero"
            ),
            Err(status) => tracing::warn!(
                %subscriber,
                %event_log,
                error = %status.message(),
                "could not wake a subscriber at zero; the next write pokes again"
            ),
        }
    }
}

/// The sidecar's store in a deployment: every call goes to `inner`; a journal
/// write that committed also tells the [`Waker`].
pub struct WakingStore {
    pub inner: Arc<dyn Store>,
    pub waker: Arc<Waker>,
}

#[async_trait]
impl Store for WakingStore {
    async fn recover(&self, key: &EntityKey) -> Result<Recovery, StoreError> {
        self.inner.recover(key).await
    }

    async fn events(&self, key: &EntityKey, from_seq_nr: i64) -> Result<Vec<JournalEvent>, StoreError> {
        self.inner.events(key, from_seq_nr).await
    }

    async fn events_before(
        &self,
        key: &EntityKey,
        before_seq_nr: i64,
        limit: u32,
    ) -> Result<Vec<JournalEvent>, StoreError> {
        self.inner.events_before(key, before_seq_nr, limit).await
    }

    async fn latest_snapshot(&self, key: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
        self.inner.latest_snapshot(key).await
    }

    async fn append(&self, write: JournalWrite) -> Result<(), StoreError> {
        let event_log = write.key.persistence_id.clone();
        let written = !write.events.is_empty();
        self.inner.append(write).await?;
        if written {
            self.waker.written(&event_log);
        }
        Ok(())
    }

    async fn load_value(&self, key: &EntityKey) -> Result<Option<Any>, StoreError> {
        self.inner.load_value(key).await
    }

    async fn save_value(&self, key: &EntityKey, value: Option<Any>) -> Result<(), StoreError> {
        self.inner.save_value(key, value).await
    }

    async fn load_crdt(&self, key: &EntityKey) -> Result<Option<CrdtRecord>, StoreError> {
        self.inner.load_crdt(key).await
    }

    async fn save_crdt(&self, write: CrdtWrite) -> Result<(), StoreError> {
        self.inner.save_crdt(write).await
    }

    async fn event_log(
        &self,
        persistence_id: &str,
        after: LogOffset,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        self.inner.event_log(persistence_id, after, limit).await
    }

    async fn load_offset(&self, subscriber: &str, persistence_id: &str) -> Result<LogOffset, StoreError> {
        self.inner.load_offset(subscriber, persistence_id).await
    }

    async fn save_offset(&self, subscriber: &str, persistence_id: &str, offset: LogOffset) -> Result<(), StoreError> {
        self.inner.save_offset(subscriber, persistence_id, offset).await
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn timers(&self) -> Option<&dyn TimerStore> {
        self.inner.timers()
    }
}

#[cfg(test)]
#[path = "wake_tests.rs"]
mod tests;
