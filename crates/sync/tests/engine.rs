//! The sync engine against the model of the kernel's tables: what each sync
//! writes, and that partial syncs always leave the same tables as a full one.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use chainsmith_iptables::RuleSet;
use chainsmith_layout::Layout;
use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpNet, LoadBalancerIngress,
    LocalTrafficDetector, NodeConfig, ObjectKey, Protocol, Service, ServicePort, ServiceType, TrafficPolicy,
};
use chainsmith_nftables::{Family, Op, Table, Transaction};
use chainsmith_sync::{FULL_SYNC_PERIOD_MS, NftSyncEngine, PartialSyncMode, SyncEngine, SyncKind};

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ip: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10))),
        local_traffic_detector: LocalTrafficDetector::ClusterCidr(
            "10.0.0.0/8".parse::<IpNet>().expect("cidr"),
        ),
        masquerade_mark: "0x4000".into(),
        ..NodeConfig::default()
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Service `i` with `endpoints` endpoints; every third is a NodePort, every
/// fifth a LoadBalancer with source ranges, every seventh eTP Local.
fn service(i: u32) -> Service {
    let mut s = Service::new(ObjectKey::new(format!("ns{}", i % 3), format!("svc{i}")));
    s.cluster_ips = ClusterIps {
        v4: Some(v4(0x0A60_0000 + i)),
        v6: None,
    };
    let node_port = if i.is_multiple_of(3) { 30000 + i as u16 } else { 0 };
    s.ports.push(ServicePort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port,
    });
    if i.is_multiple_of(3) {
        s.service_type = ServiceType::NodePort;
    }
    if i.is_multiple_of(5) {
        s.service_type = ServiceType::LoadBalancer;
        s.load_balancer_ingress.push(LoadBalancerIngress {
            ip: v4(0xCB00_7100 + i),
            ip_mode: None,
        });
        s.load_balancer_source_ranges
            .push("203.0.113.0/25".parse().expect("cidr"));
    }
    if i.is_multiple_of(7) {
        s.external_traffic_policy = TrafficPolicy::Local;
    }
    s
}

fn slice(i: u32, endpoints: &[(u32, bool, bool)]) -> EndpointSlice {
    let key = ObjectKey::new(format!("ns{}", i % 3), format!("svc{i}"));
    EndpointSlice {
        key: ObjectKey::new(key.namespace.clone(), format!("svc{i}-x")),
        service: key,
        address_type: AddressType::Ipv4,
        ports: vec![EndpointPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        endpoints: endpoints
            .iter()
            .map(|&(n, ready, local)| {
                let mut e = Endpoint::ready(v4(0x0A00_0000 + i * 256 + n));
                e.ready = ready;
                e.serving = ready;
                e.terminating = !ready;
                e.node_name = Some(if local { "node-a" } else { "node-b" }.into());
                e
            })
            .collect(),
    }
}

/// Runs one sync, applies it to `kernel`, and commits.
fn sync(engine: &mut SyncEngine, kernel: &mut RuleSet, now_ms: u64) -> (SyncKind, String) {
    let outcome = engine.sync(now_ms, false);
    let (kind, payload) = (
        outcome.kind,
        String::from_utf8(outcome.payload.to_vec()).expect("utf8"),
    );
    kernel
        .apply(&payload)
        .unwrap_or_else(|e| panic!("payload refused: {e}\n{payload}"));
    engine.commit(true);
    (kind, payload)
}

/// The tables one full sync of the engine's current state produces.
fn full_tables(services: &[Service], slices: &[EndpointSlice]) -> String {
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Compat);
    engine.replace_state(services, slices);
    let mut kernel = RuleSet::new();
    sync(&mut engine, &mut kernel, 0);
    kernel.to_restore_text()
}

#[test]
fn first_sync_is_full_and_an_idle_minimal_sync_writes_nothing() {
    for (mode, idle_payload_empty) in [(PartialSyncMode::Minimal, true), (PartialSyncMode::Compat, false)] {
        let mut engine = SyncEngine::new(node(), mode);
        let mut kernel = RuleSet::new();
        engine.replace_state(&[service(1)], &[slice(1, &[(1, true, true)])]);
        assert_eq!(sync(&mut engine, &mut kernel, 0).0, SyncKind::Full);
        let (kind, payload) = sync(&mut engine, &mut kernel, 1000);
        assert_eq!(kind, SyncKind::Partial);
        assert_eq!(payload.is_empty(), idle_payload_empty, "{mode:?}: {payload}");
    }
}

