//! Running commands: on the host, or inside a network namespace.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs a program with arguments and optional standard input.
pub trait Runner: Send + Sync {
    /// Runs `program args`, feeding `stdin`; an `Err` means it could not run.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput>;
}

/// How long one command may run before it is killed, unless the runner is
/// given another limit: a hung iptables-restore must not stop every later
/// sync. The largest first sync measured (10k Services x 10 endpoints, one
/// legacy restore) takes 11 s.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs commands directly on this machine.
#[derive(Debug, Clone, Copy)]
pub struct SystemRunner {
    timeout: Duration,
}

impl SystemRunner {
    /// A runner that kills commands still running after `timeout`.
    pub fn with_timeout(timeout: Duration) -> SystemRunner {
        SystemRunner { timeout }
    }
}

impl Default for SystemRunner {
    fn default() -> SystemRunner {
        SystemRunner::with_timeout(DEFAULT_COMMAND_TIMEOUT)
    }
}

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
        run_command(Command::new(program).args(args), stdin, self.timeout)
    }
}

/// Runs commands inside a named network namespace (`ip netns exec NAME ...`).
#[derive(Debug, Clone)]
pub struct NetnsRunner {
    name: String,
    timeout: Duration,
}

impl NetnsRunner {
    /// A runner for the namespace `name`.
    pub fn new(name: impl Into<String>) -> NetnsRunner {
        NetnsRunner {
            name: name.into(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The same runner, killing commands still running after `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> NetnsRunner {
        NetnsRunner { timeout, ..self }
    }
}

impl Runner for NetnsRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
            stdin,
            self.timeout,
        )
    }
}

/// Runs `command` in a process group of its own, so that on timeout the
/// whole group dies: a wrapper script's children would otherwise keep the
/// pipes open. Waiting happens on its own thread, so a command that finishes
/// is seen at once, not at the next poll.
fn run_command(
    command: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<CommandOutput> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let input = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if let (Some(data), Some(mut pipe)) = (stdin, input) {
                // A tool that exits early closes the pipe; its exit status tells why.
                let _ = pipe.write_all(data);
            }
        });
        let stdout = scope.spawn(move || read_all(stdout));
        let stderr = scope.spawn(move || read_all(stderr));
        let (done, exited) = mpsc::channel();
        scope.spawn(move || {
            let _ = done.send(child.wait());
        });
        let (status, timed_out) = match exited.recv_timeout(timeout) {
            Ok(status) => (status, false),
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                (
                    exited.recv().unwrap_or_else(|e| Err(std::io::Error::other(e))),
                    true,
                )
            }
        };
        // Anything the command left behind in its group goes with it (no
        // such process: nothing to do).
        let _ = killpg(group, Signal::SIGKILL);
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if timed_out {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("still running after {} s, killed", timeout.as_secs_f64()),
            ));
        }
        Ok(CommandOutput {
            code: status?.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    })
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}
