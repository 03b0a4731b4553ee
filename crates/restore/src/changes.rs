//! What a change of cluster state does to the rules, Service by Service: the
//! rules two plans differ by, with every rule attributed to the service port
//! that writes it (for `chainsmith diff --from OLD --to NEW`, to review a
//! manifest change before it reaches a node).
//!
//! Attribution follows who emits a rule, never its comment: a port's plan emits
//! its rules in the shared chains (KUBE-SERVICES, KUBE-EXTERNAL-SERVICES,
//! KUBE-NODEPORTS, KUBE-PROXY-FIREWALL) and in its own chains (EXT, FW, SVC,
//! SVL, SEP), which it also declares; the node context emits and declares the
//! rest. Within one owner and one chain, rules are compared as text, in order
//! (a balancing chain's probabilities depend on the order), so a rule that only
//! moved shows as removed and added.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chainsmith_iptables::{Rule, Table};
use chainsmith_layout::Layout;
use chainsmith_model::{ObjectKey, Protocol};
use chainsmith_planner::{NodeContext, Plan, PortKey, ServicePortPlan};
use serde::{Serialize, Serializer};
use similar::{Algorithm, DiffOp, capture_diff_slices};

use crate::write_rule;

/// Whether a Service, port or chain is new, gone, or there in both states with
/// different rules. A Service or port counts as present when it has rules:
/// a headless Service turned into a ClusterIP one is `Added`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the new state (for a chain: created).
    Added,
    /// Only in the old state (for a chain: deleted).
    Removed,
    /// In both, with different rules.
    Changed,
}

/// How one chain's rules differ for one owner. For a shared chain only the
/// owner's own rules in it are compared, and its `change` is `Changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDiff {
    /// The table.
    #[serde(serialize_with = "table_name")]
    pub table: Table,
    /// The chain.
    pub chain: String,
    /// Created, deleted, or rules changed.
    pub change: Change,
    /// Rules only the old state writes (`-A CHAIN ...`, as rendered).
    pub removed: Vec<String>,
    /// Rules only the new state writes.
    pub added: Vec<String>,
}

/// How one service port's rules differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortDiff {
    /// The port's name (empty for an unnamed port).
    pub port_name: String,
    /// The protocol.
    #[serde(serialize_with = "display")]
    pub protocol: Protocol,
    /// The port number before, if the port had rules then.
    pub old_port: Option<u16>,
    /// The port number after, if the port has rules then.
    pub new_port: Option<u16>,
    /// New, gone or changed.
    pub change: Change,
    /// The chains that differ: filter before nat, each table in the order the
    /// new state writes its chains, then the chains only the old state wrote.
    pub chains: Vec<ChainDiff>,
}

/// How one Service's rules differ, with its summary counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDiff {
    /// `namespace/name`.
    #[serde(serialize_with = "display")]
    pub service: ObjectKey,
    /// New, gone or changed.
    pub change: Change,
    /// Rules added over all its ports and chains.
    pub rules_added: usize,
    /// Rules removed over all its ports and chains.
    pub rules_removed: usize,
    /// Chains created.
    pub chains_added: Vec<String>,
    /// Chains deleted.
    pub chains_removed: Vec<String>,
    /// The ports whose rules differ, in [`PortKey`] order.
    pub ports: Vec<PortDiff>,
}

/// Sums over the whole difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotal {
    /// Services whose rules differ.
    pub services: usize,
    /// Rules added (Services' and the node's).
    pub rules_added: usize,
    /// Rules removed.
    pub rules_removed: usize,
    /// Chains created.
    pub chains_added: usize,
    /// Chains deleted.
    pub chains_removed: usize,
}

/// Every difference between two plans' rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanDiff {
    /// Services whose rules differ, in [`ObjectKey`] order.
    pub services: Vec<ServiceDiff>,
    /// Rules and chains of no Service (the node's fixed rules); differ only
    /// when the node settings or their effect differ.
    pub node: Vec<ChainDiff>,
    /// Sums.
    pub total: DiffTotal,
}

impl PlanDiff {
    /// The two plans write the same rules.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.node.is_empty()
    }
}

