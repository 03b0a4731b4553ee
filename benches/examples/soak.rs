//! Soak: the real `chainsmith run` in a node namespace against a fake API
//! server with a large cluster under steady endpoint churn, for minutes.
//! Reports resident memory over time, sync failures, network programming
//! latency (the proxy's own histogram, from the slices' trigger times) and,
//! every 10 s, event -> rules latency seen by real packets; at the end it
//! compares the kernel's tables with what a freshly started proxy writes for
//! the final state. Exits non-zero if a sync failed or the tables differ.
//! Needs root and a release build of the binary.
//!
//! `cargo build --release -p chainsmith && cargo run --release -p chainsmith-benches --example soak -- 10000 10 10 50 [1s] [--nftables]`
//! (services, endpoints per service, minutes, endpoint changes per second,
//! optionally `minSyncPeriod`, and `--nftables` for kube-proxy's nftables
//! mode instead of iptables mode)

mod node_harness;

use std::io::Write;
use std::time::{Duration, Instant};

use chainsmith_testkit::metric_sample;
use node_harness::{NodeUnderTest, endpoint_address, histogram_quantile, p50_p99_max, resident_kib, slice};

/// A small deterministic generator (xorshift64*): the same churn every run.
struct Churn(u64);

impl Churn {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % below.max(1)
    }
}

