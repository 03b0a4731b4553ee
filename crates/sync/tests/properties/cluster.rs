//! Random but valid clusters as model values, and the node settings to compile
//! them for.
//!
//! A cluster is a fixed number of [`Slot`]s; slot `i` is always the Service
//! `ns{i % 2}/svc{i / 2}` (so names repeat across namespaces) with its
//! EndpointSlices `svc{i / 2}-{j}`. The generated values are *specs*: small
//! choices that [`Cluster::materialize`] turns into `Service`s and
//! `EndpointSlice`s, deriving what must be unique in a real cluster (cluster
//! IPs, node ports, health-check node ports, port names, `(port, protocol)`
//! pairs) from the slot, so any edit of a spec (the changes of the incremental
//! property) still gives a cluster the API server would accept.
//!
//! Every address is a documentation address: 192.0.2.0/24 (pods),
//! 198.51.100.0/24 (cluster IPs, node), 203.0.113.0/24 (external and
//! load-balancer IPs, node) and 2001:db8::/32.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, FeatureGates, InterfaceAddress, IpFamily,
    IpNet, LoadBalancerIngress, LoadBalancerIpMode, LocalTrafficDetector, NfacctCounters, NodeConfig,
    ObjectKey, Protocol, Service, ServicePort, ServiceType, SessionAffinity, TOPOLOGY_ZONE_LABEL,
    TrafficPolicy, masquerade_mark_for_bit,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// The node the rules are compiled for.
pub const NODE: &str = "node-a";
/// Another node (its endpoints are remote).
const OTHER_NODE: &str = "node-b";
/// Slots per cluster: at most this many Services.
const SLOTS: usize = 6;

const PORT_NAMES: [&str; 4] = ["http", "dns", "metrics", "grpc"];
const PORT_NUMBERS: [u16; 5] = [53, 80, 443, 8080, 9090];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
const ZONES: [&str; 2] = ["zone-a", "zone-b"];

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(group: u16, last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, last))
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap_or_else(|_| panic!("bad test CIDR {text}"))
}

fn external_ips() -> Vec<IpAddr> {
    vec![
        v4(203, 0, 113, 1),
        v4(203, 0, 113, 2),
        v4(198, 51, 100, 201),
        v6(0x113, 1),
        v6(0x113, 2),
    ]
}

fn load_balancer_ips() -> Vec<IpAddr> {
    vec![
        v4(203, 0, 113, 100),
        v4(203, 0, 113, 101),
        v4(198, 51, 100, 200),
        v6(0x113, 0x100),
        v6(0x113, 0x101),
    ]
}

fn source_ranges() -> Vec<IpNet> {
    [
        "203.0.113.0/24",
        "203.0.113.0/25",
        "198.51.100.0/24",
        "192.0.2.0/26",
        "2001:db8::/32",
        "2001:db8:113::/64",
        "2001:db8:ffff::/48",
    ]
    .into_iter()
    .map(net)
    .collect()
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unset,
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// Which cluster IPs a Service has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    V4,
    V6,
    Dual,
}

/// One `spec.ports` entry.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Index into the port names.
    pub name: usize,
    pub protocol: Protocol,
    pub port: u16,
    /// Allocate a node port (NodePort always does; LoadBalancer only with this).
    pub node_port: bool,
}

/// One Service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub kind: Kind,
    pub families: Families,
    /// A single port goes without a name.
    pub unnamed: bool,
    pub ports: Vec<PortSpec>,
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress (LoadBalancer only).
    pub ingress: Vec<(IpAddr, Option<LoadBalancerIpMode>)>,
    /// `loadBalancerSourceRanges` (LoadBalancer only).
    pub source_ranges: Vec<IpNet>,
    pub external_local: bool,
    pub internal_local: bool,
    pub affinity_seconds: Option<u32>,
    /// Allocate a health-check node port (LoadBalancer with eTP Local only).
    pub health_check: bool,
}

/// An endpoint's conditions, as the API combines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// ready, serving, not terminating.
    Ready,
    /// not ready, serving, terminating.
    ServingTerminating,
    /// not ready, not serving, terminating.
    Terminating,
    /// not ready, not serving, not terminating.
    NotReady,
}