#[test]
fn one_endpoint_change_rewrites_only_that_services_chains() {
    let services: Vec<Service> = (0..1000).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..1000)
        .map(|i| slice(i, &[(1, true, true), (2, true, false)]))
        .collect();
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Minimal);
    let mut kernel = RuleSet::new();
    engine.replace_state(&services, &slices);
    sync(&mut engine, &mut kernel, 0);

    slices[500] = slice(500, &[(1, true, true), (2, true, false), (3, true, false)]);
    assert!(engine.set_endpoint_slice(&slices[500].key, Some(&slices[500])));
    let (kind, payload) = sync(&mut engine, &mut kernel, 1000);
    assert_eq!(kind, SyncKind::Partial);
    // PERFORMANCE.md target 3: a one-endpoint change costs at most 2 KB.
    assert!(payload.len() <= 2048, "{} bytes:\n{payload}", payload.len());
    assert!(!payload.contains("*filter"), "{payload}");
    assert!(
        !payload.contains(":KUBE-SERVICES"),
        "KUBE-SERVICES did not change:\n{payload}"
    );
    let declared: Vec<&str> = payload.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        declared.len(),
        2,
        "the SVC chain and the new SEP chain:\n{payload}"
    );
    assert_eq!(kernel.to_restore_text(), full_tables(&services, &slices));
}

#[test]
fn deleting_a_service_deletes_every_one_of_its_chains() {
    for mode in [PartialSyncMode::Minimal, PartialSyncMode::Compat] {
        let services: Vec<Service> = (0..10).map(service).collect();
        let slices: Vec<EndpointSlice> = (0..10)
            .map(|i| slice(i, &[(1, true, true), (2, true, false)]))
            .collect();
        let mut engine = SyncEngine::new(node(), mode);
        let mut kernel = RuleSet::new();
        engine.replace_state(&services, &slices);
        sync(&mut engine, &mut kernel, 0);
        // Service 0 is a LoadBalancer with source ranges and eTP Local: SVC, SVL,
        // EXT, FW and two SEP chains.
        let before = kernel
            .chains("nat")
            .filter(|c| c.name.starts_with("KUBE-") && c.name.len() > 20)
            .count();
        engine.replace_state(&services[1..], &slices[1..]);
        let (_, payload) = sync(&mut engine, &mut kernel, 1000);
        let deleted = payload.lines().filter(|l| l.starts_with("-X ")).count();
        assert_eq!(deleted, 6, "{mode:?}:\n{payload}");
        let after = kernel
            .chains("nat")
            .filter(|c| c.name.starts_with("KUBE-") && c.name.len() > 20)
            .count();
        assert_eq!(before - after, 6);
        assert_eq!(
            kernel.to_restore_text(),
            full_tables(&services[1..], &slices[1..])
        );
    }
}

#[test]
fn failures_periods_and_forcing_make_full_syncs() {
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Minimal);
    engine.replace_state(&[service(1)], &[slice(1, &[(1, true, true)])]);
    let kind = engine.sync(0, false).kind;
    assert_eq!(kind, SyncKind::Full);
    engine.commit(false);
    assert_eq!(
        engine.sync(10, false).kind,
        SyncKind::Full,
        "after a failed restore"
    );
    engine.commit(true);
    assert_eq!(engine.sync(20, false).kind, SyncKind::Partial);
    engine.commit(true);
    assert_eq!(engine.sync(30, true).kind, SyncKind::Full, "forced");
    engine.commit(true);
    assert_eq!(
        engine.sync(30 + FULL_SYNC_PERIOD_MS, false).kind,
        SyncKind::Partial,
        "exactly one period later"
    );
    engine.commit(true);
    assert_eq!(
        engine.sync(31 + FULL_SYNC_PERIOD_MS, false).kind,
        SyncKind::Full,
        "more than one period later"
    );
    engine.commit(true);
    engine.force_full_sync();
    assert_eq!(
        engine.sync(32 + FULL_SYNC_PERIOD_MS, false).kind,
        SyncKind::Full,
        "after a flush"
    );
}

