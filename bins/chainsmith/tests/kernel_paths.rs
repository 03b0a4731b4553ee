//! Real packets through compiled rules: every Service packet path, in real
//! network namespaces, on the nf_tables and the legacy backend, IPv4 and IPv6.
//!
//! Each scenario writes Services and EndpointSlices, compiles them with the
//! real `chainsmith compile` for node-a (node IP 203.0.113.1 / 2001:db8:1::1,
//! ClusterCIDR detector on the pod network), applies the payload in the node
//! namespace of a [`Topology`] as kube-proxy does ([`apply_kube_proxy_rules`]:
//! nfacct counters, `iptables-restore --noflush`, built-in jumps with
//! `-C`/`-I`), starts an echo server in every pod, and probes from the client,
//! the node and the pods. The assertions are on what the kernel did: which
//! pod answered, which source address it saw (masqueraded or not), refused
//! vs. dropped, the DROP rules' packet counters and the conntrack entries.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chainsmith_testkit::{
    Backend, EchoServer, IpFamily, Pod, ProbeResult, Proto, Topology, apply_kube_proxy_rules,
    kernel_tests_enabled, nfacct_packets, probe, probe_from, probe_here, rule_packets,
};
use serde_json::{Value, json};

/// The port every pod's echo server listens on (the Services' targetPort).
const POD_PORT: u16 = 8080;
/// How long an answer may take.
const ANSWER: Duration = Duration::from_secs(2);
/// How long we wait before calling a packet dropped.
const DROPPED: Duration = Duration::from_millis(500);

const IPV4_BOTH: [(IpFamily, Backend); 2] = [(IpFamily::V4, Backend::Nft), (IpFamily::V4, Backend::Legacy)];
const IPV6_BOTH: [(IpFamily, Backend); 2] = [(IpFamily::V6, Backend::Nft), (IpFamily::V6, Backend::Legacy)];
const ALL: [(IpFamily, Backend); 4] = [
    (IpFamily::V4, Backend::Nft),
    (IpFamily::V4, Backend::Legacy),
    (IpFamily::V6, Backend::Nft),
    (IpFamily::V6, Backend::Legacy),
];

// ---------------------------------------------------------------------------
// Cluster YAML (written as JSON values; JSON is YAML)

fn family_name(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// A Service address (cluster IP, LB IP, external IP): 198.51.100.N or
/// 2001:db8:3::N.
fn svc_ip(family: IpFamily, n: u8) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, u16::from(n))),
    }
}

/// A Service port `port` -> `POD_PORT`, with a NodePort unless 0.
fn port(name: &str, proto: Proto, port: u16, node_port: u16) -> Value {
    let mut value = json!({
        "name": name,
        "protocol": proto.as_str().to_uppercase(),
        "port": port,
        "targetPort": POD_PORT,
    });
    if node_port != 0 {
        value["nodePort"] = json!(node_port);
    }
    value
}

/// A Service in namespace `paths`; `spec` needs `type`, `clusterIP` and
/// `ports` (ipFamilies and clusterIPs are filled in), `lb_ips` become the
/// status' load-balancer ingress.
fn service(name: &str, family: IpFamily, mut spec: Value, lb_ips: &[IpAddr]) -> Value {
    spec["clusterIPs"] = json!([spec["clusterIP"].clone()]);
    spec["ipFamilies"] = json!([family_name(family)]);
    spec["selector"] = json!({"app": name});
    let ingress: Vec<Value> = lb_ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "paths"},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress}},
    })
}

/// The EndpointSlice of `service`: each endpoint is a pod on a node.
fn slice(service: &str, family: IpFamily, ports: &[(&str, Proto)], endpoints: &[(&Pod, &str)]) -> Value {
    let ipv6 = family == IpFamily::V6;
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": "paths",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": family_name(family),
        "endpoints": endpoints.iter().map(|(pod, node)| json!({
            "addresses": [pod.ip(ipv6).to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": "paths", "name": pod.name},
        })).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(name, proto)| json!({
            "name": name,
            "protocol": proto.as_str().to_uppercase(),
            "port": POD_PORT,
        })).collect::<Vec<_>>(),
    })
}

