//! Real kernel, nftables mode: what `chainsmith compile|replay --mode
//! nftables` writes is accepted by the real `nft -f`, and the table the
//! kernel then lists (`nft list table FAMILY kube-proxy`, read with
//! `read_listing`) equals the model's (the same transactions applied to a
//! `chainsmith_nftables::Table`) under `Table::canonical`:
//!
//! - every fixture of snapshots/fixtures/INDEX.yaml, one full sync each;
//! - every case of testdata/conformance-nft, step by step (cleanup
//!   transaction first, then the main one), as conformance_nft.rs replays them;
//! - a seeded random walk of 60 cluster states per family, synced
//!   incrementally with a clock that lets some stale chains age out and not
//!   others, then synced once more 2 s later: the kernel then holds what one
//!   full sync of the last state builds in a fresh namespace, element
//!   comments aside (like upstream's `ensureElem`, a sync never rewrites an
//!   element whose value is unchanged, so its comment may name another
//!   Service or port name than a full sync's);
//! - transactions with one deliberate mistake: the kernel refuses each, so
//!   does the model, and neither changes;
//! - ignored: a known gap of the model (a set's timeout changed in place).
//!
//! Each namespace is the test's own (`chainsmith_testkit::Netns`, deleted on
//! drop); no packet is sent. Runs as root with `CHAINSMITH_KERNEL_TESTS=1`.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;
#[path = "common/nft_suite.rs"]
mod nft_suite;

use std::path::Path;

use chainsmith_nftables::{Family, Op, Table, Transaction, read_transaction};
use chainsmith_testkit::{Netns, kernel_tests_enabled, nft_apply, nft_list_table, table_differences};
use common::fixtures;
use serde_json::{Value, json};

/// Applies `text` to the model; the kernel must take what the model takes.
fn apply_model(model: &mut Table, text: &str, what: &str) {
    let tx = read_transaction(text, model.family()).unwrap_or_else(|e| panic!("{what}: {e}"));
    model
        .apply(&tx)
        .unwrap_or_else(|e| panic!("{what}: the model refuses it: {e}"));
}

/// Applies `text` with `nft -f` in `netns` and to `model`.
fn apply_both(netns: &Netns, model: &mut Table, text: &str, what: &str) {
    apply_model(model, text, what);
    nft_apply(netns, text).unwrap_or_else(|e| panic!("{what}: the kernel refuses it: {e}"));
}