#[test]
fn large_clusters_scan_for_stale_chains_only_once_per_sync_period() {
    // 12 services x 100 endpoints: past the 1000-endpoint threshold, also after one goes.
    let endpoints: Vec<(u32, bool, bool)> = (1..=100u32).map(|n| (n, true, n.is_multiple_of(2))).collect();
    let services: Vec<Service> = (1..=12).map(service).collect();
    let slices: Vec<EndpointSlice> = (1..=12).map(|i| slice(i, &endpoints)).collect();
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Compat);
    let mut kernel = RuleSet::new();
    engine.replace_state(&services, &slices);
    let (_, payload) = sync(&mut engine, &mut kernel, 0);
    assert!(
        payload.contains("-A KUBE-SEP-") && !payload.contains("--comment ns1/svc1:http -s"),
        "no endpoint comments"
    );
    engine.replace_state(&services[1..], &slices[1..]);
    let (_, payload) = sync(&mut engine, &mut kernel, 1_000);
    assert!(
        !payload.contains("-X "),
        "no scan within the sync period:\n{payload}"
    );
    let (_, payload) = sync(&mut engine, &mut kernel, 31_001);
    assert_eq!(
        payload.lines().filter(|l| l.starts_with("-X ")).count(),
        101,
        "the SVC and 100 SEP chains"
    );
}

/// kube-proxy v1.10 had neither partial syncs nor large-cluster mode: in its
/// layout every sync is full and deletes every stale chain (KUBE-XLB ones
/// too), whatever the size and the mode asked for.
#[test]
fn the_v1_10_layout_syncs_in_full_and_deletes_stale_chains_every_time() {
    let endpoints: Vec<(u32, bool, bool)> = (1..=100u32).map(|n| (n, true, n.is_multiple_of(2))).collect();
    let services: Vec<Service> = (1..=21).map(service).collect();
    let slices: Vec<EndpointSlice> = (1..=21).map(|i| slice(i, &endpoints)).collect();
    for mode in [PartialSyncMode::Compat, PartialSyncMode::Minimal] {
        let mut engine = SyncEngine::with_layout(node(), mode, Layout::V1_10);
        let mut kernel = RuleSet::new();
        engine.replace_state(&services, &slices);
        let (kind, _) = sync(&mut engine, &mut kernel, 0);
        assert_eq!(kind, SyncKind::Full);
        // svc21, a NodePort with externalTrafficPolicy Local, has a KUBE-XLB-
        // chain; drop it, then nothing.
        engine.replace_state(&services[..20], &slices[..20]);
        let (kind, payload) = sync(&mut engine, &mut kernel, 1_000);
        assert_eq!(kind, SyncKind::Full, "{mode:?}");
        let deleted: Vec<&str> = payload.lines().filter_map(|l| l.strip_prefix("-X ")).collect();
        assert_eq!(
            deleted.len(),
            102,
            "SVC, XLB and 100 SEP chains ({mode:?}): {deleted:?}"
        );
        assert!(deleted.iter().any(|c| c.starts_with("KUBE-XLB-")), "{deleted:?}");
        let (kind, payload) = sync(&mut engine, &mut kernel, 2_000);
        assert_eq!(kind, SyncKind::Full, "{mode:?}");
        assert!(!payload.contains("-X "), "deleted once ({mode:?})");
    }
}

#[test]
fn chains_left_by_an_earlier_run_are_deleted_by_the_first_sync() {
    let mut engine = SyncEngine::new(node(), PartialSyncMode::Minimal);
    engine.replace_state(&[service(1)], &[slice(1, &[(1, true, true)])]);
    let leftover = chainsmith_naming::ChainName::new("KUBE-SEP-AAAAAAAAAAAAAAAA").expect("name");
    let foreign = chainsmith_naming::ChainName::new("CALICO-SOMETHING").expect("name");
    engine.set_existing_nat_chains([leftover, foreign]);
    let mut kernel = RuleSet::new();
    kernel
        .apply("*nat\n:KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]\n:CALICO-SOMETHING - [0:0]\nCOMMIT\n")
        .expect("seed");
    let (_, payload) = sync(&mut engine, &mut kernel, 0);
    assert!(payload.contains("-X KUBE-SEP-AAAAAAAAAAAAAAAA\n"));
    assert!(
        !payload.contains("CALICO"),
        "chains that are not ours are never touched"
    );
}

