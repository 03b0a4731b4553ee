//! Per-service-port decisions and the rules they emit (upstream `proxier.go`
//! `syncProxyRules` and `topology.go` `CategorizeEndpoints`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use chainsmith_model::{Diagnostic, EndpointSlice, NodeConfig, ObjectKey, ObjectKind, Protocol, Service};
use chainsmith_naming::{ChainName, ServiceChainKind, fixed};

use crate::context::nfacct;
use crate::endpoints::{EndpointInfo, PortEndpoints, endpoints_by_port};
use crate::rules::{Arg, RuleSink, Target, emit};
use crate::service_port::{ServicePortInfo, service_ports};
use crate::{LARGE_CLUSTER_ENDPOINTS_THRESHOLD, NodeContext};

/// Identifies a service port; orders plans as kube-proxy's tests sort rules
/// (by `namespace/name`), then by port name and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// The Service.
    pub service: ObjectKey,
    /// The port name.
    pub port_name: String,
    /// The protocol.
    pub protocol: Protocol,
}

impl Ord for PortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.service
            .cmp(&other.service)
            .then_with(|| self.port_name.cmp(&other.port_name))
            .then_with(|| self.protocol.cmp(&other.protocol))
    }
}

impl PartialOrd for PortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Which endpoints a topology-aware selection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameZone,
    SameNode,
}

/// Everything upstream decides for one service port in one sync. Plans are
/// immutable; a change to the Service or its endpoints makes a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortPlan {
    info: Arc<ServicePortInfo>,
    endpoints: PortEndpoints,
    /// Per endpoint, which lists it is on ([`CLUSTER`], [`LOCAL`], [`REACHABLE`]).
    roles: Vec<u8>,
    cluster_count: usize,
    local_count: usize,
    has_endpoints: bool,
    has_internal: bool,
    has_external: bool,
    uses_svc: bool,
    uses_svl: bool,
    uses_ext: bool,
    uses_fw: bool,
    allow_from_node: bool,
}

/// Role bits of an endpoint within one service port.
const CLUSTER: u8 = 1;
const LOCAL: u8 = 2;
const REACHABLE: u8 = 4;

impl ServicePortPlan {
    /// Decides the chains of one service port from its info and all of its
    /// endpoints (of any condition, sorted by endpoint text).
    pub fn new(info: Arc<ServicePortInfo>, endpoints: PortEndpoints, ctx: &NodeContext) -> ServicePortPlan {
        let config = ctx.config();
        let mut roles = vec![0u8; endpoints.len()];
        let mark = |roles: &mut [u8], bit: u8, keep: &dyn Fn(&EndpointInfo) -> bool| -> usize {
            let mut count = 0;
            for (role, ep) in roles.iter_mut().zip(endpoints.iter()) {
                if keep(ep) {
                    *role |= bit;
                    count += 1;
                }
            }
            count
        };
        let mut has_endpoints = false;
        let mut cluster_count = 0;
        let mut topology = TopologyMode::None;
        if info.uses_cluster_endpoints() {
            topology = topology_mode(&endpoints, config);
            cluster_count = mark(&mut roles, CLUSTER, &|ep| {
                ep.ready && available_for_topology(ep, topology, config)
            });
            if cluster_count == 0 {
                cluster_count = mark(&mut roles, CLUSTER, &EndpointInfo::serving_terminating);
            }
            has_endpoints = cluster_count > 0;
        }
        let mut local_count = 0;
        let mut union = false;
        if info.uses_local_endpoints() {
            let mut local_ready = false;
            let mut local_serving_terminating = false;
            for ep in endpoints.iter() {
                if ep.ready {
                    has_endpoints = true;
                    local_ready |= ep.local;
                } else if ep.serving_terminating() {
                    has_endpoints = true;
                    local_serving_terminating |= ep.local;
                }
            }
            let use_terminating = !local_ready && local_serving_terminating;
            if local_ready {
                local_count = mark(&mut roles, LOCAL, &|ep| ep.local && ep.ready);
            } else if use_terminating {
                local_count = mark(&mut roles, LOCAL, &|ep| ep.local && ep.serving_terminating());
            }
            // Cluster may hold remote endpoints, local may hold terminating or
            // topology-excluded ones: then both get endpoint chains.
            union = info.uses_cluster_endpoints() && (topology != TopologyMode::None || use_terminating);
        }
        let reachable_from = match (info.uses_cluster_endpoints(), info.uses_local_endpoints()) {
            (_, false) => CLUSTER,
            (false, true) => LOCAL,
            (true, true) if union => CLUSTER | LOCAL,
            (true, true) => CLUSTER,
        };
        for role in &mut roles {
            if *role & reachable_from != 0 {
                *role |= REACHABLE;
            }
        }

        let addresses = &info.addresses;
        let has_internal = has_endpoints && (!info.internal_policy_local || local_count > 0);
        let has_external = has_endpoints && (!info.external_policy_local || local_count > 0);
        let uses_svc = cluster_count > 0 && info.uses_cluster_endpoints();
        let uses_svl = local_count > 0 && info.uses_local_endpoints();
        let uses_ext = has_endpoints && info.externally_accessible();
        let uses_fw =
            has_endpoints && !addresses.load_balancer_vips.is_empty() && !addresses.source_ranges.is_empty();
        let allow_from_node = config
            .node_ip
            .is_some_and(|node_ip| addresses.source_ranges.iter().any(|r| r.value.contains(&node_ip)));
        ServicePortPlan {
            info,
            endpoints,
            roles,
            cluster_count,
            local_count,
            has_endpoints,
            has_internal,
            has_external,
            uses_svc,
            uses_svl,
            uses_ext,
            uses_fw,
            allow_from_node,
        }
    }

