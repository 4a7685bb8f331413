//! The one task tracker of Strata's processes (control-plane nodes, sidecars,
//! gateways, `strata dev`): background tasks are spawned here, each with a name,
//! each sees the process's stop signal, and each is awaited (then aborted after a
//! grace period) on shutdown. What the tasks do lives with their owners (servers,
//! route followers, liveness, embedders' drivers).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once the node begins to stop. Cheap to clone; hand one to every task.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Waits until shutdown begins (or the node was dropped without a shutdown).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// A signal that never fires, for code driven without a server (tests, `oneshot`).
    pub fn never() -> Self {
        // The sender lives forever, so `wait` never returns.
        static NEVER: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
        Stopping(NEVER.get_or_init(|| watch::channel(false).0).subscribe())
    }
}

type NamedHandles = Arc<Mutex<Vec<(&'static str, JoinHandle<()>)>>>;

/// Named background tasks sharing one stop signal.
#[derive(Clone)]
pub struct Tasks {
    stop: Arc<watch::Sender<bool>>,
    handles: NamedHandles,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            stop: Arc::new(watch::channel(false).0),
            handles: Arc::default(),
        }
    }
}

impl Tasks {
    pub fn stopping(&self) -> Stopping {
        Stopping(self.stop.subscribe())
    }

    /// Spawns `task`, which should return soon after [`Stopping::wait`] resolves.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        tracing::debug!(task = name, "starting a background task");
        let handle = tokio::spawn(task);
        let mut handles = self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        handles.retain(|(_, handle)| !handle.is_finished());
        handles.push((name, handle));
    }

    /// Signals every task to stop without waiting for them.
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Signals every task to stop, waits up to `grace` for them, then aborts the rest.
    pub async fn stop(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut handle) in handles {
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                tracing::warn!(task = name, "background task did not stop in time, aborting it");
                handle.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn stop_signals_every_task_awaits_them_and_aborts_one_that_does_not_stop() {
        let tasks = Tasks::default();
        let finished = Arc::new(AtomicUsize::new(0));
        for name in ["first", "second"] {
            let (stopping, finished) = (tasks.stopping(), finished.clone());
            tasks.spawn(name, async move {
                stopping.wait().await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        let (stubborn, aborted) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("stubborn", async move {
            let _kept = stubborn;
            std::future::pending::<()>().await;
        });
        assert!(!tasks.stopping().is_stopping());
        tasks.stop(Duration::from_millis(100)).await;
        // Both well-behaved tasks ran to their end before `stop` returned...
        assert_eq!(finished.load(Ordering::SeqCst), 2);
        // ...and the one that ignored the signal was aborted (its sender dropped).
        assert!(aborted.await.is_err());
        assert!(tasks.stopping().is_stopping());
    }
}
