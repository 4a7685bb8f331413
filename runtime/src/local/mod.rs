//! The local runtime driver: carries out the plan with processes on this machine.
//! An instance is the user function (its command, with `HOST`/`PORT`) plus its
//! `strata proxy` sidecar, which registers itself with the control plane. What to
//! start, replace, pace or stop is the plan's decision (`crate::plan`); this module
//! observes its children and does what the plan says: crashed instances are killed
//! and reported, scale-down drains an instance (the sidecar hands its shards back
//! and finishes in-flight work) before it stops.

mod logs;
mod process;

pub use logs::LocalLogs;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use strata_control_plane::{
    auth::ClusterSecret,
    node::ControlPlane,
    registry::{Command as RegistryCommand, InstanceState, RevisionSpec},
};
use tokio::{
    process::Command,
    signal::unix::{signal, SignalKind},
};

use strata_ports::free_loopback_port;

use crate::plan::{plan, Action, Failure, Health, ObservedInstance, Pacing, PlanInput, PlanSettings};
use logs::log_path;
use process::{command_line_with, without_strata_credentials, without_strata_environment, ChildProcess};

#[derive(Debug, Clone)]
pub struct LocalRuntimeConfig {
    /// The `strata` binary, run as `strata proxy` for each instance's sidecar.
    pub strata_binary: PathBuf,
    /// The control plane's data-plane address, for sidecars.
    pub control_plane: String,
    /// Mints each sidecar's instance credential (bound to its service and instance id):
    /// sidecars never hold the admin token.
    pub cluster_secret: ClusterSecret,
    /// The store every sidecar uses (one shared SQLite file by default).
    pub store_url: String,
    /// Where functions run (their working directory).
    pub work_dir: PathBuf,
    /// Where instance logs go (`<instance>.function.log`, `<instance>.sidecar.log`).
    pub log_dir: PathBuf,
    /// How long an instance may take to become ready.
    pub ready_timeout: Duration,
    /// The trace store's OTLP/HTTP endpoint, which every sidecar sends its
    /// spans to (beside the user's collector, if any); `None`: no store.
    pub trace_store: Option<String>,
}

/// One instance this runtime started.
struct Running {
    service: String,
    /// The revision of the service it runs.
    revision: u64,
    function: ChildProcess,
    sidecar: ChildProcess,
    started_at_ms: u64,
}

/// An instance being drained and stopped in the background.
struct Stopping {
    service: String,
    task: tokio::task::JoinHandle<()>,
}

pub struct LocalRuntime {
    config: LocalRuntimeConfig,
    node: Arc<ControlPlane>,
    /// The plan's clock: milliseconds since this runtime began.
    epoch: Instant,
    running: HashMap<String, Running>,
    pacing: BTreeMap<String, Pacing>,
    stopping: Arc<std::sync::Mutex<HashMap<String, Stopping>>>,
}

