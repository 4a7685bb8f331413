//! Child processes of the local runtime: each in its own process group (so a
//! terminal's Ctrl-C reaches only `strata dev`, which then stops them in order),
//! killed by the kernel if `strata dev` dies (`PR_SET_PDEATHSIG`), with output in
//! a log file.

use std::{path::Path, process::Stdio, time::Duration};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// A spawned child of the runtime.
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Spawns `command` with its output appended to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = command.spawn()?;
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

/// Asks the kernel to SIGKILL the child when its parent thread exits, so nothing
/// outlives a `kill -9` of `strata dev`. Children are spawned from tokio worker
/// threads, which live as long as the runtime.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
}

/// The command for a service's command line: run directly when it is a plain
/// program with arguments (so signals and `PR_SET_PDEATHSIG` reach the function
/// itself), through `sh -c` when it uses shell syntax.
pub fn command_line(line: &str) -> Command {
    const SHELL_SYNTAX: &[char] = &[
        ';', '&', '|', '<', '>', '$', '`', '\'', '"', '(', ')', '{', '}', '*', '?', '~', '\\', '#', '=',
    ];
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.split_first() {
        Some((program, args)) if !line.contains(SHELL_SYNTAX) => {
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

/// A free loopback port (bound, then released for a child to take).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
