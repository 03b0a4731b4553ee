//! The first full sync of nftables mode into a real kernel (each run in a
//! fresh network namespace this program creates): one `nft -f` of the whole
//! transaction (what kube-proxy sends) against the same transaction cut by
//! `Transaction::split_leaves_first` into pieces of about 500 and 2000
//! Services' worth of operations, sent one after the other. Needs root.
//!
//! `cargo run --release -p chainsmith-benches --example nft_chunked_first_sync -- 2500 10`

use std::io::Write;
use std::time::Instant;

use chainsmith_benches::{cluster, node};
use chainsmith_nftables::Transaction;
use chainsmith_sync::NftSyncEngine;
use chainsmith_testkit::{Netns, nft_apply};

/// Sends `texts` in order into a fresh namespace; seconds taken.
fn send(label: &str, texts: &[String]) -> Result<f64, Box<dyn std::error::Error>> {
    let netns = Netns::new(label)?;
    let start = Instant::now();
    for text in texts {
        nft_apply(&netns, text)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, endpoints) = (
        args.first().copied().unwrap_or(2_500),
        args.get(1).copied().unwrap_or(10),
    );
    let input = cluster(services, endpoints);
    let mut engine = NftSyncEngine::new(node());
    engine.replace_state(&input.services, &input.slices);
    let whole = engine.sync(0, false).main;
    let per_service = whole.len().div_ceil(services.max(1));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: {} operations (~{per_service} per Service), {} bytes",
        whole.len(),
        whole.to_text().len()
    )?;

    let seconds = send("whole", &[whole.to_text()])?;
    writeln!(out, "one transaction: {seconds:.1} s")?;
    for group in [500, 2_000] {
        let max_ops = group * per_service;
        let split = Instant::now();
        let pieces = whole.split_leaves_first(max_ops);
        let split_ms = split.elapsed().as_secs_f64() * 1e3;
        let texts: Vec<String> = pieces.iter().map(Transaction::to_text).collect();
        let seconds = send("pieces", &texts)?;
        writeln!(
            out,
            "pieces of {group} Services (max {max_ops} ops): {seconds:.1} s in {} transactions (split in {split_ms:.0} ms)",
            pieces.len()
        )?;
    }
    Ok(())
}