/// The kernel's table in `netns`, which must equal `model` under `canonical()`.
fn assert_kernel_holds(netns: &Netns, model: &Table, what: &str) -> Table {
    let kernel = nft_list_table(netns, model.family()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_same(what, ("kernel", &kernel), ("model", model));
    kernel
}

fn assert_same(what: &str, (ln, left): (&str, &Table), (rn, right): (&str, &Table)) {
    if left.canonical() != right.canonical() {
        panic!(
            "{what}: {ln} and {rn} differ:\n{}",
            table_differences(ln, left, rn, right)
        );
    }
}

/// Chains flushed as stale and not deleted yet: per-Service chains without
/// rules (every live one has some).
fn stale_chains(table: &Table) -> Vec<&str> {
    table
        .chain_names()
        .filter(|c| c.contains('/') && table.rules(c).next().is_none())
        .collect()
}

/// `table` with every set and map element's comment removed.
fn without_element_comments(table: &Table) -> Table {
    let ops = table
        .to_ops()
        .into_iter()
        .map(|op| match op {
            Op::AddElement { set, mut element } => {
                element.comment = None;
                Op::AddElement { set, element }
            }
            op => op,
        })
        .collect();
    let mut stripped = Table::new(table.family());
    stripped
        .apply(&Transaction {
            family: table.family(),
            ops,
        })
        .expect("a table's own operations rebuild it");
    stripped
}

// ---- 1. fixtures ----

#[test]
fn every_fixture_is_accepted_and_held_as_compiled() {
    if !kernel_tests_enabled("every_fixture_is_accepted_and_held_as_compiled") {
        return;
    }
    let index = nft_suite::load_yaml(&fixtures().join("INDEX.yaml"));
    let entries = index.as_array().expect("the index is a list");
    let mut checked = 0;
    for entry in entries {
        let (cluster, node) = (
            entry["cluster"].as_str().expect("cluster"),
            entry["node"].as_str().expect("node"),
        );
        let what = format!("{cluster} with {node}");
        let output =
            common::chainsmith_in_fixtures(&["compile", "--mode", "nftables", "--node", node, cluster]);
        let transaction = String::from_utf8(output.stdout).expect("utf8");
        let mut model = Table::new(nft_suite::family_of(&fixtures().join(node)));
        let netns = Netns::new("nftfix").expect("netns");
        apply_both(&netns, &mut model, &transaction, &what);
        assert_kernel_holds(&netns, &model, &what);
        checked += 1;
    }
    println!("{checked} compiled fixtures held by the kernel as the model holds them");
    assert_eq!(checked, entries.len(), "every index entry is checked");
}

// ---- 2. the conformance suite ----

#[test]
fn every_conformance_case_builds_the_kernel_state_of_the_model() {
    if !kernel_tests_enabled("every_conformance_case_builds_the_kernel_state_of_the_model") {
        return;
    }
    let cases = nft_suite::cases();
    assert_eq!(cases.len(), 32, "the suite has 32 cases");
    let (mut steps, mut cleanups) = (0, 0);
    for case in &cases {
        let out = tempfile::tempdir().expect("tempdir");
        let initial = case.initial();
        case.replay(out.path());
        let mut model = Table::new(case.family);
        let netns = Netns::new("nftconf").expect("netns");
        if let Some(initial) = &initial {
            let what = format!("{}: initial.nft", case.name);
            apply_both(
                &netns,
                &mut model,
                &std::fs::read_to_string(initial).unwrap(),
                &what,
            );
            assert_kernel_holds(&netns, &model, &what);
        }
        for i in 1..=case.steps.len() {
            let read = |suffix: &str| std::fs::read_to_string(out.path().join(format!("{i:02}.{suffix}")));
            if let Ok(cleanup) = read("cleanup.nft") {
                let what = format!("{} step {i}: {i:02}.cleanup.nft", case.name);
                apply_both(&netns, &mut model, &cleanup, &what);
                cleanups += 1;
            }
            let what = format!("{} step {i}: {i:02}.nft", case.name);
            let main = read("nft").unwrap_or_else(|e| panic!("{what}: {e}"));
            apply_both(&netns, &mut model, &main, &what);
            assert_kernel_holds(&netns, &model, &what);
            steps += 1;
        }
    }
    println!(
        "{} cases, {steps} syncs ({cleanups} with a cleanup transaction): the kernel held the model's table after each",
        cases.len()
    );
    assert!(cleanups > 0, "some case deletes stale chains");
}

// ---- 3. incremental equals full ----

/// A small seeded generator (the walk is the same on every run).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % bound as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// A sorted subset of `0..n` (each index with probability 1/2).
    fn subset(&mut self, n: usize) -> Vec<usize> {
        (0..n).filter(|_| self.chance(50)).collect()
    }
}

/// Service slots: slot `i` is always Service `ns{i % 3}/svc{i}`.
const SLOTS: usize = 12;
/// Cluster states of the walk (one sync each), before the final resync.
const STATES: usize = 60;
/// The Service ports a Service takes some of: (name, port, protocol).
const PORTS: [(&str, u16, &str); 5] = [
    ("http", 80, "TCP"),
    ("https", 443, "TCP"),
    ("dns", 53, "UDP"),
    ("dns-tcp", 53, "TCP"),
    ("sctp", 9000, "SCTP"),
];
/// External IPs (both families; each proxier takes its own).
const EXTERNAL_IPS: [&str; 5] = [
    "203.0.113.1",
    "203.0.113.2",
    "198.51.100.201",
    "2001:db8:113::1",
    "2001:db8:113::2",
];
/// `loadBalancerSourceRanges` (the node IPs are inside the first and the fourth).
const SOURCE_RANGES: [&str; 5] = [
    "203.0.113.0/25",
    "192.0.2.0/26",
    "198.51.100.0/24",
    "2001:db8:113::/64",
    "2001:db8::/32",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone)]
struct ServiceShape {
    kind: Kind,
    /// 0: the node's family only, 1: dual-stack, 2: the other family only.
    families: usize,
    /// Indexes into [`PORTS`], never empty.
    ports: Vec<usize>,
    /// A single port goes without a name.
    unnamed: bool,
    external_ips: Vec<usize>,
    /// Load-balancer ingress addresses (LoadBalancer only): 0 and 1 of the
    /// node's family, 2 of the other.
    ingress: Vec<usize>,
    source_ranges: Vec<usize>,
    /// ClientIP affinity, with a timeout fixed per slot (a changed timeout is
    /// `a_set_timeout_changes_in_place`'s subject).
    affinity: bool,
    external_local: bool,
    internal_local: bool,
}

