//! The fixed objects of table `kube-proxy`, which every full sync rewrites.

use chainsmith_nftables::{BaseChain, ChainSpec, Element, Hook, Op, SetKind, SetSpec, Transaction};

use crate::context::{NftContext, NodePortMatch};

/// Names of the fixed chains, sets and maps.
pub mod chains {
    /// Pre-DNAT source-range check of incoming traffic.
    pub const FILTER_PREROUTING_PRE_DNAT: &str = "filter-prerouting-pre-dnat";
    /// Pre-DNAT source-range check of the host's own traffic.
    pub const FILTER_OUTPUT_PRE_DNAT: &str = "filter-output-pre-dnat";
    /// No-endpoint checks of traffic to the host.
    pub const FILTER_INPUT: &str = "filter-input";
    /// No-endpoint and ClusterIP checks of routed traffic.
    pub const FILTER_FORWARD: &str = "filter-forward";
    /// No-endpoint and ClusterIP checks of the host's own traffic.
    pub const FILTER_OUTPUT: &str = "filter-output";
    /// Service dispatch of incoming traffic.
    pub const NAT_PREROUTING: &str = "nat-prerouting";
    /// Service dispatch of the host's own traffic.
    pub const NAT_OUTPUT: &str = "nat-output";
    /// Masquerading.
    pub const NAT_POSTROUTING: &str = "nat-postrouting";
    /// Looks up `service-ips` and `service-nodeports`.
    pub const SERVICES: &str = "services";
    /// Masquerades marked packets.
    pub const MASQUERADING: &str = "masquerading";
    /// Sets the masquerade mark.
    pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
    /// Drops or rejects traffic to Services without endpoints.
    pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
    /// Drops or rejects traffic to NodePorts without endpoints.
    pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
    /// Looks up `firewall-ips`.
    pub const FIREWALL_CHECK: &str = "firewall-check";
    /// Rejects wrong ports of ClusterIPs, drops unallocated ones.
    pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
    /// Rejects (a verdict-map target, so reject runs in a filter hook).
    pub const REJECT_CHAIN: &str = "reject-chain";
    /// Set of active ClusterIPs.
    pub const CLUSTER_IPS: &str = "cluster-ips";
    /// Set of addresses that accept NodePort traffic.
    pub const NODEPORT_IPS: &str = "nodeport-ips";
    /// Verdict map of ClusterIPs, external IPs and load-balancer IPs.
    pub const SERVICE_IPS: &str = "service-ips";
    /// Verdict map of NodePorts.
    pub const SERVICE_NODEPORTS: &str = "service-nodeports";
    /// Verdict map of service destinations without endpoints.
    pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
    /// Verdict map of NodePorts without endpoints.
    pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
    /// Verdict map of destinations subject to source ranges.
    pub const FIREWALL_IPS: &str = "firewall-ips";
}

use chains::*;

/// The base chains, in upstream's order: `(name, type, hook, priority)`.
const BASE_CHAINS: [(&str, &str, Hook, i32); 8] = [
    (FILTER_PREROUTING_PRE_DNAT, "filter", Hook::Prerouting, -110),
    (FILTER_OUTPUT_PRE_DNAT, "filter", Hook::Output, -110),
    (FILTER_INPUT, "filter", Hook::Input, 0),
    (FILTER_FORWARD, "filter", Hook::Forward, 0),
    (FILTER_OUTPUT, "filter", Hook::Output, 0),
    (NAT_PREROUTING, "nat", Hook::Prerouting, -100),
    (NAT_OUTPUT, "nat", Hook::Output, -100),
    (NAT_POSTROUTING, "nat", Hook::Postrouting, 100),
];

/// The jumps from base chains, grouped by target in upstream's order;
/// `true` for the checks that only new connections need.
const JUMPS: [(&str, &[&str], bool); 6] = [
    (NODEPORT_ENDPOINTS_CHECK, &[FILTER_INPUT], true),
    (
        SERVICE_ENDPOINTS_CHECK,
        &[FILTER_INPUT, FILTER_FORWARD, FILTER_OUTPUT],
        true,
    ),
    (
        FIREWALL_CHECK,
        &[FILTER_PREROUTING_PRE_DNAT, FILTER_OUTPUT_PRE_DNAT],
        true,
    ),
    (SERVICES, &[NAT_OUTPUT, NAT_PREROUTING], false),
    (MASQUERADING, &[NAT_POSTROUTING], false),
    (CLUSTER_IPS_CHECK, &[FILTER_FORWARD, FILTER_OUTPUT], true),
];

