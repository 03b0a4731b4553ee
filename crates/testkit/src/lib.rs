//! Test support for real-kernel tests: network namespaces that a test creates,
//! uses and always removes, and real packets sent through them.
//!
//! [`Netns`] creates a uniquely named namespace and deletes it when dropped,
//! also when the test panics, so no test leaves state behind and parallel
//! tests never share one. Commands run inside it with argument vectors (never
//! a shell), and [`Netns::enter`] runs a closure on a thread that has joined
//! it (sockets made there belong to the namespace). Nothing here touches the
//! host's own tables or interfaces: every iptables, nfacct and sysctl call
//! goes through `ip netns exec`, and veth pairs are created from inside a
//! test's namespace straight into another of its namespaces.
//!
//! On top of that:
//! - [`Topology`]: a client, a node and pod namespaces wired with veth pairs
//!   and routes, dual-stack, with documentation-range addresses only;
//! - [`apply_kube_proxy_rules`]: an `iptables-restore` payload applied as
//!   kube-proxy applies it (nfacct counters first, then the payload, then the
//!   jumps from the built-in chains with `-C`/`-I`), on either backend;
//! - [`EchoServer`] (a "pod": answers TCP and UDP with its name and the peer
//!   it saw) and [`probe`] (a client: what happened to one connection);
//! - [`metric_sample`]: one value from a `/metrics` scrape;
//! - [`nft_apply`], [`nft_list_table`] and [`table_differences`]: an nftables
//!   transaction applied with the real `nft -f -`, the `kube-proxy` table read
//!   back through `chainsmith_nftables::read_listing`, and where two tables
//!   (a model and a listing) differ once canonical.
//!
//! Real-kernel tests need root, iproute2, iptables (both backends), nft, nfacct
//! and conntrack. They run when `CHAINSMITH_KERNEL_TESTS=1` is set (CI sets it,
//! see `.ci/run`); then a missing tool is a failure, never a skip.
//! [`kernel_tests_enabled`] tells.
//!
//! Architecture invariant: only test code depends on this crate.

mod echo;
mod iptables;
mod metrics;
mod nft;
mod topology;

pub use echo::{EchoServer, Peer, ProbeResult, Proto, probe, probe_from, probe_here};
pub use iptables::{
    Backend, IpFamily, apply_kube_proxy_rules, apply_rules_with_jumps, nfacct_packets, rule_packets,
};
pub use metrics::metric_sample;
pub use nft::{nft_apply, nft_list_table, table_differences};
pub use topology::{Pod, Topology};

use std::fs::File;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

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

/// A failed command or setup step, with everything needed to see why.
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

    /// The namespace's file, as `ip netns add` mounted it.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `f` on a fresh thread that has joined the namespace and returns
    /// what `f` returned. Sockets `f` creates belong to the namespace (the
    /// thread ends with `f`, so nothing else ever runs in it). A panic in `f`
    /// is passed on to the caller as it was.
    pub fn enter<T, F>(&self, f: F) -> Result<T, CommandError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || -> Result<T, CommandError> {
                join_netns(&path)?;
                Ok(f())
            });
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
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

/// Moves the calling thread into the network namespace mounted at `path`
/// (only this thread: network namespaces are per thread).
pub(crate) fn join_netns(path: &str) -> Result<(), CommandError> {
    let file = File::open(path).map_err(|e| CommandError(format!("cannot open {path}: {e}")))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| CommandError(format!("setns({path}): {e}")))
}

/// Makes SIGINT, SIGTERM and SIGHUP delete every namespace this process
/// created, and stop the processes left inside them, before it exits (with 128 + the signal's number), so a measuring
/// program stopped by hand or by a timeout leaves nothing behind. Drop does
/// not run when a signal ends a process. Call it first thing in `main`,
/// before any other thread starts: the signals are blocked in the calling
/// thread, threads started later inherit that, and one thread waits for them.
pub fn remove_own_namespaces_on_signals() -> Result<(), CommandError> {
    use nix::sys::signal::{SigSet, Signal, kill};
    use nix::unistd::Pid;
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .map_err(|e| CommandError(format!("cannot block signals: {e}")))?;
    std::thread::spawn(move || {
        let signal = signals.wait().map_or(1, |signal| signal as i32);
        let own = format!("-{}-", std::process::id());
        let names: Vec<String> = std::fs::read_dir("/var/run/netns")
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("cs-") && name.contains(&own))
                    .collect()
            })
            .unwrap_or_default();
        // A process still inside (a proxy under test) would keep its
        // namespace alive after `ip netns del`; the program's other threads
        // run on meanwhile and may start another, so look again until none.
        for _ in 0..5 {
            let pids: Vec<Pid> = names
                .iter()
                .filter_map(|name| host("ip", &["netns", "pids", name]).ok())
                .flat_map(|out| {
                    out.lines()
                        .filter_map(|l| l.trim().parse().ok())
                        .collect::<Vec<i32>>()
                })
                .map(Pid::from_raw)
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                let _ = kill(*pid, Signal::SIGTERM);
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while std::time::Instant::now() < deadline && pids.iter().any(|pid| kill(*pid, None).is_ok()) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            for pid in &pids {
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
        for name in &names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
        std::process::exit(128 + signal);
    });
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace drops its tables, links and conntrack entries.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
