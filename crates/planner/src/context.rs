//! Per-node, per-family facts that every layout reads, resolved once.

use std::net::IpAddr;

use chainsmith_model::{Diagnostic, IpFamily, IpNet, LocalTrafficDetector, NodeConfig, ObjectKind};

/// Above this many endpoints (over all service ports) kube-proxy enters
/// large-cluster mode and drops the per-endpoint comments.
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// Names of the nfacct counters kube-proxy's rules may reference.
pub mod nfacct {
    /// Counts packets dropped by the conntrack INVALID rule.
    pub const CT_STATE_INVALID_DROPPED: &str = "ct_state_invalid_dropped_pkts";
    /// Counts packets accepted on localhost NodePorts.
    pub const LOCALHOST_NODEPORTS_ACCEPTED: &str = "localhost_nps_accepted_pkts";
}

/// How traffic from this node's pods is recognised (upstream's local traffic
/// detector), resolved for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDetector {
    /// Its source address lies in this CIDR (cluster or node CIDR).
    Source(String),
    /// It comes in on this interface (a prefix mode ends in `+`).
    Interface(String),
}

/// Where NodePorts are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortDestinations {
    /// Every local address, except this loopback network when localhost
    /// NodePorts are off (or impossible, as on IPv6).
    AllLocal {
        /// The loopback network excluded, if any.
        excluded_loopback: Option<&'static str>,
    },
    /// Only these node IPs (`nodePortAddresses`).
    NodeIps(Vec<String>),
}

/// The node's settings for one IP family, resolved into what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    config: NodeConfig,
    mark_with_mask: String,
    detector: Option<LocalDetector>,
    localhost_node_ports: bool,
    node_port_destinations: NodePortDestinations,
    diagnostics: Vec<Diagnostic>,
}

impl NodeContext {
    /// Resolves a node configuration. Settings that cannot apply to the family
    /// (a detector CIDR of the other family, loopback NodePort addresses where
    /// they cannot work) are dropped with a diagnostic, as upstream logs them.
    pub fn new(config: NodeConfig) -> NodeContext {
        let family = config.ip_family;
        let mut diagnostics = Vec::new();
        let detector = resolve_detector(&config, &mut diagnostics);
        let localhost_node_ports = family == IpFamily::V4 && config.localhost_node_ports;
        let node_port_destinations =
            resolve_node_port_destinations(&config, localhost_node_ports, &mut diagnostics);
        let mark_with_mask = format!("{0}/{0}", config.masquerade_mark);
        NodeContext {
            config,
            mark_with_mask,
            detector,
            localhost_node_ports,
            node_port_destinations,
            diagnostics,
        }
    }

    /// The configuration this context was built from.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The IP family programmed.
    pub fn family(&self) -> IpFamily {
        self.config.ip_family
    }

    /// Problems found while resolving the configuration.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Localhost NodePorts are in effect (IPv4 only).
    pub fn localhost_node_ports(&self) -> bool {
        self.localhost_node_ports
    }

    /// NodePort rules also count localhost traffic in an nfacct counter.
    pub fn localhost_node_ports_nfacct(&self) -> bool {
        self.localhost_node_ports && self.config.nfacct.localhost_nps_accepted_pkts
    }

    /// How traffic from this node's pods is told apart, if it can be.
    pub fn local_detector(&self) -> Option<&LocalDetector> {
        self.detector.as_ref()
    }

    /// Where NodePorts are open.
    pub fn node_port_destinations(&self) -> &NodePortDestinations {
        &self.node_port_destinations
    }

    /// The masquerade mark with itself as the mask (`0x4000/0x4000`).
    pub fn mark_with_mask(&self) -> &str {
        &self.mark_with_mask
    }
}

fn resolve_detector(config: &NodeConfig, diagnostics: &mut Vec<Diagnostic>) -> Option<LocalDetector> {
    let family = config.ip_family;
    let mut cidr_of_family = |cidr: &IpNet, mode: &str| {
        if IpFamily::of_net(cidr) == family {
            Some(LocalDetector::Source(cidr.to_string()))
        } else {
            diagnostics.push(Diagnostic::warning(
                ObjectKind::NodeConfig,
                None,
                "localTrafficDetector.cidr",
                format!("{mode} CIDR {cidr} is not {family}; no local traffic detector for {family}"),
            ));
            None
        }
    };
    match &config.local_traffic_detector {
        LocalTrafficDetector::None => None,
        LocalTrafficDetector::ClusterCidr(cidr) => cidr_of_family(cidr, "ClusterCIDR"),
        LocalTrafficDetector::NodeCidr(cidr) => cidr_of_family(cidr, "NodeCIDR"),
        LocalTrafficDetector::BridgeInterface(name) => Some(LocalDetector::Interface(name.clone())),
        LocalTrafficDetector::InterfaceNamePrefix(prefix) => {
            Some(LocalDetector::Interface(format!("{prefix}+")))
        }
    }
}

fn resolve_node_port_destinations(
    config: &NodeConfig,
    localhost_node_ports: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> NodePortDestinations {
    let family = config.ip_family;
    let cidrs: Vec<&IpNet> = config
        .node_port_addresses
        .iter()
        .filter(|cidr| IpFamily::of_net(cidr) == family)
        .collect();
    // No CIDR of this family, or a zero CIDR among them, means "every local address".
    if cidrs.is_empty() || cidrs.iter().any(|cidr| cidr.prefix_len() == 0) {
        let excluded_loopback = match family {
            IpFamily::V6 => Some("::1/128"),
            IpFamily::V4 if !localhost_node_ports => Some("127.0.0.0/8"),
            IpFamily::V4 => None,
        };
        return NodePortDestinations::AllLocal { excluded_loopback };
    }
    let mut ips: Vec<IpAddr> = config
        .interface_addresses
        .iter()
        .map(|a| a.address)
        .filter(|ip| cidrs.iter().any(|cidr| cidr.contains(ip)))
        .collect();
    ips.sort();
    ips.dedup();
    let mut texts = Vec::with_capacity(ips.len());
    for ip in ips {
        if ip.is_loopback() && (family == IpFamily::V6 || !localhost_node_ports) {
            let why = match family {
                IpFamily::V6 => "localhost NodePorts are not supported on IPv6",
                IpFamily::V4 => "localhost NodePorts are disabled",
            };
            diagnostics.push(Diagnostic::warning(
                ObjectKind::NodeConfig,
                None,
                "nodePortAddresses",
                format!("includes localhost address {ip} but {why}; skipped"),
            ));
            continue;
        }
        texts.push(ip.to_string());
    }
    NodePortDestinations::NodeIps(texts)
}
