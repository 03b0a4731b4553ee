//! The data plane: how long a new connection to a ClusterIP takes to set up
//! through a table of 100 Services and through one of 10,000, in iptables
//! mode (kube-proxy's `KUBE-SERVICES`: one rule per Service port, walked in
//! order; on legacy x_tables) and in nftables mode (one verdict-map lookup). Real packets in
//! network namespaces this program creates (`chainsmith_testkit::Topology`):
//! a client connects to the probed Service's ClusterIP 198.51.100.10:80,
//! which the node DNATs to a pod's echo server; each connection is a fresh
//! conntrack entry, so the first packet walks the rules every time. The
//! probed Service sorts last, the iptables worst case; the other Services'
//! addresses never see a packet. Needs root.
//!
//! `cargo run --release -p chainsmith-benches --example data_plane -- 100 10000 [CONNECTIONS]`

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use chainsmith_benches::cluster;
use chainsmith_layout::Layout;
use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpNet, LocalTrafficDetector, NodeConfig,
    ObjectKey, Protocol, Service, ServicePort,
};
use chainsmith_nft_netlink::{FIRST_SYNC_PIECE_OPS, NetlinkApplier};
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use chainsmith_sync::NftSyncEngine;
use chainsmith_testkit::{
    Backend, EchoServer, IpFamily, ProbeResult, Proto, Topology, apply_kube_proxy_rules, probe_here,
};

type Error = Box<dyn std::error::Error>;

const PROBED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

/// The node of the test topology: node IP 203.0.113.1, pods in 192.0.2.0/24.
fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".to_string(),
        node_ip: Some(IpAddr::V4(Topology::NODE_IPV4)),
        local_traffic_detector: LocalTrafficDetector::ClusterCidr(
            IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24).unwrap_or_default(),
        ),
        ..NodeConfig::default()
    }
}

/// `services - 1` synthetic Services and the probed one, `zzz/probe`, whose
/// only endpoint is `pod`.
fn services_with_probe(services: usize, pod: Ipv4Addr) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut input = cluster(services.saturating_sub(1), 10);
    let key = ObjectKey::new("zzz".to_string(), "probe".to_string());
    let mut service = Service::new(key.clone());
    service.cluster_ips = ClusterIps {
        v4: Some(IpAddr::V4(PROBED)),
        v6: None,
    };
    service.ports.push(ServicePort {
        name: "http".to_string(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: 0,
    });
    input.services.push(service);
    input.slices.push(EndpointSlice {
        key: ObjectKey::new("zzz".to_string(), "probe-abcde".to_string()),
        service: key,
        address_type: AddressType::Ipv4,
        ports: vec![EndpointPort {
            name: "http".to_string(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        endpoints: vec![Endpoint::ready(IpAddr::V4(pod))],
    });
    (input.services, input.slices)
}

#[derive(Clone, Copy)]
enum Mode {
    Iptables,
    Nftables,
}

/// Connection setup times through a table of `services`, in microseconds.
fn measure(mode: Mode, services: usize, connections: usize) -> Result<Vec<f64>, Error> {
    let topology = Topology::new(&["pod-a"])?;
    let pod = topology.pod("pod-a")?;
    let _server = EchoServer::start(&pod.netns, "pod-a", 8080)?;
    let (svcs, slices) = services_with_probe(services, pod.ipv4);
    match mode {
        Mode::Iptables => {
            let plan = Plan::compile(&svcs, &slices, &node());
            let payload = String::from_utf8(render_plan(&plan, Layout::V1_33))?;
            // Legacy x_tables: one iptables-nft-restore of the 10k table does
            // not finish in 25 minutes (README, "first full sync"), the
            // legacy one takes seconds.
            apply_kube_proxy_rules(&topology.node, &payload, IpFamily::V4, Backend::Legacy)?;
        }
        Mode::Nftables => {
            let mut engine = NftSyncEngine::new(node());
            engine.replace_state(&svcs, &slices);
            let first = engine.sync(0, false).main;
            let mut applier = NetlinkApplier::in_netns(&Path::new("/run/netns").join(topology.node.name()))?;
            for piece in first.split_leaves_first(FIRST_SYNC_PIECE_OPS) {
                applier.apply(&piece)?;
            }
        }
    }
    let times = topology.client.enter(|| {
        // Warm-up through the whole path, checking that the probed pod
        // answers: the echo server's reply proves the DNAT.
        for n in 0..50 {
            let result = probe_here(Proto::Tcp, None, IpAddr::V4(PROBED), 80, Duration::from_secs(2));
            if !matches!(result, ProbeResult::Reply { .. }) {
                return Err(format!("warm-up connection {n}: {result:?}"));
            }
        }
        // Then only the handshake is timed: the SYN walks the rules (each
        // connection is a new conntrack entry) and the pod's kernel answers;
        // the echo server's polling is not in the figure.
        let target = SocketAddr::new(IpAddr::V4(PROBED), 80);
        let mut times = Vec::with_capacity(connections);
        for n in 0..connections {
            let start = Instant::now();
            let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                .map_err(|e| format!("connection {n}: {e}"))?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
            drop(stream);
        }
        Ok(times)
    })??;
    Ok(times)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

fn main() -> Result<(), Error> {
    chainsmith_testkit::remove_own_namespaces_on_signals()?;
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let small = numbers.first().copied().unwrap_or(100);
    let large = numbers.get(1).copied().unwrap_or(10_000);
    let connections = numbers.get(2).copied().unwrap_or(2_000);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "connection setup to a ClusterIP (the TCP handshake through the DNAT), {connections} connections each"
    )?;
    for (mode, name) in [(Mode::Iptables, "iptables"), (Mode::Nftables, "nftables")] {
        let mut medians = Vec::new();
        for services in [small, large] {
            let mut times = measure(mode, services, connections)?;
            times.sort_by(f64::total_cmp);
            let (p50, p99) = (quantile(&times, 0.5), quantile(&times, 0.99));
            writeln!(
                out,
                "{name:<8} {services:>6} Services: p50 {p50:7.1} us, p99 {p99:7.1} us"
            )?;
            medians.push(p50);
        }
        if let [small_p50, large_p50] = medians[..] {
            writeln!(
                out,
                "{name:<8} {large} against {small} Services: {:.2}x (p50)",
                large_p50 / small_p50
            )?;
        }
    }
    Ok(())
}
