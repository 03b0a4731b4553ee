//! Property 2: incremental syncs always equal one full sync.
//!
//! A random starting cluster and a random sequence of changes (Services added,
//! removed and replaced, endpoints scaled and their conditions flipped, slices
//! replaced, traffic policies and affinity flipped, load-balancer IPs added,
//! ports renumbered, renamed and moved to another protocol, the node's runtime
//! settings changed; now and then a refused restore or a forced full sync) go
//! through the `SyncEngine` in both partial-sync modes, and through the
//! `NftSyncEngine` (nftables mode). Every payload is replayed into the
//! kernel model (`RuleSet`; for nftables `Table`), which refuses what the
//! kernel refuses; after every step its tables must equal those one full
//! compile of the current state leaves in an empty kernel (for nftables, in
//! canonical spelling, flushed stale chains that wait for their deletion and
//! element comments aside: like upstream, an element whose value stays keeps
//! the comment it was written with).

use std::net::IpAddr;

use chainsmith_iptables::RuleSet;
use chainsmith_layout::Layout;
use chainsmith_model::{EndpointSlice, IpFamily, LoadBalancerIpMode, NodeConfig, Protocol, Service};
use chainsmith_nftables::{Family, Table};
use chainsmith_planner::Plan;
use chainsmith_restore::normalize::first_difference;
use chainsmith_restore::render_plan;
use chainsmith_sync::{NftSyncEngine, PartialSyncMode, SyncEngine, SyncKind};
use proptest::prelude::*;
use proptest::sample::{Index, select};

use crate::cluster::{
    Cluster, Condition, EndpointSpec, Kind, RuntimeSettings, ServiceSpec, SliceSpec, Slot, cluster,
    endpoint_condition, endpoint_specs, ingress, node_config, runtime_settings, service_spec, slice_spec,
    slice_specs,
};

/// One change to the desired state.
#[derive(Debug, Clone)]
enum Change {
    /// Adds, replaces or (`None`) removes the Service of a slot.
    SetService(Index, Option<ServiceSpec>),
    /// Replaces every slice of a slot.
    SetSlices(Index, Vec<SliceSpec>),
    /// Adds one slice to a slot.
    AddSlice(Index, SliceSpec),
    /// Scales one slice: a new endpoint list.
    SetEndpoints(Index, Index, Vec<EndpointSpec>),
    /// One endpoint becomes ready, terminating, ...
    SetCondition(Index, Index, Index, Condition),
    FlipExternalPolicy(Index),
    FlipInternalPolicy(Index),
    FlipAffinity(Index),
    /// The Service becomes (or stays) a LoadBalancer and gets one more ingress IP.
    AddLoadBalancerIp(Index, (IpAddr, Option<LoadBalancerIpMode>)),
    Renumber(Index, Index, u16),
    SetProtocol(Index, Index, Protocol),
    RenamePort(Index, Index, usize),
    /// The Node or the host's interfaces changed.
    SetRuntime(RuntimeSettings),
}

