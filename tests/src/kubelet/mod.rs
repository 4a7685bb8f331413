//! A test kubelet: runs a pod template as a kubelet would, without a cluster.
//! Each pod gets a network namespace of its own (one loopback shared by its
//! containers, an address on the node's bridge, cluster names in its
//! `/etc/hosts`); each container's image maps to a binary built here, run as
//! the image's user with its environment resolved (`secretKeyRef` from the
//! given Secrets, `fieldRef` for the pod's fields, `$(VAR)`); its startup,
//! readiness and liveness probes run with their periods, timeouts and
//! thresholds (`probe.rs` decides, this shell times and asks); a container that
//! exits or fails its startup or liveness probe is killed and started again
//! with the kubelet's back-off; deleting the pod runs each container's
//! `preStop` hook, then SIGTERM, then SIGKILL once the termination grace is
//! spent. Test-only: it proves that what the operator renders can run, not
//! Kubernetes itself (no scheduler, volumes, cgroups or image pulls).

pub mod env;
pub mod node;
pub mod probe;

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, LifecycleHandler, PodTemplateSpec, Probe, Secret},
    apimachinery::pkg::util::intstr::IntOrString,
};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{process::Child, sync::watch, task::JoinHandle, time::Instant};

use self::{
    env::PodFields,
    node::{Node, PodNetwork},
    probe::{ContainerProbes, Kind, Schedule, Verdict},
};

/// The kubelet's back-off between restarts of a container: 10 s doubling to
/// five minutes (CrashLoopBackOff).
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(10);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);
/// Kubernetes' default termination grace.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What an image runs: a binary built here, as the image's user.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image's entrypoint.
    pub binary: PathBuf,
    /// The image's `USER` (uid = gid), `None` for root.
    pub user: Option<u32>,
}

/// Runs pods on one node.
pub struct Kubelet {
    node: Arc<Node>,
    /// By repository name, the image reference's last path part without a tag
    /// (`registry.example/strata:0.1.0` is `strata`).
    images: BTreeMap<String, Image>,
    logs: PathBuf,
}

/// How a pod is doing, as `kubectl get pod` would show it.
#[derive(Debug, Clone, Default)]
pub struct PodStatus {
    /// Every container ready (the pod's `Ready` condition).
    pub ready: bool,
    pub containers: BTreeMap<String, ContainerStatus>,
    /// What happened, in order: starts, probe failures and recoveries, kills.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatus {
    pub running: bool,
    pub started: bool,
    pub ready: bool,
    pub restarts: u32,
}

/// How a container ended when its pod was deleted.
#[derive(Debug, Clone)]
pub struct Termination {
    pub container: String,
    /// `exit code N`, `signal N`, or `not running`.
    pub exit: String,
    /// It outlived the grace and was killed with SIGKILL.
    pub killed: bool,
    /// From the deletion until it was gone.
    pub after: Duration,
}

/// A running pod.
pub struct Pod {
    pub name: String,
    pub ip: String,
    status: watch::Receiver<PodStatus>,
    deleting: watch::Sender<Option<Instant>>,
    containers: Vec<JoinHandle<Termination>>,
    network: Option<PodNetwork>,
    logs: Vec<PathBuf>,
}

