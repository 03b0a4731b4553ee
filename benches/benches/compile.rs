//! Full plan + render of whole clusters (targets 1 of PERFORMANCE.md).

use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chainsmith_benches::{cluster, node};
use chainsmith_iptables::CountingSink;
use chainsmith_layout::Layout;
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use chainsmith_sync::{PartialSyncMode, SyncEngine};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [(usize, usize); 3] = [(1_000, 10), (10_000, 10), (30_000, 4)];

/// From model objects to restore text, nothing cached: what `chainsmith
/// compile` and the first sync after a start pay.
fn cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_plan_render_cold");
    group.sample_size(10);
    for (services, endpoints) in SIZES {
        let input = cluster(services, endpoints);
        let config = node();
        let lines = render_plan(
            &Plan::compile(&input.services, &input.slices, &config),
            Layout::V1_33,
        )
        .iter()
        .filter(|b| **b == b'\n')
        .count();
        group.throughput(Throughput::Elements(lines as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{services}x{endpoints}")),
            |b| {
                b.iter(|| {
                    render_plan(
                        &Plan::compile(black_box(&input.services), black_box(&input.slices), &config),
                        Layout::V1_33,
                    )
                })
            },
        );
    }
    group.finish();
}

/// A periodic full resync of an engine that already holds every plan: all of
/// the text is rendered again into a reused buffer.
fn warm(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_resync_warm");
    group.sample_size(20);
    for (services, endpoints) in SIZES {
        let input = cluster(services, endpoints);
        let mut engine = SyncEngine::new(node(), PartialSyncMode::Minimal);
        engine.replace_state(&input.services, &input.slices);
        engine.sync(0, true);
        engine.commit(true);
        group.bench_function(
            BenchmarkId::from_parameter(format!("{services}x{endpoints}")),
            |b| {
                b.iter(|| {
                    let bytes = engine.sync(0, true).payload.len();
                    engine.commit(true);
                    black_box(bytes)
                })
            },
        );
    }
    group.finish();
}

/// The two halves of the cold path, to see where its time goes.
fn phases(c: &mut Criterion) {
    let mut group = c.benchmark_group("phases_10000x10");
    group.sample_size(10);
    let input = cluster(10_000, 10);
    let config = node();
    group.bench_function("plan", |b| {
        b.iter(|| Plan::compile(black_box(&input.services), black_box(&input.slices), &config))
    });
    let plan = Plan::compile(&input.services, &input.slices, &config);
    group.bench_function("render_fresh_buffer", |b| {
        b.iter(|| render_plan(black_box(&plan), Layout::V1_33))
    });
    group.bench_function("emit_only", |b| {
        b.iter(|| {
            let mut sink = CountingSink::default();
            let layout = Layout::V1_33;
            for port in &plan.ports {
                layout.emit_filter(port, &mut sink);
                layout.emit_nat(port, &plan.ctx, false, true, &mut sink);
            }
            black_box(sink.rules)
        })
    });
    group.finish();
}

criterion_group!(benches, cold, warm, phases);
criterion_main!(benches);
