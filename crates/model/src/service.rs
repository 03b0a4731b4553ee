//! Services as the proxier sees them.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::IpFamily;

/// `namespace/name` of a namespaced object.
///
/// Ordered by the text `namespace/name`, byte by byte: the order in which
/// kube-proxy's own tests sort rules by service name, so output generated in this
/// order is already in their normal form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The name inside the namespace.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Ord for ObjectKey {
    /// Compares `namespace/name` as one text without building it.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.namespace.as_bytes(), other.namespace.as_bytes());
        if a == b {
            return self.name.cmp(&other.name);
        }
        let common = a.len().min(b.len());
        match a[..common].cmp(&b[..common]) {
            Ordering::Equal => {
                // One namespace is a prefix of the other: the shorter one continues
                // with '/', the longer one with its next byte.
                if a.len() < b.len() {
                    b'/'.cmp(&b[common])
                } else {
                    a[common].cmp(&b'/')
                }
            }
            unequal => unequal,
        }
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the API default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_api(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The lower-case spelling iptables and nftables use (`-p tcp`, `meta l4proto
    /// tcp`), also part of chain-name hashes.
    pub fn as_iptables(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// `spec.type` of a Service. An absent type is kept apart from `ClusterIP`
/// because kube-proxy treats them differently for `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    /// `spec.type` absent (Go zero value `""`).
    #[default]
    Unset,
    /// `ClusterIP`.
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadBalancerIpMode {
    /// Traffic arrives with the load-balancer IP as destination (the default).
    Vip,
    /// The load balancer proxies; kube-proxy must not capture the IP.
    Proxy,
}

/// One entry of `status.loadBalancer.ingress` that carries an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoadBalancerIngress {
    /// The ingress IP.
    pub ip: IpAddr,
    /// `ipMode`; `None` when absent (treated as VIP).
    pub ip_mode: Option<LoadBalancerIpMode>,
}

/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// No affinity.
    #[default]
    None,
    /// `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`.
    ClientIp {
        /// Sticky time in seconds (API default 10800).
        timeout_seconds: u32,
    },
}

/// The cluster IP of each family, chosen the way kube-proxy's
/// `GetClusterIPByFamily` does (from `ipFamilies`/`clusterIPs`, or from
/// `clusterIP` when `ipFamilies` is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClusterIps {
    /// IPv4 cluster IP.
    pub v4: Option<IpAddr>,
    /// IPv6 cluster IP.
    pub v6: Option<IpAddr>,
}

impl ClusterIps {
    /// The cluster IP of one family.
    pub fn get(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.v4,
            IpFamily::V6 => self.v6,
        }
    }
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// `name` (may be empty for a single-port Service).
    pub name: String,
    /// `protocol`.
    pub protocol: Protocol,
    /// `port`.
    pub port: u16,
    /// `nodePort`; 0 when none.
    pub node_port: u16,
}

/// A Service that a proxier may program: not headless, not `ExternalName`, with
/// every address already parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// Cluster IP per family.
    pub cluster_ips: ClusterIps,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs` (both families, API order).
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[]` entries with an IP.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `spec.loadBalancerSourceRanges`, trimmed, canonical networks.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort`; 0 when none.
    pub health_check_node_port: u16,
    /// `spec.sessionAffinity` (+ config).
    pub session_affinity: SessionAffinity,
}

impl Service {
    /// A ClusterIP Service with no ports; a starting point for tests and benches.
    pub fn new(key: ObjectKey) -> Service {
        Service {
            key,
            service_type: ServiceType::ClusterIp,
            cluster_ips: ClusterIps::default(),
            ports: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ingress: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: 0,
            session_affinity: SessionAffinity::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_sort_like_their_text() {
        let mut keys = [
            ObjectKey::new("a", "b-c"),
            ObjectKey::new("a-b", "c"),
            ObjectKey::new("ns1", "svc10"),
            ObjectKey::new("ns1", "svc1"),
        ];
        keys.sort();
        let mut texts: Vec<String> = keys.iter().map(ToString::to_string).collect();
        // Also a namespace that is a prefix of another, both ways round.
        let (short, long) = (ObjectKey::new("a", "z"), ObjectKey::new("a0", "a"));
        assert_eq!(short.cmp(&long), short.to_string().cmp(&long.to_string()));
        assert_eq!(long.cmp(&short), long.to_string().cmp(&short.to_string()));
        let (short, long) = (ObjectKey::new("a", "z"), ObjectKey::new("a.", "a"));
        assert_eq!(short.cmp(&long), short.to_string().cmp(&long.to_string()));
        let sorted_texts = {
            let mut t = texts.clone();
            t.sort();
            t
        };
        assert_eq!(texts, sorted_texts);
        texts.dedup();
        assert_eq!(texts.len(), 4);
    }
}
