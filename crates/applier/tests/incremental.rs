//! A long sequence of random cluster changes applied incrementally to a real
//! kernel (nf_tables and legacy, both partial-sync modes) ends in exactly the
//! tables that one full sync of the final state produces, even with a refused
//! restore in the middle of the sequence.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use chainsmith_applier::{Applier, Backend, NetnsRunner, Tools};
use chainsmith_iptables::{BUILTIN_JUMPS, RuleSet};
use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpFamily, LoadBalancerIngress,
    LocalTrafficDetector, NodeConfig, ObjectKey, Protocol, Service, ServicePort, ServiceType, TrafficPolicy,
};
use chainsmith_sync::{PartialSyncMode, SyncEngine};
use chainsmith_testkit::{Netns, kernel_tests_enabled};

const SERVICES: u32 = 30;
const STEPS: u64 = 60;

fn node(applier: &Applier) -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
        local_traffic_detector: LocalTrafficDetector::ClusterCidr("192.0.2.0/24".parse().expect("cidr")),
        iptables_has_random_fully: applier.tools().random_fully,
        nfacct: Default::default(),
        ..NodeConfig::default()
    }
}

/// The shape of Service `i` in one state of the walk.
#[derive(Clone, Copy, Default)]
struct Shape {
    present: bool,
    load_balancer: bool,
    local_policy: bool,
    affinity: bool,
}

fn service(i: u32, shape: Shape) -> Service {
    let mut s = Service::new(ObjectKey::new(format!("ns{}", i % 4), format!("svc{i}")));
    s.cluster_ips = ClusterIps {
        v4: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8))),
        v6: None,
    };
    let node_port = if shape.load_balancer { 30000 + i as u16 } else { 0 };
    s.ports.push(ServicePort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port,
    });
    if shape.load_balancer {
        s.service_type = ServiceType::LoadBalancer;
        s.load_balancer_ingress.push(LoadBalancerIngress {
            ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100 + i as u8)),
            ip_mode: None,
        });
        if i.is_multiple_of(2) {
            s.load_balancer_source_ranges
                .push("203.0.113.0/25".parse().expect("cidr"));
        }
    }
    if shape.local_policy {
        s.external_traffic_policy = TrafficPolicy::Local;
    }
    if shape.affinity {
        s.session_affinity = chainsmith_model::SessionAffinity::ClientIp { timeout_seconds: 600 };
    }
    s
}

fn slice(i: u32, endpoints: &[(u8, bool, bool)]) -> EndpointSlice {
    let key = ObjectKey::new(format!("ns{}", i % 4), format!("svc{i}"));
    EndpointSlice {
        key: ObjectKey::new(key.namespace.clone(), format!("svc{i}-a")),
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
                let mut e = Endpoint::ready(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)));
                e.ready = ready;
                e.serving = true;
                e.terminating = !ready;
                e.node_name = Some(if local { "node-a" } else { "node-b" }.into());
                e
            })
            .collect(),
    }
}

/// Chains and rules of the kube-proxy part of two tables, counters and order
/// of chain declarations aside.
fn kube_tables(applier: &Applier) -> BTreeMap<(String, String), Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in ["filter", "nat"] {
        let saved: RuleSet = RuleSet::read(&applier.save_table(table).expect("save")).expect("parse");
        for chain in saved.chains(table) {
            if chain.name.starts_with("KUBE-") || chain.rules.iter().any(|r| r.contains("-j KUBE-")) {
                tables.insert((table.to_string(), chain.name.clone()), chain.rules.clone());
            }
        }
    }
    tables
}

fn applier(netns: &Netns, backend: Backend) -> Applier {
    let runner = NetnsRunner::new(netns.name());
    Applier::new(
        Tools::detect(&runner, IpFamily::V4, Some(backend)).expect("tools"),
        Box::new(runner),
    )
}

