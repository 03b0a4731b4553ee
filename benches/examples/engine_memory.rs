//! Where the node's memory goes at scale: live heap bytes of the cluster as
//! model values, of a sync engine holding it, and of the engine's payload
//! buffer after a full sync, counted by dhat's global allocator.
//!
//! `cargo run --release -p chainsmith-benches --example engine_memory -- 10000 10`

use std::io::Write;

use chainsmith_benches::{cluster, node};
use chainsmith_sync::{PartialSyncMode, SyncEngine};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn live() -> usize {
    dhat::HeapStats::get().curr_bytes
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> std::io::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, endpoints) = (
        args.first().copied().unwrap_or(10_000),
        args.get(1).copied().unwrap_or(10),
    );
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut out = std::io::stdout().lock();
    let base = live();
    let input = cluster(services, endpoints);
    let model = live() - base;

    let before_engine = live();
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Minimal);
    engine.replace_state(&input.services, &input.slices);
    let payload = engine.sync(0, false).payload.len();
    engine.commit(true);
    let with_payload = live() - before_engine;
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: cluster as model values {:.1} MiB; \
         engine after a full sync {:.1} MiB, of which the {:.1} MiB payload buffer",
        mib(model),
        mib(with_payload),
        mib(payload),
    )?;
    drop(input);
    writeln!(
        out,
        "engine alone once the caller's copy is dropped: {:.1} MiB",
        mib(live() - base)
    )?;
    Ok(())
}