    fn with_role(&self, bit: u8) -> impl Iterator<Item = &EndpointInfo> + Clone {
        self.endpoints
            .iter()
            .zip(&self.roles)
            .filter(move |(_, role)| *role & bit != 0)
            .map(|(ep, _)| ep)
    }

    /// The derived service port.
    pub fn info(&self) -> &Arc<ServicePortInfo> {
        &self.info
    }

    /// All endpoints of the port (any condition).
    pub fn endpoints(&self) -> &PortEndpoints {
        &self.endpoints
    }

    /// Orders plans as [`PortKey`] does, without building keys.
    pub fn key_cmp(&self, other: &ServicePortPlan) -> Ordering {
        let (a, b) = (&*self.info, &*other.info);
        a.service()
            .cmp(b.service())
            .then_with(|| a.port_name.cmp(&b.port_name))
            .then_with(|| a.protocol.cmp(&b.protocol))
    }

    /// The key that orders this plan.
    pub fn key(&self) -> PortKey {
        PortKey {
            service: self.info.service().clone(),
            port_name: self.info.port_name.clone(),
            protocol: self.info.protocol,
        }
    }

    /// Endpoints used by cluster traffic policy.
    pub fn cluster_endpoints(&self) -> impl Iterator<Item = &EndpointInfo> + Clone {
        self.with_role(CLUSTER)
    }

    /// Endpoints used by local traffic policy.
    pub fn local_endpoints(&self) -> impl Iterator<Item = &EndpointInfo> + Clone {
        self.with_role(LOCAL)
    }

    /// Endpoints that get a `KUBE-SEP-` chain.
    pub fn reachable_endpoints(&self) -> impl Iterator<Item = &EndpointInfo> + Clone {
        self.with_role(REACHABLE)
    }

    /// Some usable endpoint exists anywhere in the cluster.
    pub fn has_endpoints(&self) -> bool {
        self.has_endpoints
    }

    /// Has endpoints but none local under `internalTrafficPolicy: Local`.
    pub fn lacks_local_internal(&self) -> bool {
        self.has_endpoints && !self.has_internal
    }

    /// Has endpoints but none local under `externalTrafficPolicy: Local`.
    pub fn lacks_local_external(&self) -> bool {
        self.has_endpoints && !self.has_external
    }

    /// Uses a `KUBE-FW-` chain.
    pub fn uses_firewall(&self) -> bool {
        self.uses_fw
    }

