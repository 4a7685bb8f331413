//! The local runtime driver: turns each service's desired replica count into
//! instances on this machine. An instance is the user function (its command, with
//! `HOST`/`PORT`) plus its `strata proxy` sidecar, which registers itself with the
//! control plane. Crashed instances are replaced with backoff; scale-down drains
//! an instance (the sidecar hands its shards back and finishes in-flight work)
//! before it stops; instances that never become ready are stopped with a reason.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::process::Command;

use super::process::{command_line, free_port, without_strata_environment, ChildProcess};
use crate::{
    node::ControlPlane,
    registry::{Command as RegistryCommand, InstanceState},
};

#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// The `strata` binary, run as `strata proxy` for each instance's sidecar.
    pub strata_binary: PathBuf,
    /// The control plane's data-plane address, for sidecars.
    pub control_plane: String,
    pub token: Option<String>,
    /// The store every sidecar uses (one shared SQLite file by default).
    pub store_url: String,
    /// Where functions run (their working directory).
    pub work_dir: PathBuf,
    /// Where instance logs go (`<instance>.function.log`, `<instance>.sidecar.log`).
    pub log_dir: PathBuf,
    /// How long an instance may take to become ready.
    pub ready_timeout: Duration,
}

/// One instance this runtime started.
struct Running {
    service: String,
    function: ChildProcess,
    sidecar: ChildProcess,
    started: Instant,
}

/// Restart pacing for a service whose instances keep failing.
#[derive(Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    fn record_failure(&mut self) -> Duration {
        self.failures += 1;
        let delay = Duration::from_millis(500 * 2u64.saturating_pow(self.failures.min(7)));
        let delay = delay.min(Duration::from_secs(60));
        self.not_before = Some(Instant::now() + delay);
        delay
    }

    fn ready(&self) -> bool {
        self.not_before.is_none_or(|at| Instant::now() >= at)
    }
}

pub struct LocalRuntime {
    config: LocalRuntimeConfig,
    node: Arc<ControlPlane>,
    running: HashMap<String, Running>,
    backoff: HashMap<String, Backoff>,
    /// Instances being drained and stopped in the background.
    stopping: Arc<std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>,
}

impl LocalRuntime {
    pub fn new(config: LocalRuntimeConfig, node: Arc<ControlPlane>) -> Self {
        Self {
            config,
            node,
            running: HashMap::new(),
            backoff: HashMap::new(),
            stopping: Arc::default(),
        }
    }