impl Change {
    fn apply(&self, cluster: &mut Cluster, config: &mut NodeConfig) {
        fn service<'c>(slots: &'c mut [Slot], slot: &Index) -> Option<&'c mut ServiceSpec> {
            let n = slot.index(slots.len());
            slots[n].service.as_mut()
        }
        let slots = &mut cluster.slots;
        match self {
            Change::SetService(slot, spec) => {
                let n = slot.index(slots.len());
                slots[n].service = spec.clone();
            }
            Change::SetSlices(slot, slices) => {
                let n = slot.index(slots.len());
                slots[n].slices = slices.clone();
            }
            Change::AddSlice(slot, slice) => {
                let n = slot.index(slots.len());
                slots[n].slices.push(slice.clone());
            }
            Change::SetEndpoints(slot, slice, endpoints) => {
                let n = slot.index(slots.len());
                let slices = &mut slots[n].slices;
                if !slices.is_empty() {
                    let at = slice.index(slices.len());
                    slices[at].endpoints = endpoints.clone();
                }
            }
            Change::SetCondition(slot, slice, endpoint, condition) => {
                let n = slot.index(slots.len());
                let slices = &mut slots[n].slices;
                if !slices.is_empty() {
                    let at = slice.index(slices.len());
                    let endpoints = &mut slices[at].endpoints;
                    if !endpoints.is_empty() {
                        let at = endpoint.index(endpoints.len());
                        endpoints[at].condition = *condition;
                    }
                }
            }
            Change::FlipExternalPolicy(slot) => {
                if let Some(s) = service(slots, slot) {
                    s.external_local = !s.external_local;
                }
            }
            Change::FlipInternalPolicy(slot) => {
                if let Some(s) = service(slots, slot) {
                    s.internal_local = !s.internal_local;
                }
            }
            Change::FlipAffinity(slot) => {
                if let Some(s) = service(slots, slot) {
                    s.affinity_seconds = match s.affinity_seconds {
                        Some(_) => None,
                        None => Some(10800),
                    };
                }
            }
            Change::AddLoadBalancerIp(slot, ingress) => {
                if let Some(s) = service(slots, slot) {
                    s.kind = Kind::LoadBalancer;
                    if !s.ingress.iter().any(|(ip, _)| *ip == ingress.0) {
                        s.ingress.push(*ingress);
                    }
                }
            }
            Change::Renumber(slot, port, number) => {
                if let Some(s) = service(slots, slot).filter(|s| !s.ports.is_empty()) {
                    let at = port.index(s.ports.len());
                    s.ports[at].port = *number;
                }
            }
            Change::SetProtocol(slot, port, protocol) => {
                if let Some(s) = service(slots, slot).filter(|s| !s.ports.is_empty()) {
                    let at = port.index(s.ports.len());
                    s.ports[at].protocol = *protocol;
                }
            }
            Change::RenamePort(slot, port, name) => {
                if let Some(s) = service(slots, slot).filter(|s| !s.ports.is_empty()) {
                    let at = port.index(s.ports.len());
                    s.ports[at].name = *name;
                }
            }
            Change::SetRuntime(settings) => settings.apply_to(config),
        }
    }
}

fn change(family: IpFamily) -> impl Strategy<Value = Change> {
    let slot = any::<Index>;
    prop_oneof![
        3 => (slot(), prop::option::weighted(0.7, service_spec())).prop_map(|(s, v)| Change::SetService(s, v)),
        1 => (slot(), slice_specs()).prop_map(|(s, v)| Change::SetSlices(s, v)),
        1 => (slot(), slice_spec()).prop_map(|(s, v)| Change::AddSlice(s, v)),
        4 => (slot(), any::<Index>(), endpoint_specs()).prop_map(|(s, i, v)| Change::SetEndpoints(s, i, v)),
        3 => (slot(), any::<Index>(), any::<Index>(), endpoint_condition())
            .prop_map(|(s, i, e, c)| Change::SetCondition(s, i, e, c)),
        2 => slot().prop_map(Change::FlipExternalPolicy),
        1 => slot().prop_map(Change::FlipInternalPolicy),
        1 => slot().prop_map(Change::FlipAffinity),
        2 => (slot(), ingress()).prop_map(|(s, v)| Change::AddLoadBalancerIp(s, v)),
        2 => (slot(), any::<Index>(), select(vec![53u16, 80, 443, 8080, 9090]))
            .prop_map(|(s, p, n)| Change::Renumber(s, p, n)),
        1 => (slot(), any::<Index>(), select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]))
            .prop_map(|(s, p, v)| Change::SetProtocol(s, p, v)),
        1 => (slot(), any::<Index>(), 0usize..4).prop_map(|(s, p, n)| Change::RenamePort(s, p, n)),
        1 => runtime_settings(family).prop_map(Change::SetRuntime),
    ]
}

/// How a step's sync goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The payload is applied.
    Applied,
    /// The first payload is refused (the kernel is left as it was); the retry applies.
    RefusedThenRetried,
    /// A forced full sync.
    Forced,
}