    /// The port's own nat chains, in upstream's declaration order (EXT, FW, SVC,
    /// SVL, then the endpoint chains).
    pub fn own_chains(&self) -> impl Iterator<Item = ChainName> + '_ {
        let info = &self.info;
        let fixed = [
            self.uses_ext.then(|| info.ext_chain()),
            self.uses_fw.then(|| info.fw_chain()),
            self.uses_svc.then(|| info.svc_chain()),
            self.uses_svl.then(|| info.svl_chain()),
        ];
        fixed
            .into_iter()
            .flatten()
            .chain(self.reachable_endpoints().map(|ep| ep.chain))
    }

    fn internal_chain(&self) -> ChainName {
        if self.info.internal_policy_local {
            self.info.svl_chain()
        } else {
            self.info.svc_chain()
        }
    }

    fn external_policy_chain(&self) -> ChainName {
        if self.info.external_policy_local {
            self.info.svl_chain()
        } else {
            self.info.svc_chain()
        }
    }

    /// The port's filter rules (rejects, drops, firewall drops, health-check
    /// accepts), in upstream's order.
    pub fn emit_filter(&self, sink: &mut impl RuleSink) {
        let info = &*self.info;
        let name: &str = &info.name;
        let proto = Arg::Protocol(info.protocol);
        let dport = Arg::DestinationPort(info.port);
        let (no_endpoints, no_local) = (
            [name, " has no endpoints", ""],
            [name, " has no local endpoints", ""],
        );
        let (internal, external) = if !self.has_endpoints {
            ((no_endpoints, "REJECT"), (no_endpoints, "REJECT"))
        } else {
            ((no_local, "DROP"), (no_local, "DROP"))
        };
        if !self.has_internal {
            let args = [
                Arg::Comment(internal.0),
                proto,
                dest(&info.addresses.cluster_ip.text),
                dport,
            ];
            emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(internal.1));
        }
        let reject_external = |sink: &mut _, addr: &str| {
            let args = [Arg::Comment(external.0), proto, dest(addr), dport];
            emit(
                sink,
                fixed::KUBE_EXTERNAL_SERVICES,
                &args,
                Target::Jump(external.1),
            );
        };
        for ip in &info.addresses.external_ips {
            if !self.has_external {
                reject_external(sink, &ip.text);
            }
        }
        if self.uses_fw {
            let fw = info.fw_chain();
            for vip in &info.addresses.load_balancer_vips {
                let args = [
                    Arg::Comment([name, " traffic not accepted by ", fw.as_str()]),
                    proto,
                    dest(&vip.text),
                    dport,
                ];
                emit(sink, fixed::KUBE_PROXY_FIREWALL, &args, Target::Jump("DROP"));
            }
        }
        if !self.has_external {
            for vip in &info.addresses.load_balancer_vips {
                reject_external(sink, &vip.text);
            }
        }
        if info.node_port != 0 && !self.has_external {
            let args = [
                Arg::Comment(external.0),
                Arg::DestinationTypeLocal,
                proto,
                Arg::DestinationPort(info.node_port),
            ];
            emit(
                sink,
                fixed::KUBE_EXTERNAL_SERVICES,
                &args,
                Target::Jump(external.1),
            );
        }
        if info.health_check_node_port != 0 {
            let args = [
                Arg::Comment([name, " health check node port", ""]),
                Arg::Protocol(Protocol::Tcp),
                Arg::DestinationPort(info.health_check_node_port),
            ];
            emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump("ACCEPT"));
        }
    }

    /// The port's rules in the shared nat chains KUBE-SERVICES and
    /// KUBE-NODEPORTS, in upstream's order.
    pub fn emit_nat_shared(&self, ctx: &NodeContext, sink: &mut impl RuleSink) {
        let info = &*self.info;
        let name: &str = &info.name;
        let proto = Arg::Protocol(info.protocol);
        let dport = Arg::DestinationPort(info.port);
        if self.has_internal {
            let internal = self.internal_chain();
            let args = [
                Arg::Comment([name, " cluster IP", ""]),
                proto,
                dest(&info.addresses.cluster_ip.text),
                dport,
            ];
            emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(internal.as_str()));
        }
        if !self.has_endpoints {
            return;
        }
        let ext = info.ext_chain();
        for ip in &info.addresses.external_ips {
            let args = [
                Arg::Comment([name, " external IP", ""]),
                proto,
                dest(&ip.text),
                dport,
            ];
            emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(ext.as_str()));
        }
        let lb_target = if self.uses_fw { info.fw_chain() } else { ext };
        for vip in &info.addresses.load_balancer_vips {
            let args = [
                Arg::Comment([name, " loadbalancer IP", ""]),
                proto,
                dest(&vip.text),
                dport,
            ];
            emit(
                sink,
                fixed::KUBE_SERVICES,
                &args,
                Target::Jump(lb_target.as_str()),
            );
        }
        if info.node_port != 0 {
            let node_port = Arg::DestinationPort(info.node_port);
            if ctx.localhost_node_ports_nfacct() {
                let args = [
                    Arg::Comment([name, "", ""]),
                    proto,
                    dest("127.0.0.0/8"),
                    node_port,
                    Arg::Nfacct(nfacct::LOCALHOST_NODEPORTS_ACCEPTED),
                ];
                emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump(ext.as_str()));
            }
            let args = [Arg::Comment([name, "", ""]), proto, node_port];
            emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump(ext.as_str()));
        }
    }

    /// The rules of the port's own nat chains, in upstream's order. In
    /// large-cluster mode the endpoint-related comments are left out.
    pub fn emit_nat_own(&self, ctx: &NodeContext, large_cluster: bool, sink: &mut impl RuleSink) {
        let info = &*self.info;
        let name: &str = &info.name;
        let config = ctx.config();
        let mark_masq = Target::Jump(fixed::KUBE_MARK_MASQ);

        if self.has_internal {
            let internal = self.internal_chain();
            let base = [
                Arg::Comment([name, " cluster IP", ""]),
                Arg::Protocol(info.protocol),
                dest(&info.addresses.cluster_ip.text),
                Arg::DestinationPort(info.port),
            ];
            if config.masquerade_all {
                emit(sink, internal.as_str(), &base, mark_masq);
            } else if let Some(not_local) = ctx.not_local_match() {
                let args = [base[0], base[1], base[2], base[3], not_local];
                emit(sink, internal.as_str(), &args, mark_masq);
            }
        }

        if self.uses_ext {
            let ext = info.ext_chain();
            let ext = ext.as_str();
            let svc = info.svc_chain();
            if !info.external_policy_local {
                let args = [Arg::Comment([
                    "masquerade traffic for ",
                    name,
                    " external destinations",
                ])];
                emit(sink, ext, &args, mark_masq);
            } else {
                if let Some(local) = ctx.local_match() {
                    let args = [
                        Arg::Comment(["pod traffic for ", name, " external destinations"]),
                        local,
                    ];
                    emit(sink, ext, &args, Target::Jump(svc.as_str()));
                }
                let args = [
                    Arg::Comment(["masquerade LOCAL traffic for ", name, " external destinations"]),
                    Arg::SourceTypeLocal,
                ];
                emit(sink, ext, &args, mark_masq);
                let args = [
                    Arg::Comment(["route LOCAL traffic for ", name, " external destinations"]),
                    Arg::SourceTypeLocal,
                ];
                emit(sink, ext, &args, Target::Jump(svc.as_str()));
            }
            if self.has_external {
                let policy = self.external_policy_chain();
                emit(sink, ext, &[], Target::Jump(policy.as_str()));
            }
        }

        if self.uses_fw {
            let fw = info.fw_chain();
            let ext = info.ext_chain();
            let comment = Arg::Comment([name, " loadbalancer IP", ""]);
            for range in &info.addresses.source_ranges {
                let args = [
                    comment,
                    Arg::Source {
                        addr: &range.text,
                        negated: false,
                    },
                ];
                emit(sink, fw.as_str(), &args, Target::Jump(ext.as_str()));
            }
            if self.allow_from_node {
                for vip in &info.addresses.load_balancer_vips {
                    let args = [
                        comment,
                        Arg::Source {
                            addr: &vip.text,
                            negated: false,
                        },
                    ];
                    emit(sink, fw.as_str(), &args, Target::Jump(ext.as_str()));
                }
            }
            let args = [Arg::Comment([
                "other traffic to ",
                name,
                " will be dropped by KUBE-PROXY-FIREWALL",
            ])];
            emit(sink, fw.as_str(), &args, Target::None);
        }

        if self.uses_svc {
            self.emit_balancing(
                info.svc_chain(),
                self.cluster_endpoints(),
                self.cluster_count,
                large_cluster,
                sink,
            );
        }
        if self.uses_svl {
            self.emit_balancing(
                info.svl_chain(),
                self.local_endpoints(),
                self.local_count,
                large_cluster,
                sink,
            );
        }

        for ep in self.reachable_endpoints() {
            let chain = ep.chain.as_str();
            let comment = Arg::Comment([name, "", ""]);
            let hairpin = Arg::Source {
                addr: ep.ip_text(),
                negated: false,
            };
            let all = [comment, hairpin];
            let args = if large_cluster { &all[1..] } else { &all[..] };
            emit(sink, chain, args, mark_masq);
            let all = [
                comment,
                Arg::RecentSet { name: chain },
                Arg::Protocol(info.protocol),
            ];
            let args = match (large_cluster, info.affinity_seconds.is_some()) {
                (false, true) => &all[..],
                (true, true) => &all[1..],
                (false, false) => &[all[0], all[2]][..],
                (true, false) => &all[2..],
            };
            emit(sink, chain, args, Target::Dnat(ep.endpoint()));
        }
    }

    fn emit_balancing<'p>(
        &'p self,
        chain: ChainName,
        members: impl Iterator<Item = &'p EndpointInfo> + Clone,
        n: usize,
        large_cluster: bool,
        sink: &mut impl RuleSink,
    ) {
        let info = &*self.info;
        let name: &str = &info.name;
        let chain = chain.as_str();
        if let Some(seconds) = info.affinity_seconds {
            for ep in members.clone() {
                let all = [
                    Arg::Comment([name, " -> ", ep.endpoint()]),
                    Arg::RecentCheck {
                        name: ep.chain.as_str(),
                        seconds,
                    },
                ];
                let args = if large_cluster { &all[1..] } else { &all[..] };
                emit(sink, chain, args, Target::Jump(ep.chain.as_str()));
            }
        }
        for (position, ep) in members.enumerate() {
            let all = [
                Arg::Comment([name, " -> ", ep.endpoint()]),
                Arg::RandomProbability { one_in: n - position },
            ];
            let with_comment = usize::from(large_cluster);
            let without_probability = if position + 1 < n { 2 } else { 1 };
            let args = &all[with_comment..without_probability];
            emit(sink, chain, args, Target::Jump(ep.chain.as_str()));
        }
    }

    /// Counts of this port's rules: filter, nat in the shared chains, and nat in
    /// its own chains by kind (indexed like `ServiceChainKind::ALL`).
    pub fn rule_counts(&self, ctx: &NodeContext) -> PortRuleCounts {
        let mut filter = crate::CountingSink::default();
        let mut shared = crate::CountingSink::default();
        let mut own = [0usize; 5];
        self.emit_filter(&mut filter);
        self.emit_nat_shared(ctx, &mut shared);
        self.emit_nat_own(ctx, false, &mut |rule: &crate::Rule<'_>| {
            if let Some(kind) = ServiceChainKind::of(rule.chain) {
                own[kind as usize] += 1;
            }
        });
        PortRuleCounts {
            filter: filter.rules,
            nat_shared: shared.rules,
            nat_own_by_kind: own,
        }
    }
}