    /// Converges until `stop` resolves, then stops every instance.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        if let Err(error) = std::fs::create_dir_all(&self.config.log_dir) {
            tracing::error!(%error, dir = %self.config.log_dir.display(), "cannot create the instance log folder");
        }
        let mut effects = self.node.subscribe();
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {}
                _ = effects.recv() => {}
            }
            if self.node.is_leader() {
                self.converge().await;
            }
        }
        self.stop_all().await;
    }

    async fn converge(&mut self) {
        self.reap().await;
        let (services, instances) = self.node.read(|registry| {
            let services: BTreeMap<String, (Option<String>, u32)> = registry
                .services
                .values()
                .map(|s| (s.name.clone(), (s.command.clone(), s.desired_replicas)))
                .collect();
            let instances: BTreeMap<String, (String, InstanceState)> = registry
                .instances
                .values()
                .map(|i| (i.id.clone(), (i.service.clone(), i.state)))
                .collect();
            (services, instances)
        });

        // Instances the registry lists but nobody here runs (left by an earlier
        // run of strata dev that was killed) will never heartbeat: remove them now.
        let stopping: Vec<String> = self.stopping.lock().expect("poisoned").keys().cloned().collect();
        for (id, (service, _)) in &instances {
            let ours = services.get(service).is_some_and(|(command, _)| command.is_some());
            if ours && !self.running.contains_key(id) && !stopping.contains(id) {
                self.remove(id, "no longer running on this machine").await;
            }
        }

        // An instance that made it to ready clears its service's failure pacing.
        for running in self.running.values() {
            let ready = instances
                .values()
                .any(|(service, state)| *service == running.service && *state == InstanceState::Ready);
            if ready && running.started.elapsed() > Duration::from_secs(10) {
                self.backoff.remove(&running.service);
            }
        }

        // Instances that never became ready.
        let overdue: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| {
                r.started.elapsed() > self.config.ready_timeout
                    && instances
                        .get(*id)
                        .is_none_or(|(_, state)| *state == InstanceState::Starting)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            let reason = format!(
                "did not become ready within {:?}; see {}",
                self.config.ready_timeout,
                self.log_path(&id, "function").display()
            );
            self.fail(&id, &reason).await;
        }

        for (service, (command, desired)) in &services {
            let Some(command) = command else { continue };
            let mine: Vec<String> = self
                .running
                .iter()
                .filter(|(_, r)| &r.service == service)
                .map(|(id, _)| id.clone())
                .collect();
            let count = mine.len() as u32;
            if count < *desired && self.backoff.entry(service.clone()).or_default().ready() {
                // One at a time per round after failures, all at once otherwise.
                let starts = if self.backoff[service].failures > 0 {
                    1
                } else {
                    desired - count
                };
                for _ in 0..starts {
                    self.start(service, command).await;
                }
            } else if count > *desired {
                // Stop the youngest first: the oldest hold the warmest entities.
                let mut victims = mine;
                victims.sort_by_key(|id| std::cmp::Reverse(self.running[id].started));
                for id in victims.into_iter().take((count - desired) as usize) {
                    self.drain_and_stop(&id, "scaled down").await;
                }
            }
        }

        // Services that were deleted.
        let orphaned: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| !services.contains_key(&r.service))
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphaned {
            self.drain_and_stop(&id, "the service was deleted").await;
        }
    }

    /// Replaces crashed instances: an exit of either process ends the instance.
    async fn reap(&mut self) {
        let mut dead = Vec::new();
        for (id, running) in &mut self.running {
            if let Some(status) = running.function.exited() {
                dead.push((id.clone(), format!("the function exited ({status})"), "function"));
            } else if let Some(status) = running.sidecar.exited() {
                dead.push((id.clone(), format!("the sidecar exited ({status})"), "sidecar"));
            }
        }
        for (id, reason, process) in dead {
            let reason = format!("{reason}; see {}", self.log_path(&id, process).display());
            self.fail(&id, &reason).await;
        }
    }

    /// Ends an instance that failed and paces the service's next start.
    async fn fail(&mut self, id: &str, reason: &str) {
        let Some(mut running) = self.running.remove(id) else {
            return;
        };
        running.sidecar.kill().await;
        running.function.kill().await;
        let delay = self
            .backoff
            .entry(running.service.clone())
            .or_default()
            .record_failure();
        tracing::warn!(instance = id, service = %running.service, %reason, retry_in = ?delay, "instance failed");
        let reason = format!("{reason}; restarting in {delay:?}");
        self.record_failure(&running.service, id, &reason).await;
        self.remove(id, &reason).await;
    }

    /// Puts a failure in the service's event history, where `strata dev` users
    /// (and the API) see why instances do not come up.
    async fn record_failure(&self, service: &str, id: &str, reason: &str) {
        let command = RegistryCommand::RecordInstanceFailure {
            service: service.to_string(),
            instance: id.to_string(),
            reason: reason.to_string(),
        };
        if let Err(error) = self.node.write(command).await {
            tracing::warn!(instance = id, %error, "could not record the failure");
        }
    }

    async fn start(&mut self, service: &str, command: &str) {
        let id = format!("{service}-{:08x}", rand_suffix());
        let (function_port, sidecar_port) = match (free_port(), free_port()) {
            (Ok(f), Ok(s)) => (f, s),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "no free port for a new instance");
                return;
            }
        };
        let mut function = command_line(command);
        without_strata_environment(&mut function)
            .current_dir(&self.config.work_dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", function_port.to_string());
        let mut sidecar = Command::new(&self.config.strata_binary);
        sidecar
            .arg("proxy")
            .args(["--user-function-port", &function_port.to_string()])
            .args(["--http-port", &sidecar_port.to_string()])
            .args(["--store", &self.config.store_url])
            .args(["--control-plane", &self.config.control_plane])
            .args(["--instance-id", &id])
            .args(["--service", service])
            // Longer than the ready timeout, so a function that never comes up is
            // reported by that timeout rather than by the sidecar giving up.
            .args([
                "--discovery-timeout",
                &format!("{}s", self.config.ready_timeout.as_secs() + 10),
            ])
            .current_dir(&self.config.work_dir)
            .env_remove("STRATA_TOKEN");
        if let Some(token) = &self.config.token {
            sidecar.env("STRATA_TOKEN", token);
        }
        let function = match ChildProcess::spawn(function, &self.log_path(&id, "function")) {
            Ok(child) => child,
            Err(error) => {
                let delay = self.backoff.entry(service.to_string()).or_default().record_failure();
                tracing::error!(service, %error, retry_in = ?delay, "cannot start the function");
                let reason = format!("cannot start the command {command:?}: {error}; retrying in {delay:?}");
                self.record_failure(service, &id, &reason).await;
                return;
            }
        };
        let sidecar = match ChildProcess::spawn(sidecar, &self.log_path(&id, "sidecar")) {
            Ok(child) => child,
            Err(error) => {
                let mut function = function;
                function.kill().await;
                tracing::error!(service, %error, "cannot start the sidecar");
                return;
            }
        };
        tracing::info!(
            instance = %id,
            service,
            function_port,
            sidecar_port,
            function_pid = function.pid(),
            "started an instance"
        );
        self.running.insert(
            id,
            Running {
                service: service.to_string(),
                function,
                sidecar,
                started: Instant::now(),
            },
        );
    }

    /// Scale-down: the sidecar drains on SIGTERM (hands its shards back, finishes
    /// in-flight commands, then exits); then the function stops. Runs in the
    /// background so other services keep converging meanwhile.
    async fn drain_and_stop(&mut self, id: &str, reason: &str) {
        let Some(mut running) = self.running.remove(id) else {
            return;
        };
        tracing::info!(instance = id, service = %running.service, reason, "stopping an instance");
        let (node, stopping) = (self.node.clone(), self.stopping.clone());
        let (id, reason) = (id.to_string(), reason.to_string());
        let mut table = self.stopping.lock().expect("poisoned");
        let key = id.clone();
        table.insert(
            key,
            tokio::spawn(async move {
                running.sidecar.stop(Duration::from_secs(15)).await;
                running.function.stop(Duration::from_secs(5)).await;
                remove_instance(&node, &id, &reason).await;
                stopping.lock().expect("poisoned").remove(&id);
            }),
        );
    }

    async fn remove(&self, id: &str, reason: &str) {
        remove_instance(&self.node, id, reason).await;
    }

    async fn stop_all(&mut self) {
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.drain_and_stop(&id, "strata dev is stopping").await;
        }
        let tasks: Vec<_> = self
            .stopping
            .lock()
            .expect("poisoned")
            .drain()
            .map(|(_, task)| task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    fn log_path(&self, id: &str, process: &str) -> PathBuf {
        self.config.log_dir.join(format!("{id}.{process}.log"))
    }
}

async fn remove_instance(node: &ControlPlane, id: &str, reason: &str) {
    if !node.read(|registry| registry.instances.contains_key(id)) {
        return;
    }
    let command = RegistryCommand::RemoveInstance {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if let Err(error) = node.write(command).await {
        tracing::warn!(instance = id, %error, "could not remove the instance from the registry");
    }
}

/// A cheap unique-enough suffix for instance ids.
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() as u32
}