/// node-a's settings for this topology: production defaults, the node IP on
/// the client link, the pod network as ClusterCIDR.
fn node_yaml(topology: &Topology, family: IpFamily) -> String {
    let (node_ip, cidr, localhost) = match family {
        IpFamily::V4 => (Topology::NODE_IPV4.to_string(), Topology::POD_CIDR_IPV4, true),
        IpFamily::V6 => (Topology::NODE_IPV6.to_string(), Topology::POD_CIDR_IPV6, false),
    };
    let addresses: String = topology
        .node_interface_addresses()
        .iter()
        .map(|(interface, cidr)| format!("- interface: {interface}\n  cidr: {cidr}\n"))
        .collect();
    format!(
        "nodeName: node-a\n\
         ipFamily: {family}\n\
         nodeIP: {node_ip}\n\
         interfaceAddresses:\n{addresses}\
         localTrafficDetector:\n  mode: ClusterCIDR\n  cidr: {cidr}\n\
         masqueradeBit: 14\n\
         masqueradeAll: false\n\
         localhostNodePorts: {localhost}\n\
         nodePortAddresses: []\n\
         iptablesHasRandomFully: true\n\
         conntrackTCPBeLiberal: false\n\
         nfacctCounters:\n  ct_state_invalid_dropped_pkts: true\n  localhost_nps_accepted_pkts: true\n",
        family = family_name(family),
    )
}

