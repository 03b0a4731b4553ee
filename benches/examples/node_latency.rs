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

use node_harness::{NodeUnderTest, percentile, resident_kib, slice};

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
        // Spaced beyond minSyncPeriod (1 s), so each change syncs at once.
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
    latencies.sort_by(f64::total_cmp);
    writeln!(
        out,
        "event -> rules in the kernel over {rounds} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS {} MiB",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        resident_kib(pid, "VmRSS:") / 1024,
    )?;
    let mut partial: Vec<f64> = node
        .log()
        .lines()
        .filter(|l| l.contains(" synced") && l.contains("partial"))
        .filter_map(|l| {
            l.split("duration_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    partial.sort_by(f64::total_cmp);
    if !partial.is_empty() {
        writeln!(
            out,
            "of which the sync itself (plan, write, iptables-restore): p50 {:.1} ms, p99 {:.1} ms over {} partial syncs",
            percentile(&partial, 50.0),
            percentile(&partial, 99.0),
            partial.len()
        )?;
    }
    Ok(())
}