#[derive(Debug, Clone, Copy)]
enum Condition {
    Ready,
    ServingTerminating,
    Terminating,
    NotReady,
}

#[derive(Debug, Clone)]
struct EndpointShape {
    host: u8,
    condition: Condition,
    local: bool,
}

#[derive(Debug, Clone)]
struct SliceShape {
    /// Of the node's family (else of the other, which the proxier ignores).
    own_family: bool,
    endpoints: Vec<EndpointShape>,
}

#[derive(Debug, Clone, Default)]
struct SlotShape {
    service: Option<ServiceShape>,
    slices: Vec<SliceShape>,
}

fn random_service(rng: &mut Rng) -> ServiceShape {
    let kind = [Kind::ClusterIp, Kind::NodePort, Kind::LoadBalancer][rng.below(3)];
    let mut ports = rng.subset(PORTS.len());
    if ports.is_empty() {
        ports.push(rng.below(PORTS.len()));
    }
    ServiceShape {
        kind,
        families: [0, 0, 0, 0, 1, 1, 2][rng.below(7)],
        ports,
        unnamed: rng.chance(40),
        external_ips: if rng.chance(30) {
            rng.subset(EXTERNAL_IPS.len())
        } else {
            Vec::new()
        },
        ingress: rng.subset(3),
        source_ranges: if rng.chance(50) {
            rng.subset(SOURCE_RANGES.len())
        } else {
            Vec::new()
        },
        affinity: rng.chance(30),
        external_local: rng.chance(40),
        internal_local: rng.chance(25),
    }
}

fn random_endpoint(rng: &mut Rng) -> EndpointShape {
    EndpointShape {
        host: 1 + rng.below(16) as u8,
        condition: [
            Condition::Ready,
            Condition::Ready,
            Condition::Ready,
            Condition::Ready,
            Condition::ServingTerminating,
            Condition::Terminating,
            Condition::NotReady,
        ][rng.below(7)],
        local: rng.chance(40),
    }
}

fn random_slice(rng: &mut Rng) -> SliceShape {
    let n = rng.below(5);
    SliceShape {
        own_family: rng.chance(85),
        endpoints: (0..n).map(|_| random_endpoint(rng)).collect(),
    }
}

fn random_slot(rng: &mut Rng) -> SlotShape {
    SlotShape {
        service: rng.chance(80).then(|| random_service(rng)),
        slices: (0..rng.below(3)).map(|_| random_slice(rng)).collect(),
    }
}

/// One change of the walk to slot `slot`: a Service added, deleted or one
/// of its fields changed, or endpoints and slices added, changed, deleted.
fn mutate(rng: &mut Rng, slot: &mut SlotShape) {
    let choice = rng.below(12);
    if let (Some(service), 1..=6) = (slot.service.as_mut(), choice) {
        match choice {
            1 => service.kind = [Kind::ClusterIp, Kind::NodePort, Kind::LoadBalancer][rng.below(3)],
            2 => {
                service.ports = random_service(rng).ports;
                service.unnamed = rng.chance(40);
            }
            3 => service.external_ips = rng.subset(EXTERNAL_IPS.len()),
            4 => {
                service.ingress = rng.subset(3);
                service.source_ranges = rng.subset(SOURCE_RANGES.len());
            }
            5 => service.affinity = !service.affinity,
            _ => {
                if rng.chance(50) {
                    service.external_local = !service.external_local;
                } else {
                    service.internal_local = !service.internal_local;
                }
            }
        }
        return;
    }
    match choice {
        0..=6 => {
            slot.service = match slot.service {
                Some(_) => None,
                None => Some(random_service(rng)),
            }
        }
        7 | 8 => {
            if slot.slices.is_empty() {
                slot.slices.push(random_slice(rng));
            }
            let at = rng.below(slot.slices.len());
            slot.slices[at].endpoints.push(random_endpoint(rng));
        }
        9 => {
            let slices = slot.slices.len();
            if slices > 0 {
                let endpoints = &mut slot.slices[rng.below(slices)].endpoints;
                if !endpoints.is_empty() {
                    let at = rng.below(endpoints.len());
                    endpoints.remove(at);
                }
            }
        }
        10 => {
            let slices = slot.slices.len();
            if slices > 0 {
                let endpoints = &mut slot.slices[rng.below(slices)].endpoints;
                if !endpoints.is_empty() {
                    let at = rng.below(endpoints.len());
                    let fresh = random_endpoint(rng);
                    let endpoint = &mut endpoints[at];
                    // Same address, other conditions or node.
                    endpoint.condition = fresh.condition;
                    endpoint.local = fresh.local;
                }
            }
        }
        _ => {
            if !slot.slices.is_empty() && rng.chance(50) {
                let at = rng.below(slot.slices.len());
                slot.slices.remove(at);
            } else {
                slot.slices.push(random_slice(rng));
            }
        }
    }
}

