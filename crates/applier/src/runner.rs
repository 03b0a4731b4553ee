//! Running commands: on the host, or inside a network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

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

/// Runs commands directly on this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
        run_command(Command::new(program).args(args), stdin)
    }
}

/// Runs commands inside a named network namespace (`ip netns exec NAME ...`).
#[derive(Debug, Clone)]
pub struct NetnsRunner {
    name: String,
}

impl NetnsRunner {
    /// A runner for the namespace `name`.
    pub fn new(name: impl Into<String>) -> NetnsRunner {
        NetnsRunner { name: name.into() }
    }
}

impl Runner for NetnsRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
        run_command(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
            stdin,
        )
    }
}

fn run_command(command: &mut Command, stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes the pipe; its exit status tells why.
        let _ = pipe.write_all(input);
    }
    let output = child.wait_with_output()?;
    Ok(CommandOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
