//! Synthetic clusters for the benchmarks (and for tests that need scale).
//!
//! [`cluster`] builds `services` Services with `endpoints_per_service` ready
//! endpoints each, directly as model values (no YAML, no Kubernetes client), in
//! a realistic mix: mostly ClusterIP, every 10th a NodePort, every 25th a
//! LoadBalancer with an ingress IP, a quarter of the endpoints on this node.
//! [`toggle_endpoint`] changes exactly one endpoint of one Service, the unit of
//! change the sync benchmarks measure.
//!
//! Architecture invariant: depends only on the pure crates, so a benchmark
//! build never compiles kube, hyper or tokio.

use std::net::{IpAddr, Ipv4Addr};

use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpNet, LoadBalancerIngress,
    LocalTrafficDetector, NodeConfig, ObjectKey, Protocol, Service, ServicePort, ServiceType,
};

/// The node the synthetic clusters are compiled for.
pub fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".to_string(),
        node_ip: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10))),
        local_traffic_detector: LocalTrafficDetector::ClusterCidr(
            IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8).unwrap_or_default(),
        ),
        ..NodeConfig::default()
    }
}

/// A synthetic cluster: its Services and one EndpointSlice per Service.
pub struct Cluster {
    /// The Services.
    pub services: Vec<Service>,
    /// Their EndpointSlices, in the same order.
    pub slices: Vec<EndpointSlice>,
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// `services` Services with `endpoints_per_service` endpoints each.
pub fn cluster(services: usize, endpoints_per_service: usize) -> Cluster {
    let mut cluster = Cluster {
        services: Vec::with_capacity(services),
        slices: Vec::with_capacity(services),
    };
    for i in 0..services {
        let n = u32::try_from(i).unwrap_or(u32::MAX);
        let key = ObjectKey::new(format!("ns{}", i % 50), format!("svc{i}"));
        let mut service = Service::new(key.clone());
        service.cluster_ips = ClusterIps {
            v4: Some(ip(0x0A60_0000 + n)),
            v6: None,
        };
        let node_port = if i % 10 == 0 { 30000 + (i % 2700) as u16 } else { 0 };
        service.ports.push(ServicePort {
            name: "http".to_string(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
        });
        if i % 25 == 0 {
            service.service_type = ServiceType::LoadBalancer;
            service.load_balancer_ingress.push(LoadBalancerIngress {
                ip: ip(0xCB00_7100 + n % 256),
                ip_mode: None,
            });
        } else if node_port != 0 {
            service.service_type = ServiceType::NodePort;
        }
        let endpoints = (0..endpoints_per_service)
            .map(|e| {
                let mut endpoint = Endpoint::ready(ip(0x0A00_0000 + n * 64 + u32::try_from(e).unwrap_or(0)));
                endpoint.node_name = Some(if e % 4 == 0 { "node-a" } else { "node-b" }.to_string());
                endpoint
            })
            .collect();
        cluster.slices.push(EndpointSlice {
            key: ObjectKey::new(key.namespace.clone(), format!("svc{i}-abcde")),
            service: key,
            address_type: AddressType::Ipv4,
            ports: vec![EndpointPort {
                name: "http".to_string(),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
            endpoints,
        });
        cluster.services.push(service);
    }
    cluster
}

/// The slice at `index` with its first endpoint's readiness flipped.
pub fn toggle_endpoint(slice: &EndpointSlice) -> EndpointSlice {
    let mut slice = slice.clone();
    if let Some(endpoint) = slice.endpoints.first_mut() {
        endpoint.ready = !endpoint.ready;
        endpoint.serving = endpoint.ready;
    }
    slice
}