fn is_v6(address: &str) -> bool {
    address.contains(':')
}

/// The cluster as a `kind: List` manifest (JSON, which YAML reads).
fn manifest(slots: &[SlotShape], v6_node: bool) -> String {
    let mut items = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let (namespace, name) = (format!("ns{}", i % 3), format!("svc{i}"));
        let n = i + 1;
        let ports_of = |s: &ServiceShape| -> Vec<(String, u16, &str, usize)> {
            let unnamed = s.unnamed && s.ports.len() == 1;
            s.ports
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    let (port_name, port, protocol) = PORTS[p];
                    let port_name = if unnamed {
                        String::new()
                    } else {
                        port_name.to_string()
                    };
                    (port_name, port, protocol, k)
                })
                .collect()
        };
        if let Some(s) = &slot.service {
            let v4 = format!("10.96.0.{n}");
            let v6 = format!("fd00:10:96::{n:x}");
            let (own, other) = if v6_node { (v6, v4) } else { (v4, v6) };
            let cluster_ips = match s.families {
                0 => vec![own],
                1 => vec![own, other],
                _ => vec![other],
            };
            let ip_families: Vec<&str> = cluster_ips
                .iter()
                .map(|ip| if is_v6(ip) { "IPv6" } else { "IPv4" })
                .collect();
            let node_ports = s.kind != Kind::ClusterIp;
            let ports: Vec<Value> = ports_of(s)
                .into_iter()
                .map(|(port_name, port, protocol, k)| {
                    let mut p = json!({
                        "name": port_name,
                        "port": port,
                        "protocol": protocol,
                        "targetPort": port + 8000,
                    });
                    if node_ports {
                        p["nodePort"] = json!(30000 + 8 * i + k);
                    }
                    p
                })
                .collect();
            let external_ips: Vec<&str> = s.external_ips.iter().map(|&e| EXTERNAL_IPS[e]).collect();
            let externally_accessible = node_ports || !external_ips.is_empty();
            let mut spec = json!({
                "type": match s.kind {
                    Kind::ClusterIp => "ClusterIP",
                    Kind::NodePort => "NodePort",
                    Kind::LoadBalancer => "LoadBalancer",
                },
                "clusterIP": cluster_ips[0],
                "clusterIPs": cluster_ips,
                "ipFamilies": ip_families,
                "ports": ports,
                "externalTrafficPolicy": if s.external_local && externally_accessible { "Local" } else { "Cluster" },
                "internalTrafficPolicy": if s.internal_local { "Local" } else { "Cluster" },
            });
            if !external_ips.is_empty() {
                spec["externalIPs"] = json!(external_ips);
            }
            if s.affinity {
                let timeout = [10800, 60, 3600][i % 3];
                spec["sessionAffinity"] = json!("ClientIP");
                spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": timeout}});
            }
            let mut service = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            });
            if s.kind == Kind::LoadBalancer {
                if s.external_local {
                    service["spec"]["healthCheckNodePort"] = json!(32000 + i);
                }
                if !s.source_ranges.is_empty() {
                    let ranges: Vec<&str> = s.source_ranges.iter().map(|&r| SOURCE_RANGES[r]).collect();
                    service["spec"]["loadBalancerSourceRanges"] = json!(ranges);
                }
                let ingress: Vec<Value> = s
                    .ingress
                    .iter()
                    .map(|&k| {
                        let ip = match (k, v6_node) {
                            (0, false) => format!("203.0.113.{}", 100 + n),
                            (1, false) => format!("198.51.100.{}", 100 + n),
                            (2, false) => format!("2001:db8:113::{:x}", 0x100 + n),
                            (0, true) => format!("2001:db8:113::{:x}", 0x100 + n),
                            (1, true) => format!("2001:db8:100::{:x}", 0x100 + n),
                            _ => format!("203.0.113.{}", 100 + n),
                        };
                        json!({"ip": ip})
                    })
                    .collect();
                service["status"] = json!({"loadBalancer": {"ingress": ingress}});
            }
            items.push(service);
        }
        for (j, slice) in slot.slices.iter().enumerate() {
            let v6 = slice.own_family == v6_node;
            let ports: Vec<Value> = match &slot.service {
                Some(s) => ports_of(s)
                    .into_iter()
                    .map(|(port_name, port, protocol, _)| {
                        json!({"name": port_name, "port": port + 8000, "protocol": protocol})
                    })
                    .collect(),
                None => vec![json!({"name": "http", "port": 8080, "protocol": "TCP"})],
            };
            let mut hosts = Vec::new();
            let endpoints: Vec<Value> = slice
                .endpoints
                .iter()
                .filter(|e| {
                    let fresh = !hosts.contains(&e.host);
                    hosts.push(e.host);
                    fresh
                })
                .map(|e| {
                    let address = if v6 {
                        format!("2001:db8:2::{:x}", e.host)
                    } else {
                        format!("192.0.2.{}", e.host)
                    };
                    let (ready, serving, terminating) = match e.condition {
                        Condition::Ready => (true, true, false),
                        Condition::ServingTerminating => (false, true, true),
                        Condition::Terminating => (false, false, true),
                        Condition::NotReady => (false, false, false),
                    };
                    json!({
                        "addresses": [address],
                        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                        "nodeName": if e.local { "node-a" } else { "node-b" },
                    })
                })
                .collect();
            items.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-{j}"),
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": if v6 { "IPv6" } else { "IPv4" },
                "endpoints": endpoints,
                "ports": ports,
            }));
        }
    }
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": items})).expect("json")
}

