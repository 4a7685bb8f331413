//! Requests for a path the gateway does not know yet. Its routes trail the
//! registry by a moment: a service just deployed, or one whose first instance
//! has just become ready, is known to the registry (and to `strata deploy`'s
//! user) before the route watch brings it here. A request in that moment is
//! held, bounded like a scale-from-zero hold (the same capacity and longest
//! wait, or the longest hold timeout of a service still starting, never past
//! the client's deadline), while the routes may still bring
//! its path: while a deployed service has no descriptors yet (its first
//! instance is starting), or while the control plane's current routes, asked
//! for once, hold services or descriptors the gateway's do not. Then it is
//! served, or answered 404 if its path is still unknown.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::future::BoxFuture;
use http::{HeaderMap, Method};
use strata_proto::strata::controlplane::v1::RouteSnapshot;
use tokio::{sync::watch, time::Instant};

use crate::routing::routes::RouteTable;
use crate::{error::ProxyError, ingress::grpc::Flavor, model::Catalog};

/// Asks the control plane for its current routes; `None` when it cannot say.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Option<RouteSnapshot>> + Send + Sync>;

/// The routing-relevant part of a request: enough to tell whether a catalog
/// serves it.
pub struct Wanted<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl Wanted<'_> {
    /// Whether `catalog` routes the request, or it is for no service at all
    /// (server reflection, a CORS preflight): then the ingress answers it as is.
    pub fn known(&self, catalog: &Catalog) -> bool {
        if self.path.starts_with("/grpc.reflection.") {
            return true;
        }
        match Flavor::of(self.headers) {
            Some(_) => catalog.method(self.path).is_some(),
            None if self.method == Method::OPTIONS => true,
            // A path served for other HTTP methods is known: it gets its 405.
            None => matches!(catalog.route(self.method, self.path), Ok(_) | Err(true)),
        }
    }
}

/// The requests waiting for the routes to catch up.
pub struct Catchup {
    capacity: usize,
    max_wait: Duration,
    waiting: AtomicUsize,
    probe: Probe,
    /// The last probe's answer and when it was asked: a request that arrived
    /// before then may take it instead of asking again.
    last: tokio::sync::Mutex<Option<(Instant, Arc<RouteSnapshot>)>>,
}

