//! One endpoint changes in a large cluster (targets 2 and 3 of PERFORMANCE.md):
//! the engine records the new slice, plans that one Service again and writes
//! the payload. Each iteration flips the same endpoint back or forth, so every
//! iteration is a real one-endpoint change.

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chainsmith_benches::{cluster, node, toggle_endpoint};
use chainsmith_sync::{PartialSyncMode, SyncEngine};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn one_endpoint_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_endpoint_change");
    for (mode, label) in [
        (PartialSyncMode::Minimal, "minimal"),
        (PartialSyncMode::Compat, "compat"),
    ] {
        for services in [1_000, 10_000] {
            let input = cluster(services, 10);
            let mut engine = SyncEngine::new(node(), mode);
            engine.replace_state(&input.services, &input.slices);
            engine.sync(0, true);
            engine.commit(true);
            let original = input.slices[services / 2].clone();
            let toggled = toggle_endpoint(&original);
            let mut flip = false;
            group.bench_function(BenchmarkId::new(label, format!("{services}x10")), |b| {
                b.iter(|| {
                    flip = !flip;
                    let slice = if flip { &toggled } else { &original };
                    engine.set_endpoint_slice(&slice.key, Some(black_box(slice)));
                    let bytes = engine.sync(1, false).payload.len();
                    engine.commit(true);
                    black_box(bytes)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, one_endpoint_change);
criterion_main!(benches);