fn node_yaml(v6: bool) -> String {
    let (family, node_ip, detector) = if v6 {
        ("IPv6", "2001:db8:113::10", "2001:db8:2::/64")
    } else {
        ("IPv4", "203.0.113.10", "192.0.2.0/24")
    };
    format!(
        "nodeName: node-a
ipFamily: {family}
nodeIP: {node_ip}
interfaceAddresses:
- interface: lo
  cidr: 127.0.0.1/8
- interface: lo
  cidr: ::1/128
- interface: eth0
  cidr: 203.0.113.10/24
- interface: eth0
  cidr: 2001:db8:113::10/64
localTrafficDetector:
  mode: ClusterCIDR
  cidr: {detector}
masqueradeBit: 14
masqueradeAll: false
localhostNodePorts: true
nodePortAddresses: []
serviceCIDRs: [10.96.0.0/16, \"fd00:10:96::/112\"]
nodeLabels: {{}}
featureGates:
  LoadBalancerIPMode: true
"
    )
}

/// `nft list table` of the kube-proxy table in `netns`, as the kernel prints it.
fn listed(netns: &Netns, family: Family) -> String {
    netns
        .run("nft", &["list", "table", &family.to_string(), "kube-proxy"])
        .unwrap_or_else(|e| panic!("nft list table in {}: {e}", netns.name()))
}

#[test]
fn replay_into_a_namespace_leaves_what_nft_f_leaves() {
    if !kernel_tests_enabled("replay_into_a_namespace_leaves_what_nft_f_leaves") {
        return;
    }
    let (mut syncs, mut with_cleanup) = (0, 0);
    for case in nft_suite::cases() {
        let out = tempfile::tempdir().expect("tempdir");
        let initial = case.initial();
        // B: the netlink applier, through `replay --apply-netns`.
        let b = Netns::new("nftapply").expect("netns");
        nft_suite::replay_with(
            &case.dir.join("node.yaml"),
            &case.steps,
            initial.as_deref(),
            out.path(),
            &["--apply-netns", b.name()],
        );
        // A: `nft -f` of the same files, in order.
        let a = Netns::new("nftfile").expect("netns");
        if let Some(initial) = &initial {
            nft_apply(&a, &std::fs::read_to_string(initial).unwrap()).expect("initial.nft");
        }
        for i in 1..=case.steps.len() {
            let read = |suffix: &str| std::fs::read_to_string(out.path().join(format!("{i:02}.{suffix}")));
            let cleanup = read("cleanup.nft").ok();
            if let Some(cleanup) = &cleanup {
                nft_apply(&a, cleanup).expect("cleanup transaction");
                with_cleanup += 1;
            }
            nft_apply(&a, &read("nft").expect("main transaction")).expect("main transaction");
            let report: Value =
                serde_json::from_str(&read("apply.json").expect("NN.apply.json")).expect("JSON");
            let what = format!("{} sync {i}: {report}", case.name);
            assert_eq!(
                report["transactions"],
                json!(1 + usize::from(cleanup.is_some())),
                "{what}"
            );
            assert!(report["bytes"].as_u64().unwrap_or_default() > 0, "{what}");
            assert!(
                report["apply_seconds"].as_f64().is_some_and(|s| s >= 0.0),
                "{what}"
            );
            assert!(
                matches!(report["kind"].as_str(), Some("full" | "partial")),
                "{what}"
            );
            syncs += 1;
        }
        assert_eq!(
            listed(&b, case.family),
            listed(&a, case.family),
            "{}: the namespace replay applied over netlink differs from nft -f of its files",
            case.name
        );
    }
    println!(
        "{syncs} syncs ({with_cleanup} with a cleanup transaction) applied over netlink, as nft -f leaves them"
    );
    assert!(with_cleanup > 0, "some case deletes stale chains");
}

/// `services` ClusterIP Services of `endpoints` endpoints each, as a List.
fn large_cluster(services: usize, endpoints: usize) -> String {
    let mut items = Vec::new();
    for i in 0..services {
        let name = format!("svc{i}");
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "load"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            },
        }));
        let addresses: Vec<Value> = (0..endpoints)
            .map(|e| {
                json!({
                    "addresses": [format!("10.{}.{}.{}", 100 + i / 250, i % 250, e + 1)],
                    "conditions": {"ready": true},
                    "nodeName": "node-b",
                })
            })
            .collect();
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-a"), "namespace": "load",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": addresses,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }));
    }
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