/// The sets and maps whose elements the sync engine diffs, in the order
/// upstream deletes leftovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementMap {
    /// `cluster-ips`.
    ClusterIps,
    /// `service-ips`.
    ServiceIps,
    /// `firewall-ips`.
    FirewallIps,
    /// `no-endpoint-services`.
    NoEndpointServices,
    /// `no-endpoint-nodeports`.
    NoEndpointNodeports,
    /// `service-nodeports`.
    ServiceNodeports,
}

impl ElementMap {
    /// Every one, in cleanup order.
    pub const ALL: [ElementMap; 6] = [
        ElementMap::ClusterIps,
        ElementMap::ServiceIps,
        ElementMap::FirewallIps,
        ElementMap::NoEndpointServices,
        ElementMap::NoEndpointNodeports,
        ElementMap::ServiceNodeports,
    ];

    /// The set's or map's name.
    pub fn name(self) -> &'static str {
        match self {
            ElementMap::ClusterIps => CLUSTER_IPS,
            ElementMap::ServiceIps => SERVICE_IPS,
            ElementMap::FirewallIps => FIREWALL_IPS,
            ElementMap::NoEndpointServices => NO_ENDPOINT_SERVICES,
            ElementMap::NoEndpointNodeports => NO_ENDPOINT_NODEPORTS,
            ElementMap::ServiceNodeports => SERVICE_NODEPORTS,
        }
    }

    /// Set or map.
    pub fn kind(self) -> SetKind {
        match self {
            ElementMap::ClusterIps => SetKind::Set,
            _ => SetKind::Map,
        }
    }
}

fn rule(chain: &str, rule: impl Into<String>) -> Op {
    Op::AddRule {
        chain: chain.to_string(),
        rule: rule.into(),
        comment: None,
    }
}

fn commented(chain: &str, text: impl Into<String>, comment: &str) -> Op {
    Op::AddRule {
        chain: chain.to_string(),
        rule: text.into(),
        comment: Some(comment.to_string()),
    }
}

fn add_and_flush(tx: &mut Transaction, chain: ChainSpec) {
    let name = chain.name.clone();
    tx.push(Op::AddChain(chain));
    tx.push(Op::FlushChain(name));
}

fn set(kind: SetKind, name: &str, type_text: String, comment: &str) -> Op {
    Op::AddSet(SetSpec {
        kind,
        name: name.to_string(),
        type_text,
        flags: Vec::new(),
        timeout_seconds: None,
        comment: Some(comment.to_string()),
    })
}

