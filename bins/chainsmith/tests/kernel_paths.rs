//! Real packets through compiled rules: every Service packet path, in real
//! network namespaces, on the nf_tables and the legacy backend, IPv4 and IPv6.
//!
//! Each scenario writes Services and EndpointSlices, compiles them with the
//! real `chainsmith compile --layout v1.33` for node-a (node IP 203.0.113.1 /
//! 2001:db8:1::1, ClusterCIDR detector on the pod network), applies the
//! payload in the node namespace of a [`Topology`] as kube-proxy does
//! (nfacct counters, `iptables-restore --noflush`, the built-in jumps of
//! [`BUILTIN_JUMPS`] with `-C`/`-I`), starts an echo server in every pod, and
//! probes from the client, the node and the pods. The assertions are on what
//! the kernel did: which pod answered, which source address it saw
//! (masqueraded or not), refused vs. dropped, the DROP rules' packet counters
//! and the conntrack entries; for every probe, `chainsmith_tracer`, reading
//! the kernel's own `iptables-save`, must predict what the kernel did. The
//! harness is shared with `kernel_paths_v1_10` (`common/paths.rs`); this file
//! holds the v1.33 [`Layout`] and its scenarios.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).
//!
//! [`Topology`]: chainsmith_testkit::Topology

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;
#[path = "common/paths.rs"]
mod paths;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chainsmith_iptables::BUILTIN_JUMPS;
use chainsmith_testkit::{
    Backend, IpFamily, ProbeResult, Proto, Topology, kernel_tests_enabled, nfacct_packets,
};
use serde_json::{Value, json};

use paths::{
    ANSWER, DROPPED, Layout, World, check_balancing_from_pod_d, check_hairpin, check_node_port_from_client,
    check_off_cluster_sources_masqueraded, check_sticks_to_one_pod, endpoints, external_ip_cluster,
    hairpin_cluster, ips, load_balancer, local_policy_cluster, port, service, set, shop_cluster, slice,
    sticky_cluster, svc_ip, web_cluster,
};

const IPV4_BOTH: [(IpFamily, Backend); 2] = [(IpFamily::V4, Backend::Nft), (IpFamily::V4, Backend::Legacy)];
const IPV6_BOTH: [(IpFamily, Backend); 2] = [(IpFamily::V6, Backend::Nft), (IpFamily::V6, Backend::Legacy)];
const ALL: [(IpFamily, Backend); 4] = [
    (IpFamily::V4, Backend::Nft),
    (IpFamily::V4, Backend::Legacy),
    (IpFamily::V6, Backend::Nft),
    (IpFamily::V6, Backend::Legacy),
];

/// Today's kube-proxy: production defaults, nfacct counters, --random-fully.
static V1_33: Layout = Layout {
    name: "v1.33",
    node_settings: v1_33_node_settings,
    jumps: &BUILTIN_JUMPS,
    signature: ":KUBE-PROXY-FIREWALL - [0:0]\n",
    kernel_needs: "addrtype, comment, conntrack, mark, nfacct, recent, statistic, tcp, udp, \
                   MARK, DNAT, MASQUERADE (--random-fully), REJECT",
    // Everything it owns is rejected or dropped, forwarded packets included.
    forwards_untranslated: false,
};

fn v1_33_node_settings(family: IpFamily) -> String {
    // Localhost NodePorts exist for IPv4 only (route_localnet has no IPv6 twin).
    let localhost = family == IpFamily::V4;
    format!(
        "localhostNodePorts: {localhost}\n\
         iptablesHasRandomFully: true\n\
         conntrackTCPBeLiberal: false\n\
         nfacctCounters:\n  ct_state_invalid_dropped_pkts: true\n  localhost_nps_accepted_pkts: true\n"
    )
}

/// A [`World`] of the v1.33 layout (no node-local Service addresses).
fn world(
    family: IpFamily,
    backend: Backend,
    pods: &[&str],
    cluster: impl FnOnce(&Topology) -> Vec<Value>,
) -> World {
    World::new(&V1_33, family, backend, pods, &[], cluster)
}