#[derive(Debug, Clone)]
struct Step {
    changes: Vec<Change>,
    outcome: Outcome,
}

fn steps(family: IpFamily) -> impl Strategy<Value = Vec<Step>> {
    let outcome = prop_oneof![
        12 => Just(Outcome::Applied),
        1 => Just(Outcome::RefusedThenRetried),
        1 => Just(Outcome::Forced),
    ];
    let step = (prop::collection::vec(change(family), 1..=3), outcome)
        .prop_map(|(changes, outcome)| Step { changes, outcome });
    prop::collection::vec(step, 1..=12)
}

/// A node configuration, a starting cluster and the changes that follow.
fn scenario() -> impl Strategy<Value = (NodeConfig, Cluster, Vec<Step>)> {
    prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)]
        .prop_flat_map(|family| (node_config(family), cluster(), steps(family)))
}

/// The tables one full sync of this state leaves in an empty kernel.
fn full_sync_tables(services: &[Service], slices: &[EndpointSlice], config: &NodeConfig) -> String {
    let payload = render_plan(&Plan::compile(services, slices, config), Layout::V1_33);
    let payload = String::from_utf8(payload).expect("payloads are UTF-8");
    let mut kernel = RuleSet::new();
    kernel
        .apply(&payload)
        .unwrap_or_else(|e| panic!("a full payload was refused: {e}\n{payload}"));
    kernel.to_restore_text()
}

fn run(
    mode: PartialSyncMode,
    config: &NodeConfig,
    start: &Cluster,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut cluster = start.clone();
    let mut config = config.clone();
    let mut engine = SyncEngine::new(config.clone(), mode);
    let mut kernel = RuleSet::new();
    let first = Step {
        changes: Vec::new(),
        outcome: Outcome::Applied,
    };
    for (n, step) in std::iter::once(&first).chain(steps).enumerate() {
        for change in &step.changes {
            change.apply(&mut cluster, &mut config);
        }
        let config_changed = *engine.context().config() != config;
        engine.set_config(config.clone());
        let (services, slices) = cluster.materialize();
        let changed = engine.replace_state(&services, &slices);
        let now_ms = n as u64 * 1000;
        if step.outcome == Outcome::RefusedThenRetried {
            let _ = engine.sync(now_ms, false);
            engine.commit(false);
        }
        let outcome = engine.sync(now_ms, step.outcome == Outcome::Forced);
        let kind = outcome.kind;
        let payload = String::from_utf8(outcome.payload.to_vec()).expect("payloads are UTF-8");
        if let Err(e) = kernel.apply(&payload) {
            return Err(TestCaseError::fail(format!(
                "{mode:?} step {n}: the kernel refuses the {kind:?} payload: {e}\n{payload}"
            )));
        }
        engine.commit(true);
        if mode == PartialSyncMode::Minimal && kind == SyncKind::Partial && changed == 0 && !config_changed {
            prop_assert!(
                payload.is_empty(),
                "{mode:?} step {n}: nothing changed, yet:\n{payload}"
            );
        }
        let want = full_sync_tables(&services, &slices, &config);
        let got = kernel.to_restore_text();
        if let Some((line, w, g)) = first_difference(&want, &got) {
            return Err(TestCaseError::fail(format!(
                "{mode:?} step {n} ({kind:?} sync): tables differ from a full sync at line {line}\n  \
                 want: {w}\n   got: {g}\npayload:\n{payload}"
            )));
        }
    }
    Ok(())
}