/// One endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Last part of the address (few values, so slices often share addresses).
    pub host: u8,
    pub condition: Condition,
    /// `Some(true)`: this node, `Some(false)`: another node, `None`: no nodeName.
    pub local: Option<bool>,
    pub zone_hint: Option<usize>,
    /// Hinted for this node (`Some(true)`) or the other one.
    pub node_hint: Option<bool>,
}

/// The ports of a slice.
#[derive(Debug, Clone)]
pub enum SlicePorts {
    /// What the EndpointSlice controller writes: the Service's ports, target
    /// port = port + 8000.
    Follow,
    /// Anything (stale or mismatching ports): `(name index or unnamed, protocol, port)`.
    Fixed(Vec<(Option<usize>, Protocol, u16)>),
}

/// One EndpointSlice.
#[derive(Debug, Clone)]
pub struct SliceSpec {
    pub family: IpFamily,
    pub ports: SlicePorts,
    pub endpoints: Vec<EndpointSpec>,
}

/// One Service name with its Service (if any) and slices.
#[derive(Debug, Clone)]
pub struct Slot {
    pub service: Option<ServiceSpec>,
    pub slices: Vec<SliceSpec>,
}

/// A whole cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub slots: Vec<Slot>,
}

fn slot_key(slot: usize) -> ObjectKey {
    ObjectKey::new(format!("ns{}", slot % 2), format!("svc{}", slot / 2))
}

impl ServiceSpec {
    fn materialize(&self, slot: usize) -> Service {
        let index = u8::try_from(slot).unwrap_or(u8::MAX);
        let mut service = Service::new(slot_key(slot));
        service.service_type = match self.kind {
            Kind::Unset => ServiceType::Unset,
            Kind::ClusterIp => ServiceType::ClusterIp,
            Kind::NodePort => ServiceType::NodePort,
            Kind::LoadBalancer => ServiceType::LoadBalancer,
        };
        let (has_v4, has_v6) = match self.families {
            Families::V4 => (true, false),
            Families::V6 => (false, true),
            Families::Dual => (true, true),
        };
        service.cluster_ips = ClusterIps {
            v4: has_v4.then(|| v4(198, 51, 100, index + 1)),
            v6: has_v6.then(|| v6(0x100, u16::from(index) + 1)),
        };
        // Port names and (port, protocol) pairs are unique, as validation demands.
        let mut kept: Vec<&PortSpec> = Vec::new();
        for port in &self.ports {
            let clash = kept
                .iter()
                .any(|k| k.name == port.name || (k.port == port.port && k.protocol == port.protocol));
            if !clash {
                kept.push(port);
            }
        }
        let unnamed = self.unnamed && kept.len() == 1;
        let node_ports = matches!(self.kind, Kind::NodePort | Kind::LoadBalancer);
        for (i, port) in kept.iter().enumerate() {
            let allocate = self.kind == Kind::NodePort || (node_ports && port.node_port);
            service.ports.push(ServicePort {
                name: if unnamed {
                    String::new()
                } else {
                    PORT_NAMES[port.name].to_string()
                },
                protocol: port.protocol,
                port: port.port,
                node_port: if allocate {
                    30000 + 16 * u16::from(index) + i as u16
                } else {
                    0
                },
            });
        }
        service.external_ips = self.external_ips.clone();
        if self.kind == Kind::LoadBalancer {
            service.load_balancer_ingress = self
                .ingress
                .iter()
                .map(|&(ip, ip_mode)| LoadBalancerIngress { ip, ip_mode })
                .collect();
            service.load_balancer_source_ranges = self.source_ranges.clone();
        }
        // externalTrafficPolicy: Local only where the API accepts it.
        let externally_accessible = node_ports || !self.external_ips.is_empty();
        if self.external_local && externally_accessible {
            service.external_traffic_policy = TrafficPolicy::Local;
        }
        if self.internal_local {
            service.internal_traffic_policy = TrafficPolicy::Local;
        }
        if let Some(timeout_seconds) = self.affinity_seconds {
            service.session_affinity = SessionAffinity::ClientIp { timeout_seconds };
        }
        if self.kind == Kind::LoadBalancer && self.health_check && self.external_local {
            service.health_check_node_port = 32000 + u16::from(index);
        }
        service
    }
}