#[test]
fn incremental_syncs_leave_the_tables_of_one_full_sync() {
    if !kernel_tests_enabled("incremental_syncs_leave_the_tables_of_one_full_sync") {
        return;
    }
    for backend in [Backend::NfTables, Backend::Legacy] {
        for mode in [PartialSyncMode::Minimal, PartialSyncMode::Compat] {
            let netns = Netns::new("incr").expect("netns");
            let kernel = applier(&netns, backend);
            let mut engine = SyncEngine::new(node(&kernel), mode);
            let mut seed: u64 = 0x00c0_ffee;
            let mut next = move |bound: u32| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) % u64::from(bound)) as u32
            };
            let mut shapes = vec![
                Shape {
                    present: true,
                    ..Shape::default()
                };
                SERVICES as usize
            ];
            let mut endpoints: Vec<Vec<(u8, bool, bool)>> = vec![Vec::new(); SERVICES as usize];
            let (mut bytes, mut refused) = (0usize, 0);
            let mut state = (Vec::new(), Vec::new());
            for step in 0..STEPS {
                for _ in 0..=next(3) {
                    let i = next(SERVICES) as usize;
                    let shape = &mut shapes[i];
                    match next(9) {
                        0 => shape.present = !shape.present,
                        1 => shape.load_balancer = !shape.load_balancer,
                        2 => shape.local_policy = !shape.local_policy,
                        3 => shape.affinity = !shape.affinity,
                        4..=6 => endpoints[i].push((20 + next(200) as u8, next(5) != 0, next(3) == 0)),
                        _ => {
                            if !endpoints[i].is_empty() {
                                let at = next(endpoints[i].len() as u32) as usize;
                                endpoints[i].remove(at);
                            }
                        }
                    }
                }
                let services: Vec<Service> = (0..SERVICES)
                    .filter(|&i| shapes[i as usize].present)
                    .map(|i| service(i, shapes[i as usize]))
                    .collect();
                let slices: Vec<EndpointSlice> = (0..SERVICES)
                    .filter(|&i| !endpoints[i as usize].is_empty())
                    .map(|i| slice(i, &endpoints[i as usize]))
                    .collect();
                engine.replace_state(&services, &slices);
                let outcome = engine.sync(step * 1000, false);
                let full = outcome.kind == chainsmith_sync::SyncKind::Full;
                let mut payload = outcome.payload.to_vec();
                if step == STEPS / 2 {
                    // A rule the kernel refuses, as upstream's own test injects: the
                    // sync fails, nothing of it lands, and the next one is full.
                    payload.extend_from_slice(b"*nat\n-A KUBE-SERVICES -j KUBE-DOES-NOT-EXIST\nCOMMIT\n");
                }
                bytes += payload.len();
                match kernel.apply(&payload) {
                    Ok(_) => {
                        engine.commit(true);
                        if full {
                            kernel.ensure_jumps(&BUILTIN_JUMPS).expect("jumps");
                        }
                    }
                    Err(error) => {
                        assert_eq!(step, STEPS / 2, "{backend:?} {mode:?} step {step}: {error}");
                        refused += 1;
                        engine.commit(false);
                    }
                }
                state = (services, slices);
            }
            assert_eq!(refused, 1);

            let fresh_netns = Netns::new("full").expect("netns");
            let fresh = applier(&fresh_netns, backend);
            let mut full_engine = SyncEngine::new(node(&fresh), mode);
            full_engine.replace_state(&state.0, &state.1);
            fresh.apply(full_engine.sync(0, true).payload).expect("full sync");
            fresh.ensure_jumps(&BUILTIN_JUMPS).expect("jumps");
            let (got, want) = (kube_tables(&kernel), kube_tables(&fresh));
            let chains = want
                .keys()
                .filter(|(_, c)| chainsmith_naming::ServiceChainKind::of(c).is_some())
                .count();
            assert_eq!(
                got, want,
                "{backend:?} {mode:?}: incremental tables differ from one full sync"
            );
            println!(
                "{backend:?} {mode:?}: {STEPS} syncs, {bytes} bytes, one refused; all tables equal to a full sync's ({chains} per-service chains)"
            );
        }
    }
}
