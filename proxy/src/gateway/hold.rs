//! Holding requests for a service that has no ready instance (scaled to zero, or
//! not up yet): a bounded wait per service that pokes the control plane at once
//! and releases the request when the first instance is ready. A full queue or an
//! expired wait is a clear 503 / UNAVAILABLE, never a hang or a silent drop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::routes::RouteTable;
use crate::{error::ProxyError, metrics::Metrics};

pub struct Holds {
    /// Requests allowed to wait per service.
    capacity: usize,
    max_wait: Duration,
    waiting: Mutex<HashMap<String, usize>>,
    last_poke: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
}

/// Decrements the waiting count of a service when the request stops waiting.
struct Waiting<'a> {
    holds: &'a Holds,
    service: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(count) = self
            .holds
            .waiting
            .lock()
            .expect("hold queue poisoned")
            .get_mut(self.service)
        {
            *count -= 1;
        }
        self.holds.metrics.held.with_label_values(&[self.service]).dec();
    }
}

impl Holds {
    pub fn new(capacity: usize, max_wait: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            capacity,
            max_wait,
            waiting: Mutex::new(HashMap::new()),
            last_poke: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Waits until `service` has a ready instance. `poke` asks the control plane
    /// to scale from zero; it is called at most once a second per service.
    pub async fn hold(
        &self,
        service: &str,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
        poke: impl FnOnce(),
    ) -> Result<(), ProxyError> {
        {
            let mut waiting = self.waiting.lock().expect("hold queue poisoned");
            let count = waiting.entry(service.to_string()).or_default();
            if *count >= self.capacity {
                return Err(ProxyError::Unavailable(format!(
                    "{service} is starting and {} requests are already waiting for it; retry shortly",
                    self.capacity
                )));
            }
            *count += 1;
        }
        self.metrics.held.with_label_values(&[service]).inc();
        let _waiting = Waiting { holds: self, service };
        let due = {
            let mut pokes = self.last_poke.lock().expect("hold queue poisoned");
            let due = pokes
                .get(service)
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
            if due {
                pokes.insert(service.to_string(), Instant::now());
            }
            due
        };
        if due {
            poke();
        }
        let started = Instant::now();
        let ready = tokio::time::timeout(
            self.max_wait,
            routes.wait_for(|table| table.services.get(service).is_some_and(|s| !s.ready.is_empty())),
        )
        .await;
        match ready {
            Ok(Ok(_)) => {
                self.metrics
                    .cold_start_seconds
                    .with_label_values(&[service])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err(_)) => Err(ProxyError::Unavailable("the gateway lost its routes; retry".into())),
            Err(_) => Err(ProxyError::Unavailable(format!(
                "{service} did not become ready within {:?}; retry shortly",
                self.max_wait
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::routes::{ServiceTable, Target};

    fn table(ready: bool) -> Arc<RouteTable> {
        let mut table = RouteTable::default();
        table.services.insert(
            "cart".into(),
            ServiceTable::for_tests(
                "cart",
                ready
                    .then(|| Target {
                        instance: "cart-1".into(),
                        address: "127.0.0.1:1".into(),
                    })
                    .into_iter()
                    .collect(),
            ),
        );
        Arc::new(table)
    }

    #[tokio::test(start_paused = true)]
    async fn released_when_ready_and_poked_once() {
        let holds = Arc::new(Holds::new(2, Duration::from_secs(10), Arc::new(Metrics::new())));
        let (tx, rx) = watch::channel(table(false));
        let pokes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (holds, mut rx, pokes) = (holds.clone(), rx.clone(), pokes.clone());
            waiters.push(tokio::spawn(async move {
                holds
                    .hold("cart", &mut rx, || {
                        pokes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        // --- the queue is full: a third request is refused at once
        let mut third = rx.clone();
        let refused = holds.hold("cart", &mut third, || {}).await;
        assert!(matches!(refused, Err(ProxyError::Unavailable(m)) if m.contains("already waiting")));
        // --- an instance becomes ready: both are released; the service was poked once
        tx.send(table(true)).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
        assert_eq!(pokes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(*holds.waiting.lock().unwrap().get("cart").unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_wait_is_unavailable() {
        let holds = Holds::new(8, Duration::from_secs(3), Arc::new(Metrics::new()));
        let (_tx, mut rx) = watch::channel(table(false));
        let result = holds.hold("cart", &mut rx, || {}).await;
        assert!(matches!(result, Err(ProxyError::Unavailable(m)) if m.contains("did not become ready")));
    }
}