/// Compares the rules of two plans, Service by Service. Meant for one node and
/// family; plans for different node settings also compare, and then the
/// node's own rules show in [`PlanDiff::node`]. Ports whose plans are equal
/// under the same node context are not rendered at all, so a small change to
/// a large cluster costs little.
pub fn diff_plans(old: &Plan, new: &Plan, layout: Layout) -> PlanDiff {
    let same_context = old.ctx == new.ctx && old.large_cluster == new.large_cluster;
    let mut pairs: BTreeMap<PortKey, (Option<&ServicePortPlan>, Option<&ServicePortPlan>)> = BTreeMap::new();
    for port in &old.ports {
        pairs.entry(port.key()).or_default().0 = Some(port);
    }
    for port in &new.ports {
        pairs.entry(port.key()).or_default().1 = Some(port);
    }
    let services_in = |plan: &Plan| -> BTreeSet<ObjectKey> {
        plan.ports.iter().map(|p| p.info().service().clone()).collect()
    };
    let (old_services, new_services) = (services_in(old), services_in(new));

    let mut by_service: BTreeMap<ObjectKey, Vec<PortDiff>> = BTreeMap::new();
    for (key, (before, after)) in pairs {
        if let (true, Some(a), Some(b)) = (same_context, before, after)
            && a == b
        {
            continue;
        }
        let rules_of = |port: Option<&ServicePortPlan>, plan: &Plan| {
            port.map(|p| port_rules(layout, p, &plan.ctx, plan.large_cluster))
                .unwrap_or_default()
        };
        let chains = compare(&rules_of(before, old), &rules_of(after, new));
        if chains.is_empty() {
            continue;
        }
        let number = |port: Option<&ServicePortPlan>| port.map(|p| p.info().port);
        by_service.entry(key.service).or_default().push(PortDiff {
            port_name: key.port_name,
            protocol: key.protocol,
            old_port: number(before),
            new_port: number(after),
            change: change_of(before.is_some(), after.is_some()),
            chains,
        });
    }

    let mut total = DiffTotal::default();
    let mut services = Vec::with_capacity(by_service.len());
    for (service, ports) in by_service {
        let mut diff = ServiceDiff {
            change: change_of(old_services.contains(&service), new_services.contains(&service)),
            service,
            rules_added: 0,
            rules_removed: 0,
            chains_added: Vec::new(),
            chains_removed: Vec::new(),
            ports,
        };
        for chain in diff.ports.iter().flat_map(|p| &p.chains) {
            diff.rules_added += chain.added.len();
            diff.rules_removed += chain.removed.len();
            match chain.change {
                Change::Added => diff.chains_added.push(chain.chain.clone()),
                Change::Removed => diff.chains_removed.push(chain.chain.clone()),
                Change::Changed => {}
            }
        }
        total.services += 1;
        total.rules_added += diff.rules_added;
        total.rules_removed += diff.rules_removed;
        total.chains_added += diff.chains_added.len();
        total.chains_removed += diff.chains_removed.len();
        services.push(diff);
    }

    let node = compare(&node_rules(layout, &old.ctx), &node_rules(layout, &new.ctx));
    for chain in &node {
        total.rules_added += chain.added.len();
        total.rules_removed += chain.removed.len();
        total.chains_added += usize::from(chain.change == Change::Added);
        total.chains_removed += usize::from(chain.change == Change::Removed);
    }
    PlanDiff {
        services,
        node,
        total,
    }
}

fn change_of(before: bool, after: bool) -> Change {
    match (before, after) {
        (false, _) => Change::Added,
        (true, false) => Change::Removed,
        (true, true) => Change::Changed,
    }
}

/// One chain as one owner writes it.
#[derive(Debug)]
struct ChainRules {
    table: Table,
    name: String,
    /// The owner creates the chain (as opposed to writing into a shared one).
    declared: bool,
    rules: Vec<String>,
}

/// One owner's chains, in the order it first names them.
#[derive(Debug, Default)]
struct OwnedRules {
    chains: Vec<ChainRules>,
    /// Per table (filter, nat): chain name to index in `chains`.
    index: [HashMap<String, usize>; 2],
}

fn table_slot(table: Table) -> usize {
    match table {
        Table::Filter => 0,
        Table::Nat => 1,
    }
}

impl OwnedRules {
    fn get(&self, table: Table, name: &str) -> Option<&ChainRules> {
        self.index[table_slot(table)].get(name).map(|&i| &self.chains[i])
    }

    fn slot(&mut self, table: Table, name: &str) -> &mut ChainRules {
        let index = &mut self.index[table_slot(table)];
        let i = match index.get(name) {
            Some(&i) => i,
            None => {
                index.insert(name.to_string(), self.chains.len());
                self.chains.push(ChainRules {
                    table,
                    name: name.to_string(),
                    declared: false,
                    rules: Vec::new(),
                });
                self.chains.len() - 1
            }
        };
        &mut self.chains[i]
    }

