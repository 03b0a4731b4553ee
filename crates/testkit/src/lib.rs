//! Test support for real-kernel tests: network namespaces that a test creates,
//! uses and always removes.
//!
//! [`Netns`] creates a uniquely named namespace and deletes it when dropped,
//! also when the test panics, so no test leaves state behind and parallel
//! tests never share one. Commands run inside it with argument vectors (never
//! a shell). Nothing here touches the host's own tables: every iptables call
//! goes through `ip netns exec`.
//!
//! Real-kernel tests need root, iproute2 and iptables. They run when
//! `CHAINSMITH_KERNEL_TESTS=1` is set (CI sets it, see `.ci/run`); then a
//! missing tool is a failure, never a skip. [`kernel_tests_enabled`] tells.
//!
//! Architecture invariant: only test code depends on this crate.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that turns real-kernel tests on.
pub const ENABLE_VAR: &str = "CHAINSMITH_KERNEL_TESTS";

/// Whether real-kernel tests should run. Prints why not when they are off, so
/// a developer sees that they did not run.
pub fn kernel_tests_enabled(test: &str) -> bool {
    let enabled = std::env::var(ENABLE_VAR).is_ok_and(|v| v == "1");
    if !enabled {
        // Shown with --nocapture; CI always runs these tests.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: real-kernel test not run ({ENABLE_VAR}=1 enables it)"
        );
    }
    enabled
}

/// A failed command, with everything needed to see why.
#[derive(Debug)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

fn describe(program: &str, args: &[&str], output: &Output) -> String {
    format!(
        "{program} {} exited with {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command on the host (for `ip netns add/del` only), returning stdout.
fn host(program: &str, args: &[&str]) -> Result<String, CommandError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| CommandError(format!("cannot run {program}: {e}")))?;
    if !output.status.success() {
        return Err(CommandError(describe(program, args, &output)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace owned by one test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `cs-<label>-<pid>-<n>` (short enough for iproute2's limits).
    pub fn new(label: &str) -> Result<Netns, CommandError> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let name = format!("cs-{label}-{}-{n}", std::process::id());
        host("ip", &["netns", "add", &name])?;
        let netns = Netns { name };
        netns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program args` inside the namespace; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, CommandError> {
        self.run_with_input(program, args, &[])
    }

    /// Runs `program args` inside the namespace with `input` on stdin.
    pub fn run_with_input(&self, program: &str, args: &[&str], input: &[u8]) -> Result<String, CommandError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        let mut child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CommandError(format!("cannot run ip netns exec: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| CommandError(format!("cannot feed {program}: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| CommandError(format!("{program}: {e}")))?;
        if !output.status.success() {
            return Err(CommandError(describe(program, args, &output)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace drops its tables, links and conntrack entries.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
