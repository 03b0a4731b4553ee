//! Node and proxier settings: everything about the node that reaches the rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::IpFamily;

/// The EndpointSlice label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Node label holding the node's zone (used by topology hints).
pub const TOPOLOGY_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One address configured on one of the node's interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    /// Interface name (`eth0`, `lo`).
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// How the proxier tells pod traffic from other traffic (`--detect-local-mode`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum LocalTrafficDetector {
    /// No detector: no "not local" masquerade rule, no pod short-circuit.
    #[default]
    None,
    /// `ClusterCIDR`: pods are sources inside the cluster CIDR of this family.
    ClusterCidr(IpNet),
    /// `NodeCIDR`: pods are sources inside this node's pod CIDR.
    NodeCidr(IpNet),
    /// `BridgeInterface`: pod traffic arrives on this bridge.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: pod traffic arrives on interfaces with this prefix.
    InterfaceNamePrefix(String),
}

/// Which nfacct counters exist (rules only name counters that do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NfacctCounters {
    /// `ct_state_invalid_dropped_pkts`.
    pub ct_state_invalid_dropped_pkts: bool,
    /// `localhost_nps_accepted_pkts`.
    pub localhost_nps_accepted_pkts: bool,
}

/// Feature gates that change rule generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureGates {
    /// `LoadBalancerIPMode` (GA, default on): skip `ipMode: Proxy` ingress IPs.
    pub load_balancer_ip_mode: bool,
    /// `PreferSameTrafficDistribution` (alpha in 1.33, default off): node hints.
    pub prefer_same_traffic_distribution: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        FeatureGates {
            load_balancer_ip_mode: true,
            prefer_same_traffic_distribution: false,
        }
    }
}

/// Everything about the node and the proxier's flags that shapes the rules of one
/// IP family. The `Default` is a production node with kube-proxy's defaults
/// (masquerade bit 14, localhost NodePorts on, all node addresses for NodePorts).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// This node's name; endpoints with this `nodeName` are local.
    pub node_name: String,
    /// The family this proxier programs.
    pub ip_family: IpFamily,
    /// The primary node IP (decides whether a source range admits the node).
    pub node_ip: Option<IpAddr>,
    /// The node's interface addresses (resolves `nodePortAddresses`).
    pub interface_addresses: Vec<InterfaceAddress>,
    /// The local traffic detector.
    pub local_traffic_detector: LocalTrafficDetector,
    /// The literal mark text used in rules (`0x00004000` for bit 14).
    pub masquerade_mark: String,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// Effective `--iptables-localhost-nodeports` (only meaningful for IPv4).
    pub localhost_node_ports: bool,
    /// `--nodeport-addresses`; empty means every local address.
    pub node_port_addresses: Vec<IpNet>,
    /// The cluster's Service CIDRs (nftables mode drops traffic to addresses
    /// in them that no Service holds); only those of `ip_family` are used.
    pub service_cidrs: Vec<IpNet>,
    /// The local iptables supports `--random-fully`.
    pub iptables_has_random_fully: bool,
    /// sysctl `nf_conntrack_tcp_be_liberal` is non-zero.
    pub conntrack_tcp_be_liberal: bool,
    /// nfacct counters that exist.
    pub nfacct: NfacctCounters,
    /// The Node's labels (topology zone).
    pub node_labels: BTreeMap<String, String>,
    /// Feature gates.
    pub feature_gates: FeatureGates,
    /// `--iptables-sync-period` in milliseconds (stale-chain scan interval in
    /// large clusters, retry delay).
    pub sync_period_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_name: String::new(),
            ip_family: IpFamily::V4,
            node_ip: None,
            interface_addresses: Vec::new(),
            local_traffic_detector: LocalTrafficDetector::None,
            masquerade_mark: masquerade_mark_for_bit(14),
            masquerade_all: false,
            localhost_node_ports: true,
            node_port_addresses: Vec::new(),
            service_cidrs: Vec::new(),
            iptables_has_random_fully: true,
            conntrack_tcp_be_liberal: false,
            nfacct: NfacctCounters {
                ct_state_invalid_dropped_pkts: true,
                localhost_nps_accepted_pkts: true,
            },
            node_labels: BTreeMap::new(),
            feature_gates: FeatureGates::default(),
            sync_period_ms: 30_000,
        }
    }
}

impl NodeConfig {
    /// The node's topology zone label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.node_labels.get(TOPOLOGY_ZONE_LABEL).map(String::as_str)
    }
}

/// The mark text kube-proxy derives from `--iptables-masquerade-bit`: `1 << bit`
/// printed with Go's `%#08x` (`0x00004000` for bit 14).
pub fn masquerade_mark_for_bit(bit: u8) -> String {
    format!("0x{:08x}", 1u64 << bit.min(31))
}

/// What kube-proxy reads from its own `v1/Node`: the host IPs, pod CIDRs,
/// labels and whether the node is going away (its `/healthz` eligibility).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeObject {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The node's host IPs as kube-proxy picks them (upstream `GetNodeHostIPs`):
    /// for each family the first InternalIP, else the first ExternalIP; the
    /// first address's family is the node's primary family.
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs` (or `spec.podCIDR` when `podCIDRs` is empty), parsed.
    pub pod_cidrs: Vec<IpNet>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Tainted `ToBeDeletedByClusterAutoscaler` (kube-proxy's `/healthz` then
    /// reports the node as not eligible for load-balancer traffic).
    pub to_be_deleted_by_autoscaler: bool,
}

impl NodeObject {
    /// The node's topology zone label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.labels.get(TOPOLOGY_ZONE_LABEL).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_matches_go_formatting() {
        assert_eq!(masquerade_mark_for_bit(14), "0x00004000");
        assert_eq!(masquerade_mark_for_bit(0), "0x00000001");
        assert_eq!(masquerade_mark_for_bit(31), "0x80000000");
    }
}