/// A table as compared: canonical spelling, without element comments and
/// without per-service chains that are empty (flushed stale chains waiting
/// for their deletion; a written per-service chain always has rules).
fn comparable(table: &Table) -> String {
    let dump = table.canonical().dump();
    let with_rules: std::collections::HashSet<&str> = dump
        .lines()
        .filter_map(|l| l.strip_prefix("add rule "))
        .filter_map(|l| l.split(' ').nth(2))
        .collect();
    dump.lines()
        .filter(|l| {
            let chain = l.strip_prefix("add chain ").and_then(|l| l.split(' ').nth(2));
            !chain.is_some_and(|c| c.contains('/') && !with_rules.contains(c))
        })
        .map(|l| match (l.starts_with("add element "), l.find(" comment \"")) {
            (true, Some(at)) => {
                let end = l[at + 10..].find('"').map_or(l.len(), |e| at + 11 + e);
                format!("{}{}\n", &l[..at], &l[end..])
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

fn family(config: &NodeConfig) -> Family {
    match config.ip_family {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// The table one full nftables sync of this state leaves in an empty kernel.
fn full_nft_table(services: &[Service], slices: &[EndpointSlice], config: &NodeConfig) -> Table {
    let mut engine = NftSyncEngine::new(config.clone());
    engine.replace_state(services, slices);
    let transaction = engine.sync(0, false).main;
    let mut table = Table::new(family(config));
    table
        .apply(&transaction)
        .unwrap_or_else(|e| panic!("a full transaction was refused: {e}\n{transaction}"));
    table
}

fn run_nftables(config: &NodeConfig, start: &Cluster, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut cluster = start.clone();
    let mut config = config.clone();
    let mut engine = NftSyncEngine::new(config.clone());
    let mut kernel = Table::new(family(&config));
    let first = Step {
        changes: Vec::new(),
        outcome: Outcome::Applied,
    };
    for (n, step) in std::iter::once(&first).chain(steps).enumerate() {
        for change in &step.changes {
            change.apply(&mut cluster, &mut config);
        }
        engine.set_config(config.clone());
        let (services, slices) = cluster.materialize();
        engine.replace_state(&services, &slices);
        // A second apart: a chain flushed by one sync is deleted by the one
        // after next.
        let now_ms = n as u64 * 1000;
        let mut apply = |what: &str, transaction: &chainsmith_nftables::Transaction| {
            kernel.apply(transaction).map_err(|e| {
                TestCaseError::fail(format!(
                    "nftables step {n}: the kernel refuses the {what} transaction: {e}\n{transaction}"
                ))
            })
        };
        if step.outcome == Outcome::RefusedThenRetried {
            let refused = engine.sync(now_ms, false);
            if let Some(cleanup) = &refused.cleanup {
                apply("cleanup", cleanup)?;
            }
            engine.commit(true, false);
        }
        let outcome = engine.sync(now_ms, step.outcome == Outcome::Forced);
        if let Some(cleanup) = &outcome.cleanup {
            apply("cleanup", cleanup)?;
        }
        apply("main", &outcome.main)?;
        engine.commit(true, true);
        // The node's drift check compares the kernel with what the engine
        // says it holds: nothing may differ, stale chains included.
        let expected = engine
            .expected_table()
            .map_err(|e| TestCaseError::fail(format!("nftables step {n}: expected_table: {e}")))?;
        let drift = chainsmith_nftables::drift(&expected, &kernel);
        if !drift.is_empty() {
            return Err(TestCaseError::fail(format!(
                "nftables step {n}: the engine's expected table differs from the applied one: {drift:?}"
            )));
        }
        let want = comparable(&full_nft_table(&services, &slices, &config));
        let got = comparable(&kernel);
        if let Some((line, w, g)) = first_difference(&want, &got) {
            return Err(TestCaseError::fail(format!(
                "nftables step {n} ({:?} sync): the table differs from a full sync at line {line}\n  \
                 want: {w}\n   got: {g}\ntransaction:\n{}",
                outcome.kind, outcome.main
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases(64))]

    /// Property 2: after every step of any change sequence, the tables left by
    /// the incremental payloads (minimal and compat) equal one full sync's.
    #[test]
    fn incremental_syncs_equal_a_full_sync((config, start, steps) in scenario()) {
        for mode in [PartialSyncMode::Minimal, PartialSyncMode::Compat] {
            run(mode, &config, &start, &steps)?;
        }
        run_nftables(&config, &start, &steps)?;
    }
}
