//! Per-service-port decisions (upstream `proxier.go`
//! `syncProxyRules` and `topology.go` `CategorizeEndpoints`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chainsmith_model::{
    Diagnostic, EndpointSlice, IpFamily, NodeConfig, ObjectKey, ObjectKind, Protocol, Service,
};

use crate::endpoints::{EndpointInfo, PortEndpoints, endpoints_by_port};
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

/// The endpoints of one port that play one role, in endpoint order.
#[derive(Debug, Clone)]
pub struct EndpointsInRole<'p> {
    endpoints: std::slice::Iter<'p, EndpointInfo>,
    roles: std::slice::Iter<'p, u8>,
    bit: u8,
}

impl<'p> Iterator for EndpointsInRole<'p> {
    type Item = &'p EndpointInfo;

    #[inline]
    fn next(&mut self) -> Option<&'p EndpointInfo> {
        loop {
            let endpoint = self.endpoints.next()?;
            if *self.roles.next()? & self.bit != 0 {
                return Some(endpoint);
            }
        }
    }
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

    fn with_role(&self, bit: u8) -> EndpointsInRole<'_> {
        EndpointsInRole {
            endpoints: self.endpoints.iter(),
            roles: self.roles.iter(),
            bit,
        }
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
    pub fn cluster_endpoints(&self) -> EndpointsInRole<'_> {
        self.with_role(CLUSTER)
    }

    /// Endpoints used by local traffic policy.
    pub fn local_endpoints(&self) -> EndpointsInRole<'_> {
        self.with_role(LOCAL)
    }

    /// Endpoints that get a `KUBE-SEP-` chain.
    pub fn reachable_endpoints(&self) -> EndpointsInRole<'_> {
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

    /// Load-balancer traffic is filtered by its source: the port has
    /// endpoints, load-balancer IPs and `loadBalancerSourceRanges` (upstream's
    /// `KUBE-FW-` chain).
    pub fn filters_sources(&self) -> bool {
        self.uses_fw
    }

    /// The Service restricts who may reach its load-balancer IPs: it has some,
    /// and `loadBalancerSourceRanges`. nftables mode filters on this alone,
    /// endpoints or not; iptables mode only where [`Self::filters_sources`].
    pub fn restricts_load_balancer_sources(&self) -> bool {
        let addresses = &self.info.addresses;
        !addresses.load_balancer_vips.is_empty() && !addresses.source_ranges.is_empty()
    }

    /// Load-balancer traffic from the node itself is admitted by the source
    /// filter (a source range contains the node IP).
    pub fn firewall_admits_node(&self) -> bool {
        self.allow_from_node
    }

    /// Cluster traffic is balanced over [`ServicePortPlan::cluster_endpoints`]
    /// (upstream's `KUBE-SVC-` chain).
    pub fn balances_cluster(&self) -> bool {
        self.uses_svc
    }

    /// Traffic under a Local policy is balanced over
    /// [`ServicePortPlan::local_endpoints`] (upstream's `KUBE-SVL-` chain).
    pub fn balances_local(&self) -> bool {
        self.uses_svl
    }

    /// External entry points (node port, external and load-balancer IPs) lead
    /// somewhere: the port has endpoints and is externally accessible
    /// (upstream's `KUBE-EXT-` chain).
    pub fn routes_external(&self) -> bool {
        self.uses_ext
    }

    /// Traffic to the cluster IP reaches an endpoint: there are endpoints, and
    /// a local one if `internalTrafficPolicy` is Local.
    pub fn serves_internal(&self) -> bool {
        self.has_internal
    }

    /// Traffic to the external entry points reaches an endpoint: there are
    /// endpoints, and a local one if `externalTrafficPolicy` is Local.
    pub fn serves_external(&self) -> bool {
        self.has_external
    }

    /// How many endpoints cluster traffic is balanced over.
    pub fn cluster_count(&self) -> usize {
        self.cluster_count
    }

    /// How many endpoints Local-policy traffic is balanced over.
    pub fn local_count(&self) -> usize {
        self.local_count
    }
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
            if let Some(note) = other_family_note(service, ctx.family()) {
                diagnostics.push(note);
                continue;
            }
            let infos = distinct_service_ports(service, &ctx, &mut diagnostics);
            if infos.is_empty() {
                continue;
            }
            let mut own_slices = slices_by_service
                .get_mut(&service.key)
                .map(std::mem::take)
                .unwrap_or_default();
            own_slices.sort_by(|a, b| a.key.name.cmp(&b.key.name));
            let endpoints = endpoints_by_port(&service.key, own_slices, &ctx, None);
            for plan in plan_service(&infos, &endpoints, &ctx) {
                total_endpoints += plan.endpoints().len();
                ports.push(Arc::new(plan));
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

/// A note for a Service with no cluster IP of `family`: kube-proxy's proxier
/// of that family skips it without a word, which reads as a lost Service when
/// one family's rules are all there is to look at. [`Plan::compile`] adds it;
/// the sync engine does not, since a dual-stack node runs one engine per
/// family and would repeat it for every single-stack Service on every sync
/// (offline callers of the engine add it themselves).
pub fn other_family_note(service: &Service, family: IpFamily) -> Option<Diagnostic> {
    if service.cluster_ips.get(family).is_some() {
        return None;
    }
    let other = family.other();
    let ip = service
        .cluster_ips
        .get(other)
        .map(|ip| format!(" ({ip})"))
        .unwrap_or_default();
    Some(Diagnostic::info(
        ObjectKind::Service,
        Some(service.key.clone()),
        "spec.clusterIPs",
        format!("{other} only{ip}: no {family} rules for it (an {other} proxier programs it)"),
    ))
}

/// The service ports of one Service for the context's family, ordered by port
/// name and protocol; a port listed twice keeps its first entry, with a
/// diagnostic naming the Service.
pub fn distinct_service_ports(
    service: &Service,
    ctx: &NodeContext,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Arc<ServicePortInfo>> {
    let mut infos = service_ports(service, ctx);
    infos.sort_by(|a, b| (&a.port_name, a.protocol).cmp(&(&b.port_name, b.protocol)));
    let mut distinct: Vec<Arc<ServicePortInfo>> = Vec::with_capacity(infos.len());
    for info in infos {
        if let Some(last) = distinct.last()
            && last.port_name == info.port_name
            && last.protocol == info.protocol
        {
            diagnostics.push(Diagnostic::warning(
                ObjectKind::Service,
                Some(service.key.clone()),
                "spec.ports",
                format!(
                    "port {:?}/{} listed twice (later one skipped)",
                    info.port_name, info.protocol
                ),
            ));
            continue;
        }
        distinct.push(Arc::new(info));
    }
    distinct
}

/// Plans every port of one Service: `infos` from [`distinct_service_ports`],
/// `endpoints` from [`endpoints_by_port`]. What [`Plan::compile`] does per
/// Service, and what the sync engine does for each Service that changed.
pub fn plan_service(
    infos: &[Arc<ServicePortInfo>],
    endpoints: &BTreeMap<(String, Protocol), PortEndpoints>,
    ctx: &NodeContext,
) -> Vec<ServicePortPlan> {
    infos
        .iter()
        .map(|info| {
            let port_endpoints = endpoints
                .get(&(info.port_name.clone(), info.protocol))
                .cloned()
                .unwrap_or_default();
            ServicePortPlan::new(info.clone(), port_endpoints, ctx)
        })
        .collect()
}
