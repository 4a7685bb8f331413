//! Child processes of the local runtime: each in its own process group (so a
//! terminal's Ctrl-C reaches only `strata dev`, which then stops them in order),
//! killed by the kernel if `strata dev` dies (`PR_SET_PDEATHSIG`), with output in
//! a log file (every line stamped with its time), and started with no Strata credential in their environment.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. Tokio's blocking threads retire after 10 s idle, and a worker that ran
//! `block_in_place` can become one, so children are forked by one dedicated
//! spawner thread that lives as long as the process.

use std::{
    path::Path,
    process::Stdio,
    sync::{mpsc, Mutex, OnceLock},
    time::Duration,
};

use super::logs::stamp_lines;
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    sync::oneshot,
};

/// A spawned child of the runtime.
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Spawns `command` with its output appended to `log`, each line with the
    /// time it was written in front (`super::logs::stamp_lines`).
    pub async fn spawn(mut command: Command, log: &Path) -> std::io::Result<Self> {
        // Opened here so that a folder that cannot be written fails the start.
        drop(std::fs::OpenOptions::new().create(true).append(true).open(log)?);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let mut child = spawn_from_spawner_thread(command).await?;
        // Each copier ends when the child closes its end of the pipe.
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(stamp_lines(stdout, log.to_owned()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(stamp_lines(stderr, log.to_owned()));
        }
        Ok(Self { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the process group to stop (SIGTERM), then kills it if the process
    /// has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal_group(Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            // Anything it left behind in its group goes too.
            self.signal_group(Signal::SIGKILL);
            return;
        }
        self.kill().await;
    }

    /// Kills the process and everything in its process group at once.
    pub async fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let _ = self.child.kill().await;
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            // The child leads its own group (process_group(0)), so its pid is the group id.
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }
}

type SpawnRequest = (Command, tokio::runtime::Handle, oneshot::Sender<std::io::Result<Child>>);

/// Forks `command` on the spawner thread (see the module comment). The caller
/// waits for the fork and exec, as it would with `Command::spawn`, but without
/// holding up its thread: in `strata dev` the control plane and the gateway
/// share the runtime, and a cold start needs both while its processes start.
async fn spawn_from_spawner_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, inbox) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("strata-spawner".into())
            .spawn(move || {
                // Never returns while the process lives: the sender is in a static.
                for (mut command, runtime, reply) in inbox {
                    // The child is registered with the caller's runtime for reaping.
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the process spawner thread");
        Mutex::new(requests)
    });
    let (reply, answer) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    spawner
        .lock()
        .expect("poisoned")
        .send((command, runtime, reply))
        .map_err(|_| std::io::Error::other("the process spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the process spawner thread is gone"))?
}

/// Removes every `STRATA_*` variable (tokens, cluster secret, store URLs) from
/// what a user's function inherits: user code gets no Strata credential.
pub fn without_strata_environment(command: &mut Command) -> &mut Command {
    let inherited = std::env::vars_os().map(|(name, _)| name);
    let explicit: Vec<_> = command.as_std().get_envs().map(|(name, _)| name.to_owned()).collect();
    for name in inherited.chain(explicit) {
        if name.to_string_lossy().starts_with("STRATA_") {
            command.env_remove(name);
        }
    }
    command
}

/// The variables that hold a credential (or name one instance's port) in
/// `strata dev`'s environment: a sidecar gets its own credential instead, and
/// keeps the rest of its settings (`STRATA_MAX_ACTIVE_ENTITIES`, timeouts, ...).
const NOT_FOR_SIDECARS: [&str; 6] = [
    "STRATA_TOKEN",
    "STRATA_ADMIN_TOKEN",
    "STRATA_READ_ONLY_TOKEN",
    "STRATA_GATEWAY_TOKEN",
    "STRATA_CLUSTER_SECRET",
    "STRATA_ADMIN_PORT",
];

/// Removes `strata dev`'s credentials from what a sidecar inherits, keeping
/// the sidecar settings a user gave `strata dev` through its environment.
pub fn without_strata_credentials(command: &mut Command) -> &mut Command {
    for name in NOT_FOR_SIDECARS {
        command.env_remove(name);
    }
    command
}

/// Asks the kernel to SIGKILL the child when its parent thread exits, so nothing
/// outlives a `kill -9` of `strata dev`. The parent thread is the spawner thread,
/// which lives as long as the process.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
}