/// Writes upstream's `setupNFTables`: the table, its base chains (deleted and
/// re-created on a proxier's first full sync, so that hooks and priorities of
/// an older version do not survive), the jumps, the masquerade machinery, the
/// ClusterIP checks, `nodeport-ips` refilled, and the maps. Elements of the
/// diffed maps are the sync engine's.
pub fn setup(ctx: &NftContext, first_full_sync: bool, tx: &mut Transaction) {
    let f = ctx.family().as_str();
    let addr = ctx.family().addr_type();
    tx.push(Op::AddTable {
        comment: Some("rules for kube-proxy".into()),
    });
    if first_full_sync {
        for (name, ..) in BASE_CHAINS {
            tx.push(Op::AddChain(ChainSpec::regular(name)));
            tx.push(Op::DeleteChain(name.to_string()));
        }
    }
    for (name, chain_type, hook, priority) in BASE_CHAINS {
        add_and_flush(
            tx,
            ChainSpec {
                name: name.to_string(),
                base: Some(BaseChain {
                    chain_type,
                    hook,
                    priority,
                }),
                comment: None,
            },
        );
    }
    for (target, from, new_only) in JUMPS {
        add_and_flush(tx, ChainSpec::regular(target));
        for source in from {
            let ct = if new_only { "ct state new " } else { "" };
            tx.push(rule(source, format!("{ct}jump {target}")));
        }
    }
    add_and_flush(tx, ChainSpec::regular(MARK_FOR_MASQUERADE));
    let mark = ctx.mark();
    tx.push(rule(MARK_FOR_MASQUERADE, format!("mark set mark or {mark}")));
    tx.push(rule(MASQUERADING, format!("mark and {mark} == 0 return")));
    tx.push(rule(MASQUERADING, format!("mark set mark xor {mark}")));
    tx.push(rule(MASQUERADING, "masquerade fully-random"));

    tx.push(set(
        SetKind::Set,
        CLUSTER_IPS,
        addr.to_string(),
        "Active ClusterIPs",
    ));
    tx.push(commented(
        CLUSTER_IPS_CHECK,
        format!("{f} daddr @{CLUSTER_IPS} reject"),
        "Reject traffic to invalid ports of ClusterIPs",
    ));
    if let Some(cidrs) = ctx.service_cidrs() {
        tx.push(commented(
            CLUSTER_IPS_CHECK,
            format!("{f} daddr {{ {cidrs} }} drop"),
            "Drop traffic to unallocated ClusterIPs",
        ));
    }

    tx.push(set(
        SetKind::Set,
        NODEPORT_IPS,
        addr.to_string(),
        "IPs that accept NodePort traffic",
    ));
    let node_port_destination = match ctx.node_ports() {
        NodePortMatch::AllLocal => {
            // "Ensure absent": add, then delete.
            tx.push(Op::DeleteSet(SetKind::Set, NODEPORT_IPS.into()));
            format!("{f} daddr != {}", ctx.loopback())
        }
        NodePortMatch::Ips(ips) => {
            tx.push(Op::FlushSet(SetKind::Set, NODEPORT_IPS.into()));
            for ip in ips {
                tx.push(Op::AddElement {
                    set: NODEPORT_IPS.into(),
                    element: Element {
                        key: ip.clone(),
                        value: None,
                        comment: None,
                    },
                });
            }
            format!("{f} daddr @{NODEPORT_IPS}")
        }
    };

    let service_key = format!("{addr} . inet_proto . inet_service : verdict");
    let port_key = "inet_proto . inet_service : verdict".to_string();
    tx.push(set(
        SetKind::Map,
        NO_ENDPOINT_SERVICES,
        service_key.clone(),
        "vmap to drop or reject packets to services with no endpoints",
    ));
    tx.push(set(
        SetKind::Map,
        NO_ENDPOINT_NODEPORTS,
        port_key.clone(),
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ));
    add_and_flush(
        tx,
        ChainSpec {
            name: REJECT_CHAIN.into(),
            base: None,
            comment: Some("helper for @no-endpoint-services / @no-endpoint-nodeports".into()),
        },
    );
    tx.push(rule(REJECT_CHAIN, "reject"));
    tx.push(rule(
        SERVICE_ENDPOINTS_CHECK,
        format!("{f} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    ));
    tx.push(rule(
        NODEPORT_ENDPOINTS_CHECK,
        format!("{node_port_destination} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
    ));

    tx.push(set(
        SetKind::Map,
        FIREWALL_IPS,
        service_key.clone(),
        "destinations that are subject to LoadBalancerSourceRanges",
    ));
    tx.push(rule(
        FIREWALL_CHECK,
        format!("{f} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"),
    ));

    tx.push(set(
        SetKind::Map,
        SERVICE_IPS,
        service_key,
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ));
    tx.push(set(SetKind::Map, SERVICE_NODEPORTS, port_key, "NodePort traffic"));
    tx.push(rule(
        SERVICES,
        format!("{f} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    ));
    let node_port_services = match ctx.node_ports() {
        NodePortMatch::AllLocal => format!("fib daddr type local {node_port_destination}"),
        NodePortMatch::Ips(_) => node_port_destination,
    };
    tx.push(rule(
        SERVICES,
        format!("{node_port_services} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
    ));
}

/// What a chain of table `kube-proxy` is for, in a few words, for traces and
/// explanations; `None` for a chain this layout does not write.
pub fn chain_role(name: &str) -> Option<&'static str> {
    use chainsmith_naming::nft::NftObjectKind;
    Some(match name {
        FILTER_PREROUTING_PRE_DNAT | FILTER_OUTPUT_PRE_DNAT => "source-range checks before DNAT",
        FILTER_INPUT | FILTER_FORWARD | FILTER_OUTPUT => "checks after DNAT",
        NAT_PREROUTING | NAT_OUTPUT => "service dispatch",
        NAT_POSTROUTING => "masquerading",
        SERVICES => "looks up service-ips and service-nodeports",
        MASQUERADING => "masquerades marked packets",
        MARK_FOR_MASQUERADE => "marks the packet for masquerade",
        SERVICE_ENDPOINTS_CHECK => "drops or rejects Services without endpoints",
        NODEPORT_ENDPOINTS_CHECK => "drops or rejects NodePorts without endpoints",
        FIREWALL_CHECK => "looks up firewall-ips (loadBalancerSourceRanges)",
        CLUSTER_IPS_CHECK => "rejects wrong ports of ClusterIPs, drops unallocated ones",
        REJECT_CHAIN => "rejects",
        _ => match NftObjectKind::of_chain(name)? {
            NftObjectKind::Service => "balances over the cluster endpoints",
            NftObjectKind::Local => "balances over this node's endpoints",
            NftObjectKind::External => "external traffic: masquerade and policy",
            NftObjectKind::Firewall => "drops sources outside loadBalancerSourceRanges",
            NftObjectKind::Endpoint => "one endpoint: hairpin masquerade, DNAT",
            NftObjectKind::Affinity => return None,
        },
    })
}