impl EndpointSpec {
    fn materialize(&self, family: IpFamily) -> Endpoint {
        let address = match family {
            IpFamily::V4 => v4(192, 0, 2, self.host),
            IpFamily::V6 => v6(2, u16::from(self.host)),
        };
        let mut endpoint = Endpoint::ready(address);
        (endpoint.ready, endpoint.serving, endpoint.terminating) = match self.condition {
            Condition::Ready => (true, true, false),
            Condition::ServingTerminating => (false, true, true),
            Condition::Terminating => (false, false, true),
            Condition::NotReady => (false, false, false),
        };
        endpoint.node_name = self
            .local
            .map(|local| if local { NODE } else { OTHER_NODE }.to_string());
        if let Some(zone) = self.zone_hint {
            endpoint.zone = Some(ZONES[zone].to_string());
            endpoint.zone_hints = vec![ZONES[zone].to_string()];
        }
        if let Some(here) = self.node_hint {
            endpoint.node_hints = vec![if here { NODE } else { OTHER_NODE }.to_string()];
        }
        endpoint
    }
}

impl SliceSpec {
    fn materialize(&self, slot: usize, number: usize, service: Option<&Service>) -> EndpointSlice {
        let key = slot_key(slot);
        let mut ports: Vec<EndpointPort> = match &self.ports {
            SlicePorts::Follow => match service {
                Some(service) => service
                    .ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        port: p.port + 8000,
                        protocol: p.protocol,
                    })
                    .collect(),
                None => vec![EndpointPort {
                    name: PORT_NAMES[0].to_string(),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
            },
            SlicePorts::Fixed(ports) => {
                let mut seen = Vec::new();
                ports
                    .iter()
                    .filter(|(name, _, _)| {
                        let fresh = !seen.contains(name);
                        seen.push(*name);
                        fresh
                    })
                    .map(|&(name, protocol, port)| EndpointPort {
                        name: name.map(|n| PORT_NAMES[n].to_string()).unwrap_or_default(),
                        port,
                        protocol,
                    })
                    .collect()
            }
        };
        ports.sort();
        EndpointSlice {
            key: ObjectKey::new(key.namespace.clone(), format!("{}-{number}", key.name)),
            service: key,
            address_type: match self.family {
                IpFamily::V4 => AddressType::Ipv4,
                IpFamily::V6 => AddressType::Ipv6,
            },
            ports,
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.materialize(self.family))
                .collect(),
        }
    }
}

impl Cluster {
    /// The Services and EndpointSlices of the cluster, in slot order.
    pub fn materialize(&self) -> (Vec<Service>, Vec<EndpointSlice>) {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let service = slot.service.as_ref().map(|s| s.materialize(i));
            for (j, slice) in slot.slices.iter().enumerate() {
                slices.push(slice.materialize(i, j, service.as_ref()));
            }
            services.extend(service);
        }
        (services, slices)
    }
}

// ---- strategies ----

fn protocol() -> impl Strategy<Value = Protocol> {
    select(PROTOCOLS.to_vec())
}

fn port_number() -> impl Strategy<Value = u16> {
    select(PORT_NUMBERS.to_vec())
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    (0..PORT_NAMES.len(), protocol(), port_number(), any::<bool>()).prop_map(
        |(name, protocol, port, node_port)| PortSpec {
            name,
            protocol,
            port,
            node_port,
        },
    )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        1 => Just(Kind::Unset),
        3 => Just(Kind::ClusterIp),
        3 => Just(Kind::NodePort),
        4 => Just(Kind::LoadBalancer),
    ]
}

fn families() -> impl Strategy<Value = Families> {
    prop_oneof![Just(Families::V4), Just(Families::V6), Just(Families::Dual)]
}

fn ip_mode() -> impl Strategy<Value = Option<LoadBalancerIpMode>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(LoadBalancerIpMode::Vip)),
        1 => Just(Some(LoadBalancerIpMode::Proxy)),
    ]
}

/// A load-balancer IP with its ipMode.
pub fn ingress() -> impl Strategy<Value = (IpAddr, Option<LoadBalancerIpMode>)> {
    (select(load_balancer_ips()), ip_mode())
}

