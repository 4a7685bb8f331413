//! Holding requests for a service that has no ready instance (scaled to zero, or
//! not up yet): a bounded wait per service that pokes the control plane with the
//! number of requests held, at once, again as soon as more arrive, and every second
//! while any wait, so the autoscaler can start as many instances as the burst needs.
//! Requests are released when the first instance is ready. A request waits as long as
//! its service's hold timeout (carried by the routes), or the gateway's own. A full
//! queue or an expired wait is a clear 503 / UNAVAILABLE, never a hang or a silent drop.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::{sync::watch, time::Instant};

use super::routes::RouteTable;
use crate::{error::ProxyError, metrics::Metrics};

/// While requests wait, the control plane hears how many at least this often.
const REPOKE: Duration = Duration::from_secs(1);
/// More requests arriving are reported at most this often, so a large burst costs a
/// handful of pokes, not one each.
const FOLLOW_UP: Duration = Duration::from_millis(10);

/// Tells the control plane that `service` has this many requests waiting.
pub type Poke = Arc<dyn Fn(String, u32) -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Holds {
    /// Requests allowed to wait per service.
    capacity: usize,
    /// How long a request waits for a service whose routes name no hold timeout.
    max_wait: Duration,
    services: Mutex<HashMap<String, Arc<Held>>>,
    poke: Poke,
    metrics: Arc<Metrics>,
}

/// One service's waiting requests.
struct Held {
    count: watch::Sender<usize>,
    /// A task is reporting the count to the control plane.
    poking: AtomicBool,
}

/// Counts a request out when it stops waiting, however it stops.
struct Waiting<'a> {
    held: Arc<Held>,
    service: &'a str,
    metrics: &'a Metrics,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.held.count.send_modify(|count| *count -= 1);
        self.metrics.held.with_label_values(&[self.service]).dec();
    }
}

impl Holds {
    /// Holds that poke no one; see [`Holds::poking`].
    pub fn new(capacity: usize, max_wait: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            capacity,
            max_wait,
            services: Mutex::new(HashMap::new()),
            poke: Arc::new(|_, _| Box::pin(async {})),
            metrics,
        }
    }

    /// Reports held requests through `poke`.
    pub fn poking(self, poke: Poke) -> Self {
        Holds { poke, ..self }
    }

    /// Waits until `service` has a ready instance, for as long as its hold timeout
    /// says (read again whenever the routes change).
    pub async fn hold(&self, service: &str, routes: &mut watch::Receiver<Arc<RouteTable>>) -> Result<(), ProxyError> {
        let held = self
            .services
            .lock()
            .expect("hold queue poisoned")
            .entry(service.to_string())
            .or_insert_with(|| {
                Arc::new(Held {
                    count: watch::Sender::new(0),
                    poking: AtomicBool::new(false),
                })
            })
            .clone();
        let admitted = held.count.send_if_modified(|count| {
            if *count >= self.capacity {
                return false;
            }
            *count += 1;
            true
        });
        if !admitted {
            return Err(ProxyError::Unavailable(format!(
                "{service} is starting and {} requests are already waiting for it; retry shortly",
                self.capacity
            )));
        }
        self.metrics.held.with_label_values(&[service]).inc();
        let _waiting = Waiting {
            held: held.clone(),
            service,
            metrics: &self.metrics,
        };
        if !held.poking.swap(true, Ordering::SeqCst) {
            tokio::spawn(poke_while_held(service.to_string(), held, self.poke.clone()));
        }
        let started = Instant::now();
        loop {
            let (ready, max_wait) = {
                let table = routes.borrow_and_update();
                let routed = table.services.get(service);
                (
                    routed.is_some_and(|routed| !routed.ready.is_empty()),
                    routed.and_then(|routed| routed.hold_timeout).unwrap_or(self.max_wait),
                )
            };
            if ready {
                self.metrics
                    .cold_start_seconds
                    .with_label_values(&[service])
                    .observe(started.elapsed().as_secs_f64());
                return Ok(());
            }
            match tokio::time::timeout_at(started + max_wait, routes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ProxyError::Unavailable("the gateway lost its routes; retry".into())),
                Err(_) => {
                    return Err(ProxyError::Unavailable(format!(
                        "{service} did not become ready within {max_wait:?}; retry shortly"
                    )))
                }
            }
        }
    }
}