/// How many rules one service port contributes, for the rule metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortRuleCounts {
    /// Rules in the filter table.
    pub filter: usize,
    /// Rules in nat KUBE-SERVICES and KUBE-NODEPORTS.
    pub nat_shared: usize,
    /// Rules in the port's own nat chains, by kind (`ServiceChainKind::ALL` order).
    pub nat_own_by_kind: [usize; 5],
}

impl PortRuleCounts {
    /// Rules in the port's own nat chains.
    pub fn nat_own(&self) -> usize {
        self.nat_own_by_kind.iter().sum()
    }
}

fn dest(addr: &str) -> Arg<'_> {
    Arg::Destination { addr, negated: false }
}

/// Upstream `topologyModeFromHints`: hints apply only if every ready endpoint
/// carries them and at least one is hinted for this node (or zone).
fn topology_mode(endpoints: &[EndpointInfo], config: &NodeConfig) -> TopologyMode {
    let zone = config.zone().unwrap_or_default();
    let node = config.node_name.as_str();
    let (mut all_zone_hints, mut for_zone, mut all_node_hints, mut for_node) = (true, false, true, false);
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        if ep.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if ep.zone_hints.iter().any(|z| z == zone) {
            for_zone = true;
        }
        if ep.node_hints.is_empty() {
            all_node_hints = false;
        } else if ep.node_hints.iter().any(|n| n == node) {
            for_node = true;
        }
    }
    if config.feature_gates.prefer_same_traffic_distribution && all_node_hints && for_node {
        return TopologyMode::SameNode;
    }
    if all_zone_hints && for_zone {
        return TopologyMode::SameZone;
    }
    TopologyMode::None
}