/// A Service.
pub fn service_spec() -> impl Strategy<Value = ServiceSpec> {
    let shape = (
        kind(),
        families(),
        any::<bool>(),
        prop::collection::vec(port_spec(), 1..=3),
    );
    let addresses = (
        prop::option::weighted(0.3, subsequence(external_ips(), 1..=3)),
        prop::collection::vec(ingress(), 0..=3),
        prop::option::weighted(0.6, subsequence(source_ranges(), 1..=3)),
    );
    let policies = (
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.25, prop_oneof![Just(10800u32), 1u32..=86400]),
        any::<bool>(),
    );
    (shape, addresses, policies).prop_map(
        |(
            (kind, families, unnamed, ports),
            (external_ips, ingress, source_ranges),
            (external_local, internal_local, affinity_seconds, health_check),
        )| ServiceSpec {
            kind,
            families,
            unnamed,
            ports,
            external_ips: external_ips.unwrap_or_default(),
            ingress,
            source_ranges: source_ranges.unwrap_or_default(),
            external_local,
            internal_local,
            affinity_seconds,
            health_check,
        },
    )
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        6 => Just(Condition::Ready),
        2 => Just(Condition::ServingTerminating),
        1 => Just(Condition::Terminating),
        1 => Just(Condition::NotReady),
    ]
}

/// An endpoint's conditions.
pub fn endpoint_condition() -> impl Strategy<Value = Condition> {
    condition()
}

/// An endpoint.
pub fn endpoint_spec() -> impl Strategy<Value = EndpointSpec> {
    (
        1u8..=12,
        condition(),
        prop_oneof![
            2 => Just(Some(true)),
            3 => Just(Some(false)),
            1 => Just(None),
        ],
        prop::option::weighted(0.2, 0..ZONES.len()),
        prop::option::weighted(0.15, any::<bool>()),
    )
        .prop_map(|(host, condition, local, zone_hint, node_hint)| EndpointSpec {
            host,
            condition,
            local,
            zone_hint,
            node_hint,
        })
}

/// Some endpoints (sometimes none).
pub fn endpoint_specs() -> impl Strategy<Value = Vec<EndpointSpec>> {
    prop::collection::vec(endpoint_spec(), 0..=5)
}

fn slice_ports() -> impl Strategy<Value = SlicePorts> {
    let fixed = prop::collection::vec(
        (
            prop::option::weighted(0.8, 0..PORT_NAMES.len()),
            protocol(),
            prop_oneof![port_number(), 8000u16..8100],
        ),
        0..=2,
    );
    prop_oneof![
        4 => Just(SlicePorts::Follow),
        1 => fixed.prop_map(SlicePorts::Fixed),
    ]
}

/// An EndpointSlice (either family).
pub fn slice_spec() -> impl Strategy<Value = SliceSpec> {
    (
        prop_oneof![Just(IpFamily::V4), Just(IpFamily::V6)],
        slice_ports(),
        endpoint_specs(),
    )
        .prop_map(|(family, ports, endpoints)| SliceSpec {
            family,
            ports,
            endpoints,
        })
}

/// The slices of one Service (sometimes none).
pub fn slice_specs() -> impl Strategy<Value = Vec<SliceSpec>> {
    prop::collection::vec(slice_spec(), 0..=3)
}

fn slot() -> impl Strategy<Value = Slot> {
    (prop::option::weighted(0.75, service_spec()), slice_specs())
        .prop_map(|(service, slices)| Slot { service, slices })
}

/// A cluster of [`SLOTS`] slots.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    prop::collection::vec(slot(), SLOTS).prop_map(|slots| Cluster { slots })
}

// ---- node settings ----

/// The settings that may change while a proxier runs (from the Node and the
/// host's interfaces); the rest is fixed at start-up.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    node_ip: Option<IpAddr>,
    interface_addresses: Vec<InterfaceAddress>,
    local_traffic_detector: LocalTrafficDetector,
    node_port_addresses: Vec<IpNet>,
    zone: Option<usize>,
}

impl RuntimeSettings {
    /// Applies these settings to `config`.
    pub fn apply_to(&self, config: &mut NodeConfig) {
        config.node_ip = self.node_ip;
        config.interface_addresses = self.interface_addresses.clone();
        config.local_traffic_detector = self.local_traffic_detector.clone();
        config.node_port_addresses = self.node_port_addresses.clone();
        config.node_labels = BTreeMap::new();
        if let Some(zone) = self.zone {
            config
                .node_labels
                .insert(TOPOLOGY_ZONE_LABEL.to_string(), ZONES[zone].to_string());
        }
    }
}