/// User and system CPU seconds of a process and of its waited-for children
/// (iptables-restore runs as one), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name, which may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17; index 0 here is field 3.
    let ticks: f64 = fields
        .get(11..15)
        .unwrap_or(&[])
        .iter()
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn counter(metrics: &str, name: &str) -> f64 {
    metric_sample(metrics, name, "ip_family=\"IPv4\"").unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    chainsmith_testkit::remove_own_namespaces_on_signals()?;
    let mut raw: Vec<String> = std::env::args().skip(1).collect();
    let nftables = raw.iter().any(|a| a == "--nftables");
    raw.retain(|a| a != "--nftables");
    let args: Vec<usize> = raw.iter().take(4).filter_map(|a| a.parse().ok()).collect();
    let min_sync_period = raw.get(4).cloned();
    let (services, endpoints, minutes, rate) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(10),
        args.get(3).copied().unwrap_or(50),
    );
    let mut out = std::io::stdout().lock();
    let mut node = NodeUnderTest::new(services, endpoints, "soak")?;
    node.nftables = nftables;
    writeln!(out, "mode: {}", if nftables { "nftables" } else { "iptables" })?;
    if let Some(period) = &min_sync_period {
        node.set_min_sync_period(period)?;
        writeln!(out, "minSyncPeriod: {period}")?;
    }
    let pid = node.start_proxy()?;
    let Some(first) = node.answered_by("pod-a", pid, Duration::from_secs(900)) else {
        return Err(format!("the first sync never answered; log:\n{}", node.log()).into());
    };
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: first sync after {:.1} s, RSS {} MiB (peak {} MiB)",
        first.as_secs_f64(),
        resident_kib(pid, "VmRSS:") / 1024,
        resident_kib(pid, "VmHWM:") / 1024,
    )?;

    // Each service's current endpoints; a change replaces one of them.
    let mut current: Vec<Vec<String>> = (0..services)
        .map(|i| {
            (0..endpoints)
                .map(|e| endpoint_address(i * endpoints + e))
                .collect()
        })
        .collect();
    let mut next_address = services * endpoints;
    let mut churn = Churn(0x9E37_79B9_7F4A_7C15);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let end = started + Duration::from_secs(60 * minutes as u64);
    let mut changes = 0usize;
    let mut rss = Vec::new();
    let mut probed_latencies = Vec::new();
    let mut probed_on = 0usize;
    let mut next_sample = started;
    let mut next_probe = started + Duration::from_secs(5);
    while Instant::now() < end {
        let i = 1 + churn.next(services - 1);
        let slot = churn.next(endpoints);
        current[i][slot] = endpoint_address(next_address);
        next_address += 1;
        node.api.apply(slice(&format!("svc-{i}"), &current[i]));
        changes += 1;
        if Instant::now() >= next_sample {
            rss.push((started.elapsed().as_secs(), resident_kib(pid, "VmRSS:") / 1024));
            next_sample += Duration::from_secs(10);
        }
        if Instant::now() >= next_probe {
            // Move the probed Service's endpoint; real packets tell when the
            // kernel has it (the churn goes on meanwhile, in this thread's
            // absence, only between probes).
            probed_on = 1 - probed_on;
            let changed = Instant::now();
            node.api
                .apply(slice("probed", &[node.pods[probed_on].to_string()]));
            let pod = ["pod-a", "pod-b"][probed_on];
            match node.answered_by(pod, pid, Duration::from_secs(30)) {
                Some(_) => probed_latencies.push(changed.elapsed().as_secs_f64() * 1000.0),
                None => return Err(format!("{pod} never answered; log:\n{}", node.log()).into()),
            }
            // A random phase: a fixed 10 s would lock the probe to the sync
            // cadence and always measure the same point of it.
            next_probe = Instant::now() + Duration::from_millis(10_000 + churn.next(2_000) as u64);
        }
        let due = started + interval * u32::try_from(changes).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    // Let the last changes reach the kernel.
    std::thread::sleep(Duration::from_secs(5));
    let metrics = node.metrics();
    let (failure_metric, partial_failure_metric) = if nftables {
        (
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
        )
    } else {
        (
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
        )
    };
    let failures = counter(&metrics, failure_metric);
    let partial_failures = counter(&metrics, partial_failure_metric);
    let syncs = counter(&metrics, "kubeproxy_sync_proxy_rules_duration_seconds_count");
    let programming = "chainsmith_network_programming_duration_seconds";
    writeln!(
        out,
        "{changes} endpoint changes in {elapsed:.0} s ({:.1}/s); {syncs} syncs, {failures} failed syncs ({failure_metric}), {partial_failures} by {partial_failure_metric}",
        changes as f64 / elapsed
    )?;
    writeln!(
        out,
        "CPU of the proxy and the commands it ran: {:.2} cores on average",
        cpu / elapsed
    )?;
    writeln!(
        out,
        "network programming latency (the proxy's histogram): p50 {:.2} s, p99 {:.2} s",
        histogram_quantile(&metrics, programming, 0.5).unwrap_or(f64::NAN),
        histogram_quantile(&metrics, programming, 0.99).unwrap_or(f64::NAN),
    )?;
    let probes = probed_latencies.len();
    if let Some((p50, p99, max)) = p50_p99_max(probed_latencies) {
        writeln!(
            out,
            "event -> rules in the kernel, by real packets, {probes} times: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
        )?;
    }
    let partial = node.logged_sync_durations("partial");
    let syncs_logged = partial.len();
    if let Some((p50, p99, max)) = p50_p99_max(partial) {
        writeln!(
            out,
            "partial sync durations, {syncs_logged} syncs: p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
        )?;
    }
    let samples: Vec<String> = rss.iter().map(|(s, mib)| format!("{s}s:{mib}")).collect();
    writeln!(
        out,
        "resident memory (MiB) over time: {}; peak {} MiB",
        samples.join(" "),
        resident_kib(pid, "VmHWM:") / 1024
    )?;

    // The kernel after minutes of partial syncs, against a fresh proxy's
    // first full sync of the same final state. In nftables mode the last
    // syncs' stale chains are flushed and wait for a sync more than a
    // second later to be deleted: the periodic one (syncPeriod, 30 s), which
    // comes however long the last syncs took.
    if nftables {
        let synced = |log: &str| log.lines().filter(|line| line.contains(" synced ")).count();
        let before = synced(&node.log());
        let deadline = Instant::now() + Duration::from_secs(120);
        while synced(&node.log()) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        // That sync's transaction, committed.
        std::thread::sleep(Duration::from_secs(5));
    }
    let incremental = node.tables()?;
    node.stop_proxy();
    let log_before = node.log().len();
    let fresh_pid = node.start_proxy()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !node.log()[log_before.min(node.log().len())..].contains("kind=\"full\"") {
        if Instant::now() > deadline || node_harness::exited(fresh_pid) {
            return Err("the fresh proxy never synced".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let fresh = node.tables()?;
    let differing: Vec<_> = incremental.iter().zip(&fresh).filter(|(a, b)| a != b).collect();
    let same = incremental.len() == fresh.len() && differing.is_empty();
    writeln!(
        out,
        "kernel after the soak {} a fresh full sync ({} chains{})",
        if same { "equals" } else { "DIFFERS from" },
        incremental.len(),
        if same {
            String::new()
        } else {
            format!(
                "; {} vs {} chains; first differing, after the soak then fresh: {:#?}",
                incremental.len(),
                fresh.len(),
                differing.first()
            )
        }
    )?;
    if failures > 0.0 || partial_failures > 0.0 || !same {
        return Err("the soak failed".into());
    }
    Ok(())
}