impl Kubelet {
    pub fn new(node: Node, images: BTreeMap<String, Image>, logs: &Path) -> Kubelet {
        Kubelet {
            node: Arc::new(node),
            images,
            logs: logs.to_owned(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Creates pod `name` from `template` and starts its containers.
    pub fn run(
        &self,
        name: &str,
        namespace: &str,
        template: &PodTemplateSpec,
        secrets: &[Secret],
    ) -> Result<Pod, String> {
        let spec = template.spec.clone().ok_or("the template has no pod spec")?;
        let network = self.node.add_pod(name)?;
        let fields = PodFields {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ip: network.ip.clone(),
            node: "test-kubelet".to_owned(),
        };
        let grace = spec
            .termination_grace_period_seconds
            .map_or(DEFAULT_GRACE, |seconds| Duration::from_secs(seconds.max(0) as u64));
        let pod_user = spec.security_context.as_ref().and_then(|context| context.run_as_user);
        let (status_tx, status) = watch::channel(PodStatus::default());
        let status_tx = Arc::new(status_tx);
        let (deleting, deleted) = watch::channel(None);
        let mut containers = Vec::new();
        let mut logs = Vec::new();
        for container in &spec.containers {
            let image = self.image(container, pod_user)?;
            let environment = env::environment(container.env.as_deref().unwrap_or_default(), secrets, &fields)
                .map_err(|error| format!("container {}: CreateContainerConfigError: {error}", container.name))?;
            let log = self.logs.join(format!("{name}-{}.log", container.name));
            logs.push(log.clone());
            let run = Arc::new(ContainerRun {
                line: env::command_line(container, &image.binary.to_string_lossy(), &environment),
                environment,
                user: image.user,
                namespace: network.namespace.clone(),
                pod_name: name.to_owned(),
                pod_ip: network.ip.clone(),
                container: container.clone(),
                grace,
                log,
                probes: Mutex::new(ContainerProbes::new(
                    container.startup_probe.as_ref().map(Schedule::of),
                    container.readiness_probe.as_ref().map(Schedule::of),
                    container.liveness_probe.as_ref().map(Schedule::of),
                )),
                status: status_tx.clone(),
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .map_err(|error| error.to_string())?,
            });
            run.publish();
            containers.push(tokio::spawn(supervise(run, deleted.clone())));
        }
        Ok(Pod {
            name: name.to_owned(),
            ip: network.ip.clone(),
            status,
            deleting,
            containers,
            network: Some(network),
            logs,
        })
    }

    /// The binary and user of a container's image; refused as a kubelet
    /// would when it must not run as root and would.
    fn image(&self, container: &Container, pod_user: Option<i64>) -> Result<Image, String> {
        let reference = container.image.as_deref().unwrap_or_default();
        let without_digest = reference.split('@').next().unwrap_or_default();
        let last = without_digest.rsplit('/').next().unwrap_or_default();
        let repository = last.split(':').next().unwrap_or_default();
        let mut image = self.images.get(repository).cloned().ok_or_else(|| {
            format!(
                "container {}: ErrImagePull: no binary for image {reference:?}",
                container.name
            )
        })?;
        let context = container.security_context.as_ref();
        if let Some(uid) = context.and_then(|context| context.run_as_user).or(pod_user) {
            image.user = u32::try_from(uid).ok().filter(|uid| *uid != 0);
        }
        if context.and_then(|context| context.run_as_non_root) == Some(true) && image.user.is_none() {
            return Err(format!(
                "container {}: CreateContainerConfigError: runAsNonRoot and image {reference:?} would run as root",
                container.name
            ));
        }
        Ok(image)
    }
}

impl Pod {
    pub fn status(&self) -> PodStatus {
        self.status.borrow().clone()
    }

    /// Waits until the pod is Ready, or until `within` has passed or a
    /// container restarted (a start that failed); the time it took.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let _ = tokio::time::timeout(
            within,
            self.status
                .wait_for(|status| status.ready || status.containers.values().any(|c| c.restarts > 0)),
        )
        .await;
        let status = self.status();
        match status.containers.values().all(|c| c.restarts == 0) && status.ready {
            true => Ok(started.elapsed()),
            false => Err(format!(
                "pod {} was not Ready within {within:?}; containers {:?}; events:\n  {}\n{}",
                self.name,
                status.containers,
                status.events.join("\n  "),
                self.log_tails()
            )),
        }
    }

    /// Waits until the pod's readiness changes from what it is, for at most
    /// `within`; `Some(status)` if it did.
    pub async fn changes_within(&mut self, within: Duration) -> Option<PodStatus> {
        let ready = self.status.borrow_and_update().ready;
        let restarts = |status: &PodStatus| status.containers.values().map(|c| c.restarts).sum::<u32>();
        let before = restarts(&self.status.borrow());
        let changed = tokio::time::timeout(
            within,
            self.status
                .wait_for(|status| status.ready != ready || restarts(status) != before),
        )
        .await;
        match changed {
            Ok(Ok(status)) => Some(status.clone()),
            _ => None,
        }
    }

    /// The last lines each container wrote, for a failure's message.
    pub fn log_tails(&self) -> String {
        self.logs
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
                format!("--- {}:\n    {tail}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Deletes the pod as the API server and kubelet do: not Ready at once,
    /// each container's `preStop` hook then SIGTERM, SIGKILL once the grace is
    /// spent; returns how each container ended.
    pub async fn delete(mut self) -> Vec<Termination> {
        self.deleting.send_replace(Some(Instant::now()));
        let mut ended = Vec::new();
        for container in self.containers.drain(..) {
            ended.push(container.await.expect("a container's supervisor panicked"));
        }
        self.network.take();
        ended
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // A test that failed half-way: stop everything now (the processes are
        // killed with their handles), then remove the namespace.
        for container in &self.containers {
            container.abort();
        }
    }
}

/// One container of a pod, across its restarts.
struct ContainerRun {
    container: Container,
    line: Vec<String>,
    environment: Vec<(String, String)>,
    user: Option<u32>,
    namespace: String,
    pod_name: String,
    pod_ip: String,
    grace: Duration,
    log: PathBuf,
    probes: Mutex<ContainerProbes>,
    status: Arc<watch::Sender<PodStatus>>,
    http: reqwest::Client,
}

/// Why a run of a container ended.
enum Ended {
    Exited(std::io::Result<ExitStatus>),
    Unhealthy(String),
    Deleted(Instant),
}

impl ContainerRun {
    fn name(&self) -> &str {
        &self.container.name
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, ContainerProbes> {
        self.probes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn event(&self, text: String) {
        self.status.send_modify(|status| status.events.push(text));
    }

    /// Copies this container's state into the pod's status.
    fn publish(&self) {
        let (started, ready) = {
            let probes = self.probes();
            (probes.started(), probes.ready())
        };
        self.status.send_modify(|status| {
            let entry = status.containers.entry(self.name().to_owned()).or_default();
            entry.started = started;
            entry.ready = ready && entry.running;
            status.ready = status.containers.values().all(|c| c.ready);
        });
    }

    fn set_running(&self, running: bool, restarted: bool) {
        self.status.send_modify(|status| {
            let entry = status.containers.entry(self.name().to_owned()).or_default();
            entry.running = running;
            entry.restarts += u32::from(restarted);
        });
        self.publish();
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &self.namespace]);
        if let Some(uid) = self.user {
            let uid = uid.to_string();
            command.args(["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--"]);
        }
        command
            .args(&self.line)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOSTNAME", &self.pod_name)
            .envs(self.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        command.spawn()
    }

    /// Probes until the startup or liveness probe asks for a restart.
    async fn probe_until_unhealthy(&self) -> String {
        let loops: Vec<_> = [Kind::Startup, Kind::Readiness, Kind::Liveness]
            .into_iter()
            .filter_map(|kind| {
                let probe = match kind {
                    Kind::Startup => self.container.startup_probe.as_ref(),
                    Kind::Readiness => self.container.readiness_probe.as_ref(),
                    Kind::Liveness => self.container.liveness_probe.as_ref(),
                }?;
                Some(Box::pin(self.probe_loop(kind, probe)))
            })
            .collect();
        if loops.is_empty() {
            return std::future::pending().await;
        }
        futures::future::select_all(loops).await.0
    }

    async fn probe_loop(&self, kind: Kind, probe: &Probe) -> String {
        let schedule = Schedule::of(probe);
        tokio::time::sleep(schedule.initial_delay).await;
        let mut ticks = tokio::time::interval(schedule.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = None;
        loop {
            ticks.tick().await;
            if !self.probes().runs(kind) {
                continue;
            }
            let result = self.check(probe, schedule.timeout).await;
            if last_ok != Some(result.is_ok()) {
                last_ok = Some(result.is_ok());
                self.event(match &result {
                    Ok(()) => format!("{} probe of {} succeeded", kind.name(), self.name()),
                    Err(error) => format!("{} probe of {} failed: {error}", kind.name(), self.name()),
                });
            }
            let verdict = self.probes().record(kind, result);
            self.publish();
            if let Verdict::Restart(reason) = verdict {
                return reason;
            }
        }
    }

    /// One probe, from the node as a kubelet probes: the pod's IP.
    async fn check(&self, probe: &Probe, timeout: Duration) -> Result<(), String> {
        if let Some(get) = &probe.http_get {
            let port = self.port(&get.port)?;
            let path = get.path.as_deref().unwrap_or("/");
            let url = format!("http://{}:{port}{path}", self.pod_ip);
            let response = self
                .http
                .get(&url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|error| format!("GET {url}: {}", short(&error)))?;
            let status = response.status().as_u16();
            if (200..400).contains(&status) {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            return Err(format!(
                "GET {url}: HTTP {status} {}",
                body.chars().take(120).collect::<String>()
            ));
        }
        if let Some(socket) = &probe.tcp_socket {
            let port = self.port(&socket.port)?;
            let address = format!("{}:{port}", self.pod_ip);
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!("connect {address}: {error}")),
                Err(_) => Err(format!("connect {address}: timed out")),
            };
        }
        Err("only httpGet and tcpSocket probes are supported here".into())
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(number) => u16::try_from(*number).map_err(|_| format!("port {number}")),
            IntOrString::String(name) => self
                .container
                .ports
                .iter()
                .flatten()
                .find(|port| port.name.as_deref() == Some(name.as_str()))
                .and_then(|port| u16::try_from(port.container_port).ok())
                .ok_or_else(|| format!("container {} has no port named {name:?}", self.name())),
        }
    }

    /// Stops a run: the `preStop` hook, SIGTERM, and SIGKILL at `deadline`.
    async fn terminate(&self, child: &mut Child, deadline: Instant) -> (String, bool) {
        if let Some(hook) = self.container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            self.event(format!("running the preStop hook of {}", self.name()));
            tokio::select! {
                () = self.pre_stop(hook) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => (describe(status), false),
            Err(_) => {
                self.event(format!("{} outlived its termination grace: SIGKILL", self.name()));
                let _ = child.start_kill();
                (describe(child.wait().await), true)
            }
        }
    }

    async fn pre_stop(&self, hook: &LifecycleHandler) {
        if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        } else if let Some(get) = &hook.http_get {
            if let Ok(port) = self.port(&get.port) {
                let url = format!("http://{}:{port}{}", self.pod_ip, get.path.as_deref().unwrap_or("/"));
                let _ = self.http.get(url).send().await;
            }
        } else {
            self.event(format!(
                "the preStop hook of {} is not supported here; skipped",
                self.name()
            ));
        }
    }
}

/// Runs one container until its pod is deleted, restarting it as a kubelet does.
async fn supervise(run: Arc<ContainerRun>, mut deleted: watch::Receiver<Option<Instant>>) -> Termination {
    let mut delay = FIRST_RESTART_DELAY;
    let mut restarted = false;
    loop {
        let mut child = match run.spawn() {
            Ok(child) => child,
            Err(error) => {
                run.event(format!("cannot start {}: {error}", run.name()));
                return Termination {
                    container: run.name().to_owned(),
                    exit: format!("never started: {error}"),
                    killed: false,
                    after: Duration::ZERO,
                };
            }
        };
        run.probes().restart();
        run.set_running(true, restarted);
        run.event(format!("started {}", run.name()));
        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            reason = run.probe_until_unhealthy() => Ended::Unhealthy(reason),
            since = deleted.wait_for(Option::is_some) => Ended::Deleted(since.ok().and_then(|since| *since).unwrap_or_else(Instant::now)),
        };
        run.probes().stopped();
        match ended {
            Ended::Deleted(since) => {
                run.publish();
                let (exit, killed) = run.terminate(&mut child, since + run.grace).await;
                run.set_running(false, false);
                run.event(format!("{} stopped ({exit})", run.name()));
                return Termination {
                    container: run.name().to_owned(),
                    exit,
                    killed,
                    after: since.elapsed(),
                };
            }
            Ended::Exited(status) => run.event(format!("{} exited ({})", run.name(), describe(status))),
            Ended::Unhealthy(reason) => {
                run.event(format!("killing {}: {reason}", run.name()));
                let (exit, _) = run.terminate(&mut child, Instant::now() + run.grace).await;
                run.event(format!("{} stopped ({exit})", run.name()));
            }
        }
        run.set_running(false, false);
        run.event(format!("back-off {delay:?} before restarting {}", run.name()));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            since = deleted.wait_for(Option::is_some) => {
                let since = since.ok().and_then(|since| *since).unwrap_or_else(Instant::now);
                return Termination {
                    container: run.name().to_owned(),
                    exit: "not running".into(),
                    killed: false,
                    after: since.elapsed(),
                };
            }
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
        restarted = true;
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => "ended".into(),
        },
        Err(error) => format!("unknown: {error}"),
    }
}

/// An error's first cause only: enough for an event line.
fn short(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    text
}
