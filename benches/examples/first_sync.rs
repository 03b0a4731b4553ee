//! The first full sync of a large cluster into a real kernel (nf_tables, in a
//! network namespace this program creates): split into batches of whole chains
//! (what the node does) against one monolithic restore (what kube-proxy does),
//! the latter cut off after a timeout. Needs root.
//!
//! `cargo run --release -p chainsmith-benches --example first_sync -- 10000 10 600`

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chainsmith_applier::{Applier, Backend, NetnsRunner, Tools};
use chainsmith_benches::{cluster, node};
use chainsmith_layout::Layout;
use chainsmith_model::IpFamily;
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use chainsmith_testkit::Netns;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, endpoints, timeout) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(600),
    );
    let input = cluster(services, endpoints);
    let mut config = node();
    config.nfacct = Default::default();
    let payload = render_plan(
        &Plan::compile(&input.services, &input.slices, &config),
        Layout::V1_33,
    );
    let lines = payload.iter().filter(|b| **b == b'\n').count();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: {lines} lines, {} bytes",
        payload.len()
    )?;

    let netns = Netns::new("batched")?;
    let runner = NetnsRunner::new(netns.name());
    let applier = Applier::new(
        Tools::detect(&runner, IpFamily::V4, Some(Backend::NfTables))?,
        Box::new(runner),
    );
    let start = Instant::now();
    let report = applier.apply_full(&payload)?;
    writeln!(
        out,
        "batched: {:.1} s in {} restores",
        start.elapsed().as_secs_f64(),
        report.restores
    )?;
    drop(netns);

    let netns = Netns::new("mono")?;
    let start = Instant::now();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.name(),
            "iptables-nft-restore",
            "--noflush",
            "--wait",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&payload)?;
    }
    loop {
        if let Some(status) = child.try_wait()? {
            writeln!(
                out,
                "monolithic: {:.1} s ({status})",
                start.elapsed().as_secs_f64()
            )?;
            break;
        }
        if start.elapsed() > Duration::from_secs(timeout as u64) {
            child.kill()?;
            let _ = child.wait();
            writeln!(out, "monolithic: not finished after {timeout} s (stopped)")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