    fn declare(&mut self, table: Table, name: &str) {
        self.slot(table, name).declared = true;
    }

    /// A sink that records rules as the renderer spells them.
    fn sink(&mut self, table: Table) -> impl FnMut(&Rule<'_>) + '_ {
        let mut line = Vec::with_capacity(160);
        move |rule: &Rule<'_>| {
            line.clear();
            write_rule(&mut line, rule);
            line.pop(); // the newline
            // Every piece of a rendered rule is a `&str`, so nothing is lost here.
            let text = String::from_utf8_lossy(&line).into_owned();
            self.slot(table, rule.chain).rules.push(text);
        }
    }
}

fn port_rules(layout: Layout, port: &ServicePortPlan, ctx: &NodeContext, large_cluster: bool) -> OwnedRules {
    let mut owned = OwnedRules::default();
    layout.emit_filter(port, &mut owned.sink(Table::Filter));
    layout.emit_nat(port, ctx, large_cluster, false, &mut owned.sink(Table::Nat));
    for chain in layout.own_chains(port) {
        owned.declare(Table::Nat, chain.as_str());
    }
    {
        let mut own = owned.sink(Table::Nat);
        layout.emit_nat(port, ctx, large_cluster, true, &mut |rule: &Rule<'_>| {
            if layout.owns_service_chain(rule.chain) {
                own(rule);
            }
        });
    }
    owned
}

fn node_rules(layout: Layout, ctx: &NodeContext) -> OwnedRules {
    let mut owned = OwnedRules::default();
    for chain in layout.filter_chains(ctx) {
        owned.declare(Table::Filter, chain);
    }
    layout.emit_filter_head(ctx, &mut owned.sink(Table::Filter));
    layout.emit_filter_tail(ctx, &mut owned.sink(Table::Filter));
    for chain in layout.nat_chains() {
        owned.declare(Table::Nat, chain);
    }
    layout.emit_nat_head(ctx, &mut owned.sink(Table::Nat));
    layout.emit_nat_tail(ctx, &mut owned.sink(Table::Nat));
    owned
}

/// The chains in which one owner's rules differ between two states.
fn compare(old: &OwnedRules, new: &OwnedRules) -> Vec<ChainDiff> {
    let mut out = Vec::new();
    let mut push = |table: Table, name: &str, before: Option<&ChainRules>, after: Option<&ChainRules>| {
        let declared = |chain: Option<&ChainRules>| chain.is_some_and(|c| c.declared);
        let change = match (declared(before), declared(after)) {
            (false, true) => Change::Added,
            (true, false) => Change::Removed,
            _ => Change::Changed,
        };
        let (removed, added) = ordered_difference(rules_of(before), rules_of(after));
        if change != Change::Changed || !removed.is_empty() || !added.is_empty() {
            out.push(ChainDiff {
                table,
                chain: name.to_string(),
                change,
                removed,
                added,
            });
        }
    };
    for chain in &new.chains {
        push(
            chain.table,
            &chain.name,
            old.get(chain.table, &chain.name),
            Some(chain),
        );
    }
    for chain in &old.chains {
        if new.get(chain.table, &chain.name).is_none() {
            push(chain.table, &chain.name, Some(chain), None);
        }
    }
    // Stable: within a table the order above stays.
    out.sort_by_key(|c| c.table);
    out
}

fn rules_of(chain: Option<&ChainRules>) -> &[String] {
    chain.map_or(&[], |c| &c.rules)
}

/// Order-sensitive difference: (only in `old`, only in `new`).
fn ordered_difference(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for op in capture_diff_slices(Algorithm::Myers, old, new) {
        let (old_range, new_range) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (0..0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index..old_index + old_len, new_index..new_index + new_len),
        };
        removed.extend_from_slice(&old[old_range]);
        added.extend_from_slice(&new[new_range]);
    }
    (removed, added)
}