/// A first sync too large for one cheap commit goes into a namespace
/// without the table in pieces, leaves first; it ends as one `nft -f`.
#[test]
fn a_large_first_sync_applied_in_pieces_ends_as_one_nft_f() {
    if !kernel_tests_enabled("a_large_first_sync_applied_in_pieces_ends_as_one_nft_f") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, cluster, out) = (
        dir.path().join("node.yaml"),
        dir.path().join("cluster.json"),
        dir.path().join("out"),
    );
    std::fs::write(&node, node_yaml(false)).unwrap();
    std::fs::write(&cluster, large_cluster(700, 10)).unwrap();
    let b = Netns::new("nftpieces").expect("netns");
    let path = |p: &Path| p.to_str().expect("utf8 path").to_string();
    let args = [
        "replay".to_string(),
        "--mode".into(),
        "nftables".into(),
        "--node".into(),
        path(&node),
        "--out".into(),
        path(&out),
        "--apply-netns".into(),
        b.name().to_string(),
        path(&cluster),
    ];
    common::chainsmith_in_fixtures(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("01.apply.json")).unwrap()).expect("JSON");
    let main = std::fs::read_to_string(out.join("01.nft")).unwrap();
    assert!(
        report["transactions"].as_u64().unwrap_or_default() >= 2,
        "{} operations went in one transaction: {report}",
        main.lines().count()
    );
    let a = Netns::new("nftwhole").expect("netns");
    nft_apply(&a, &main).expect("nft -f of 01.nft");
    assert_eq!(
        listed(&b, Family::Ip),
        listed(&a, Family::Ip),
        "the pieces over netlink end elsewhere than one nft -f: {report}"
    );
    println!(
        "{} operations in {} netlink transactions: {report}",
        main.lines().count(),
        report["transactions"]
    );
}