/// A deterministic pseudo-random walk over cluster states: after every sync,
/// in both modes, the kernel's tables equal those of one full sync.
#[test]
fn incremental_syncs_always_equal_a_full_sync() {
    let mut seed: u64 = 0x5eed;
    let mut next = move |bound: u32| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % u64::from(bound)) as u32
    };
    for mode in [PartialSyncMode::Minimal, PartialSyncMode::Compat] {
        let mut present: Vec<bool> = vec![false; 24];
        let mut endpoint_sets: Vec<Vec<(u32, bool, bool)>> = vec![Vec::new(); 24];
        let mut engine = SyncEngine::new(node(), mode);
        let mut kernel = RuleSet::new();
        for step in 0..80u64 {
            for _ in 0..=next(3) {
                let i = next(24) as usize;
                match next(4) {
                    0 => present[i] = !present[i],
                    1 => endpoint_sets[i].push((next(6), next(4) != 0, next(2) == 0)),
                    2 => {
                        if !endpoint_sets[i].is_empty() {
                            let at = next(endpoint_sets[i].len() as u32) as usize;
                            endpoint_sets[i].remove(at);
                        }
                    }
                    _ => endpoint_sets[i].iter_mut().for_each(|e| e.1 = !e.1),
                }
            }
            let services: Vec<Service> = (0..24)
                .filter(|&i| present[i])
                .map(|i| service(i as u32))
                .collect();
            let slices: Vec<EndpointSlice> = (0..24)
                .filter(|&i| !endpoint_sets[i].is_empty())
                .map(|i| slice(i as u32, &endpoint_sets[i]))
                .collect();
            engine.replace_state(&services, &slices);
            sync(&mut engine, &mut kernel, step * 1000);
            assert_eq!(
                kernel.to_restore_text(),
                full_tables(&services, &slices),
                "{mode:?} step {step}"
            );
        }
    }
}

/// nftables mode after a restart: with `keep_unchanged_chains_at_start` the
/// first full sync rewrites only the chains whose content changed while the
/// proxy was down, and leaves the table a fresh proxy (upstream's restart)
/// leaves.
#[test]
fn an_nftables_restart_rewrites_only_what_changed() {
    let services: Vec<Service> = (0..20).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..20)
        .map(|i| slice(i, &[(1, true, true), (2, true, false)]))
        .collect();
    let mut first = NftSyncEngine::new(node());
    first.replace_state(&services, &slices);
    let mut kernel = Table::new(Family::Ip);
    kernel
        .apply(&first.sync(0, false).main)
        .expect("first sync applies");

    // While the proxy is down, svc4 gains an endpoint.
    slices[4] = slice(4, &[(1, true, true), (2, true, false), (3, true, false)]);
    let restart = |keep: bool| {
        let mut engine = NftSyncEngine::new(node());
        if keep {
            engine.keep_unchanged_chains_at_start();
        }
        engine.set_existing(&kernel);
        engine.replace_state(&services, &slices);
        let main = engine.sync(60_000, false).main;
        let mut after = kernel.clone();
        after.apply(&main).expect("restart applies");
        (main, after)
    };
    let (upstream, upstream_table) = restart(false);
    let (keeping, keeping_table) = restart(true);
    assert!(chainsmith_nftables::drift(&upstream_table, &keeping_table).is_empty());

    let written = |tx: &Transaction| -> BTreeSet<String> {
        tx.ops
            .iter()
            .filter_map(|op| match op {
                Op::FlushChain(name) if name.contains('/') => Some(name.clone()),
                _ => None,
            })
            .collect()
    };
    let kept_written = written(&keeping);
    assert!(!kept_written.is_empty());
    assert!(
        kept_written.iter().all(|name| name.contains("ns1/svc4/")),
        "{kept_written:#?}"
    );
    // Upstream rewrites every Service's chains.
    assert!(written(&upstream).len() > 20, "{:#?}", written(&upstream));
}