fn display<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn table_name<S: Serializer>(table: &Table, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(table.as_str())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use chainsmith_model::{
        AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpNet, LoadBalancerIngress,
        LocalTrafficDetector, NodeConfig, Service, ServicePort, ServiceType, TrafficPolicy,
    };

    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            node_name: "node-a".into(),
            node_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
            local_traffic_detector: LocalTrafficDetector::ClusterCidr(
                "10.244.0.0/16".parse::<IpNet>().expect("cidr"),
            ),
            ..NodeConfig::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// `default/web`, ClusterIP 10.96.0.10, ports `(name, port)` over TCP.
    fn web(ports: &[(&str, u16)]) -> Service {
        let mut service = Service::new(ObjectKey::new("default", "web"));
        service.cluster_ips = ClusterIps {
            v4: Some(ip("10.96.0.10")),
            v6: None,
        };
        for &(name, port) in ports {
            service.ports.push(ServicePort {
                name: name.into(),
                protocol: Protocol::Tcp,
                port,
                node_port: 0,
            });
        }
        service
    }

    /// A slice of `default/web` with endpoints `(address, node)` serving the
    /// named ports on 8000 + the Service port's index.
    fn slice(ports: &[&str], endpoints: &[(&str, &str)]) -> EndpointSlice {
        EndpointSlice {
            key: ObjectKey::new("default", "web-abc"),
            service: ObjectKey::new("default", "web"),
            address_type: AddressType::Ipv4,
            ports: ports
                .iter()
                .zip(8000..)
                .map(|(name, port)| EndpointPort {
                    name: (*name).into(),
                    port,
                    protocol: Protocol::Tcp,
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|&(address, node)| Endpoint {
                    node_name: Some(node.into()),
                    ..Endpoint::ready(ip(address))
                })
                .collect(),
        }
    }

    fn diff(old: (&[Service], &[EndpointSlice]), new: (&[Service], &[EndpointSlice])) -> PlanDiff {
        diff_with(&node(), old, &node(), new)
    }

    fn diff_with(
        old_node: &NodeConfig,
        old: (&[Service], &[EndpointSlice]),
        new_node: &NodeConfig,
        new: (&[Service], &[EndpointSlice]),
    ) -> PlanDiff {
        diff_plans(
            &Plan::compile(old.0, old.1, old_node),
            &Plan::compile(new.0, new.1, new_node),
            Layout::V1_33,
        )
    }

    /// The shape of a diff, one line per Service, port and chain, with the
    /// hash of per-service chain names left out (`KUBE-SEP-*`).
    fn outline(diff: &PlanDiff) -> Vec<String> {
        let chain_line = |c: &ChainDiff| {
            let name = match chainsmith_naming::ServiceChainKind::of(&c.chain) {
                Some(kind) => format!("{}*", kind.prefix()),
                None => c.chain.clone(),
            };
            format!(
                "    {} {name} {:?} -{} +{}",
                c.table.as_str(),
                c.change,
                c.removed.len(),
                c.added.len()
            )
        };
        let mut lines = Vec::new();
        for service in &diff.services {
            lines.push(format!(
                "{} {:?} -{} +{}",
                service.service, service.change, service.rules_removed, service.rules_added
            ));
            for port in &service.ports {
                lines.push(format!(
                    "  {}/{} {:?}",
                    port.port_name, port.protocol, port.change
                ));
                lines.extend(port.chains.iter().map(chain_line));
            }
        }
        if !diff.node.is_empty() {
            lines.push("node".into());
            lines.extend(diff.node.iter().map(chain_line));
        }
        lines
    }

    fn chain<'d>(diff: &'d PlanDiff, name_prefix: &str) -> Vec<&'d ChainDiff> {
        diff.services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.chains)
            .filter(|c| c.chain.starts_with(name_prefix))
            .collect()
    }

    const A: (&str, &str) = ("10.244.1.5", "node-a");
    const B: (&str, &str) = ("10.244.2.7", "node-b");

    #[test]
    fn unchanged_input_gives_an_empty_diff() {
        let state: (&[Service], &[EndpointSlice]) = (&[web(&[("http", 80)])], &[slice(&["http"], &[A, B])]);
        let found = diff(state, state);
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(found.total, DiffTotal::default());
    }

    #[test]
    fn a_new_endpoint_rebalances_the_service_chain_and_gets_its_own_chain() {
        let services = [web(&[("http", 80)])];
        let found = diff(
            (&services, &[slice(&["http"], &[A])]),
            (&services, &[slice(&["http"], &[A, B])]),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -1 +4",
                "  http/TCP Changed",
                "    nat KUBE-SVC-* Changed -1 +2",
                "    nat KUBE-SEP-* Added -0 +2",
            ]
        );
        let svc = chain(&found, "KUBE-SVC-")[0];
        assert!(svc.removed[0].ends_with(&format!("-j {}", chain_of_endpoint(&found, A.0))));
        assert!(svc.added[0].contains("--probability 0.5000000000"), "{svc:#?}");
        let sep = chain(&found, "KUBE-SEP-")[0];
        assert!(
            sep.added[1].ends_with("-j DNAT --to-destination 10.244.2.7:8000"),
            "{sep:#?}"
        );
        assert_eq!(found.services[0].chains_added, std::slice::from_ref(&sep.chain));
        assert_eq!(
            found.total,
            DiffTotal {
                services: 1,
                rules_added: 4,
                rules_removed: 1,
                chains_added: 1,
                chains_removed: 0
            }
        );
    }

    /// The endpoint chain an unchanged endpoint keeps (named in both states).
    fn chain_of_endpoint(diff: &PlanDiff, address: &str) -> String {
        let svc = chain(diff, "KUBE-SVC-")[0];
        let line = svc
            .added
            .iter()
            .find(|rule| rule.contains(&format!("-> {address}:")))
            .expect("a jump to the endpoint");
        line.rsplit(' ').next().expect("target").to_string()
    }

    #[test]
    fn a_new_port_brings_its_cluster_ip_rule_and_chains() {
        let found = diff(
            (&[web(&[("http", 80)])], &[slice(&["http"], &[A])]),
            (
                &[web(&[("http", 80), ("metrics", 9090)])],
                &[slice(&["http", "metrics"], &[A])],
            ),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -0 +5",
                "  metrics/TCP Added",
                "    nat KUBE-SERVICES Changed -0 +1",
                "    nat KUBE-SVC-* Added -0 +2",
                "    nat KUBE-SEP-* Added -0 +2",
            ]
        );
        let port = &found.services[0].ports[0];
        assert_eq!((port.old_port, port.new_port), (None, Some(9090)));
        let services = chain(&found, "KUBE-SERVICES")[0];
        assert_eq!(
            services.added[0],
            format!(
                "-A KUBE-SERVICES -m comment --comment \"default/web:metrics cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 9090 -j {}",
                chain(&found, "KUBE-SVC-")[0].chain
            )
        );
    }

    #[test]
    fn cluster_ip_to_load_balancer_with_source_ranges() {
        let mut lb = web(&[("http", 80)]);
        lb.service_type = ServiceType::LoadBalancer;
        lb.ports[0].node_port = 30080;
        lb.load_balancer_ingress.push(LoadBalancerIngress {
            ip: ip("203.0.113.20"),
            ip_mode: None,
        });
        lb.load_balancer_source_ranges
            .push("198.51.100.0/24".parse().expect("cidr"));
        let slices = [slice(&["http"], &[A])];
        let found = diff((&[web(&[("http", 80)])], &slices), (&[lb], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -0 +8",
                "  http/TCP Changed",
                "    filter KUBE-PROXY-FIREWALL Changed -0 +1",
                "    nat KUBE-SERVICES Changed -0 +1",
                "    nat KUBE-NODEPORTS Changed -0 +2",
                "    nat KUBE-EXT-* Added -0 +2",
                "    nat KUBE-FW-* Added -0 +2",
            ]
        );
        let fw = chain(&found, "KUBE-FW-")[0];
        let ext = chain(&found, "KUBE-EXT-")[0];
        assert_eq!(
            fw.added,
            [
                format!(
                    "-A {} -m comment --comment \"default/web:http loadbalancer IP\" -s 198.51.100.0/24 -j {}",
                    fw.chain, ext.chain
                ),
                format!(
                    "-A {} -m comment --comment \"other traffic to default/web:http will be dropped by KUBE-PROXY-FIREWALL\"",
                    fw.chain
                ),
            ]
        );
        let services = chain(&found, "KUBE-SERVICES")[0];
        assert!(
            services.added[0].contains("-d 203.0.113.20 --dport 80 -j KUBE-FW-"),
            "{services:#?}"
        );
        let firewall = chain(&found, "KUBE-PROXY-FIREWALL")[0];
        assert!(firewall.added[0].ends_with("-d 203.0.113.20 --dport 80 -j DROP"));
        assert_eq!(
            found.services[0].chains_added,
            [ext.chain.clone(), fw.chain.clone()]
        );
    }

    #[test]
    fn a_deleted_service_removes_every_rule_and_chain() {
        let other = Service {
            key: ObjectKey::new("default", "api"),
            ..web(&[("", 443)])
        };
        let found = diff(
            (
                &[web(&[("http", 80)]), other.clone()],
                &[slice(&["http"], &[A, B])],
            ),
            (&[other], &[]),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Removed -8 +0",
                "  http/TCP Removed",
                "    nat KUBE-SERVICES Changed -1 +0",
                "    nat KUBE-SVC-* Removed -3 +0",
                "    nat KUBE-SEP-* Removed -2 +0",
                "    nat KUBE-SEP-* Removed -2 +0",
            ]
        );
        assert_eq!(found.services[0].chains_removed.len(), 3);
        assert_eq!(found.total.chains_removed, 3);
    }

    #[test]
    fn external_traffic_policy_local_adds_the_local_chain_and_rewrites_ext() {
        let mut cluster = web(&[("http", 80)]);
        cluster.service_type = ServiceType::NodePort;
        cluster.ports[0].node_port = 30080;
        let local = Service {
            external_traffic_policy: TrafficPolicy::Local,
            ..cluster.clone()
        };
        let slices = [slice(&["http"], &[A, B])];
        let found = diff((&[cluster], &slices), (&[local], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -2 +5",
                "  http/TCP Changed",
                "    nat KUBE-EXT-* Changed -2 +4",
                "    nat KUBE-SVL-* Added -0 +1",
            ]
        );
        let ext = chain(&found, "KUBE-EXT-")[0];
        let svl = chain(&found, "KUBE-SVL-")[0];
        assert!(ext.removed[0].contains("masquerade traffic for default/web:http external destinations"));
        assert!(ext.added[0].contains("pod traffic for default/web:http external destinations"));
        assert_eq!(ext.added[3], format!("-A {} -j {}", ext.chain, svl.chain));
        // Only the local endpoint is balanced over.
        assert_eq!(svl.added.len(), 1);
        assert!(
            svl.added[0].contains("default/web:http -> 10.244.1.5:8000"),
            "{svl:#?}"
        );

        // With no local endpoint, outside traffic is dropped instead.
        let remote_only = [slice(&["http"], &[B])];
        let mut cluster = web(&[("http", 80)]);
        cluster.service_type = ServiceType::NodePort;
        cluster.ports[0].node_port = 30080;
        let local = Service {
            external_traffic_policy: TrafficPolicy::Local,
            ..cluster.clone()
        };
        let found = diff((&[cluster], &remote_only), (&[local], &remote_only));
        let drop = chain(&found, "KUBE-EXTERNAL-SERVICES")[0];
        assert_eq!(
            drop.added,
            [
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP"
            ]
        );
    }

    #[test]
    fn session_affinity_changes_the_rules_inside_existing_endpoint_chains() {
        let plain = web(&[("http", 80)]);
        let sticky = Service {
            session_affinity: chainsmith_model::SessionAffinity::ClientIp {
                timeout_seconds: 10800,
            },
            ..plain.clone()
        };
        let slices = [slice(&["http"], &[A, B])];
        let found = diff((&[plain], &slices), (&[sticky], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -2 +4",
                "  http/TCP Changed",
                "    nat KUBE-SVC-* Changed -0 +2",
                "    nat KUBE-SEP-* Changed -1 +1",
                "    nat KUBE-SEP-* Changed -1 +1",
            ]
        );
        let sep = chain(&found, "KUBE-SEP-")[0];
        assert_eq!(
            sep.added,
            [format!(
                "-A {0} -m comment --comment default/web:http -m recent --name {0} --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8000",
                sep.chain
            )]
        );
        assert!(found.services[0].chains_added.is_empty());
    }

    #[test]
    fn node_settings_change_the_rules_of_no_service() {
        let state: (&[Service], &[EndpointSlice]) = (&[web(&[("http", 80)])], &[slice(&["http"], &[A])]);
        let liberal = NodeConfig {
            conntrack_tcp_be_liberal: true,
            ..node()
        };
        let found = diff_with(&node(), state, &liberal, state);
        assert_eq!(outline(&found), ["node", "    filter KUBE-FORWARD Changed -1 +0"]);
        assert_eq!(found.total.services, 0);
        assert_eq!(found.total.rules_removed, 1);
    }

    #[test]
    fn json_names_tables_protocols_and_services_as_text() {
        let services = [web(&[("http", 80)])];
        let found = diff((&[], &[]), (&services, &[]));
        let json = serde_json::to_value(&found).expect("json");
        let service = &json["services"][0];
        assert_eq!(service["service"], "default/web");
        assert_eq!(service["change"], "added");
        assert_eq!(service["ports"][0]["protocol"], "TCP");
        assert_eq!(service["ports"][0]["chains"][0]["table"], "filter");
        assert_eq!(service["ports"][0]["chains"][0]["chain"], "KUBE-SERVICES");
    }
}