/// Counts a request out when it stops waiting, however it stops.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Catchup {
    /// At most `capacity` requests wait, each at most `max_wait`.
    pub fn new(capacity: usize, max_wait: Duration, probe: Probe) -> Self {
        Self {
            capacity,
            max_wait,
            waiting: AtomicUsize::new(0),
            probe,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits until `routes` know the request, or can no longer be expected to
    /// learn it, or the wait ends (the longest hold or the client's `deadline`).
    /// `Err` only when too many requests already wait.
    pub async fn wait(
        &self,
        wanted: &Wanted<'_>,
        deadline: Option<Instant>,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
    ) -> Result<(), ProxyError> {
        let arrived = Instant::now();
        if wanted.known(&routes.borrow_and_update().catalog) {
            return Ok(());
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ProxyError::Unavailable(format!(
                "{} requests already wait for the gateway's routes to catch up; retry shortly",
                self.capacity
            )));
        }
        let _waiting = Waiting(&self.waiting);
        // A first instance pulling its image may take as long as its service allows.
        let max_wait = routes
            .borrow()
            .longest_pending_hold()
            .map_or(self.max_wait, |hold| hold.max(self.max_wait));
        let until = deadline.map_or(arrived + max_wait, |deadline| deadline.min(arrived + max_wait));
        let caught_up = async {
            // Nothing is starting: ask whether the control plane knows more.
            let heard = if routes.borrow().has_pending() {
                None
            } else {
                self.heard_since(arrived).await
            };
            let _ = routes
                .wait_for(|table| {
                    wanted.known(&table.catalog)
                        || !(table.has_pending() || heard.as_ref().is_some_and(|heard| table.is_behind(heard)))
                })
                .await;
        };
        let _ = tokio::time::timeout_at(until, caught_up).await;
        Ok(())
    }

    /// The control plane's routes as of a probe asked no earlier than `arrived`;
    /// concurrent requests share one probe.
    async fn heard_since(&self, arrived: Instant) -> Option<Arc<RouteSnapshot>> {
        let mut last = self.last.lock().await;
        if let Some((asked, heard)) = last.as_ref() {
            if *asked >= arrived {
                return Some(heard.clone());
            }
        }
        let asked = Instant::now();
        let heard = Arc::new((self.probe)().await?);
        *last = Some((asked, heard.clone()));
        Some(heard)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::fixtures;
    use strata_proto::strata::controlplane::v1::{EntityRoute, ServiceRoutes};

    const ECHO: &str = "/test.things.Clerk/Echo";

    /// A snapshot at `version` with the fixture's service, its descriptors
    /// present once an instance has been ready.
    fn snapshot(version: u64, ready_once: bool) -> RouteSnapshot {
        held_for(version, ready_once, 0)
    }

    /// [`snapshot`], the service holding requests `hold_timeout_ms` (0: the gateway's).
    fn held_for(version: u64, ready_once: bool, hold_timeout_ms: u64) -> RouteSnapshot {
        let spec = fixtures::spec();
        RouteSnapshot {
            version,
            services: vec![ServiceRoutes {
                name: "things".into(),
                descriptor_set: if ready_once { spec.proto.clone() } else { Vec::new() },
                entities: spec
                    .entities
                    .iter()
                    .filter(|_| ready_once)
                    .map(|e| EntityRoute {
                        entity_type: e.entity_type.clone(),
                        service_name: e.service_name.clone(),
                        persistence_id: e.persistence_id.clone(),
                    })
                    .collect(),
                shards: Vec::new(),
                instances: Vec::new(),
                desired_replicas: 1,
                revision: 1,
                hold_timeout_ms,
                ..Default::default()
            }],
        }
    }

    fn table(snapshot: &RouteSnapshot) -> Arc<RouteTable> {
        Arc::new(RouteTable::build(snapshot, &RouteTable::default()))
    }

    fn grpc_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        headers
    }

    /// A probe answering `heard`, counting how often it is asked.
    fn probe(heard: RouteSnapshot) -> (Probe, Arc<AtomicU32>) {
        let asked = Arc::new(AtomicU32::new(0));
        let counter = asked.clone();
        let probe: Probe = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let heard = heard.clone();
            Box::pin(async move { Some(heard) })
        });
        (probe, asked)
    }

    fn spawn_wait(
        catchup: &Arc<Catchup>,
        rx: &watch::Receiver<Arc<RouteTable>>,
        path: &'static str,
    ) -> tokio::task::JoinHandle<(Result<(), ProxyError>, bool)> {
        let (catchup, mut rx) = (catchup.clone(), rx.clone());
        tokio::spawn(async move {
            let headers = grpc_headers();
            let wanted = Wanted {
                method: &Method::POST,
                path,
                headers: &headers,
            };
            let result = catchup.wait(&wanted, None, &mut rx).await;
            let known = wanted.known(&rx.borrow().catalog);
            (result, known)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_path_of_a_service_whose_first_instance_is_starting_waits_for_its_descriptors() {
        let (probe, asked) = probe(snapshot(1, false));
        let catchup = Arc::new(Catchup::new(8, Duration::from_secs(30), probe));
        let (tx, rx) = watch::channel(table(&snapshot(3, false)));
        let waiter = spawn_wait(&catchup, &rx, ECHO);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "released before the routes knew the path");
        tx.send(table(&snapshot(4, true))).unwrap();
        assert_eq!(waiter.await.unwrap(), (Ok(()), true));
        // --- a pending service is reason enough: the control plane was not asked
        assert_eq!(asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn routes_behind_the_control_plane_are_waited_for() {
        // --- the control plane already has the service; the gateway has nothing
        let (probe, asked) = probe(snapshot(9, true));
        let catchup = Arc::new(Catchup::new(8, Duration::from_secs(30), probe));
        let (tx, rx) = watch::channel(Arc::new(RouteTable {
            version: 2,
            ..RouteTable::default()
        }));
        let waiters = vec![spawn_wait(&catchup, &rx, ECHO), spawn_wait(&catchup, &rx, ECHO)];
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        tx.send(table(&snapshot(9, true))).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), (Ok(()), true));
        }
        // --- the two requests shared one probe
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_path_with_nothing_to_wait_for_goes_on_at_once() {
        let (probe, asked) = probe(snapshot(9, true));
        let catchup = Arc::new(Catchup::new(8, Duration::from_secs(30), probe));
        let (_tx, rx) = watch::channel(table(&snapshot(5, true)));
        let started = Instant::now();
        let (result, known) = spawn_wait(&catchup, &rx, "/no.Such/Thing").await.unwrap();
        assert_eq!((result, known), (Ok(()), false));
        assert_eq!(started.elapsed(), Duration::ZERO, "a path no one serves waited");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_so_is_the_queue() {
        let (probe, _) = probe(snapshot(1, false));
        let catchup = Arc::new(Catchup::new(1, Duration::from_secs(3), probe));
        let (_tx, rx) = watch::channel(table(&snapshot(3, false)));
        let first = spawn_wait(&catchup, &rx, ECHO);
        tokio::task::yield_now().await;
        let (second, _) = spawn_wait(&catchup, &rx, ECHO).await.unwrap();
        assert!(matches!(second, Err(ProxyError::Unavailable(m)) if m.contains("already wait")));
        // --- the service never becomes ready: the request goes on unknown (404)
        assert_eq!(first.await.unwrap(), (Ok(()), false));
        assert_eq!(catchup.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_starting_service_with_a_long_hold_timeout_is_waited_for_that_long() {
        let (probe, _) = probe(snapshot(1, false));
        let catchup = Arc::new(Catchup::new(8, Duration::from_secs(3), probe));
        // --- its first instance pulls an image for a minute: past the gateway's 3s
        let (tx, rx) = watch::channel(table(&held_for(3, false, 300_000)));
        let waiter = spawn_wait(&catchup, &rx, ECHO);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "gave up at the gateway's own wait");
        tx.send(table(&held_for(4, true, 300_000))).unwrap();
        assert_eq!(waiter.await.unwrap(), (Ok(()), true));
    }
}