#[test]
fn incremental_equals_full_in_the_kernel() {
    if !kernel_tests_enabled("incremental_equals_full_in_the_kernel") {
        return;
    }
    for (v6, seed) in [(false, 0x5eed_0004_u64), (true, 0x5eed_0006_u64)] {
        let family = if v6 { Family::Ip6 } else { Family::Ip };
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("node.yaml");
        std::fs::write(&node, node_yaml(v6)).unwrap();

        // The walk: 60 states, each one to four changes after the one before.
        let mut rng = Rng(seed);
        let mut slots: Vec<SlotShape> = (0..SLOTS).map(|_| random_slot(&mut rng)).collect();
        let mut states = Vec::new();
        let (mut now, mut clock) = (0.0f64, Vec::new());
        for step in 1..=STATES {
            if step > 1 {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(SLOTS);
                    mutate(&mut rng, &mut slots[at]);
                }
                now += 0.5 * (1 + rng.below(6)) as f64;
            }
            let path = dir.path().join(format!("state-{step:02}.json"));
            std::fs::write(&path, manifest(&slots, v6)).unwrap();
            states.push(path);
            clock.push(now);
        }
        // One more sync of the last state 2 s later: every stale chain is old enough.
        let last = states[STATES - 1].clone();
        states.push(last.clone());
        clock.push(now + 2.0);

        let out = dir.path().join("out");
        let clock_text: Vec<String> = clock.iter().map(|t| format!("{t}")).collect();
        let clock_text = clock_text.join(",");
        let path = |p: &Path| p.to_str().expect("utf8 path").to_string();
        let mut args: Vec<String> = ["replay", "--mode", "nftables", "--node"]
            .map(String::from)
            .into();
        args.extend([
            path(&node),
            "--out".into(),
            path(&out),
            "--clock".into(),
            clock_text,
        ]);
        // Namespace N: the same walk through the netlink applier.
        let netlink = Netns::new("nftwalk").expect("netns");
        args.extend(["--apply-netns".to_string(), netlink.name().to_string()]);
        args.extend(states.iter().map(|s| path(s)));
        let output = common::chainsmith_in_fixtures(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            !log.contains("warning:"),
            "the generated states are valid clusters:\n{log}"
        );

        // Namespace A: every transaction of the walk, in order.
        let a = Netns::new("nftincr").expect("netns");
        let mut model = Table::new(family);
        // Syncs after which flushed chains wait (under 1 s old) for deletion.
        let (mut cleanups, mut waiting) = (0, 0);
        let mut kernel_a = Table::new(family);
        for i in 1..=states.len() {
            let read = |suffix: &str| std::fs::read_to_string(out.join(format!("{i:02}.{suffix}")));
            if let Ok(cleanup) = read("cleanup.nft") {
                apply_both(&a, &mut model, &cleanup, &format!("{family} sync {i}: cleanup"));
                cleanups += 1;
            }
            let main = read("nft").expect("main transaction written");
            let what = format!("{family} sync {i} (clock {}s)", clock[i - 1]);
            apply_both(&a, &mut model, &main, &what);
            kernel_a = assert_kernel_holds(&a, &model, &what);
            if !stale_chains(&model).is_empty() {
                waiting += 1;
            }
        }
        let stale = stale_chains(&model);
        assert!(
            stale.is_empty(),
            "stale chains left after the last sync: {stale:?}"
        );
        assert_eq!(
            listed(&netlink, family),
            listed(&a, family),
            "{family}: the walk applied over netlink (replay --apply-netns) differs from nft -f of its files"
        );

        // Namespace B: one full sync of the last state.
        let output = common::chainsmith_in_fixtures(&[
            "compile",
            "--mode",
            "nftables",
            "--node",
            node.to_str().expect("utf8 path"),
            last.to_str().expect("utf8 path"),
        ]);
        let full = String::from_utf8(output.stdout).expect("utf8");
        let b = Netns::new("nftfull").expect("netns");
        let mut full_model = Table::new(family);
        apply_both(
            &b,
            &mut full_model,
            &full,
            &format!("{family}: compile of the last state"),
        );
        let kernel_b = assert_kernel_holds(&b, &full_model, &format!("{family}: compile of the last state"));

        // Element comments aside: like upstream's `ensureElem`, a sync leaves an
        // element whose value is unchanged as it is, so one written for another
        // Service (a shared external IP) or port name (a renamed port that kept
        // its node port) keeps that Service's comment until the value changes.
        let what = format!(
            "{family}: {} incremental syncs against one full sync",
            states.len()
        );
        let comments = table_differences("A", &kernel_a, "B", &kernel_b);
        let (a, b) = (
            without_element_comments(&kernel_a),
            without_element_comments(&kernel_b),
        );
        assert_same(&what, ("incremental kernel (A)", &a), ("full kernel (B)", &b));
        assert_same(
            &what,
            ("incremental kernel (A)", &a),
            ("full model", &without_element_comments(&full_model)),
        );
        if !comments.is_empty() {
            println!("{family}: element comments an incremental sync left as they were:\n{comments}");
        }
        assert!(
            cleanups > 0,
            "{family}: some stale chains were deleted on the way"
        );
        assert!(
            waiting > 0,
            "{family}: some stale chains outlived a sync (deleted later)"
        );
        let chains = kernel_b.chain_names().count();
        let elements: usize = kernel_b.sets().map(|s| kernel_b.elements(&s.name).count()).sum();
        println!(
            "{family}: {} syncs ({cleanups} with a cleanup transaction, {waiting} leaving stale chains for later) equal one full sync: {chains} chains, {elements} elements",
            states.len()
        );
    }
}

