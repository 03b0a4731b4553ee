//! nftables mode: the first sync of a fresh engine (what `chainsmith compile
//! --mode nftables` and a node's first sync pay: plan every Service, write
//! the whole transaction), and one endpoint changing in a large cluster (a
//! partial sync: one Service's chains rewritten, every element diffed).

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chainsmith_benches::{cluster, node, toggle_endpoint};
use chainsmith_sync::NftSyncEngine;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, usize); 2] = [(1_000, 10), (10_000, 10)];

fn first_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("nftables_first_sync");
    group.sample_size(10);
    for (services, endpoints) in SIZES {
        let input = cluster(services, endpoints);
        let run = || {
            let mut engine = NftSyncEngine::new(node());
            engine.replace_state(black_box(&input.services), black_box(&input.slices));
            engine.sync(0, false).main.to_text()
        };
        group.throughput(Throughput::Elements(run().lines().count() as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{services}x{endpoints}")),
            |b| b.iter(run),
        );
    }
    group.finish();
}

fn one_endpoint_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("nftables_one_endpoint_change");
    for (services, endpoints) in SIZES {
        let input = cluster(services, endpoints);
        let mut engine = NftSyncEngine::new(node());
        engine.replace_state(&input.services, &input.slices);
        engine.sync(0, false);
        engine.commit(true, true);
        let original = input.slices[services / 2].clone();
        let toggled = toggle_endpoint(&original);
        let mut flip = false;
        // Minutes apart: every flushed endpoint chain is deleted by the next
        // sync, as on a node whose syncs are seconds apart.
        let mut now_ms = 0;
        group.bench_function(
            BenchmarkId::from_parameter(format!("{services}x{endpoints}")),
            |b| {
                b.iter(|| {
                    flip = !flip;
                    now_ms += 2_000;
                    let slice = if flip { &toggled } else { &original };
                    engine.set_endpoint_slice(&slice.key, Some(black_box(slice)));
                    let outcome = engine.sync(now_ms, false);
                    let bytes = outcome.main.to_text().len();
                    engine.commit(true, true);
                    black_box(bytes)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, first_sync, one_endpoint_change);
criterion_main!(benches);