/// Reports the service's held count until nothing waits: at once, after each poke
/// again if more requests arrived meanwhile, and every [`REPOKE`] regardless.
async fn poke_while_held(service: String, held: Arc<Held>, poke: Poke) {
    let mut counts = held.count.subscribe();
    loop {
        let count = *counts.borrow_and_update();
        if count == 0 {
            held.poking.store(false, Ordering::SeqCst);
            // A request that arrived just now saw a poker running and started none.
            if *counts.borrow() == 0 || held.poking.swap(true, Ordering::SeqCst) {
                return;
            }
            continue;
        }
        poke(service.clone(), u32::try_from(count).unwrap_or(u32::MAX)).await;
        let more = async {
            let _ = counts.wait_for(|now| *now > count || *now == 0).await;
            tokio::time::sleep(FOLLOW_UP).await;
        };
        tokio::select! {
            () = more => {}
            () = tokio::time::sleep(REPOKE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::routes::{ServiceTable, Target};

    fn table(ready: bool) -> Arc<RouteTable> {
        held_for(ready, None)
    }

    /// The cart's routes, with its own hold timeout.
    fn held_for(ready: bool, hold_timeout: Option<Duration>) -> Arc<RouteTable> {
        let mut cart = ServiceTable::for_tests(
            "cart",
            ready
                .then(|| Target {
                    instance: "cart-1".into(),
                    address: "127.0.0.1:1".into(),
                })
                .into_iter()
                .collect(),
        );
        cart.hold_timeout = hold_timeout;
        let mut table = RouteTable::default();
        table.services.insert("cart".into(), cart);
        Arc::new(table)
    }

    /// Each poke's held count and when it was sent.
    type Pokes = Arc<Mutex<Vec<(u32, Duration)>>>;

    /// Holds whose pokes are recorded.
    fn recording(capacity: usize, max_wait: Duration) -> (Arc<Holds>, Pokes) {
        let pokes: Pokes = Arc::default();
        let started = tokio::time::Instant::now();
        let recorded = pokes.clone();
        let poke: Poke = Arc::new(move |service, held| {
            assert_eq!(service, "cart");
            recorded.lock().unwrap().push((held, started.elapsed()));
            Box::pin(async {})
        });
        let holds = Holds::new(capacity, max_wait, Arc::new(Metrics::new())).poking(poke);
        (Arc::new(holds), pokes)
    }

    fn wait(
        holds: &Arc<Holds>,
        rx: &watch::Receiver<Arc<RouteTable>>,
    ) -> tokio::task::JoinHandle<Result<(), ProxyError>> {
        let (holds, mut rx) = (holds.clone(), rx.clone());
        tokio::spawn(async move { holds.hold("cart", &mut rx).await })
    }

    fn count(holds: &Holds) -> usize {
        *holds.services.lock().unwrap()["cart"].count.borrow()
    }

    #[tokio::test(start_paused = true)]
    async fn released_when_ready_and_the_overflow_is_refused() {
        let (holds, pokes) = recording(2, Duration::from_secs(10));
        let (tx, rx) = watch::channel(table(false));
        let waiters = vec![wait(&holds, &rx), wait(&holds, &rx)];
        tokio::task::yield_now().await;
        // --- the queue is full: a third request is refused at once
        let mut third = rx.clone();
        let refused = holds.hold("cart", &mut third).await;
        assert!(matches!(refused, Err(ProxyError::Unavailable(m)) if m.contains("already waiting")));
        // --- an instance becomes ready: both are released
        tx.send(table(true)).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
        assert_eq!(count(&holds), 0);
        assert!(!pokes.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pokes_report_the_burst_at_once_then_every_second_until_released() {
        let (holds, pokes) = recording(100, Duration::from_secs(30));
        let (tx, rx) = watch::channel(table(false));
        // --- a burst of five: the first poke goes out with the first request, one
        // follow-up with the four that came 10 ms later
        let mut waiters = vec![wait(&holds, &rx)];
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiters.extend((0..4).map(|_| wait(&holds, &rx)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let follow_up = Duration::from_millis(10) + FOLLOW_UP;
        assert_eq!(*pokes.lock().unwrap(), vec![(1, Duration::ZERO), (5, follow_up)]);
        // --- while they wait, the count is reported every second
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        waiters.push(wait(&holds, &rx));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held: Vec<u32> = pokes.lock().unwrap().iter().map(|(held, _)| *held).collect();
        assert_eq!(held, [1, 5, 5, 5, 6]);
        // --- released: no more pokes, and a later request starts reporting afresh
        tx.send(table(true)).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(pokes.lock().unwrap().len(), 5);
        tx.send(table(false)).unwrap();
        let later = wait(&holds, &rx);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pokes.lock().unwrap().last().map(|(held, _)| *held), Some(1));
        tx.send(table(true)).unwrap();
        assert_eq!(later.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_wait_is_unavailable() {
        let (holds, _pokes) = recording(8, Duration::from_secs(3));
        let (_tx, mut rx) = watch::channel(table(false));
        let result = holds.hold("cart", &mut rx).await;
        assert!(matches!(result, Err(ProxyError::Unavailable(m)) if m.contains("did not become ready")));
        assert_eq!(count(&holds), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_services_own_hold_timeout_wins_over_the_gateways() {
        let (holds, _pokes) = recording(8, Duration::from_secs(30));
        // --- shorter than the gateway's: refused when it ends, naming it
        let (_tx, mut rx) = watch::channel(held_for(false, Some(Duration::from_secs(2))));
        let started = Instant::now();
        let result = holds.hold("cart", &mut rx).await;
        assert!(
            matches!(&result, Err(ProxyError::Unavailable(m)) if m.contains("within 2s")),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // --- longer than the gateway's: still waiting past it, then served
        let (tx, rx) = watch::channel(held_for(false, Some(Duration::from_secs(300))));
        let waiter = wait(&holds, &rx);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "let go at the gateway's 30s");
        tx.send(held_for(true, Some(Duration::from_secs(300)))).unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_timeout_changed_while_waiting_applies_to_the_waiting() {
        let (holds, _pokes) = recording(8, Duration::from_secs(30));
        let (tx, rx) = watch::channel(held_for(false, Some(Duration::from_secs(5))));
        let waiter = wait(&holds, &rx);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(held_for(false, Some(Duration::from_secs(600)))).unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!waiter.is_finished(), "held to the old timeout");
        tx.send(held_for(true, None)).unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
}