/// `chainsmith compile --node node.yaml cluster.yaml`, which must not warn.
fn compile(node: &str, objects: &[Value]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster: String = objects
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string_pretty(o).expect("json")))
        .collect();
    let (node_path, cluster_path) = (dir.path().join("node.yaml"), dir.path().join("cluster.yaml"));
    std::fs::write(&node_path, node).expect("write node.yaml");
    std::fs::write(&cluster_path, &cluster).expect("write cluster.yaml");
    let output = common::chainsmith_in_fixtures(&[
        "compile",
        "--node",
        node_path.to_str().expect("path"),
        cluster_path.to_str().expect("path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim().is_empty(),
        "compile warned:\n{stderr}\ncluster:\n{cluster}"
    );
    String::from_utf8(output.stdout).expect("utf8")
}

// ---------------------------------------------------------------------------
// A running world: topology + rules + echo servers

struct World {
    /// Declared first: stopped before the namespaces go.
    servers: Vec<EchoServer>,
    topology: Topology,
    family: IpFamily,
    backend: Backend,
    payload: String,
    kernel_rules: std::cell::OnceCell<chainsmith_tracer::Ruleset>,
    /// Probes whose outcome the tracer predicted.
    agreements: std::cell::Cell<usize>,
}

impl World {
    /// Builds the topology with `pods`, compiles what `cluster` returns for
    /// it, applies the rules, starts an echo server in every pod.
    fn new(
        family: IpFamily,
        backend: Backend,
        pods: &[&str],
        cluster: impl FnOnce(&Topology) -> Vec<Value>,
    ) -> World {
        let topology = Topology::new(pods).expect("topology");
        let objects = cluster(&topology);
        let payload = compile(&node_yaml(&topology, family), &objects);
        apply_kube_proxy_rules(&topology.node, &payload, family, backend)
            .unwrap_or_else(|e| panic!("applying the rules ({family:?}, {backend:?}): {e}\n{payload}"));
        let servers = topology
            .pods
            .iter()
            .map(|pod| EchoServer::start(&pod.netns, &pod.name, POD_PORT).expect("echo server"))
            .collect();
        World {
            servers,
            topology,
            family,
            backend,
            payload,
            kernel_rules: std::cell::OnceCell::new(),
            agreements: std::cell::Cell::new(0),
        }
    }

    fn label(&self) -> String {
        format!(
            "{}/{}",
            match self.family {
                IpFamily::V4 => "ipv4",
                IpFamily::V6 => "ipv6",
            },
            self.backend.as_str()
        )
    }

    fn ipv6(&self) -> bool {
        self.family == IpFamily::V6
    }

    fn pod(&self, name: &str) -> &Pod {
        self.topology.pod(name).expect("pod")
    }

    fn pod_ip(&self, name: &str) -> IpAddr {
        self.pod(name).ip(self.ipv6())
    }

    fn server(&self, name: &str) -> &EchoServer {
        self.servers.iter().find(|s| s.pod() == name).expect("server")
    }

    fn node_ip(&self) -> IpAddr {
        if self.ipv6() {
            Topology::NODE_IPV6.into()
        } else {
            Topology::NODE_IPV4.into()
        }
    }

    fn node_pod_side(&self) -> IpAddr {
        if self.ipv6() {
            Topology::NODE_POD_SIDE_IPV6.into()
        } else {
            Topology::NODE_POD_SIDE_IPV4.into()
        }
    }

    fn client_ip(&self) -> IpAddr {
        if self.ipv6() {
            Topology::CLIENT_IPV6.into()
        } else {
            Topology::CLIENT_IPV4.into()
        }
    }

    fn client2_ip(&self) -> IpAddr {
        if self.ipv6() {
            Topology::CLIENT2_IPV6.into()
        } else {
            Topology::CLIENT2_IPV4.into()
        }
    }

    fn svc_ip(&self, n: u8) -> IpAddr {
        svc_ip(self.family, n)
    }

    /// `-d IP/32` (`/128`) as iptables-save prints it.
    fn dst_match(&self, ip: IpAddr) -> String {
        format!("-d {ip}/{}", if self.ipv6() { 128 } else { 32 })
    }

    /// One probe from `from` (optionally from the source `src`); the tracer's
    /// answer for the same packet, on the rules the kernel holds, must agree
    /// with what the kernel did.
    fn probe(
        &self,
        from: &chainsmith_testkit::Netns,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> ProbeResult {
        let result = match src {
            Some(src) => probe_from(from, proto, src, dst, port, timeout),
            None => probe(from, proto, dst, port, timeout),
        };
        self.agree(from, proto, src, dst, port, &result);
        result
    }

    /// The rules the node's kernel holds, as the tracer reads `iptables-save`.
    fn kernel_rules(&self) -> &chainsmith_tracer::Ruleset {
        self.kernel_rules.get_or_init(|| {
            let save = match (self.family, self.backend) {
                (IpFamily::V4, Backend::Nft) => "iptables-nft-save",
                (IpFamily::V4, Backend::Legacy) => "iptables-legacy-save",
                (IpFamily::V6, Backend::Nft) => "ip6tables-nft-save",
                (IpFamily::V6, Backend::Legacy) => "ip6tables-legacy-save",
            };
            let dump = self.topology.node.run(save, &[]).expect("iptables-save");
            chainsmith_tracer::Ruleset::from_dump(&dump).expect("the tracer reads the kernel's dump")
        })
    }

    /// Asserts that `chainsmith_tracer` predicts `result`: the answering pod is
    /// among the DNAT destinations, masquerading exactly when the pod saw
    /// another address than the sender's; a timeout is a DROP, a refusal a
    /// REJECT.
    fn agree(
        &self,
        from: &chainsmith_testkit::Netns,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
        result: &ProbeResult,
    ) {
        use chainsmith_tracer::{Node, Origin, Packet, Verdict, trace};
        let origin = if from.name() == self.topology.node.name() {
            Origin::FromNode
        } else {
            Origin::FromOutside
        };
        // The address the kernel picks when the probe does not bind one.
        let src = src.unwrap_or_else(|| {
            let route = from
                .run("ip", &["-o", "route", "get", &dst.to_string()])
                .expect("ip route get");
            let words: Vec<&str> = route.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| *w == "src")
                .expect("route has a source");
            words[at + 1].parse().expect("source address")
        });
        let protocol = match proto {
            Proto::Tcp => chainsmith_model::Protocol::Tcp,
            Proto::Udp => chainsmith_model::Protocol::Udp,
        };
        let local: Vec<IpAddr> = self
            .topology
            .node_interface_addresses()
            .iter()
            .filter_map(|(_, cidr)| cidr.split('/').next()?.parse().ok())
            .collect();
        let traced = trace(
            self.kernel_rules(),
            &Packet::new(src, dst, protocol, port, origin),
            &Node::new(local),
        );
        let verdicts: Vec<String> = traced.outcomes.iter().map(|o| o.summary()).collect();
        let what = format!("{} {proto:?} {src} -> {dst}:{port} ({origin:?})", self.label());
        match result {
            ProbeResult::Reply { pod, peer_ip } => {
                let pod_ip = self.pod_ip(pod);
                let outcome = traced.outcomes.iter().find(|o| {
                    o.nat_destination
                        .as_deref()
                        .is_some_and(|to| to.contains(&pod_ip.to_string()))
                });
                let Some(outcome) = outcome else {
                    panic!("{what}: the kernel delivered to {pod} ({pod_ip}), the tracer says {verdicts:?}");
                };
                assert!(
                    matches!(outcome.verdict, Verdict::Accept | Verdict::Pass),
                    "{what}: {verdicts:?}"
                );
                assert_eq!(
                    outcome.masquerade,
                    *peer_ip != src,
                    "{what}: {pod} saw {peer_ip}; the tracer says {verdicts:?}"
                );
            }
            ProbeResult::Timeout => {
                assert!(
                    traced.outcomes.iter().all(|o| o.verdict == Verdict::Drop),
                    "{what}: timed out, the tracer says {verdicts:?}"
                );
            }
            ProbeResult::Refused => {
                assert!(
                    traced.outcomes.iter().all(|o| o.verdict == Verdict::Reject),
                    "{what}: refused, the tracer says {verdicts:?}"
                );
            }
            // A REJECT in OUTPUT fails the node's own UDP send with EPERM.
            ProbeResult::Other(error) if origin == Origin::FromNode && error.contains("not permitted") => {
                assert!(
                    traced.outcomes.iter().all(|o| o.verdict == Verdict::Reject),
                    "{what}: {error}, the tracer says {verdicts:?}"
                );
            }
            other => panic!("{what}: {other:?} has no tracer counterpart; the tracer says {verdicts:?}"),
        }
        self.agreements.set(self.agreements.get() + 1);
    }

    /// `n` probes from one namespace (one thread), optionally from `src`.
    fn probes(
        &self,
        from: &chainsmith_testkit::Netns,
        n: usize,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
    ) -> Vec<ProbeResult> {
        let results: Vec<ProbeResult> = from
            .enter(|| {
                (0..n)
                    .map(|_| probe_here(proto, src, dst, port, ANSWER))
                    .collect()
            })
            .expect("enter");
        for result in &results {
            self.agree(from, proto, src, dst, port, result);
        }
        results
    }

    /// Packets counted by the `table`/`chain` rules containing `needle`.
    fn packets(&self, table: &str, chain: &str, needle: &str) -> u64 {
        rule_packets(
            &self.topology.node,
            self.family,
            self.backend,
            table,
            chain,
            needle,
        )
        .expect("counters")
    }

    /// What the node's kernel holds, for failure messages.
    fn dump(&self) -> String {
        let save = match (self.family, self.backend) {
            (IpFamily::V4, Backend::Nft) => "iptables-nft-save",
            (IpFamily::V4, Backend::Legacy) => "iptables-legacy-save",
            (IpFamily::V6, Backend::Nft) => "ip6tables-nft-save",
            (IpFamily::V6, Backend::Legacy) => "ip6tables-legacy-save",
        };
        let saved = self
            .topology
            .node
            .run(save, &["-c"])
            .unwrap_or_else(|e| e.to_string());
        let conntrack = self
            .topology
            .node
            .run(
                "conntrack",
                &["-L", "-f", if self.ipv6() { "ipv6" } else { "ipv4" }],
            )
            .unwrap_or_else(|e| e.to_string());
        format!(
            "--- payload\n{}--- kernel ({})\n{saved}--- conntrack\n{conntrack}",
            self.payload,
            self.label()
        )
    }

    /// Asserts every result is a reply and returns (pods that answered,
    /// peer addresses they saw).
    fn replies(&self, what: &str, results: &[ProbeResult]) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
        let mut pods = BTreeSet::new();
        let mut peers = BTreeSet::new();
        for result in results {
            match result {
                ProbeResult::Reply { pod, peer_ip } => {
                    pods.insert(pod.clone());
                    peers.insert(*peer_ip);
                }
                other => panic!(
                    "{} {what}: expected a reply, got {other:?}\n{}",
                    self.label(),
                    self.dump()
                ),
            }
        }
        (pods, peers)
    }

    /// Asserts one reply from `pod` that saw `peer` (`None`: any pod).
    fn expect_reply(&self, what: &str, result: &ProbeResult, pod: Option<&str>, peer: IpAddr) {
        let ok = match result {
            ProbeResult::Reply { pod: p, peer_ip } => pod.is_none_or(|want| want == p) && *peer_ip == peer,
            _ => false,
        };
        assert!(
            ok,
            "{} {what}: expected a reply from {} seeing {peer}, got {result:?}\n{}",
            self.label(),
            pod.unwrap_or("any pod"),
            self.dump()
        );
    }

    fn expect(&self, what: &str, result: &ProbeResult, want: &ProbeResult) {
        assert_eq!(result, want, "{} {what}\n{}", self.label(), self.dump());
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            println!(
                "{}: the tracer predicted all {} probes",
                self.label(),
                self.agreements.get()
            );
        }
    }
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ips<const N: usize>(items: [IpAddr; N]) -> BTreeSet<IpAddr> {
    items.into_iter().collect()
}

