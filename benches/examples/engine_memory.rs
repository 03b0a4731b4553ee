//! Where the node's memory goes at scale: live heap bytes of the cluster as
//! model values, of a sync engine holding it, and of the engine's payload
//! buffer after a full sync, counted by dhat's global allocator. With
//! `--nftables`: the nftables-mode engine after a full sync, its transaction,
//! and the node's model of the kernel's table once it took that transaction.
//!
//! `cargo run --release -p chainsmith-benches --example engine_memory -- 10000 10 [--nftables]`

use std::io::Write;

use chainsmith_benches::{cluster, node};
use chainsmith_nftables::{Family, Table};
use chainsmith_sync::{NftSyncEngine, PartialSyncMode, SyncEngine};

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

    if std::env::args().any(|a| a == "--nftables") {
        let before_engine = live();
        let mut engine = NftSyncEngine::new(node());
        engine.replace_state(&input.services, &input.slices);
        let first = engine.sync(0, false);
        let with_transaction = live() - before_engine;
        let before_model = live();
        let mut table = Table::new(Family::Ip);
        if let Err(error) = table.apply_in_place(&first.main) {
            writeln!(out, "the model refused the first sync: {error}")?;
        }
        let model_bytes = live() - before_model;
        engine.commit(first.cleanup.is_some(), true);
        drop(first);
        let engine_bytes = live() - before_engine - model_bytes;
        writeln!(
            out,
            "{services} services x {endpoints} endpoints, nftables: cluster as model values {:.1} MiB; \
             engine and its first transaction {:.1} MiB; engine once the transaction is dropped {:.1} MiB; \
             model of the kernel's table {:.1} MiB",
            mib(model),
            mib(with_transaction),
            mib(engine_bytes),
            mib(model_bytes),
        )?;
        return Ok(());
    }

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
