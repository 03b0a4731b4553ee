//! The domain model of chainsmith: what a proxier needs to know about Services,
//! EndpointSlices and the node it runs on, and nothing more.
//!
//! This crate owns the value types every later stage speaks in: [`Service`],
//! [`EndpointSlice`], [`NodeConfig`], plus the address helpers that reproduce how
//! kube-proxy reads addresses ([`parse_ip_sloppy`], [`parse_cidr_sloppy`]) and the
//! [`Diagnostic`] used to report odd input without failing.
//!
//! Architecture invariant: the model knows nothing about Kubernetes client types
//! (`k8s-openapi`), YAML, iptables or chain names. Values in here are already
//! validated: an address that could not be parsed never reaches this crate; the
//! translation layer (`chainsmith-k8s`) drops it and records a [`Diagnostic`].
//! Everything is plain data with deterministic ordering, no I/O, no clock.
//!
//! Start reading at [`Service`] and [`EndpointSlice`].

mod addr;
mod diagnostic;
mod endpoints;
mod node;
mod service;

pub use addr::{IpFamily, format_ip, parse_cidr_sloppy, parse_ip_sloppy};
pub use diagnostic::{Diagnostic, ObjectKind, Severity};
pub use endpoints::{AddressType, Endpoint, EndpointPort, EndpointSlice};
pub use ipnet::IpNet;
pub use node::{
    FeatureGates, InterfaceAddress, LocalTrafficDetector, NfacctCounters, NodeConfig, NodeObject,
    SERVICE_NAME_LABEL, TOPOLOGY_ZONE_LABEL, masquerade_mark_for_bit,
};
pub use service::{
    ClusterIps, LoadBalancerIngress, LoadBalancerIpMode, ObjectKey, Protocol, Service, ServicePort,
    ServiceType, SessionAffinity, TrafficPolicy,
};