impl LocalRuntime {
    pub fn new(config: LocalRuntimeConfig, node: Arc<ControlPlane>) -> Self {
        Self {
            config,
            node,
            epoch: Instant::now(),
            running: HashMap::new(),
            pacing: BTreeMap::new(),
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
        // A child that exits wakes the loop at once: a crashed function's sidecar
        // would otherwise answer calls it cannot serve until the next tick, and
        // its replacement would start that much later.
        let mut exits = match signal(SignalKind::child()) {
            Ok(exits) => Some(exits),
            Err(error) => {
                tracing::warn!(%error, "cannot watch for children that exit; noticing them on the next tick");
                None
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => {}
                _ = effects.recv() => {}
                Some(()) = async { exits.as_mut()?.recv().await } => {}
            }
            if self.node.is_leader() {
                self.converge().await;
            }
        }
        self.stop_all().await;
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Observes (the registry first, then the processes, so an instance that
    /// registered is always seen), plans, and carries the plan out.
    async fn converge(&mut self) {
        let (commands, desired, registered, serving, owners, canaries) = self.node.read(|registry| {
            let ours = || registry.services.values().filter(|s| s.runs.command.is_some());
            // What each service's serving revision (and canary) runs: new instances run it.
            let mut commands: BTreeMap<(String, Option<u64>), (u64, RevisionSpec)> = ours()
                .map(|s| ((s.name.clone(), None), (s.serving(), s.runs.clone())))
                .collect();
            let mut canaries: BTreeMap<String, (u64, u32)> = BTreeMap::new();
            for service in ours() {
                let Some((revision, wanted)) = service.canary_replicas() else {
                    continue;
                };
                if let Some(spec) = service.revision(revision) {
                    commands.insert((service.name.clone(), Some(revision)), (revision, spec.spec.clone()));
                    canaries.insert(service.name.clone(), (revision, wanted));
                }
            }
            // Only services with a command are this driver's to run.
            let desired: BTreeMap<String, u32> = ours().map(|s| (s.name.clone(), s.desired_replicas)).collect();
            let serving: BTreeMap<String, u64> = ours().map(|s| (s.name.clone(), s.serving())).collect();
            // Instances of an earlier revision stop once they own (and hand off) nothing.
            let owners: BTreeSet<String> = ours()
                .flat_map(|s| s.shards.iter().filter_map(|shard| shard.owner.clone()))
                .collect();
            let registered: BTreeMap<String, (String, InstanceState)> = registry
                .instances
                .values()
                .map(|i| (i.id.clone(), (i.service.clone(), i.state)))
                .collect();
            (commands, desired, registered, serving, owners, canaries)
        });
        let observed = self.observe();
        let actions = plan(PlanInput {
            desired: &desired,
            observed: &observed,
            registered: &registered,
            pacing: &self.pacing,
            serving: &serving,
            owners: &owners,
            canaries: &canaries,
            now_ms: self.now_ms(),
            settings: PlanSettings {
                ready_timeout: self.config.ready_timeout,
                ..PlanSettings::default()
            },
        });
        for action in actions {
            self.carry_out(action, &commands).await;
        }
    }

    /// The instances this runtime started: running, exited (either process's exit
    /// ends the instance) or being stopped.
    fn observe(&mut self) -> Vec<ObservedInstance> {
        let mut observed = Vec::new();
        for (id, running) in &mut self.running {
            let exited = if let Some(status) = running.function.exited() {
                Some((format!("the function exited ({status})"), "function"))
            } else {
                running
                    .sidecar
                    .exited()
                    .map(|status| (format!("the sidecar exited ({status})"), "sidecar"))
            };
            let health = match exited {
                Some((reason, process)) => Health::Exited {
                    reason: format!(
                        "{reason}; see {}",
                        log_path(&self.config.log_dir, id, process).display()
                    ),
                },
                None => Health::Running,
            };
            observed.push(ObservedInstance {
                id: id.clone(),
                service: running.service.clone(),
                started_at_ms: running.started_at_ms,
                health,
                tracked: true,
                revision: running.revision,
            });
        }
        let stopping = self.stopping.lock().expect("poisoned");
        for (id, stopping) in stopping.iter() {
            observed.push(ObservedInstance {
                id: id.clone(),
                service: stopping.service.clone(),
                started_at_ms: 0,
                health: Health::Stopping,
                tracked: true,
                revision: 0,
            });
        }
        observed
    }

    async fn carry_out(&mut self, action: Action, commands: &BTreeMap<(String, Option<u64>), (u64, RevisionSpec)>) {
        match action {
            // Only this runtime's children are observed, and they are all tracked.
            Action::Adopt { instance } => tracing::debug!(%instance, "nothing to adopt locally"),
            Action::Replace {
                instance,
                failure,
                retry_in,
                ..
            } => {
                let reason = match failure {
                    Failure::Exited { reason } => reason,
                    Failure::NotReady { waited } => format!(
                        "did not become ready within {waited:?}; see {}",
                        log_path(&self.config.log_dir, &instance, "function").display()
                    ),
                };
                self.fail(&instance, &reason, retry_in).await;
            }
            Action::BackOff {
                service,
                failures,
                until_ms,
            } => {
                self.pacing.insert(
                    service,
                    Pacing {
                        failures,
                        not_before_ms: until_ms,
                    },
                );
            }
            Action::Recovered { service } => {
                self.pacing.remove(&service);
            }
            // Left by an earlier run of strata dev that was killed: it will never heartbeat.
            Action::Orphan { instance } => self.remove(&instance, "no longer running on this machine").await,
            Action::Start { service, count, canary } => {
                let Some((revision, command)) = commands.get(&(service.clone(), canary)) else {
                    return;
                };
                for _ in 0..count {
                    self.start(&service, *revision, command).await;
                }
            }
            Action::Stop { instance, reason } => self.drain_and_stop(&instance, reason.as_str()).await,
        }
    }

    /// Ends an instance that failed; the plan has already paced the service's next start.
    async fn fail(&mut self, id: &str, reason: &str, retry_in: Duration) {
        let Some(mut running) = self.running.remove(id) else {
            return;
        };
        running.sidecar.kill().await;
        running.function.kill().await;
        tracing::warn!(instance = id, service = %running.service, %reason, ?retry_in, "instance failed");
        let reason = format!("{reason}; restarting in {retry_in:?}");
        self.record_failure(&running.service, id, running.revision, &reason)
            .await;
        self.remove(id, &reason).await;
    }

    /// Puts a failure in the service's event history, where `strata dev` users
    /// (and the API) see why instances do not come up.
    async fn record_failure(&self, service: &str, id: &str, revision: u64, reason: &str) {
        let command = RegistryCommand::RecordInstanceFailure {
            service: service.to_string(),
            instance: id.to_string(),
            reason: reason.to_string(),
            revision,
        };
        if let Err(error) = self.node.write(command).await {
            tracing::warn!(instance = id, %error, "could not record the failure");
        }
    }

    async fn start(&mut self, service: &str, revision: u64, runs: &RevisionSpec) {
        let Some(command) = runs.command.as_deref() else { return };
        let id = format!("{service}-{:08x}", rand_suffix());
        let (function_port, sidecar_port) = match (free_loopback_port(), free_loopback_port()) {
            (Ok(f), Ok(s)) => (f, s),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "no free port for a new instance");
                return;
            }
        };
        let mut function = command_line_with(command, runs.args.as_deref().unwrap_or_default());
        without_strata_environment(&mut function)
            .current_dir(&self.config.work_dir)
            .envs(runs.env.iter().flatten().map(|var| (&var.name, &var.value)))
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
            .args(["--revision", &revision.to_string()])
            // Longer than the ready timeout, so a function that never comes up is
            // reported by that timeout rather than by the sidecar giving up.
            .args([
                "--discovery-timeout",
                &format!("{}s", self.config.ready_timeout.as_secs() + 10),
            ])
            .current_dir(&self.config.work_dir)
            // Its spans name the service, so the trace store (or a collector) can
            // tell whose sidecar made them.
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                resource_attributes(std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok(), service),
            );
        if let Some(endpoint) = &self.config.trace_store {
            sidecar.env("STRATA_TRACE_STORE", endpoint);
        }
        // Nothing of `strata dev`'s own credentials reaches the sidecar: only its own.
        without_strata_credentials(&mut sidecar).env(
            "STRATA_TOKEN",
            self.config.cluster_secret.instance_credential(service, Some(&id)),
        );
        // Both go to the spawner at once, the sidecar first: its way to ready (store,
        // registration, discovery, the ready report) is the longer, and it retries
        // discovery until the function listens.
        let logs = (
            log_path(&self.config.log_dir, &id, "sidecar"),
            log_path(&self.config.log_dir, &id, "function"),
        );
        let (sidecar, function) = tokio::join!(
            ChildProcess::spawn(sidecar, &logs.0),
            ChildProcess::spawn(function, &logs.1),
        );
        let (sidecar, function) = match (sidecar, function) {
            (Ok(sidecar), Ok(function)) => (sidecar, function),
            (Err(error), function) => {
                if let Ok(mut function) = function {
                    function.kill().await;
                }
                tracing::error!(service, %error, "cannot start the sidecar");
                return;
            }
            (Ok(mut sidecar), Err(error)) => {
                sidecar.kill().await;
                let now_ms = self.now_ms();
                let delay = self.pacing.entry(service.to_string()).or_default().fail(now_ms);
                tracing::error!(service, %error, retry_in = ?delay, "cannot start the function");
                let reason = format!("cannot start the command {command:?}: {error}; retrying in {delay:?}");
                self.record_failure(service, &id, revision, &reason).await;
                // The sidecar may have registered before it was killed.
                self.remove(&id, "its function could not be started").await;
                return;
            }
        };
        tracing::info!(
            instance = %id,
            service,
            revision,
            function_port,
            sidecar_port,
            function_pid = function.pid(),
            "started an instance"
        );
        self.running.insert(
            id,
            Running {
                service: service.to_string(),
                revision,
                function,
                sidecar,
                started_at_ms: self.now_ms(),
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
        let service = running.service.clone();
        let mut table = self.stopping.lock().expect("poisoned");
        let key = id.clone();
        let task = tokio::spawn(async move {
            running.sidecar.stop(Duration::from_secs(15)).await;
            running.function.stop(Duration::from_secs(5)).await;
            remove_instance(&node, &id, &reason).await;
            stopping.lock().expect("poisoned").remove(&id);
        });
        table.insert(key, Stopping { service, task });
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
            .map(|(_, stopping)| stopping.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
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

/// The user's `OTEL_RESOURCE_ATTRIBUTES` (`inherited`) with the sidecar's
/// `strata.service` added.
fn resource_attributes(inherited: Option<String>, service: &str) -> String {
    match inherited.filter(|text| !text.trim().is_empty()) {
        Some(text) => format!("{text},strata.service={service}"),
        None => format!("strata.service={service}"),
    }
}

#[cfg(test)]
mod resource_tests {
    use super::resource_attributes;

    #[test]
    fn the_service_joins_the_users_resource_attributes() {
        assert_eq!(resource_attributes(None, "cart"), "strata.service=cart");
        assert_eq!(
            resource_attributes(Some("deployment.environment=dev".into()), "cart"),
            "deployment.environment=dev,strata.service=cart"
        );
    }
}
