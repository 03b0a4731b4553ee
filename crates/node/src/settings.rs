//! What the node proxy runs with (kube-proxy's configuration plus chainsmith's
//! own options) and the per-family [`NodeConfig`] derived from it, from the
//! Node object, the ServiceCIDR objects and the host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use chainsmith_applier::{Backend, DEFAULT_COMMAND_TIMEOUT, SystemRunner};
use chainsmith_k8s::{DetectLocalMode, NodePortAddresses, ProxyConfiguration, ProxyMode};
use chainsmith_model::{
    FeatureGates, InterfaceAddress, IpFamily, LocalTrafficDetector, NfacctCounters, NodeConfig, NodeObject,
    masquerade_mark_for_bit,
};
use chainsmith_sync::{FULL_SYNC_PERIOD_MS, PartialSyncMode};
use ipnet::IpNet;

/// Everything `chainsmith run` was told.
#[derive(Debug, Clone)]
pub struct Settings {
    /// kube-proxy's configuration (file and flags, validated).
    pub proxy: ProxyConfiguration,
    /// How partial syncs are written.
    pub partial_sync: PartialSyncMode,
    /// How often a full resync rewrites everything (upstream: one hour).
    pub full_sync_period_ms: u64,
    /// The iptables backend; `None` = whatever `iptables` is.
    pub backend: Option<Backend>,
    /// How long one iptables, conntrack or nfacct command may run before it
    /// is killed and counted as failed.
    pub command_timeout: Duration,
}

