//! Event -> rules in the kernel, end to end: the real `chainsmith run` in a
//! node namespace, a fake API server holding a large cluster, and a client
//! whose real packets tell when a change took effect. Each round moves the
//! one endpoint of the probed Service to the other pod and times from the
//! API server's change to the first connection answered by the new pod. Also
//! reports the binary's resident memory once the cluster is programmed.
//! Needs root and a release build of the binary.
//!
//! `cargo build --release -p chainsmith && cargo run --release -p chainsmith-benches --example node_latency -- 10000 10 40`

// The soak example uses the rest of the harness.
#[allow(dead_code)]
mod node_harness;

use std::io::Write;
use std::time::{Duration, Instant};

use node_harness::{NodeUnderTest, p50_p99_max, resident_kib, slice};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    chainsmith_testkit::remove_own_namespaces_on_signals()?;
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, endpoints, rounds) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(40),
    );
    let mut out = std::io::stdout().lock();
    let mut node = NodeUnderTest::new(services, endpoints, "latency")?;
    let pid = node.start_proxy()?;
    let Some(first) = node.answered_by("pod-a", pid, Duration::from_secs(900)) else {
        return Err(format!("the first sync never answered; log:\n{}", node.log()).into());
    };
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: first sync answered after {:.1} s; RSS {} MiB (peak {} MiB)",
        first.as_secs_f64(),
        resident_kib(pid, "VmRSS:") / 1024,
        resident_kib(pid, "VmHWM:") / 1024,
    )?;

    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Spaced beyond the longest wait between syncs (1 s), so each change
        // syncs at once.
        std::thread::sleep(Duration::from_millis(1100));
        let target = (round + 1) % 2;
        let changed = Instant::now();
        node.api.apply(slice("probed", &[node.pods[target].to_string()]));
        let name = ["pod-a", "pod-b"][target];
        match node.answered_by(name, pid, Duration::from_secs(30)) {
            Some(_) => latencies.push(changed.elapsed().as_secs_f64() * 1000.0),
            None => return Err(format!("round {round}: {name} never answered").into()),
        }
    }
    let (p50, p99, max) = p50_p99_max(latencies).ok_or("no rounds")?;
    writeln!(
        out,
        "event -> rules in the kernel over {rounds} changes: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; RSS {} MiB",
        resident_kib(pid, "VmRSS:") / 1024,
    )?;
    let partial = node.logged_sync_durations("partial");
    let syncs = partial.len();
    if let Some((p50, p99, _)) = p50_p99_max(partial) {
        writeln!(
            out,
            "of which the sync itself (plan, write, iptables-restore): p50 {p50:.1} ms, p99 {p99:.1} ms over {syncs} partial syncs",
        )?;
    }
    Ok(())
}
