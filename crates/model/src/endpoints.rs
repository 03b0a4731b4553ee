//! EndpointSlices as the proxier sees them.

use std::net::IpAddr;

use crate::{IpFamily, ObjectKey, Protocol};

/// `addressType` of an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// `IPv4`.
    Ipv4,
    /// `IPv6`.
    Ipv6,
    /// `FQDN` (never used by a proxier).
    Fqdn,
}

impl AddressType {
    /// The family a proxier must have to use slices of this type.
    pub fn family(self) -> Option<IpFamily> {
        match self {
            AddressType::Ipv4 => Some(IpFamily::V4),
            AddressType::Ipv6 => Some(IpFamily::V6),
            AddressType::Fqdn => None,
        }
    }
}

/// One usable entry of `ports` (entries with no name or no port are dropped
/// before they reach the model, as kube-proxy ignores them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointPort {
    /// `name` (`""` for an unnamed Service port).
    pub name: String,
    /// `port` (never 0).
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
}

/// One entry of `endpoints`, reduced to what kube-proxy reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `addresses[0]`, parsed sloppily (kube-proxy uses only the first address).
    pub address: IpAddr,
    /// `conditions.ready` (absent = true).
    pub ready: bool,
    /// `conditions.serving` (absent = true).
    pub serving: bool,
    /// `conditions.terminating` (absent = false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `hints.forZones[].name`, sorted and de-duplicated.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`, sorted and de-duplicated.
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// A ready endpoint with no node, zone or hints.
    pub fn ready(address: IpAddr) -> Endpoint {
        Endpoint {
            address,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }
}

/// An EndpointSlice that belongs to a Service (it carries the
/// `kubernetes.io/service-name` label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    /// `namespace/name` of the slice itself.
    pub key: ObjectKey,
    /// The Service it belongs to (same namespace, name from the label).
    pub service: ObjectKey,
    /// `addressType`.
    pub address_type: AddressType,
    /// Usable `ports`, sorted.
    pub ports: Vec<EndpointPort>,
    /// `endpoints` with a parseable first address, in API order.
    pub endpoints: Vec<Endpoint>,
}