impl Settings {
    /// Settings with chainsmith's defaults around a kube-proxy configuration.
    pub fn new(proxy: ProxyConfiguration) -> Settings {
        Settings {
            proxy,
            partial_sync: PartialSyncMode::Minimal,
            full_sync_period_ms: FULL_SYNC_PERIOD_MS,
            backend: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Runs the node's commands, with the command timeout.
    pub fn runner(&self) -> SystemRunner {
        SystemRunner::with_timeout(self.command_timeout)
    }
}

/// The families this node has an address of: the Node's host IPs, else the
/// global addresses of its interfaces; the primary family first.
pub fn address_families(node: Option<&NodeObject>, interfaces: &[InterfaceAddress]) -> Vec<IpFamily> {
    let from_node = node.map(|n| n.addresses.clone()).unwrap_or_default();
    let addresses: Vec<IpAddr> = if from_node.is_empty() {
        interfaces.iter().map(|a| a.address).filter(is_global).collect()
    } else {
        from_node
    };
    let mut families = Vec::with_capacity(2);
    for address in addresses {
        let family = family_of(&address);
        if !families.contains(&family) {
            families.push(family);
        }
    }
    families
}

fn is_global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

fn family_of(ip: &IpAddr) -> IpFamily {
    match ip {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

fn net_family(net: &IpNet) -> IpFamily {
    family_of(&net.addr())
}

/// What the host says about one family, found out at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFacts {
    /// `MASQUERADE --random-fully` works.
    pub random_fully: bool,
    /// `nf_conntrack_tcp_be_liberal` is set.
    pub tcp_be_liberal: bool,
    /// Which nfacct counters exist.
    pub nfacct: NfacctCounters,
}

/// The ServiceCIDR objects the node has seen, by name, and the union of their
/// CIDRs (what nftables mode's "unallocated ClusterIP" rule drops).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCidrs {
    objects: BTreeMap<String, Vec<IpNet>>,
    union: Vec<IpNet>,
}

impl ServiceCidrs {
    /// Records each changed object's CIDRs (`None`: the object is gone);
    /// returns whether the union changed.
    pub fn update(&mut self, changed: impl IntoIterator<Item = (String, Option<Vec<IpNet>>)>) -> bool {
        for (name, cidrs) in changed {
            match cidrs {
                Some(cidrs) => self.objects.insert(name, cidrs),
                None => self.objects.remove(&name),
            };
        }
        let union = service_cidr_union(self.objects.values().map(Vec::as_slice));
        if union == self.union {
            return false;
        }
        self.union = union;
        true
    }

    /// Every object's CIDRs, as [`service_cidr_union`] orders them.
    pub fn union(&self) -> &[IpNet] {
        &self.union
    }
}

/// The union of the ServiceCIDR objects' CIDRs: each CIDR once, IPv4 before
/// IPv6, by address and then prefix length. Upstream joins an unordered set
/// of the CIDR strings, so its rule's order changes from run to run; a fixed
/// order keeps the rule (and so the full syncs it causes) stable. CIDRs that
/// overlap are all kept, as upstream keeps them: the kernel merges them in
/// the rule's interval set.
pub fn service_cidr_union<'a>(per_object: impl IntoIterator<Item = &'a [IpNet]>) -> Vec<IpNet> {
    let mut union: Vec<IpNet> = per_object.into_iter().flatten().copied().collect();
    union.sort_unstable();
    union.dedup();
    union
}

/// The rule-shaping settings of one family. `service_cidrs` is the union of
/// the ServiceCIDR objects (nftables mode only).
pub fn node_config(
    settings: &Settings,
    family: IpFamily,
    node_name: &str,
    node: Option<&NodeObject>,
    interfaces: &[InterfaceAddress],
    service_cidrs: &[IpNet],
    facts: HostFacts,
) -> NodeConfig {
    let proxy = &settings.proxy;
    let node_ip = node
        .and_then(|n| n.addresses.iter().find(|ip| family_of(ip) == family).copied())
        .or_else(|| {
            (family_of(&proxy.bind_address) == family && !proxy.bind_address.is_unspecified())
                .then_some(proxy.bind_address)
        });
    let local_traffic_detector = match &proxy.detect_local_mode {
        DetectLocalMode::ClusterCidr => proxy
            .cluster_cidrs
            .iter()
            .find(|net| net_family(net) == family)
            .map_or(LocalTrafficDetector::None, |net| {
                LocalTrafficDetector::ClusterCidr(*net)
            }),
        DetectLocalMode::NodeCidr => node
            .and_then(|n| n.pod_cidrs.iter().find(|net| net_family(net) == family))
            .map_or(LocalTrafficDetector::None, |net| {
                LocalTrafficDetector::NodeCidr(*net)
            }),
        DetectLocalMode::BridgeInterface(name) => LocalTrafficDetector::BridgeInterface(name.clone()),
        DetectLocalMode::InterfaceNamePrefix(prefix) => {
            LocalTrafficDetector::InterfaceNamePrefix(prefix.clone())
        }
    };
    let node_port_addresses = match &proxy.node_port_addresses {
        NodePortAddresses::All => Vec::new(),
        NodePortAddresses::Primary => node_ip.map(IpNet::from).into_iter().collect(),
        NodePortAddresses::Cidrs(nets) => nets
            .iter()
            .filter(|net| net_family(net) == family)
            .copied()
            .collect(),
    };
    let gate = |name: &str, default: bool| proxy.feature_gates.get(name).copied().unwrap_or(default);
    let defaults = FeatureGates::default();
    NodeConfig {
        node_name: node_name.to_owned(),
        ip_family: family,
        node_ip,
        interface_addresses: interfaces.to_vec(),
        local_traffic_detector,
        masquerade_mark: masquerade_mark_for_bit(proxy.masquerade_bit),
        masquerade_all: proxy.masquerade_all,
        localhost_node_ports: proxy.localhost_node_ports,
        node_port_addresses,
        // Upstream's iptables proxier ignores ServiceCIDRs (it has no rule
        // that uses them), and so does chainsmith's iptables mode.
        service_cidrs: match proxy.mode {
            ProxyMode::Nftables => service_cidrs.to_vec(),
            ProxyMode::Iptables => Vec::new(),
        },
        iptables_has_random_fully: facts.random_fully,
        conntrack_tcp_be_liberal: facts.tcp_be_liberal,
        nfacct: facts.nfacct,
        node_labels: node.map(|n| n.labels.clone()).unwrap_or_default(),
        feature_gates: FeatureGates {
            load_balancer_ip_mode: gate("LoadBalancerIPMode", defaults.load_balancer_ip_mode),
            prefer_same_traffic_distribution: gate(
                "PreferSameTrafficDistribution",
                defaults.prefer_same_traffic_distribution,
            ),
        },
        sync_period_ms: proxy.sync_period_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(addresses: &[&str], pod_cidrs: &[&str]) -> NodeObject {
        NodeObject {
            name: "n1".into(),
            labels: BTreeMap::from([("topology.kubernetes.io/zone".into(), "z1".into())]),
            addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
            pod_cidrs: pod_cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
            deleting: false,
            to_be_deleted_by_autoscaler: false,
        }
    }

    fn interface(address: &str) -> InterfaceAddress {
        InterfaceAddress {
            interface: "eth0".into(),
            address: address.parse().expect("ip"),
            prefix_len: 24,
        }
    }

    #[test]
    fn families_follow_the_node_then_the_interfaces() {
        let dual = node(&["2001:db8::1", "192.0.2.1"], &[]);
        assert_eq!(
            address_families(Some(&dual), &[]),
            vec![IpFamily::V6, IpFamily::V4]
        );
        let interfaces = [
            interface("127.0.0.1"),
            interface("fe80::1"),
            interface("192.0.2.7"),
        ];
        assert_eq!(address_families(None, &interfaces), vec![IpFamily::V4]);
        assert!(address_families(None, &interfaces[..2]).is_empty());
    }

    #[test]
    fn node_cidr_detector_uses_the_pod_cidr_of_the_family() {
        let proxy = ProxyConfiguration {
            detect_local_mode: DetectLocalMode::NodeCidr,
            node_port_addresses: NodePortAddresses::Primary,
            masquerade_bit: 12,
            ..ProxyConfiguration::default()
        };
        let settings = Settings::new(proxy);
        let n = node(&["192.0.2.1", "2001:db8::1"], &["10.1.0.0/24", "fd00:1::/64"]);
        let v6 = node_config(
            &settings,
            IpFamily::V6,
            "n1",
            Some(&n),
            &[],
            &[],
            HostFacts::default(),
        );
        assert_eq!(
            v6.local_traffic_detector,
            LocalTrafficDetector::NodeCidr("fd00:1::/64".parse().expect("cidr"))
        );
        assert_eq!(v6.node_ip, Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(
            v6.node_port_addresses,
            vec!["2001:db8::1/128".parse::<IpNet>().expect("cidr")]
        );
        assert_eq!(v6.masquerade_mark, "0x00001000");
        assert_eq!(v6.zone(), Some("z1"));
        let v4 = node_config(
            &settings,
            IpFamily::V4,
            "n1",
            None,
            &[],
            &[],
            HostFacts::default(),
        );
        assert_eq!(
            v4.local_traffic_detector,
            LocalTrafficDetector::None,
            "no Node, no pod CIDR"
        );
    }

    #[test]
    fn cluster_cidr_detector_and_gates() {
        let proxy = ProxyConfiguration {
            cluster_cidrs: vec!["10.0.0.0/8".parse().expect("cidr")],
            feature_gates: [("LoadBalancerIPMode".to_owned(), false)].into(),
            ..ProxyConfiguration::default()
        };
        let settings = Settings::new(proxy);
        let v4 = node_config(
            &settings,
            IpFamily::V4,
            "n1",
            None,
            &[],
            &[],
            HostFacts::default(),
        );
        assert_eq!(
            v4.local_traffic_detector,
            LocalTrafficDetector::ClusterCidr("10.0.0.0/8".parse().expect("cidr"))
        );
        assert!(!v4.feature_gates.load_balancer_ip_mode);
        let v6 = node_config(
            &settings,
            IpFamily::V6,
            "n1",
            None,
            &[],
            &[],
            HostFacts::default(),
        );
        assert_eq!(v6.local_traffic_detector, LocalTrafficDetector::None);
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    #[test]
    fn the_union_holds_each_cidr_once_ipv4_first_by_address_then_prefix() {
        let kubernetes = nets(&["fd00:10:96::/112", "10.96.0.0/16"]);
        let extra = nets(&[
            "10.96.0.0/12",
            "10.100.0.0/16",
            "10.96.0.0/16",
            "fd00:10:95::/112",
        ]);
        let empty: Vec<IpNet> = Vec::new();
        let union = service_cidr_union([kubernetes.as_slice(), &extra, &empty]);
        assert_eq!(
            union,
            nets(&[
                "10.96.0.0/12",
                "10.96.0.0/16",
                "10.100.0.0/16",
                "fd00:10:95::/112",
                "fd00:10:96::/112"
            ])
        );
        // The order of the objects does not matter.
        assert_eq!(service_cidr_union([extra.as_slice(), &kubernetes]), union);
        assert!(service_cidr_union([empty.as_slice()]).is_empty());
    }

    #[test]
    fn service_cidrs_change_when_the_union_does() {
        let mut cidrs = ServiceCidrs::default();
        assert!(cidrs.update([("kubernetes".to_owned(), Some(nets(&["10.96.0.0/16"])))]));
        // Another object with a CIDR already there: the union is the same.
        assert!(!cidrs.update([("copy".to_owned(), Some(nets(&["10.96.0.0/16"])))]));
        // One of the two goes: the other still holds the CIDR (upstream's
        // set of strings would lose it here).
        assert!(!cidrs.update([("kubernetes".to_owned(), None)]));
        assert_eq!(cidrs.union(), nets(&["10.96.0.0/16"]));
        assert!(cidrs.update([
            ("copy".to_owned(), Some(nets(&["10.97.0.0/16"]))),
            ("gone".to_owned(), None),
        ]));
        assert_eq!(cidrs.union(), nets(&["10.97.0.0/16"]));
        assert!(cidrs.update([("copy".to_owned(), None)]));
        assert!(cidrs.union().is_empty());
    }

    #[test]
    fn only_nftables_mode_uses_the_service_cidrs() {
        let cidrs = nets(&["10.96.0.0/16", "fd00:10:96::/112"]);
        let nftables = Settings::new(ProxyConfiguration {
            mode: ProxyMode::Nftables,
            ..ProxyConfiguration::default()
        });
        let v4 = node_config(
            &nftables,
            IpFamily::V4,
            "n1",
            None,
            &[],
            &cidrs,
            HostFacts::default(),
        );
        // Each family's table takes its own (NftContext filters by family).
        assert_eq!(v4.service_cidrs, cidrs);
        let iptables = Settings::new(ProxyConfiguration {
            mode: ProxyMode::Iptables,
            ..ProxyConfiguration::default()
        });
        let v4 = node_config(
            &iptables,
            IpFamily::V4,
            "n1",
            None,
            &[],
            &cidrs,
            HostFacts::default(),
        );
        assert!(v4.service_cidrs.is_empty());
    }
}