// ---- a mistake the kernel refuses, and so does the model ----

#[test]
fn the_kernel_and_the_model_refuse_the_same_mistakes() {
    if !kernel_tests_enabled("the_kernel_and_the_model_refuse_the_same_mistakes") {
        return;
    }
    let node = "nodes/ipv4.yaml";
    let output = common::chainsmith_in_fixtures(&[
        "compile",
        "--mode",
        "nftables",
        "--node",
        node,
        "loadbalancer.yaml",
    ]);
    let base = String::from_utf8(output.stdout).expect("utf8");
    let netns = Netns::new("nftbad").expect("netns");
    let mut model = Table::new(Family::Ip);
    apply_both(&netns, &mut model, &base, "loadbalancer.yaml");
    let (key, value) = {
        let element = model
            .elements("service-ips")
            .next()
            .expect("a service-ips element");
        (element.key.clone(), element.value.clone().expect("a map value"))
    };
    assert_ne!(value, "drop");
    let table = "ip kube-proxy";
    let mistakes = [
        format!("add rule {table} services jump no-such-chain"),
        format!("add rule {table} services ip daddr @no-such-set drop"),
        format!("add element {table} service-ips {{ 203.0.113.99 . tcp . 80 : goto no-such-chain }}"),
        format!("delete chain {table} services"),
        format!("delete chain {table} no-such-chain"),
        format!("delete element {table} cluster-ips {{ 203.0.113.99 }}"),
        format!("add element {table} service-ips {{ {key} : drop }}"),
    ];
    // Each after an operation both take, so a refusal must undo it as well.
    let canary = format!("add chain {table} canary");
    for mistake in &mistakes {
        let text = format!("{canary}\n{mistake}\n");
        let tx = read_transaction(&text, Family::Ip).expect("reads");
        let before = model.clone();
        let refused = model.apply(&tx);
        assert!(refused.is_err(), "the model takes `{mistake}`");
        assert_eq!(model, before, "a refused transaction leaves the model as it was");
        assert!(
            nft_apply(&netns, &text).is_err(),
            "the kernel takes `{mistake}` (the model refuses it: {})",
            refused.unwrap_err()
        );
        assert_kernel_holds(&netns, &model, &format!("after refusing `{mistake}`"));
    }
    // The same operations without the mistake: both take them.
    let fine = [
        canary.clone(),
        format!("add rule {table} canary jump services"),
        format!("add element {table} service-ips {{ {key} : {value} }}"),
        format!("add element {table} cluster-ips {{ 203.0.113.99 }}"),
        format!("delete element {table} cluster-ips {{ 203.0.113.99 }}"),
    ]
    .join("\n");
    apply_both(&netns, &mut model, &fine, "the operations without a mistake");
    assert_kernel_holds(&netns, &model, "after the operations without a mistake");
    println!(
        "{} mistakes refused by the kernel and the model alike",
        mistakes.len()
    );
}

/// `add set` of an existing set with another `timeout` changes the set's
/// default timeout in place, in the kernel (6.11 and later: "honor set
/// timeout and garbage collection updates") and in the model; the sync
/// engine sends exactly that when a Service's affinity timeout changes.
#[test]
fn a_set_timeout_changes_in_place() {
    if !kernel_tests_enabled("a_set_timeout_changes_in_place") {
        return;
    }
    let netns = Netns::new("nfttmo").expect("netns");
    let mut model = Table::new(Family::Ip);
    let set = "set ip kube-proxy affinity { type ipv4_addr ; flags dynamic,timeout ;";
    apply_both(
        &netns,
        &mut model,
        &format!("add table ip kube-proxy\nadd {set} timeout 10800s ; }}\n"),
        "a set with timeout 10800s",
    );
    apply_both(
        &netns,
        &mut model,
        &format!("add {set} timeout 3600s ; }}\n"),
        "the same set with timeout 3600s",
    );
    assert_kernel_holds(&netns, &model, "after changing the timeout");
}