/// The command for a revision's command line and its extra arguments (each one word,
/// whatever it holds): run directly when the line is a plain program with arguments
/// (so signals and `PR_SET_PDEATHSIG` reach the function itself), through `sh -c`
/// when it uses shell syntax, the arguments then quoted onto the line.
pub fn command_line_with(line: &str, args: &[String]) -> Command {
    if args.is_empty() {
        return command_line(line);
    }
    if !uses_shell(line) {
        let mut command = command_line(line);
        command.args(args);
        return command;
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| format!("'{}'", arg.replace('\'', "'\\''")))
        .collect();
    command_line(&format!("{line} {}", quoted.join(" ")))
}

/// Whether a command line needs a shell to mean what it says.
fn uses_shell(line: &str) -> bool {
    const SHELL_SYNTAX: &[char] = &[
        ';', '&', '|', '<', '>', '$', '`', '\'', '"', '(', ')', '{', '}', '*', '?', '~', '\\', '#', '=',
    ];
    line.contains(SHELL_SYNTAX) || line.split_whitespace().next().is_none()
}

/// The command for a service's command line: run directly when it is a plain
/// program with arguments (so signals and `PR_SET_PDEATHSIG` reach the function
/// itself), through `sh -c` when it uses shell syntax.
pub fn command_line(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.split_first() {
        Some((program, args)) if !uses_shell(line) => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
        _ => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(line);
            command
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(command: &Command) -> Vec<String> {
        let command = command.as_std();
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|word| word.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_revisions_arguments_stay_one_word_each() {
        let args = vec!["--label".to_owned(), "it's two".to_owned()];
        assert_eq!(
            words(&command_line_with("./cart --port 1", &args)),
            ["./cart", "--port", "1", "--label", "it's two"]
        );
        let shell = command_line_with("exec ./cart > log", &args);
        assert_eq!(
            words(&shell),
            ["sh", "-c", "exec ./cart > log '--label' 'it'\\''s two'"]
        );
        let ran = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '%s|' 'it'\\''s two'")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout),
            "it's two|",
            "the quoting is the shell's"
        );
        assert_eq!(words(&command_line_with("./cart", &[])), ["./cart"]);
    }

    fn alive(child: &mut ChildProcess) -> bool {
        child.exited().is_none()
    }

    /// The regression: a child forked from a thread that then exits was killed
    /// at once by its death signal. Spawned from a short-lived thread, it must
    /// outlive that thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_outlives_the_thread_that_asked_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let runtime = tokio::runtime::Handle::current();
        let mut child = std::thread::spawn(move || {
            let mut command = Command::new("sleep");
            command.arg("60");
            runtime.block_on(ChildProcess::spawn(command, &log)).unwrap()
        })
        .join()
        .unwrap();
        // The death signal is delivered as the thread exits; give the kernel a
        // moment to have delivered it if it were going to.
        for _ in 0..20 {
            assert!(alive(&mut child), "the child died with the thread that spawned it");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        child.kill().await;
        assert!(!alive(&mut child));
    }

    #[tokio::test]
    async fn functions_get_no_strata_variables() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env.txt");
        let mut command = command_line(&format!("env > {}", out.display()));
        command.env("STRATA_TOKEN", "secret").env("KEEP_ME", "yes");
        without_strata_environment(&mut command);
        let mut child = ChildProcess::spawn(command, &dir.path().join("env.log")).await.unwrap();
        while alive(&mut child) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("KEEP_ME=yes"), "{env}");
        assert!(
            !env.contains("STRATA_"),
            "a Strata variable reached the function: {env}"
        );
    }

    #[tokio::test]
    async fn sidecars_keep_their_settings_but_no_credential() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env.txt");
        let mut command = command_line(&format!("env > {}", out.display()));
        command
            .env("STRATA_ADMIN_TOKEN", "secret")
            .env("STRATA_CLUSTER_SECRET", "secret")
            .env("STRATA_MAX_ACTIVE_ENTITIES", "200");
        without_strata_credentials(&mut command);
        let mut child = ChildProcess::spawn(command, &dir.path().join("env.log")).await.unwrap();
        while alive(&mut child) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("STRATA_MAX_ACTIVE_ENTITIES=200"), "{env}");
        assert!(!env.contains("secret"), "a credential reached the sidecar: {env}");
    }
}