// ---------------------------------------------------------------------------
// 1. ClusterIP with three endpoints

fn cluster_ip_world(family: IpFamily, backend: Backend, node_port: u16) -> World {
    world(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
        web_cluster(t, family, node_port)
    })
}

/// Balancing from a pod (pod-d, not an endpoint): 60 TCP connections and 45
/// UDP exchanges reach all three endpoints, which see pod-d's own address;
/// conntrack holds the DNAT of each. Returns a summary.
fn check_balancing(w: &World, cip: IpAddr) -> String {
    let counts = check_balancing_from_pod_d(w, cip, [(Proto::Tcp, 60), (Proto::Udp, 45)]);
    let per_pod: Vec<String> = ["pod-a", "pod-b", "pod-c"]
        .iter()
        .map(|p| format!("{}", w.server(p).peers().len()))
        .collect();
    format!(
        "{}: 60 tcp + 45 udp from a pod over all 3 endpoints (per pod {}), all {}+{} flows DNATed in conntrack",
        w.label(),
        per_pod.join("/"),
        counts[0],
        counts[1]
    )
}

#[test]
fn cluster_ip_balances_over_three_endpoints() {
    if !kernel_tests_enabled("cluster_ip_balances_over_three_endpoints") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in IPV4_BOTH {
        let w = cluster_ip_world(family, backend, 0);
        let cip = w.svc_ip(10);
        let mut line = check_balancing(&w, cip);
        // Off-cluster sources are masqueraded (`! -s 192.0.2.0/24`), the node too.
        check_off_cluster_sources_masqueraded(&w, cip);
        line.push_str("; client and node masqueraded");
        summary.push(line);
    }
    println!("cluster IP: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 2. NodePort, eTP Cluster

#[test]
fn node_port_from_client_is_masqueraded() {
    if !kernel_tests_enabled("node_port_from_client_is_masqueraded") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in IPV4_BOTH {
        let w = world(family, backend, &["pod-a", "pod-b"], |t| shop_cluster(t, family));
        w.topology.enable_route_localnet().expect("route_localnet");
        let node_ip = w.node_ip();
        check_node_port_from_client(&w);
        // From a pod to the node's NodePort: masqueraded as well (eTP Cluster).
        let from_pod = w.probe(w.pod_ns("pod-a"), Proto::Tcp, None, node_ip, 30080, ANSWER);
        w.expect_reply(
            "tcp from pod-a to the NodePort",
            &from_pod,
            None,
            w.node_pod_side(),
        );
        // Localhost NodePort from the node itself, counted by nfacct.
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let before = nfacct_packets(&w.topology.node, "localhost_nps_accepted_pkts").expect("nfacct");
        let local = w.probe(&w.topology.node, Proto::Tcp, None, localhost, 30080, ANSWER);
        w.expect_reply(
            "tcp from the node to 127.0.0.1:NodePort",
            &local,
            None,
            w.node_pod_side(),
        );
        let after = nfacct_packets(&w.topology.node, "localhost_nps_accepted_pkts").expect("nfacct");
        assert!(
            after > before,
            "{}: localhost_nps_accepted_pkts did not count",
            w.label()
        );
        summary.push(format!(
            "{}: 20 tcp + udp from the client to {node_ip}:30080 reach both pods as {}, pod and 127.0.0.1 too (nfacct {after})",
            w.label(),
            w.node_pod_side()
        ));
    }
    println!("NodePort: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 3. LoadBalancer IP, with and without loadBalancerSourceRanges

#[test]
fn load_balancer_ip_with_and_without_source_ranges() {
    if !kernel_tests_enabled("load_balancer_ip_with_and_without_source_ranges") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        // 203.0.113.0/25 admits .2, not .130; 2001:db8:1::/120 admits ::2, not ::130.
        let allowed = if family == IpFamily::V4 {
            "203.0.113.0/25"
        } else {
            "2001:db8:1::/120"
        };
        let w = world(family, backend, &["pod-a", "pod-b"], |t| {
            vec![
                load_balancer("lb-open", family, 30, svc_ip(family, 100), 30100, &[]),
                slice(
                    "lb-open",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &endpoints(t, &[("pod-a", "node-a")]),
                ),
                load_balancer("lb-ranged", family, 31, svc_ip(family, 101), 30101, &[allowed]),
                slice(
                    "lb-ranged",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &endpoints(t, &[("pod-b", "node-a")]),
                ),
            ]
        });
        let client = &w.topology.client;
        let (open, ranged) = (w.svc_ip(100), w.svc_ip(101));
        let masq = w.node_pod_side();
        let r = w.probe(client, Proto::Tcp, Some(w.client_ip()), open, 80, ANSWER);
        w.expect_reply("client -> LB IP without ranges", &r, Some("pod-a"), masq);
        let r = w.probe(client, Proto::Tcp, Some(w.client2_ip()), open, 80, ANSWER);
        w.expect_reply("second client -> LB IP without ranges", &r, Some("pod-a"), masq);
        let r = w.probe(client, Proto::Tcp, Some(w.client_ip()), ranged, 80, ANSWER);
        w.expect_reply("allowed client -> LB IP with ranges", &r, Some("pod-b"), masq);

        let seen_before = w.server("pod-b").peers().len();
        let start = Instant::now();
        let r = w.probe(client, Proto::Tcp, Some(w.client2_ip()), ranged, 80, DROPPED);
        w.expect(
            "denied client -> LB IP with ranges is dropped",
            &r,
            &ProbeResult::Timeout,
        );
        let waited = start.elapsed();
        assert_eq!(
            w.server("pod-b").peers().len(),
            seen_before,
            "{}: pod-b was reached",
            w.label()
        );
        let drops = w.count("filter", "KUBE-PROXY-FIREWALL", &[&w.dst_match(ranged)]);
        assert!(
            drops > 0,
            "{}: KUBE-PROXY-FIREWALL dropped nothing\n{}",
            w.label(),
            w.dump()
        );
        // NodePorts are not subject to loadBalancerSourceRanges.
        let r = w.probe(
            client,
            Proto::Tcp,
            Some(w.client2_ip()),
            w.node_ip(),
            30101,
            ANSWER,
        );
        w.expect_reply(
            "denied client -> NodePort of the ranged LB",
            &r,
            Some("pod-b"),
            masq,
        );
        summary.push(format!(
            "{}: open LB reached, {allowed} admitted {} and dropped {} ({drops} packets in {waited:?})",
            w.label(),
            w.client_ip(),
            w.client2_ip()
        ));
    }
    println!("LoadBalancer: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 4. externalIPs

#[test]
fn external_ip_reaches_a_pod() {
    if !kernel_tests_enabled("external_ip_reaches_a_pod") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        let w = world(family, backend, &["pod-a", "pod-b"], |t| {
            external_ip_cluster(t, family, &[svc_ip(family, 200)])
        });
        let external = w.svc_ip(200);
        let tcp = w.probes(&w.topology.client, 10, Proto::Tcp, None, external, 80);
        let (pods, peers) = w.replies("tcp from the client to the external IP", &tcp);
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: external traffic is masqueraded",
            w.label()
        );
        let udp = w.probe(&w.topology.client, Proto::Udp, None, external, 80, ANSWER);
        w.expect_reply(
            "udp from the client to the external IP",
            &udp,
            None,
            w.node_pod_side(),
        );
        let r = w.probe(w.pod_ns("pod-a"), Proto::Tcp, None, external, 80, ANSWER);
        w.expect_reply("tcp from pod-a to the external IP", &r, None, w.node_pod_side());
        summary.push(format!(
            "{}: {external}:80 tcp+udp reached {} as {}",
            w.label(),
            pods.into_iter().collect::<Vec<_>>().join("+"),
            w.node_pod_side()
        ));
    }
    println!("externalIPs: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 5. externalTrafficPolicy Local

#[test]
fn external_traffic_policy_local_keeps_client_ip_or_drops() {
    if !kernel_tests_enabled("external_traffic_policy_local_keeps_client_ip_or_drops") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
            local_policy_cluster(t, family)
        });
        let client = &w.topology.client;
        let node_ip = w.node_ip();
        // A local endpoint: only it answers, and it sees the real client.
        let tcp = w.probes(client, 10, Proto::Tcp, None, node_ip, 30200);
        let (pods, peers) = w.replies("client -> NodePort with a local endpoint", &tcp);
        assert_eq!(
            pods,
            set(["pod-a"]),
            "{}: eTP Local uses the local endpoint only",
            w.label()
        );
        assert_eq!(
            peers,
            ips([w.client_ip()]),
            "{}: eTP Local keeps the client IP\n{}",
            w.label(),
            w.dump()
        );
        let lb = w.probes(client, 5, Proto::Tcp, None, w.svc_ip(110), 80);
        let (pods, peers) = w.replies("client -> LB IP with a local endpoint", &lb);
        assert_eq!(
            pods,
            set(["pod-a"]),
            "{}: eTP Local LB uses the local endpoint only",
            w.label()
        );
        assert_eq!(
            peers,
            ips([w.client_ip()]),
            "{}: eTP Local LB keeps the client IP",
            w.label()
        );

        // Only a remote endpoint: outside traffic is dropped.
        let seen_before = w.server("pod-c").peers().len();
        let r = w.probe(client, Proto::Tcp, None, node_ip, 30201, DROPPED);
        w.expect(
            "client -> NodePort with only a remote endpoint",
            &r,
            &ProbeResult::Timeout,
        );
        let r = w.probe(client, Proto::Tcp, None, w.svc_ip(111), 80, DROPPED);
        w.expect(
            "client -> LB IP with only a remote endpoint",
            &r,
            &ProbeResult::Timeout,
        );
        assert_eq!(
            w.server("pod-c").peers().len(),
            seen_before,
            "{}: pod-c was reached",
            w.label()
        );
        let np_drops = w.count("filter", "KUBE-EXTERNAL-SERVICES", &["--dport 30201"]);
        let lb_drops = w.count("filter", "KUBE-EXTERNAL-SERVICES", &[&w.dst_match(w.svc_ip(111))]);
        assert!(
            np_drops > 0 && lb_drops > 0,
            "{}: KUBE-EXTERNAL-SERVICES drops: NodePort {np_drops}, LB {lb_drops}\n{}",
            w.label(),
            w.dump()
        );
        // The cluster IP, pods and the node itself still reach the remote endpoint.
        let r = w.probe(client, Proto::Tcp, None, w.svc_ip(51), 80, ANSWER);
        w.expect_reply(
            "client -> cluster IP of local-remote",
            &r,
            Some("pod-c"),
            w.node_pod_side(),
        );
        let r = w.probe(w.pod_ns("pod-d"), Proto::Tcp, None, node_ip, 30201, ANSWER);
        w.expect_reply(
            "pod-d -> NodePort of local-remote",
            &r,
            Some("pod-c"),
            w.pod_ip("pod-d"),
        );
        let r = w.probe(&w.topology.node, Proto::Tcp, None, node_ip, 30201, ANSWER);
        w.expect_reply(
            "node -> its own NodePort of local-remote",
            &r,
            Some("pod-c"),
            w.node_pod_side(),
        );
        summary.push(format!(
            "{}: local endpoint sees {}; remote-only NodePort and LB dropped ({np_drops}+{lb_drops} packets), reachable from pod, node and cluster IP",
            w.label(),
            w.client_ip()
        ));
    }
    println!("eTP Local: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 6. Hairpin

#[test]
fn hairpin_to_own_service_is_masqueraded() {
    if !kernel_tests_enabled("hairpin_to_own_service_is_masqueraded") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        let w = world(family, backend, &["pod-a", "pod-b"], |t| {
            hairpin_cluster(t, family)
        });
        let cip = w.svc_ip(60);
        for proto in [Proto::Tcp, Proto::Udp] {
            check_hairpin(&w, proto, cip);
        }
        summary.push(format!(
            "{}: pod-a via its own Service sees {}, pod-b is seen as itself",
            w.label(),
            w.node_pod_side()
        ));
    }
    println!("hairpin: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 7. Session affinity ClientIP

#[test]
fn session_affinity_client_ip_sticks_to_one_pod() {
    if !kernel_tests_enabled("session_affinity_client_ip_sticks_to_one_pod") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c"], |t| {
            sticky_cluster(t, family)
        });
        let cip = w.svc_ip(70);
        let mut chosen = Vec::new();
        for (src, proto) in [
            (w.client_ip(), Proto::Tcp),
            (w.client2_ip(), Proto::Tcp),
            (w.client_ip(), Proto::Udp),
        ] {
            let who = src.to_string();
            let pod = check_sticks_to_one_pod(&w, &who, &w.topology.client, Some(src), proto, cip, 20);
            chosen.push(format!("{} {src}->{pod}", proto.as_str()));
        }
        summary.push(format!("{}: 20 each stuck: {}", w.label(), chosen.join(", ")));
    }
    println!("session affinity: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 8. No endpoints

#[test]
fn no_endpoints_is_refused_at_once() {
    if !kernel_tests_enabled("no_endpoints_is_refused_at_once") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in ALL {
        let w = world(family, backend, &["pod-a"], |_| {
            vec![
                service(
                    "empty",
                    family,
                    json!({
                        "type": "ClusterIP",
                        "clusterIP": svc_ip(family, 80).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice("empty", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &[]),
            ]
        });
        let cip = w.svc_ip(80);
        let mut slowest = Duration::ZERO;
        for (from, who) in [
            (&w.topology.client, "client"),
            (w.pod_ns("pod-a"), "pod-a"),
            (&w.topology.node, "node"),
        ] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let what = format!(
                    "{} from the {who} to a cluster IP without endpoints",
                    proto.as_str()
                );
                // The node's own packets meet the REJECT in OUTPUT (the rule
                // counter below shows it for its datagram too).
                let took = w.expect_refused_at_once(&what, from, proto, cip, 80, who == "node");
                slowest = slowest.max(took);
            }
        }
        let mut rejected = Vec::new();
        for proto in ["tcp", "udp"] {
            let comment = format!("\"paths/empty:{proto} has no endpoints\"");
            let packets = w.count("filter", "KUBE-SERVICES", &[&comment]);
            assert!(
                packets >= 3,
                "{}: the {proto} REJECT counted {packets} packets, want one per source\n{}",
                w.label(),
                w.dump()
            );
            rejected.push(packets.to_string());
        }
        summary.push(format!(
            "{}: tcp+udp from client, pod, node rejected at once (slowest {slowest:?}, REJECT counted {})",
            w.label(),
            rejected.join("+")
        ));
    }
    println!("no endpoints: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 9. IPv6: ClusterIP and NodePort through ip6tables

#[test]
fn ipv6_cluster_ip_and_node_port() {
    if !kernel_tests_enabled("ipv6_cluster_ip_and_node_port") {
        return;
    }
    let mut summary = Vec::new();
    for (family, backend) in IPV6_BOTH {
        let w = cluster_ip_world(family, backend, 30300);
        let mut line = check_balancing(&w, w.svc_ip(10));
        let tcp = w.probes(&w.topology.client, 20, Proto::Tcp, None, w.node_ip(), 30300);
        let (pods, peers) = w.replies("tcp from the client to the IPv6 NodePort", &tcp);
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: NodePort traffic is masqueraded",
            w.label()
        );
        let udp = w.probe(&w.topology.client, Proto::Udp, None, w.node_ip(), 30300, ANSWER);
        w.expect_reply(
            "udp from the client to the IPv6 NodePort",
            &udp,
            None,
            w.node_pod_side(),
        );
        line.push_str(&format!(
            "; [{}]:30300 reached {} as {}",
            w.node_ip(),
            pods.into_iter().collect::<Vec<_>>().join("+"),
            w.node_pod_side()
        ));
        summary.push(line);
    }
    println!("IPv6: {}", summary.join(" | "));
}