// ---------------------------------------------------------------------------
// 1. ClusterIP with three endpoints

fn cluster_ip_world(family: IpFamily, backend: Backend, node_port: u16) -> World {
    World::new(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
        let eps = [
            (t.pod("pod-a").unwrap(), "node-a"),
            (t.pod("pod-b").unwrap(), "node-a"),
            (t.pod("pod-c").unwrap(), "node-b"),
        ];
        let ty = if node_port == 0 { "ClusterIP" } else { "NodePort" };
        vec![
            service(
                "web",
                family,
                json!({
                    "type": ty,
                    "clusterIP": svc_ip(family, 10).to_string(),
                    "ports": [port("tcp", Proto::Tcp, 80, node_port), port("udp", Proto::Udp, 80, node_port)],
                }),
                &[],
            ),
            slice("web", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
        ]
    })
}

/// Balancing from a pod (pod-d, not an endpoint): 60 TCP connections and 45
/// UDP exchanges reach all three endpoints, which see pod-d's own address;
/// conntrack holds the DNAT of each. Returns a summary.
fn check_balancing(w: &World, cip: IpAddr) -> String {
    let pod_d = w.pod("pod-d");
    let three = set(["pod-a", "pod-b", "pod-c"]);
    let tcp = w.probes(&pod_d.netns, 60, Proto::Tcp, None, cip, 80);
    let (pods, peers) = w.replies("tcp from pod-d to the cluster IP", &tcp);
    assert_eq!(pods, three, "{}: tcp balancing\n{}", w.label(), w.dump());
    assert_eq!(
        peers,
        ips([w.pod_ip("pod-d")]),
        "{}: pod traffic is not masqueraded",
        w.label()
    );
    let udp = w.probes(&pod_d.netns, 45, Proto::Udp, None, cip, 80);
    let (pods, peers) = w.replies("udp from pod-d to the cluster IP", &udp);
    assert_eq!(pods, three, "{}: udp balancing\n{}", w.label(), w.dump());
    assert_eq!(
        peers,
        ips([w.pod_ip("pod-d")]),
        "{}: pod traffic is not masqueraded",
        w.label()
    );

    // conntrack: for every flow a pod saw from pod-d (source port -> pod),
    // the node holds the DNAT: original tuple pod-d:port -> cluster IP:80,
    // reply tuple from that pod's address and port. (Two probes may share a
    // source port, and so one flow.)
    let pod_d_ip = w.pod_ip("pod-d");
    let mut counts = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let mut seen = BTreeMap::new();
        for server in &w.servers {
            let pod_ip = w.pod_ip(server.pod());
            for peer in server.peers() {
                if peer.proto == proto && peer.ip == pod_d_ip {
                    seen.insert(peer.port, pod_ip);
                }
            }
        }
        let family = if w.ipv6() { "ipv6" } else { "ipv4" };
        let listed = w
            .topology
            .node
            .run(
                "conntrack",
                &[
                    "-L",
                    "-f",
                    family,
                    "-p",
                    proto.as_str(),
                    "--orig-dst",
                    &cip.to_string(),
                ],
            )
            .expect("conntrack -L");
        let mut tracked = BTreeMap::new();
        for entry in chainsmith_node::conntrack::parse_entries(&listed) {
            let (orig, reply) = (entry.original, entry.reply);
            if orig.src == pod_d_ip && orig.dst == cip && orig.dport == 80 && reply.sport == POD_PORT {
                assert_eq!(reply.dst, pod_d_ip, "{}: reply tuple {reply:?}", w.label());
                tracked.insert(orig.sport, reply.src);
            }
        }
        assert_eq!(
            tracked,
            seen,
            "{}: {} conntrack DNAT entries (source port -> endpoint) vs. flows the pods saw\n{}",
            w.label(),
            proto.as_str(),
            w.dump()
        );
        counts.push(tracked.len());
    }
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
        let client = w.probes(&w.topology.client, 6, Proto::Tcp, None, cip, 80);
        let (_, peers) = w.replies("tcp from the client to the cluster IP", &client);
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: client traffic is masqueraded",
            w.label()
        );
        let node = w.probe(&w.topology.node, Proto::Tcp, None, cip, 80, ANSWER);
        w.expect_reply(
            "tcp from the node to the cluster IP",
            &node,
            None,
            w.node_pod_side(),
        );
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
        let w = World::new(family, backend, &["pod-a", "pod-b"], |t| {
            let eps = [
                (t.pod("pod-a").unwrap(), "node-a"),
                (t.pod("pod-b").unwrap(), "node-b"),
            ];
            vec![
                service(
                    "shop",
                    family,
                    json!({
                        "type": "NodePort",
                        "externalTrafficPolicy": "Cluster",
                        "clusterIP": svc_ip(family, 20).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30080), port("udp", Proto::Udp, 80, 30080)],
                    }),
                    &[],
                ),
                slice("shop", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
            ]
        });
        w.topology.enable_route_localnet().expect("route_localnet");
        let node_ip = w.node_ip();
        let tcp = w.probes(&w.topology.client, 20, Proto::Tcp, None, node_ip, 30080);
        let (pods, peers) = w.replies("tcp from the client to the NodePort", &tcp);
        assert_eq!(
            pods,
            set(["pod-a", "pod-b"]),
            "{}: NodePort balancing\n{}",
            w.label(),
            w.dump()
        );
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: NodePort traffic is masqueraded",
            w.label()
        );
        let udp = w.probe(&w.topology.client, Proto::Udp, None, node_ip, 30080, ANSWER);
        w.expect_reply(
            "udp from the client to the NodePort",
            &udp,
            None,
            w.node_pod_side(),
        );
        // From a pod to the node's NodePort: masqueraded as well (eTP Cluster).
        let from_pod = w.probe(&w.pod("pod-a").netns, Proto::Tcp, None, node_ip, 30080, ANSWER);
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
        let w = World::new(family, backend, &["pod-a", "pod-b"], |t| {
            vec![
                service(
                    "lb-open",
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "clusterIP": svc_ip(family, 30).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30100)],
                    }),
                    &[svc_ip(family, 100)],
                ),
                slice(
                    "lb-open",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[(t.pod("pod-a").unwrap(), "node-a")],
                ),
                service(
                    "lb-ranged",
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "clusterIP": svc_ip(family, 31).to_string(),
                        "loadBalancerSourceRanges": [allowed],
                        "ports": [port("tcp", Proto::Tcp, 80, 30101)],
                    }),
                    &[svc_ip(family, 101)],
                ),
                slice(
                    "lb-ranged",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[(t.pod("pod-b").unwrap(), "node-a")],
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
        let drops = w.packets("filter", "KUBE-PROXY-FIREWALL", &w.dst_match(ranged));
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
        let w = World::new(family, backend, &["pod-a", "pod-b"], |t| {
            let eps = [
                (t.pod("pod-a").unwrap(), "node-a"),
                (t.pod("pod-b").unwrap(), "node-b"),
            ];
            vec![
                service(
                    "ext",
                    family,
                    json!({
                        "type": "ClusterIP",
                        "clusterIP": svc_ip(family, 40).to_string(),
                        "externalIPs": [svc_ip(family, 200).to_string()],
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice("ext", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
            ]
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
        let r = w.probe(&w.pod("pod-a").netns, Proto::Tcp, None, external, 80, ANSWER);
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
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
            vec![
                service(
                    "local-ok",
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "externalTrafficPolicy": "Local",
                        "healthCheckNodePort": 32000,
                        "clusterIP": svc_ip(family, 50).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30200)],
                    }),
                    &[svc_ip(family, 110)],
                ),
                slice(
                    "local-ok",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[
                        (t.pod("pod-a").unwrap(), "node-a"),
                        (t.pod("pod-b").unwrap(), "node-b"),
                    ],
                ),
                service(
                    "local-remote",
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "externalTrafficPolicy": "Local",
                        "healthCheckNodePort": 32001,
                        "clusterIP": svc_ip(family, 51).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30201)],
                    }),
                    &[svc_ip(family, 111)],
                ),
                slice(
                    "local-remote",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[(t.pod("pod-c").unwrap(), "node-b")],
                ),
            ]
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
        let np_drops = w.packets("filter", "KUBE-EXTERNAL-SERVICES", "--dport 30201");
        let lb_drops = w.packets("filter", "KUBE-EXTERNAL-SERVICES", &w.dst_match(w.svc_ip(111)));
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
        let r = w.probe(&w.pod("pod-d").netns, Proto::Tcp, None, node_ip, 30201, ANSWER);
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
        let w = World::new(family, backend, &["pod-a", "pod-b"], |t| {
            vec![
                service(
                    "self",
                    family,
                    json!({
                        "type": "ClusterIP",
                        "clusterIP": svc_ip(family, 60).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice(
                    "self",
                    family,
                    &[("tcp", Proto::Tcp), ("udp", Proto::Udp)],
                    &[(t.pod("pod-a").unwrap(), "node-a")],
                ),
            ]
        });
        let cip = w.svc_ip(60);
        let pod_a = &w.pod("pod-a").netns;
        for proto in [Proto::Tcp, Proto::Udp] {
            let r = w.probe(pod_a, proto, None, cip, 80, ANSWER);
            w.expect_reply(
                &format!("{} hairpin pod-a -> own cluster IP", proto.as_str()),
                &r,
                Some("pod-a"),
                w.node_pod_side(),
            );
            let r = w.probe(&w.pod("pod-b").netns, proto, None, cip, 80, ANSWER);
            w.expect_reply(
                &format!("{} pod-b -> cluster IP", proto.as_str()),
                &r,
                Some("pod-a"),
                w.pod_ip("pod-b"),
            );
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
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c"], |t| {
            let eps = [
                (t.pod("pod-a").unwrap(), "node-a"),
                (t.pod("pod-b").unwrap(), "node-a"),
                (t.pod("pod-c").unwrap(), "node-b"),
            ];
            vec![
                service(
                    "sticky",
                    family,
                    json!({
                        "type": "ClusterIP",
                        "clusterIP": svc_ip(family, 70).to_string(),
                        "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice(
                    "sticky",
                    family,
                    &[("tcp", Proto::Tcp), ("udp", Proto::Udp)],
                    &eps,
                ),
            ]
        });
        let cip = w.svc_ip(70);
        let mut chosen = Vec::new();
        for (src, proto) in [
            (w.client_ip(), Proto::Tcp),
            (w.client2_ip(), Proto::Tcp),
            (w.client_ip(), Proto::Udp),
        ] {
            let results = w.probes(&w.topology.client, 20, proto, Some(src), cip, 80);
            let (pods, _) = w.replies(
                &format!("{} from {src} to a ClientIP-affinity Service", proto.as_str()),
                &results,
            );
            assert_eq!(
                pods.len(),
                1,
                "{}: 20 {} connections from {src} went to {pods:?}\n{}",
                w.label(),
                proto.as_str(),
                w.dump()
            );
            chosen.push(format!("{} {src}->{}", proto.as_str(), pods.first().unwrap()));
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
        let w = World::new(family, backend, &["pod-a"], |_| {
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
            (&w.pod("pod-a").netns, "pod-a"),
            (&w.topology.node, "node"),
        ] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let start = Instant::now();
                let r = w.probe(from, proto, None, cip, 80, ANSWER);
                let took = start.elapsed();
                let what = format!(
                    "{} from the {who} to a cluster IP without endpoints",
                    proto.as_str()
                );
                if who == "node" && proto == Proto::Udp {
                    // A datagram the node sends itself is refused in OUTPUT:
                    // the kernel fails send() with EPERM (the REJECT's ICMP
                    // comes too late for it); the rule counter shows the REJECT.
                    assert!(
                        matches!(&r, ProbeResult::Other(e) if e.contains("Operation not permitted")),
                        "{} {what}: expected send() to fail with EPERM, got {r:?}\n{}",
                        w.label(),
                        w.dump()
                    );
                } else {
                    w.expect(&what, &r, &ProbeResult::Refused);
                }
                assert!(
                    took < ANSWER / 4,
                    "{} {what}: refused only after {took:?}",
                    w.label()
                );
                slowest = slowest.max(took);
            }
        }
        let mut rejected = Vec::new();
        for proto in ["tcp", "udp"] {
            let comment = format!("\"paths/empty:{proto} has no endpoints\"");
            let packets = w.packets("filter", "KUBE-SERVICES", &comment);
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
