//! Applying a one-endpoint change to a real kernel (nf_tables, in a network
//! namespace this benchmark creates): the time of the `iptables-restore` run
//! alone, for `minimal` and `compat` payloads, at 1k and 2.5k Services x 10
//! endpoints (PERFORMANCE.md target 4). Needs root; set
//! `CHAINSMITH_KERNEL_TESTS=1` to run it.

// A benchmark harness, like a test, may panic on a broken setup and print.
#![allow(clippy::expect_used, clippy::print_stderr)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chainsmith_applier::{Applier, Backend, NetnsRunner, Tools};
use chainsmith_benches::{cluster, node, toggle_endpoint};
use chainsmith_model::IpFamily;
use chainsmith_sync::{PartialSyncMode, SyncEngine};
use chainsmith_testkit::{Netns, kernel_tests_enabled};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn one_endpoint_apply(c: &mut Criterion) {
    if !kernel_tests_enabled("apply benchmark") {
        return;
    }
    let mut group = c.benchmark_group("apply_one_endpoint_change_nft");
    group.sample_size(20);
    for services in [1_000, 2_500] {
        for (mode, label) in [
            (PartialSyncMode::Minimal, "minimal"),
            (PartialSyncMode::Compat, "compat"),
        ] {
            let netns = Netns::new("bench").expect("netns");
            let runner = NetnsRunner::new(netns.name());
            let tools = Tools::detect(&runner, IpFamily::V4, Some(Backend::NfTables)).expect("tools");
            let applier = Applier::new(tools, Box::new(runner));
            let mut config = node();
            config.nfacct = Default::default();
            let mut engine = SyncEngine::new(config, mode);
            let input = cluster(services, 10);
            engine.replace_state(&input.services, &input.slices);
            applier
                .apply_full(engine.sync(0, true).payload)
                .expect("first sync");
            engine.commit(true);
            let original = input.slices[services / 2].clone();
            let toggled = toggle_endpoint(&original);
            let mut flip = false;
            let mut bytes = 0;
            group.bench_function(BenchmarkId::new(label, format!("{services}x10")), |b| {
                b.iter_custom(|iterations| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iterations {
                        flip = !flip;
                        let slice = if flip { &toggled } else { &original };
                        engine.set_endpoint_slice(&slice.key, Some(slice));
                        let payload = engine.sync(1, false).payload.to_vec();
                        bytes = payload.len();
                        let start = Instant::now();
                        black_box(applier.apply(&payload).expect("apply"));
                        spent += start.elapsed();
                        engine.commit(true);
                    }
                    spent
                })
            });
            eprintln!("{label} {services}x10: one-endpoint payload {bytes} bytes");
        }
    }
    group.finish();
}

criterion_group!(benches, one_endpoint_apply);
criterion_main!(benches);