fn interface_addresses() -> Vec<InterfaceAddress> {
    [
        ("eth0", v4(203, 0, 113, 10), 24),
        ("eth1", v4(198, 51, 100, 250), 24),
        ("eth0", v6(0x113, 0x10), 64),
        ("eth1", v6(0x100, 0xfa), 64),
    ]
    .into_iter()
    .map(|(interface, address, prefix_len)| InterfaceAddress {
        interface: interface.to_string(),
        address,
        prefix_len,
    })
    .collect()
}

/// Node settings of one family that may change at run time.
pub fn runtime_settings(family: IpFamily) -> impl Strategy<Value = RuntimeSettings> {
    let node_ips = match family {
        IpFamily::V4 => vec![v4(203, 0, 113, 10), v4(198, 51, 100, 250)],
        IpFamily::V6 => vec![v6(0x113, 0x10), v6(0x100, 0xfa)],
    };
    // Detector CIDRs of either family: one of the other family is dropped
    // with a diagnostic.
    let detector = prop_oneof![
        Just(LocalTrafficDetector::None),
        select(vec![net("192.0.2.0/24"), net("2001:db8:2::/64")]).prop_map(LocalTrafficDetector::ClusterCidr),
        select(vec![net("192.0.2.0/26"), net("2001:db8:2::/112")]).prop_map(LocalTrafficDetector::NodeCidr),
        Just(LocalTrafficDetector::BridgeInterface("cbr0".to_string())),
        Just(LocalTrafficDetector::InterfaceNamePrefix("veth".to_string())),
    ];
    let node_port_addresses = [
        "203.0.113.0/24",
        "198.51.100.0/25",
        "192.0.2.0/24",
        "2001:db8:113::/64",
        "2001:db8::/32",
    ]
    .into_iter()
    .map(net)
    .collect::<Vec<_>>();
    (
        prop::option::weighted(0.8, select(node_ips)),
        subsequence(interface_addresses(), 0..=4),
        detector,
        prop_oneof![Just(Vec::new()), subsequence(node_port_addresses, 1..=3),],
        prop::option::weighted(0.5, 0..ZONES.len()),
    )
        .prop_map(
            |(node_ip, interface_addresses, local_traffic_detector, node_port_addresses, zone)| {
                RuntimeSettings {
                    node_ip,
                    interface_addresses,
                    local_traffic_detector,
                    node_port_addresses,
                    zone,
                }
            },
        )
}

/// A node configuration of one family.
pub fn node_config(family: IpFamily) -> impl Strategy<Value = NodeConfig> {
    let flags = (
        any::<bool>(),
        prop::bool::weighted(0.7),
        any::<bool>(),
        prop::bool::weighted(0.3),
        any::<bool>(),
        any::<bool>(),
    );
    let gates = (
        prop::bool::weighted(0.8),
        any::<bool>(),
        select(vec![14u8, 0, 5, 31]),
    );
    (runtime_settings(family), flags, gates).prop_map(
        move |(
            runtime,
            (
                masquerade_all,
                localhost_node_ports,
                random_fully,
                be_liberal,
                invalid_counter,
                localhost_counter,
            ),
            (load_balancer_ip_mode, prefer_same_traffic_distribution, masquerade_bit),
        )| {
            let mut config = NodeConfig {
                node_name: NODE.to_string(),
                ip_family: family,
                masquerade_mark: masquerade_mark_for_bit(masquerade_bit),
                masquerade_all,
                localhost_node_ports,
                iptables_has_random_fully: random_fully,
                conntrack_tcp_be_liberal: be_liberal,
                nfacct: NfacctCounters {
                    ct_state_invalid_dropped_pkts: invalid_counter,
                    localhost_nps_accepted_pkts: localhost_counter,
                },
                feature_gates: FeatureGates {
                    load_balancer_ip_mode,
                    prefer_same_traffic_distribution,
                },
                ..NodeConfig::default()
            };
            runtime.apply_to(&mut config);
            config
        },
    )
}

/// A node configuration of either family.
pub fn any_node_config() -> impl Strategy<Value = NodeConfig> {
    prop_oneof![node_config(IpFamily::V4), node_config(IpFamily::V6)]
}
