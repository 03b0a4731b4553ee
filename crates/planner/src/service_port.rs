//! One Service -> its service ports for one family (upstream `serviceport.go`).

use std::net::IpAddr;
use std::sync::Arc;

use chainsmith_model::{
    IpFamily, IpNet, LoadBalancerIpMode, ObjectKey, Protocol, Service, ServiceType, SessionAffinity,
    TrafficPolicy,
};
use chainsmith_naming::{ChainName, ServicePortChains};

use crate::NodeContext;

/// An address together with its canonical text, rendered once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addr<T> {
    /// The value.
    pub value: T,
    /// Its canonical text.
    pub text: Box<str>,
}

impl Addr<IpAddr> {
    fn ip(value: IpAddr) -> Addr<IpAddr> {
        let text = match value {
            IpAddr::V4(v4) => {
                let mut text = arrayvec::ArrayString::<15>::new();
                crate::endpoints::push_ipv4(&mut text, &v4);
                Box::from(text.as_str())
            }
            IpAddr::V6(v6) => v6.to_string().into_boxed_str(),
        };
        Addr { value, text }
    }
}

impl Addr<IpNet> {
    fn net(value: IpNet) -> Addr<IpNet> {
        Addr {
            value,
            text: value.to_string().into_boxed_str(),
        }
    }
}

/// What every port of one Service shares for one family (kept once per
/// Service, not once per port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAddresses {
    /// The Service.
    pub service: ObjectKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// The cluster IP of the family.
    pub cluster_ip: Addr<IpAddr>,
    /// External IPs of the family.
    pub external_ips: Vec<Addr<IpAddr>>,
    /// Load-balancer ingress IPs of the family that kube-proxy captures.
    pub load_balancer_vips: Vec<Addr<IpAddr>>,
    /// Source ranges of the family (empty when any of them is a zero CIDR).
    pub source_ranges: Vec<Addr<IpNet>>,
}

/// What kube-proxy derives from one `spec.ports` entry for one family. Equality
/// of two infos is what upstream's change tracker compares: a Service update
/// that leaves every info equal does not count as a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortInfo {
    /// The Service-wide part: key, cluster IP, external and load-balancer IPs.
    pub addresses: Arc<ServiceAddresses>,
    /// The port's name (may be empty).
    pub port_name: String,
    /// `namespace/name:port` (`namespace/name` for an unnamed port): the text in
    /// comments and chain-name hashes.
    pub name: Box<str>,
    /// The protocol.
    pub protocol: Protocol,
    /// `port`.
    pub port: u16,
    /// `nodePort`; 0 when none.
    pub node_port: u16,
    /// ClientIP affinity timeout, if affinity is on.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` on an externally accessible Service type.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// Health-check node port (LoadBalancer with external policy Local), else 0.
    pub health_check_node_port: u16,
    /// This port's SVC, SVL, EXT and FW chains (one hash, four prefixes).
    chains: [ChainName; 4],
}

impl ServicePortInfo {
    /// Reachable from outside in the rule-generation sense: a node port, a
    /// load-balancer IP or an external IP.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0
            || !self.addresses.load_balancer_vips.is_empty()
            || !self.addresses.external_ips.is_empty()
    }

    /// The Service this port belongs to.
    pub fn service(&self) -> &ObjectKey {
        &self.addresses.service
    }

    /// Needs the cluster endpoints (also true for external policy Local, for the
    /// short-circuit of traffic from inside the cluster).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Needs the local endpoints.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }

    /// `KUBE-SVC-<h>`.
    pub fn svc_chain(&self) -> ChainName {
        self.chains[0]
    }

    /// `KUBE-SVL-<h>`.
    pub fn svl_chain(&self) -> ChainName {
        self.chains[1]
    }

    /// `KUBE-EXT-<h>`.
    pub fn ext_chain(&self) -> ChainName {
        self.chains[2]
    }

    /// `KUBE-FW-<h>`.
    pub fn fw_chain(&self) -> ChainName {
        self.chains[3]
    }
}

/// The service ports of one Service for the context's family, in `spec.ports`
/// order; empty when the Service has no cluster IP of that family.
pub fn service_ports(service: &Service, ctx: &NodeContext) -> Vec<ServicePortInfo> {
    let family = ctx.family();
    let Some(cluster_ip) = service.cluster_ips.get(family) else {
        return Vec::new();
    };
    let config = ctx.config();
    let of_family = |ip: &&IpAddr| IpFamily::of(ip) == family;

    // Externally accessible in the API sense (`apiservice.ExternallyAccessible`).
    let api_external = match service.service_type {
        ServiceType::LoadBalancer | ServiceType::NodePort => true,
        ServiceType::ClusterIp => !service.external_ips.is_empty(),
        ServiceType::Unset => false,
    };
    let external_policy_local = api_external && service.external_traffic_policy == TrafficPolicy::Local;
    let internal_policy_local = service.internal_traffic_policy == TrafficPolicy::Local;
    let health_check_node_port = if service.service_type == ServiceType::LoadBalancer && external_policy_local
    {
        service.health_check_node_port
    } else {
        0
    };
    let external_ips: Vec<Addr<IpAddr>> = service
        .external_ips
        .iter()
        .filter(of_family)
        .map(|ip| Addr::ip(*ip))
        .collect();
    let load_balancer_vips: Vec<Addr<IpAddr>> = service
        .load_balancer_ingress
        .iter()
        .filter(|ingress| {
            !config.feature_gates.load_balancer_ip_mode
                || ingress.ip_mode.is_none_or(|mode| mode == LoadBalancerIpMode::Vip)
        })
        .map(|ingress| ingress.ip)
        .filter(|ip| IpFamily::of(ip) == family)
        .map(Addr::ip)
        .collect();
    let mut source_ranges: Vec<Addr<IpNet>> = service
        .load_balancer_source_ranges
        .iter()
        .filter(|net| IpFamily::of_net(net) == family)
        .map(|net| Addr::net(*net))
        .collect();
    if source_ranges.iter().any(|net| net.value.prefix_len() == 0) {
        source_ranges.clear();
    }
    let affinity_seconds = match service.session_affinity {
        SessionAffinity::None => None,
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
    };
    let addresses = Arc::new(ServiceAddresses {
        service: service.key.clone(),
        service_type: service.service_type,
        cluster_ip: Addr::ip(cluster_ip),
        external_ips,
        load_balancer_vips,
        source_ranges,
    });

    service
        .ports
        .iter()
        .map(|port| {
            let name = port_name_string(&service.key, &port.name);
            let hash = ServicePortChains::new(&name, port.protocol.as_iptables());
            let chains = [hash.svc(), hash.svl(), hash.ext(), hash.fw()];
            ServicePortInfo {
                addresses: addresses.clone(),
                port_name: port.name.clone(),
                name: name.into_boxed_str(),
                protocol: port.protocol,
                port: port.port,
                node_port: port.node_port,
                affinity_seconds,
                external_policy_local,
                internal_policy_local,
                health_check_node_port,
                chains,
            }
        })
        .collect()
}

/// `namespace/name:port`, or `namespace/name` for an unnamed port.
pub(crate) fn port_name_string(service: &ObjectKey, port_name: &str) -> String {
    let mut name = String::with_capacity(service.namespace.len() + service.name.len() + port_name.len() + 2);
    name.push_str(&service.namespace);
    name.push('/');
    name.push_str(&service.name);
    if !port_name.is_empty() {
        name.push(':');
        name.push_str(port_name);
    }
    name
}