fn available_for_topology(ep: &EndpointInfo, mode: TopologyMode, config: &NodeConfig) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameZone => ep.zone_hints.iter().any(|z| Some(z.as_str()) == config.zone()),
        TopologyMode::SameNode => ep.node_hints.contains(&config.node_name),
    }
}

/// A whole plan for one family: every service port, in [`PortKey`] order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node context.
    pub ctx: Arc<NodeContext>,
    /// Every service port's plan, ordered by key.
    pub ports: Vec<Arc<ServicePortPlan>>,
    /// More than [`LARGE_CLUSTER_ENDPOINTS_THRESHOLD`] endpoints in total.
    pub large_cluster: bool,
    /// Problems found while planning (the node context's included).
    pub diagnostics: Vec<Diagnostic>,
}

impl Plan {
    /// Plans a whole cluster for one node and family from scratch.
    pub fn compile(services: &[Service], slices: &[EndpointSlice], config: &NodeConfig) -> Plan {
        let ctx = Arc::new(NodeContext::new(config.clone()));
        let mut diagnostics = ctx.diagnostics().to_vec();
        // Walking the Services in key order builds the plans in their final order,
        // with no sort of the (pointer-heavy) plans afterwards.
        let mut services: Vec<&Service> = services.iter().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        let mut slices_by_service: HashMap<&ObjectKey, Vec<&EndpointSlice>> =
            HashMap::with_capacity(services.len());
        for slice in slices {
            slices_by_service.entry(&slice.service).or_default().push(slice);
        }
        let mut ports: Vec<Arc<ServicePortPlan>> = Vec::with_capacity(services.len());
        let mut total_endpoints = 0;
        let mut previous: Option<&ObjectKey> = None;
        for service in services {
            if previous == Some(&service.key) {
                diagnostics.push(Diagnostic::warning(
                    ObjectKind::Service,
                    Some(service.key.clone()),
                    "",
                    "listed more than once (later one skipped)",
                ));
                continue;
            }
            previous = Some(&service.key);
            let mut infos = service_ports(service, &ctx);
            if infos.is_empty() {
                continue;
            }
            infos.sort_by(|a, b| (&a.port_name, a.protocol).cmp(&(&b.port_name, b.protocol)));
            let own_slices = slices_by_service
                .get_mut(&service.key)
                .map(std::mem::take)
                .unwrap_or_default();
            let mut own_slices = own_slices;
            own_slices.sort_by(|a, b| a.key.name.cmp(&b.key.name));
            let endpoints = endpoints_by_port(&service.key, own_slices, &ctx, None);
            let mut previous_port: Option<(String, Protocol)> = None;
            for info in infos {
                let port = (info.port_name.clone(), info.protocol);
                if previous_port.as_ref() == Some(&port) {
                    diagnostics.push(Diagnostic::warning(
                        ObjectKind::Service,
                        Some(service.key.clone()),
                        "spec.ports",
                        format!("port {:?}/{} listed twice (later one skipped)", port.0, port.1),
                    ));
                    continue;
                }
                let port_endpoints = endpoints.get(&port).cloned().unwrap_or_default();
                previous_port = Some(port);
                total_endpoints += port_endpoints.len();
                ports.push(Arc::new(ServicePortPlan::new(
                    Arc::new(info),
                    port_endpoints,
                    &ctx,
                )));
            }
        }
        Plan {
            ctx,
            ports,
            large_cluster: total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
            diagnostics,
        }
    }
}
