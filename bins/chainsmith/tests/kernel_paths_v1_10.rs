//! Real packets through kube-proxy's 2018 layout (`compile --layout v1.10`),
//! in real network namespaces, on the nf_tables and the legacy backend.
//!
//! Each scenario writes Services and EndpointSlices, compiles them with the
//! real `chainsmith compile --layout v1.10` for node-a (node IP 203.0.113.1,
//! cluster CIDR = the pod network 192.0.2.0/24), applies the payload in the
//! node namespace of a [`Topology`] as kube-proxy and the kubelet of that era
//! did ([`apply_rules_with_jumps`] with [`V1_10_JUMPS`]: `iptables-restore
//! --noflush`, then the built-in jumps with `-C`/`-I`), starts an echo server
//! in every pod and probes from the client, the node and the pods.
//!
//! What it proves, per scenario: which pod answered and which source address
//! it saw (masqueraded or kept), refused vs. dropped vs. leaving the node
//! untranslated (seen by a counting rule in the uplink namespace), and the
//! kernel's packet counters of the very rules the v1.10 layout is about:
//! `! -s CIDR -j KUBE-MARK-MASQ` in KUBE-SERVICES, KUBE-NODEPORTS, KUBE-FW-
//! (masquerade, source ranges, KUBE-MARK-DROP), the three external-IP rules
//! (`-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL` and
//! `-m addrtype --dst-type LOCAL`), KUBE-XLB- (local balancing, the pod
//! redirect to KUBE-SVC-, "has no local endpoints"), the kubelet's
//! KUBE-FIREWALL DROP, the hairpin masquerade in KUBE-SEP-, and the
//! `-m recent` session affinity. For every probe, `chainsmith_tracer`, reading
//! the kernel's own `iptables-save` (and, for affinity, the kernel's
//! `xt_recent` lists), must predict what the kernel did.
//!
//! v1.10 differs from today's kube-proxy where it matters here, and the tests
//! assert the 2018 behaviour: the filter REJECTs for Services without
//! endpoints are reached only from OUTPUT (cluster IPs) and INPUT (external
//! IPs and NodePorts on the node's own addresses), so a forwarded packet to
//! such a cluster IP leaves the node untranslated; a packet marked by
//! KUBE-MARK-DROP is dropped only if it is routed to the node itself.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chainsmith_iptables::V1_10_JUMPS;
use chainsmith_testkit::{
    Backend, EchoServer, IpFamily, Netns, Pod, ProbeResult, Proto, Topology, apply_rules_with_jumps,
    kernel_tests_enabled, probe, probe_from, probe_here,
};
use chainsmith_tracer::{Origin, Outcome, Packet, Ruleset, Trace, Verdict};
use serde_json::{Value, json};

/// The port every pod's echo server listens on (the Services' targetPort).
const POD_PORT: u16 = 8080;
/// How long an answer may take.
const ANSWER: Duration = Duration::from_secs(2);
/// How long we wait before calling a packet dropped.
const DROPPED: Duration = Duration::from_millis(500);
const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

/// kubelet's DROP of packets marked by KUBE-MARK-DROP, as `iptables-save`
/// prints it (the payload's `0x00008000/0x00008000` comes back shortened).
const FIREWALL_DROP: &str = "-m mark --mark 0x8000/0x8000 -j DROP";

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
/// `ports` (ipFamilies, clusterIPs and the selector are filled in), `lb_ips`
/// become the status' load-balancer ingress.
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

/// The EndpointSlice of `service`: each endpoint is a pod on a node (v1.10
/// read v1 Endpoints; the compiler takes slices with the same addresses).
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

/// node-a's settings in v1.10 terms: the node IP on the client link, the pod
/// network as --cluster-cidr, mark bit 14, no masquerade-all, no
/// --nodeport-addresses, no --random-fully.
fn node_yaml(topology: &Topology, family: IpFamily) -> String {
    let (node_ip, cidr) = match family {
        IpFamily::V4 => (Topology::NODE_IPV4.to_string(), Topology::POD_CIDR_IPV4),
        IpFamily::V6 => (Topology::NODE_IPV6.to_string(), Topology::POD_CIDR_IPV6),
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
         nodePortAddresses: []\n\
         iptablesHasRandomFully: false\n",
        family = family_name(family),
    )
}

/// `chainsmith compile --layout v1.10 --node node.yaml cluster.yaml`, which
/// must not warn.
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
        "--layout",
        "v1.10",
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

/// The address the kernel in `from` picks to reach `dst`.
fn route_source(from: &Netns, dst: IpAddr) -> IpAddr {
    let route = from
        .run("ip", &["-o", "route", "get", &dst.to_string()])
        .expect("ip route get");
    let words: Vec<&str> = route.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "src")
        .unwrap_or_else(|| panic!("no source in {route:?}"));
    words[at + 1].parse().expect("source address")
}

/// Every address of a namespace (`ip -o addr show`).
fn addresses(netns: &Netns) -> Vec<IpAddr> {
    let shown = netns.run("ip", &["-o", "addr", "show"]).expect("ip addr show");
    shown
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "inet" || *w == "inet6")?;
            words.get(at + 1)?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The chains a traced outcome went through, in order (for messages and
/// path assertions).
fn chains(outcome: &Outcome) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for step in &outcome.path {
        let name = format!("{}/{}", step.table, step.chain);
        if chains.last() != Some(&name) {
            chains.push(name);
        }
    }
    chains
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
    /// The node's addresses as the kernel holds them (for the tracer's
    /// `addrtype LOCAL`).
    local: Vec<IpAddr>,
    /// The payload holds `-m recent` rules: probes read the kernel's lists.
    affinity: bool,
    kernel_rules: OnceCell<Ruleset>,
    /// Probes whose outcome the tracer predicted.
    agreements: Cell<usize>,
}

impl World {
    /// Builds the topology with `pods`, puts `node_local` on the node's
    /// loopback (load-balancer IPs routed to the node itself, as on GCE),
    /// compiles what `cluster` returns for it with the v1.10 layout, applies
    /// the rules with the v1.10 jumps, starts an echo server in every pod.
    fn new(
        family: IpFamily,
        backend: Backend,
        pods: &[&str],
        node_local: &[IpAddr],
        cluster: impl FnOnce(&Topology) -> Vec<Value>,
    ) -> World {
        let topology = Topology::new(pods).expect("topology");
        // The uplink is where untranslated packets leave to: it must drop
        // them silently, whatever the host's forwarding setting it inherited.
        for key in ["net.ipv4.conf.all.forwarding=0", "net.ipv6.conf.all.forwarding=0"] {
            topology
                .uplink
                .run("sysctl", &["-qw", key])
                .expect("uplink sysctl");
        }
        for ip in node_local {
            let host = match ip {
                IpAddr::V4(_) => format!("{ip}/32"),
                IpAddr::V6(_) => format!("{ip}/128"),
            };
            topology
                .node
                .run("ip", &["addr", "add", &host, "dev", "lo"])
                .expect("address on the node's loopback");
        }
        let objects = cluster(&topology);
        let payload = compile(&node_yaml(&topology, family), &objects);
        assert!(
            payload.contains("-A KUBE-MARK-DROP -j MARK --set-xmark 0x00008000/0x00008000\n"),
            "not a v1.10 payload:\n{payload}"
        );
        apply_rules_with_jumps(&topology.node, &payload, family, backend, &V1_10_JUMPS).unwrap_or_else(|e| {
            // Fail, never skip: a kernel without one of these cannot run v1.10.
            panic!(
                "applying the v1.10 rules ({family:?}, {backend:?}) failed: {e}\n\
                 The v1.10 payload needs these iptables matches and targets in the kernel \
                 (xt_* modules; nft_compat for iptables-nft): physdev (external IPs: \
                 `-m physdev ! --physdev-is-in`), addrtype, comment, conntrack, mark, recent, \
                 statistic, tcp, udp, MARK, DNAT, MASQUERADE, REJECT. A missing one shows above \
                 as \"Couldn't load match\" or \"No such file or directory\".\n{payload}"
            )
        });
        let local = addresses(&topology.node);
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
            affinity: payload.contains("-m recent"),
            payload,
            local,
            kernel_rules: OnceCell::new(),
            agreements: Cell::new(0),
        }
    }

    fn label(&self) -> String {
        format!(
            "v1.10 {}/{}",
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

    /// `iptables-legacy-save`, `ip6tables-nft`, ... for this world.
    fn tool(&self, suffix: &str) -> String {
        let base = if self.ipv6() { "ip6tables" } else { "iptables" };
        format!("{base}-{}{suffix}", self.backend.as_str())
    }

    fn pod(&self, name: &str) -> &Pod {
        self.topology.pod(name).expect("pod")
    }

    fn pod_ns(&self, name: &str) -> &Netns {
        &self.pod(name).netns
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

    /// Where masqueraded traffic to a pod comes from.
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

    /// `IP/32` (`/128`) as iptables-save prints a host.
    fn host(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", if self.ipv6() { 128 } else { 32 })
    }

    /// The rules the node's kernel holds, as the tracer reads `iptables-save`;
    /// asserts on first use that the kernel holds every v1.10 built-in jump
    /// (completing the dump with [`V1_10_JUMPS`] adds nothing).
    fn kernel_rules(&self) -> &Ruleset {
        self.kernel_rules.get_or_init(|| {
            let dump = self
                .topology
                .node
                .run(&self.tool("-save"), &[])
                .expect("iptables-save");
            let family = if self.ipv6() {
                chainsmith_model::IpFamily::V6
            } else {
                chainsmith_model::IpFamily::V4
            };
            let mut from_kernel = Ruleset::from_dump(&dump).expect("the tracer reads the kernel's dump");
            from_kernel.set_family(Some(family));
            let completed = from_kernel.clone().with_builtin_jumps(family, &V1_10_JUMPS);
            assert!(
                completed == from_kernel,
                "{}: the kernel lacks some of the v1.10 built-in jumps:\n{dump}",
                self.label()
            );
            completed
        })
    }

    /// The kernel's `-m recent` lists (session affinity) that hold `src`.
    fn recent_lists_holding(&self, src: IpAddr) -> Vec<String> {
        if !self.affinity {
            return Vec::new();
        }
        self.topology
            .node
            .enter(|| {
                // This thread's namespace (/proc/net would be the process').
                let dir = "/proc/thread-self/net/xt_recent";
                let mut lists = Vec::new();
                for entry in std::fs::read_dir(dir).expect("xt_recent lists") {
                    let entry = entry.expect("xt_recent entry");
                    let text = std::fs::read_to_string(entry.path()).expect("xt_recent list");
                    let holds = text.lines().any(|line| {
                        line.strip_prefix("src=")
                            .and_then(|rest| rest.split_whitespace().next())
                            .and_then(|ip| ip.parse::<IpAddr>().ok())
                            == Some(src)
                    });
                    if holds {
                        lists.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                lists.sort();
                lists
            })
            .expect("enter the node")
    }

    /// One probe from `from` (optionally from the source `src`), checked
    /// against the tracer; returns what the kernel did and the trace.
    fn probe_traced(
        &self,
        from: &Netns,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> (ProbeResult, Trace) {
        let source = src.unwrap_or_else(|| route_source(from, dst));
        let recent = self.recent_lists_holding(source);
        let result = match src {
            Some(src) => probe_from(from, proto, src, dst, port, timeout),
            None => probe(from, proto, dst, port, timeout),
        };
        let trace = self.agree(from, proto, source, dst, port, recent, &result);
        (result, trace)
    }

    fn probe(
        &self,
        from: &Netns,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> ProbeResult {
        self.probe_traced(from, proto, src, dst, port, timeout).0
    }

    /// `n` probes from one namespace, optionally from `src`, each checked
    /// against the tracer.
    fn probes(
        &self,
        from: &Netns,
        n: usize,
        proto: Proto,
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
    ) -> Vec<ProbeResult> {
        if self.affinity {
            // The tracer is given the kernel's affinity lists before each one.
            return (0..n)
                .map(|_| self.probe(from, proto, src, dst, port, ANSWER))
                .collect();
        }
        let source = src.unwrap_or_else(|| route_source(from, dst));
        let results: Vec<ProbeResult> = from
            .enter(|| {
                (0..n)
                    .map(|_| probe_here(proto, src, dst, port, ANSWER))
                    .collect()
            })
            .expect("enter");
        for result in &results {
            self.agree(from, proto, source, dst, port, Vec::new(), result);
        }
        results
    }

    /// Whether the node routes `dst` out of its uplink (where nothing answers).
    fn routes_to_uplink(&self, dst: IpAddr) -> bool {
        let route = self
            .topology
            .node
            .run("ip", &["-o", "route", "get", &dst.to_string()])
            .expect("ip route get");
        route.contains(&format!(" dev {} ", self.topology.node_uplink_interface))
    }

    /// Asserts that `chainsmith_tracer`, on the rules the kernel holds,
    /// predicts `result` for the packet `src -> dst:port`:
    /// - a reply: every branch delivers (DNAT, then ACCEPT or no verdict), one
    ///   of them to the pod that answered, masquerading exactly when the pod
    ///   saw another address than the sender's;
    /// - a timeout: every branch drops, or every branch lets the packet leave
    ///   untranslated to a destination the node routes to the uplink;
    /// - a refusal: every branch rejects;
    /// - EPERM on the node's own send: every branch rejects or drops (in OUTPUT).
    ///
    /// The trace must have no warnings (everything in the dump modelled).
    #[allow(clippy::too_many_arguments)]
    fn agree(
        &self,
        from: &Netns,
        proto: Proto,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        recent: Vec<String>,
        result: &ProbeResult,
    ) -> Trace {
        let origin = if from.name() == self.topology.node.name() {
            Origin::FromNode
        } else {
            Origin::FromOutside
        };
        let protocol = match proto {
            Proto::Tcp => chainsmith_model::Protocol::Tcp,
            Proto::Udp => chainsmith_model::Protocol::Udp,
        };
        let mut packet = Packet::new(src, dst, protocol, port, origin);
        packet.recent = recent;
        let traced = chainsmith_tracer::trace(
            self.kernel_rules(),
            &packet,
            &chainsmith_tracer::Node::new(self.local.clone()),
        );
        let verdicts: Vec<String> = traced.outcomes.iter().map(Outcome::summary).collect();
        let what = format!(
            "{} {proto:?} {src} -> {dst}:{port} ({origin:?}, affinity lists {:?})",
            self.label(),
            packet.recent
        );
        assert!(
            traced.warnings.is_empty(),
            "{what}: the tracer warned {:?}",
            traced.warnings
        );
        let delivers = |o: &Outcome| matches!(o.verdict, Verdict::Accept | Verdict::Pass);
        match result {
            ProbeResult::Reply { pod, peer_ip } => {
                let pod_ip = self.pod_ip(pod);
                let to = match pod_ip {
                    IpAddr::V4(ip) => format!("{ip}:{POD_PORT}"),
                    IpAddr::V6(ip) => format!("[{ip}]:{POD_PORT}"),
                };
                assert!(
                    traced
                        .outcomes
                        .iter()
                        .all(|o| delivers(o) && o.nat_destination.is_some()),
                    "{what}: {pod} answered, but not every branch of the tracer delivers: {verdicts:?}"
                );
                let Some(outcome) = traced
                    .outcomes
                    .iter()
                    .find(|o| o.nat_destination.as_deref() == Some(to.as_str()))
                else {
                    panic!("{what}: the kernel delivered to {pod} ({to}), the tracer says {verdicts:?}");
                };
                assert_eq!(
                    outcome.masquerade,
                    *peer_ip != src,
                    "{what}: {pod} saw {peer_ip}; the tracer says {verdicts:?} via {:?}",
                    chains(outcome)
                );
            }
            ProbeResult::Timeout => {
                let dropped = traced.outcomes.iter().all(|o| o.verdict == Verdict::Drop);
                let leaves = traced
                    .outcomes
                    .iter()
                    .all(|o| delivers(o) && o.nat_destination.is_none())
                    && self.routes_to_uplink(dst);
                assert!(
                    dropped || leaves,
                    "{what}: timed out, the tracer says {verdicts:?}"
                );
            }
            ProbeResult::Refused => {
                assert!(
                    traced.outcomes.iter().all(|o| o.verdict == Verdict::Reject),
                    "{what}: refused, the tracer says {verdicts:?}"
                );
            }
            // A REJECT or DROP in OUTPUT fails the node's own UDP send with EPERM.
            ProbeResult::Other(error) if origin == Origin::FromNode && error.contains("not permitted") => {
                assert!(
                    traced
                        .outcomes
                        .iter()
                        .all(|o| matches!(o.verdict, Verdict::Reject | Verdict::Drop)),
                    "{what}: {error}, the tracer says {verdicts:?}"
                );
            }
            other => panic!("{what}: {other:?} has no tracer counterpart; the tracer says {verdicts:?}"),
        }
        self.agreements.set(self.agreements.get() + 1);
        traced
    }

    /// Packets counted, summed, by the rules of `table` in the chains whose
    /// name starts with `chain` and whose `iptables-save` text holds every
    /// needle; at least one rule must match.
    fn count_in(&self, netns: &Netns, table: &str, chain: &str, needles: &[&str]) -> u64 {
        let saved = netns
            .run(&self.tool("-save"), &["-c", "-t", table])
            .expect("iptables-save -c");
        let prefix = format!("-A {chain}");
        let mut rules = 0;
        let mut packets = 0;
        for line in saved.lines() {
            // `[packets:bytes] -A CHAIN ...`
            let Some((counters, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
                continue;
            };
            if !rule.starts_with(&prefix) || !needles.iter().all(|n| rule.contains(n)) {
                continue;
            }
            rules += 1;
            packets += counters
                .split_once(':')
                .and_then(|(p, _)| p.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("unreadable counters in {line:?}"));
        }
        assert!(
            rules > 0,
            "{}: no rule of {table} {chain}* holds {needles:?} in {}:\n{saved}",
            self.label(),
            netns.name()
        );
        packets
    }

    /// [`World::count_in`] the node.
    fn count(&self, table: &str, chain: &str, needles: &[&str]) -> u64 {
        self.count_in(&self.topology.node, table, chain, needles)
    }

    /// Counts, in the uplink, every packet that reaches it for `dst`.
    fn watch_uplink(&self, dst: IpAddr) {
        self.topology
            .uplink
            .run(
                &self.tool(""),
                &["-w", "-t", "raw", "-A", "PREROUTING", "-d", &self.host(dst)],
            )
            .expect("uplink counter");
    }

    /// Packets for `dst` the uplink received (see [`World::watch_uplink`]).
    fn uplink_packets(&self, dst: IpAddr) -> u64 {
        let needle = format!("-d {}", self.host(dst));
        self.count_in(&self.topology.uplink, "raw", "PREROUTING", &[&needle])
    }

    /// The target of the payload's rule holding every needle (to name a
    /// KUBE-XLB-/KUBE-FW-/KUBE-SVC- chain).
    fn target_of(&self, needles: &[&str]) -> String {
        let line = self
            .payload
            .lines()
            .find(|l| l.starts_with("-A ") && needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no rule holds {needles:?}:\n{}", self.payload));
        line.rsplit_once("-j ").expect("a target").1.to_owned()
    }

    /// What the node's kernel holds, for failure messages.
    fn dump(&self) -> String {
        let saved = self
            .topology
            .node
            .run(&self.tool("-save"), &["-c"])
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

    fn expect_count(&self, what: &str, got: u64, want: u64) {
        assert_eq!(got, want, "{} {what}\n{}", self.label(), self.dump());
    }

    /// How many peers all echo servers have answered.
    fn answered(&self) -> usize {
        self.servers.iter().map(|s| s.peers().len()).sum()
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

/// Whether some branch of `trace` went through a chain starting with `prefix`
/// (`nat/KUBE-FW-`).
fn went_through(trace: &Trace, prefix: &str) -> bool {
    trace
        .outcomes
        .iter()
        .any(|o| chains(o).iter().any(|c| c.starts_with(prefix)))
}

// ---------------------------------------------------------------------------
// 1. ClusterIP: balancing, masquerade of off-cluster sources only

/// conntrack on the node: for every flow a pod saw from `client_ip` (source
/// port -> pod), the DNAT of the cluster IP to that pod. Returns the number
/// of flows of each protocol.
fn check_conntrack(w: &World, client_ip: IpAddr, cip: IpAddr) -> Vec<usize> {
    let mut counts = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let mut seen = BTreeMap::new();
        for server in &w.servers {
            let pod_ip = w.pod_ip(server.pod());
            for peer in server.peers() {
                if peer.proto == proto && peer.ip == client_ip {
                    seen.insert(peer.port, pod_ip);
                }
            }
        }
        let listed = w
            .topology
            .node
            .run(
                "conntrack",
                &[
                    "-L",
                    "-f",
                    if w.ipv6() { "ipv6" } else { "ipv4" },
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
            if orig.src == client_ip && orig.dst == cip && orig.dport == 80 && reply.sport == POD_PORT {
                assert_eq!(reply.dst, client_ip, "{}: reply tuple {reply:?}", w.label());
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
    counts
}

#[test]
fn cluster_ip_balances_and_masquerades_only_off_cluster_sources() {
    if !kernel_tests_enabled("cluster_ip_balances_and_masquerades_only_off_cluster_sources") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], &[], |t| {
            let eps = [
                (t.pod("pod-a").unwrap(), "node-a"),
                (t.pod("pod-b").unwrap(), "node-a"),
                (t.pod("pod-c").unwrap(), "node-b"),
            ];
            vec![
                service(
                    "web",
                    family,
                    json!({
                        "type": "ClusterIP",
                        "clusterIP": svc_ip(family, 10).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice("web", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
            ]
        });
        let cip = w.svc_ip(10);
        let three = set(["pod-a", "pod-b", "pod-c"]);
        let pod_d = w.pod_ns("pod-d");
        // From a pod (inside the cluster CIDR): balanced, source kept.
        for (proto, n) in [(Proto::Tcp, 45), (Proto::Udp, 30)] {
            let results = w.probes(pod_d, n, proto, None, cip, 80);
            let (pods, peers) = w.replies(
                &format!("{} from pod-d to the cluster IP", proto.as_str()),
                &results,
            );
            assert_eq!(
                pods,
                three,
                "{}: {} balancing\n{}",
                w.label(),
                proto.as_str(),
                w.dump()
            );
            assert_eq!(
                peers,
                ips([w.pod_ip("pod-d")]),
                "{}: a pod's source is kept",
                w.label()
            );
        }
        let flows = check_conntrack(&w, w.pod_ip("pod-d"), cip);
        // From outside the cluster CIDR: `! -s 192.0.2.0/24 -j KUBE-MARK-MASQ`.
        let client = w.probes(&w.topology.client, 6, Proto::Tcp, None, cip, 80);
        let (_, peers) = w.replies("tcp from the client to the cluster IP", &client);
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: the client is masqueraded",
            w.label()
        );
        let (node, trace) = w.probe_traced(&w.topology.node, Proto::Tcp, None, cip, 80, ANSWER);
        w.expect_reply(
            "tcp from the node to the cluster IP",
            &node,
            None,
            w.node_pod_side(),
        );
        assert!(
            went_through(&trace, "nat/KUBE-MARK-MASQ"),
            "{}: the tracer does not mark the node's packet",
            w.label()
        );
        // One nat evaluation per TCP connection: 6 from the client and 1 from
        // the node were marked; all 52 jumped to KUBE-SVC-.
        let comment = "\"paths/web:tcp cluster IP\"";
        let masq = w.count(
            "nat",
            "KUBE-SERVICES",
            &[comment, "! -s 192.0.2.0/24", "-j KUBE-MARK-MASQ"],
        );
        w.expect_count("`! -s CIDR -j KUBE-MARK-MASQ` packets", masq, 7);
        let svc = w.count("nat", "KUBE-SERVICES", &[comment, "-j KUBE-SVC-"]);
        w.expect_count("cluster IP -> KUBE-SVC- packets", svc, 45 + 6 + 1);
        let per_pod: Vec<String> = ["pod-a", "pod-b", "pod-c"]
            .iter()
            .map(|p| w.server(p).peers().len().to_string())
            .collect();
        summary.push(format!(
            "{}: 45 tcp + 30 udp from pod-d over 3 pods ({}), {}+{} flows DNATed in conntrack, source kept; client and node masqueraded ({masq} marked)",
            w.label(),
            per_pod.join("/"),
            flows[0],
            flows[1]
        ));
    }
    println!("cluster IP: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 2. NodePort (eTP Cluster): KUBE-NODEPORTS masquerades everyone

#[test]
fn node_port_is_masqueraded_through_kube_nodeports() {
    if !kernel_tests_enabled("node_port_is_masqueraded_through_kube_nodeports") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
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
        let node_ip = w.node_ip();
        let masq = w.node_pod_side();
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
            ips([masq]),
            "{}: NodePort traffic is masqueraded",
            w.label()
        );
        let (udp, trace) = w.probe_traced(&w.topology.client, Proto::Udp, None, node_ip, 30080, ANSWER);
        w.expect_reply("udp from the client to the NodePort", &udp, None, masq);
        assert!(
            went_through(&trace, "nat/KUBE-NODEPORTS"),
            "{}: the tracer does not pass KUBE-NODEPORTS",
            w.label()
        );
        // A pod and the node itself are masqueraded as well (eTP Cluster).
        let r = w.probe(w.pod_ns("pod-c"), Proto::Tcp, None, node_ip, 30080, ANSWER);
        w.expect_reply("tcp from pod-c to the NodePort", &r, None, masq);
        let r = w.probe(&w.topology.node, Proto::Tcp, None, node_ip, 30080, ANSWER);
        w.expect_reply("tcp from the node to its NodePort", &r, None, masq);
        let marked = w.count(
            "nat",
            "KUBE-NODEPORTS",
            &["-p tcp", "--dport 30080", "-j KUBE-MARK-MASQ"],
        );
        w.expect_count("KUBE-NODEPORTS tcp masquerade packets", marked, 22);
        let jumps = w.count(
            "nat",
            "KUBE-SERVICES",
            &["kubernetes service nodeports", "-j KUBE-NODEPORTS"],
        );
        w.expect_count("KUBE-SERVICES -> KUBE-NODEPORTS packets", jumps, 23);
        summary.push(format!(
            "{}: 20 tcp + udp from the client to {node_ip}:30080 reach both pods as {masq}; pod and node too ({marked} tcp marked in KUBE-NODEPORTS)",
            w.label(),
        ));
    }
    println!("NodePort: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 3. LoadBalancer IP: KUBE-FW- masquerades, jumps to KUBE-SVC-, MARK-DROP last

#[test]
fn load_balancer_ip_goes_through_kube_fw() {
    if !kernel_tests_enabled("load_balancer_ip_goes_through_kube_fw") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
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
                    &[
                        (t.pod("pod-a").unwrap(), "node-a"),
                        (t.pod("pod-b").unwrap(), "node-b"),
                    ],
                ),
            ]
        });
        let (lb, cip, masq) = (w.svc_ip(100), w.svc_ip(30), w.node_pod_side());
        let client = w.probes(&w.topology.client, 20, Proto::Tcp, None, lb, 80);
        let (pods, peers) = w.replies("tcp from the client to the LB IP", &client);
        assert_eq!(pods, set(["pod-a", "pod-b"]), "{}: LB balancing", w.label());
        assert_eq!(peers, ips([masq]), "{}: LB traffic is masqueraded", w.label());
        // KUBE-FW- masquerades every source, pods included (their cluster IP
        // traffic keeps its source).
        let (r, trace) = w.probe_traced(w.pod_ns("pod-c"), Proto::Tcp, None, lb, 80, ANSWER);
        w.expect_reply("tcp from pod-c to the LB IP", &r, None, masq);
        assert!(
            went_through(&trace, "nat/KUBE-FW-") && went_through(&trace, "nat/KUBE-SVC-"),
            "{}: the tracer's path: {:?}",
            w.label(),
            trace.outcomes.iter().map(chains).collect::<Vec<_>>()
        );
        let r = w.probe(w.pod_ns("pod-c"), Proto::Tcp, None, cip, 80, ANSWER);
        w.expect_reply("tcp from pod-c to the cluster IP", &r, None, w.pod_ip("pod-c"));
        let r = w.probe(&w.topology.node, Proto::Tcp, None, lb, 80, ANSWER);
        w.expect_reply("tcp from the node to the LB IP", &r, None, masq);
        let fw = "\"paths/lb-open:tcp loadbalancer IP\"";
        let marked = w.count("nat", "KUBE-FW-", &[fw, "-j KUBE-MARK-MASQ"]);
        w.expect_count("KUBE-FW- masquerade packets", marked, 22);
        let to_svc = w.count("nat", "KUBE-FW-", &[fw, "-j KUBE-SVC-"]);
        w.expect_count("KUBE-FW- -> KUBE-SVC- packets", to_svc, 22);
        // Never reached: KUBE-SVC- always translates.
        let drop_marked = w.count("nat", "KUBE-FW-", &[fw, "-j KUBE-MARK-DROP"]);
        w.expect_count("KUBE-FW- KUBE-MARK-DROP packets", drop_marked, 0);
        let dropped = w.count("filter", "KUBE-FIREWALL", &[FIREWALL_DROP]);
        w.expect_count("KUBE-FIREWALL DROP packets", dropped, 0);
        summary.push(format!(
            "{}: {lb}:80 from client, pod and node through KUBE-FW- ({marked} marked, {to_svc} to KUBE-SVC-, 0 to KUBE-MARK-DROP), all seen as {masq}",
            w.label()
        ));
    }
    println!("LoadBalancer: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 4. externalIPs: the three rules

#[test]
fn external_ip_three_rules() {
    if !kernel_tests_enabled("external_ip_three_rules") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        // One external IP routed through the node, one that is the node's own
        // address (the case of `--dst-type LOCAL`).
        let (far, near) = (svc_ip(family, 200), IpAddr::V4(Topology::NODE_IPV4));
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
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
                        "externalIPs": [far.to_string(), near.to_string()],
                        "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
                    }),
                    &[],
                ),
                slice("ext", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
            ]
        });
        w.watch_uplink(far);
        let masq = w.node_pod_side();
        // Off-node sources: `-m physdev ! --physdev-is-in -m addrtype !
        // --src-type LOCAL` (no bridge here, so `! --physdev-is-in` holds).
        let tcp = w.probes(&w.topology.client, 10, Proto::Tcp, None, far, 80);
        let (_, peers) = w.replies("tcp from the client to the external IP", &tcp);
        assert_eq!(
            peers,
            ips([masq]),
            "{}: external traffic is masqueraded",
            w.label()
        );
        let udp = w.probe(&w.topology.client, Proto::Udp, None, far, 80, ANSWER);
        w.expect_reply("udp from the client to the external IP", &udp, None, masq);
        let r = w.probe(w.pod_ns("pod-c"), Proto::Tcp, None, far, 80, ANSWER);
        w.expect_reply("tcp from pod-c to the external IP", &r, None, masq);
        let r = w.probe(&w.topology.client, Proto::Tcp, None, near, 80, ANSWER);
        w.expect_reply(
            "tcp from the client to the node-local external IP",
            &r,
            None,
            masq,
        );
        // The node itself: its source is LOCAL, so only `--dst-type LOCAL`
        // can proxy it, which holds for its own address only. To the other
        // external IP it leaves for the uplink untranslated (v1.10).
        let r = w.probe(&w.topology.node, Proto::Tcp, None, near, 80, ANSWER);
        w.expect_reply("tcp from the node to its own external IP", &r, None, masq);
        let answered = w.answered();
        let before = w.uplink_packets(far);
        let r = w.probe(&w.topology.node, Proto::Tcp, None, far, 80, DROPPED);
        w.expect(
            "tcp from the node to the external IP is not proxied",
            &r,
            &ProbeResult::Timeout,
        );
        let left = w.uplink_packets(far) - before;
        assert!(
            left >= 1 && w.answered() == answered,
            "{}: the node's packet to {far} reached the uplink {left} times, the pods {} times",
            w.label(),
            w.answered() - answered
        );
        // The counters of each rule, tcp: client x11 (10 + 1 to `near`), pod
        // x1, node x2; one nat evaluation per connection.
        let tcp_rule = |ip: IpAddr, needle: &str| {
            let dst = format!("-d {}", w.host(ip));
            w.count(
                "nat",
                "KUBE-SERVICES",
                &["\"paths/ext:tcp external IP\"", &dst, needle],
            )
        };
        let counts = [
            (far, "-j KUBE-MARK-MASQ", 12),
            (far, "--physdev-is-in", 11),
            (far, "--dst-type LOCAL", 0),
            (near, "-j KUBE-MARK-MASQ", 2),
            (near, "--physdev-is-in", 1),
            (near, "--dst-type LOCAL", 1),
        ];
        for (ip, needle, want) in counts {
            w.expect_count(
                &format!("{ip} rule {needle:?} packets"),
                tcp_rule(ip, needle),
                want,
            );
        }
        summary.push(format!(
            "{}: {far} from client and pod via physdev/!LOCAL, {near} from the node via dst LOCAL, all seen as {masq}; the node's own packet to {far} left untranslated",
            w.label()
        ));
    }
    println!("externalIPs: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 5. No endpoints: REJECT where v1.10 looks (OUTPUT, INPUT), nothing for LB IPs

#[test]
fn no_endpoints_rejects_on_the_node_and_forwards_the_rest() {
    if !kernel_tests_enabled("no_endpoints_rejects_on_the_node_and_forwards_the_rest") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let (cip, far, near, lb) = (
            svc_ip(family, 80),
            svc_ip(family, 201),
            IpAddr::V4(Topology::NODE_IPV4),
            svc_ip(family, 102),
        );
        let w = World::new(family, backend, &["pod-a"], &[], |_| {
            vec![
                service(
                    "empty",
                    family,
                    json!({
                        "type": "NodePort",
                        "clusterIP": cip.to_string(),
                        "externalIPs": [far.to_string(), near.to_string()],
                        "ports": [port("tcp", Proto::Tcp, 81, 30400), port("udp", Proto::Udp, 81, 30400)],
                    }),
                    &[],
                ),
                slice("empty", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &[]),
                service(
                    "lb-empty",
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "clusterIP": svc_ip(family, 81).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30401)],
                    }),
                    &[lb],
                ),
                slice("lb-empty", family, &[("tcp", Proto::Tcp)], &[]),
            ]
        });
        let node_ip = w.node_ip();
        let (client, node, pod) = (&w.topology.client, &w.topology.node, w.pod_ns("pod-a"));
        // Refused at once: the node's own connections to the cluster IP
        // (filter OUTPUT -> KUBE-SERVICES), and everyone's to the node-local
        // external IP and the NodePort (filter INPUT -> KUBE-EXTERNAL-SERVICES).
        let mut refused = 0;
        let mut slowest = Duration::ZERO;
        let cases: [(&Netns, &str, IpAddr, u16, &[Proto]); 7] = [
            (node, "node", cip, 81, &[Proto::Tcp, Proto::Udp]),
            (node, "node", near, 81, &[Proto::Tcp, Proto::Udp]),
            (node, "node", node_ip, 30400, &[Proto::Tcp, Proto::Udp]),
            (client, "client", near, 81, &[Proto::Tcp, Proto::Udp]),
            (client, "client", node_ip, 30400, &[Proto::Tcp, Proto::Udp]),
            (pod, "pod-a", near, 81, &[Proto::Tcp]),
            (pod, "pod-a", node_ip, 30400, &[Proto::Tcp]),
        ];
        for (from, who, dst, dport, protos) in cases {
            for &proto in protos {
                let start = Instant::now();
                let r = w.probe(from, proto, None, dst, dport, ANSWER);
                let took = start.elapsed();
                let what = format!(
                    "{} from the {who} to {dst}:{dport} without endpoints",
                    proto.as_str()
                );
                if who == "node" && dst == cip && proto == Proto::Udp {
                    // Refused in OUTPUT: send() fails with EPERM.
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
                refused += 1;
            }
        }
        // Not refused in v1.10: forwarded packets never meet filter
        // KUBE-SERVICES (no FORWARD jump), a routed external IP is not INPUT,
        // and LB IPs without endpoints have no rule at all. They leave the
        // node untranslated, for the uplink.
        for ip in [cip, far, lb] {
            w.watch_uplink(ip);
        }
        let leaving: [(&Netns, &str, IpAddr, u16); 6] = [
            (client, "client", cip, 81),
            (pod, "pod-a", cip, 81),
            (client, "client", far, 81),
            (node, "node", far, 81),
            (client, "client", lb, 80),
            (node, "node", lb, 80),
        ];
        for (from, who, dst, dport) in leaving {
            let before = w.uplink_packets(dst);
            let r = w.probe(from, Proto::Tcp, None, dst, dport, DROPPED);
            w.expect(
                &format!("tcp from the {who} to {dst}:{dport} without endpoints"),
                &r,
                &ProbeResult::Timeout,
            );
            assert!(
                w.uplink_packets(dst) > before,
                "{}: tcp from the {who} to {dst}:{dport} did not leave for the uplink\n{}",
                w.label(),
                w.dump()
            );
        }
        // Exactly who met which REJECT (one packet per refused connection).
        let counts = [
            ("KUBE-SERVICES", "tcp", vec![w.host(cip)], 1),
            ("KUBE-SERVICES", "udp", vec![w.host(cip)], 1),
            ("KUBE-EXTERNAL-SERVICES", "tcp", vec![w.host(near)], 3),
            ("KUBE-EXTERNAL-SERVICES", "udp", vec![w.host(near)], 2),
            (
                "KUBE-EXTERNAL-SERVICES",
                "tcp",
                vec!["--dport 30400".to_owned()],
                3,
            ),
            (
                "KUBE-EXTERNAL-SERVICES",
                "udp",
                vec!["--dport 30400".to_owned()],
                2,
            ),
            ("KUBE-EXTERNAL-SERVICES", "tcp", vec![w.host(far)], 0),
        ];
        for (chain, proto, needles, want) in counts {
            let comment = format!("\"paths/empty:{proto} has no endpoints\"");
            let proto_match = format!("-p {proto}");
            let mut all: Vec<&str> = vec![&comment, &proto_match, "-j REJECT"];
            all.extend(needles.iter().map(String::as_str));
            let got = w.count("filter", chain, &all);
            w.expect_count(&format!("filter {chain} {all:?} packets"), got, want);
        }
        assert!(
            !w.payload.contains("paths/lb-empty:tcp loadbalancer IP"),
            "{}: v1.10 writes nothing for the LB IP of a Service without endpoints",
            w.label()
        );
        summary.push(format!(
            "{}: {refused} probes refused at once (slowest {slowest:?}); client and pod to the cluster IP, the routed external IP and the LB IP left untranslated",
            w.label()
        ));
    }
    println!("no endpoints: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 6. loadBalancerSourceRanges: KUBE-FW- admits ranges, marks the rest for drop

#[test]
fn load_balancer_source_ranges_mark_and_drop() {
    if !kernel_tests_enabled("load_balancer_source_ranges_mark_and_drop") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        // 203.0.113.0/25 admits the client (.2) and holds the node IP (.1),
        // not the client's second address (.130) nor the pods.
        let allowed = "203.0.113.0/25";
        let (lb, lb_far) = (svc_ip(family, 101), svc_ip(family, 103));
        let w = World::new(family, backend, &["pod-a", "pod-b"], &[lb], |t| {
            let ranged = |name: &str, cip: u8, ip: IpAddr, node_port: u16| {
                service(
                    name,
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "clusterIP": svc_ip(family, cip).to_string(),
                        "loadBalancerSourceRanges": [allowed],
                        "ports": [port("tcp", Proto::Tcp, 80, node_port)],
                    }),
                    &[ip],
                )
            };
            let pod_b = [(t.pod("pod-b").unwrap(), "node-a")];
            vec![
                ranged("lb-ranged", 31, lb, 30101),
                slice("lb-ranged", family, &[("tcp", Proto::Tcp)], &pod_b),
                ranged("lb-ranged-far", 32, lb_far, 30102),
                slice("lb-ranged-far", family, &[("tcp", Proto::Tcp)], &pod_b),
            ]
        });
        let client = &w.topology.client;
        let masq = w.node_pod_side();
        let r = w.probe(client, Proto::Tcp, Some(w.client_ip()), lb, 80, ANSWER);
        w.expect_reply("allowed client -> LB IP", &r, Some("pod-b"), masq);
        // The node's own connection comes from the LB IP (its local address),
        // admitted by `-s LB/32`, written because the range holds the node IP.
        let r = w.probe(&w.topology.node, Proto::Tcp, None, lb, 80, ANSWER);
        w.expect_reply("node -> its LB IP", &r, Some("pod-b"), masq);
        let r = w.probe(
            client,
            Proto::Tcp,
            Some(w.client2_ip()),
            w.node_ip(),
            30101,
            ANSWER,
        );
        w.expect_reply(
            "denied client -> the NodePort (no ranges there)",
            &r,
            Some("pod-b"),
            masq,
        );

        // Denied: the client's second address and a pod.
        let answered = w.answered();
        let start = Instant::now();
        let (r, trace) = w.probe_traced(client, Proto::Tcp, Some(w.client2_ip()), lb, 80, DROPPED);
        w.expect("denied client -> LB IP", &r, &ProbeResult::Timeout);
        let waited = start.elapsed();
        assert!(
            trace.outcomes.iter().all(|o| o.final_mark & 0x8000 != 0
                && chains(o).contains(&"filter/KUBE-FIREWALL".to_owned())),
            "{}: the tracer's path: {:?}",
            w.label(),
            trace.outcomes.iter().map(chains).collect::<Vec<_>>()
        );
        let r = w.probe(w.pod_ns("pod-a"), Proto::Tcp, None, lb, 80, DROPPED);
        w.expect("pod-a (outside the ranges) -> LB IP", &r, &ProbeResult::Timeout);
        assert_eq!(
            w.answered(),
            answered,
            "{}: a denied source was answered",
            w.label()
        );
        let fw = "\"paths/lb-ranged:tcp loadbalancer IP\"";
        let marked = w.count("nat", "KUBE-FW-", &[fw, "-j KUBE-MARK-DROP"]);
        w.expect_count("KUBE-FW- KUBE-MARK-DROP packets", marked, 2);
        let by_range = w.count("nat", "KUBE-FW-", &[fw, &format!("-s {allowed}")]);
        w.expect_count("KUBE-FW- source range packets", by_range, 1);
        let by_lb_ip = w.count("nat", "KUBE-FW-", &[fw, &format!("-s {}", w.host(lb))]);
        w.expect_count("KUBE-FW- `-s LB/32` packets", by_lb_ip, 1);
        let dropped = w.count("filter", "KUBE-FIREWALL", &[FIREWALL_DROP]);
        assert!(
            dropped >= 2,
            "{}: KUBE-FIREWALL dropped {dropped} packets\n{}",
            w.label(),
            w.dump()
        );

        // The same on an LB IP the node does not hold: the packet marked for
        // drop is routed on (KUBE-FIREWALL is in INPUT and OUTPUT only) and
        // leaves for the uplink untranslated.
        w.watch_uplink(lb_far);
        let r = w.probe(client, Proto::Tcp, Some(w.client_ip()), lb_far, 80, ANSWER);
        w.expect_reply("allowed client -> routed LB IP", &r, Some("pod-b"), masq);
        let (before, left_before) = (
            w.count("filter", "KUBE-FIREWALL", &[FIREWALL_DROP]),
            w.uplink_packets(lb_far),
        );
        let r = w.probe(client, Proto::Tcp, Some(w.client2_ip()), lb_far, 80, DROPPED);
        w.expect("denied client -> routed LB IP", &r, &ProbeResult::Timeout);
        let marked_far = w.count(
            "nat",
            "KUBE-FW-",
            &["\"paths/lb-ranged-far:tcp loadbalancer IP\"", "-j KUBE-MARK-DROP"],
        );
        w.expect_count("routed LB IP: KUBE-MARK-DROP packets", marked_far, 1);
        let (after, left) = (
            w.count("filter", "KUBE-FIREWALL", &[FIREWALL_DROP]),
            w.uplink_packets(lb_far),
        );
        assert!(
            after == before && left > left_before,
            "{}: the denied packet to {lb_far}: KUBE-FIREWALL {before} -> {after}, uplink {left_before} -> {left}\n{}",
            w.label(),
            w.dump()
        );
        summary.push(format!(
            "{}: {allowed} admitted {} and the node (via -s {lb}/32); {} and pod-a marked and dropped by KUBE-FIREWALL ({dropped} packets, {waited:?}); on routed {lb_far} the marked packet left for the uplink",
            w.label(),
            w.client_ip(),
            w.client2_ip()
        ));
    }
    println!("loadBalancerSourceRanges: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 7. externalTrafficPolicy: Local: KUBE-XLB-

#[test]
fn external_traffic_policy_local_uses_kube_xlb() {
    if !kernel_tests_enabled("external_traffic_policy_local_uses_kube_xlb") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let (lb_ok, lb_remote) = (svc_ip(family, 110), svc_ip(family, 111));
        let pods = ["pod-a", "pod-b", "pod-c", "pod-d"];
        let w = World::new(family, backend, &pods, &[lb_remote], |t| {
            let local = |name: &str, cip: u8, ip: IpAddr, node_port: u16, hc: u16| {
                service(
                    name,
                    family,
                    json!({
                        "type": "LoadBalancer",
                        "externalTrafficPolicy": "Local",
                        "healthCheckNodePort": hc,
                        "clusterIP": svc_ip(family, cip).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, node_port)],
                    }),
                    &[ip],
                )
            };
            vec![
                local("local-ok", 50, lb_ok, 30200, 32000),
                slice(
                    "local-ok",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[
                        (t.pod("pod-a").unwrap(), "node-a"),
                        (t.pod("pod-b").unwrap(), "node-b"),
                    ],
                ),
                local("local-remote", 51, lb_remote, 30201, 32001),
                slice(
                    "local-remote",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &[(t.pod("pod-c").unwrap(), "node-b")],
                ),
            ]
        });
        let (client, node, pod_d) = (&w.topology.client, &w.topology.node, w.pod_ns("pod-d"));
        let node_ip = w.node_ip();
        let xlb_ok = w.target_of(&["-A KUBE-NODEPORTS", "--dport 30200", "-j KUBE-XLB-"]);
        let xlb_remote = w.target_of(&["-A KUBE-NODEPORTS", "--dport 30201", "-j KUBE-XLB-"]);

        // A local endpoint: only it answers, and it sees the real client.
        for (dst, dport, n) in [(node_ip, 30200, 10), (lb_ok, 80, 5)] {
            let results = w.probes(client, n, Proto::Tcp, None, dst, dport);
            let (pods, peers) = w.replies(&format!("client -> {dst}:{dport} (local endpoint)"), &results);
            assert_eq!(
                pods,
                set(["pod-a"]),
                "{}: XLB balances over the local endpoint only",
                w.label()
            );
            assert_eq!(
                peers,
                ips([w.client_ip()]),
                "{}: XLB keeps the client address\n{}",
                w.label(),
                w.dump()
            );
        }
        // A pod is redirected to KUBE-SVC- (every endpoint), not masqueraded.
        let results = w.probes(pod_d, 20, Proto::Tcp, None, node_ip, 30200);
        let (pods, peers) = w.replies("pod-d -> NodePort of local-ok", &results);
        assert_eq!(
            pods,
            set(["pod-a", "pod-b"]),
            "{}: pods go to KUBE-SVC-",
            w.label()
        );
        assert_eq!(
            peers,
            ips([w.pod_ip("pod-d")]),
            "{}: pods keep their source",
            w.label()
        );
        let r = w.probe(pod_d, Proto::Tcp, None, lb_ok, 80, ANSWER);
        w.expect_reply("pod-d -> LB IP of local-ok", &r, None, w.pod_ip("pod-d"));
        let redirected = w.count(
            "nat",
            &xlb_ok,
            &["Redirect pods", "-s 192.0.2.0/24", "-j KUBE-SVC-"],
        );
        w.expect_count("local-ok XLB pod redirect packets", redirected, 21);
        let balanced = w.count("nat", &xlb_ok, &["\"Balancing rule 0 for paths/local-ok:tcp\""]);
        w.expect_count("local-ok XLB balancing packets", balanced, 15);

        // No local endpoint: outside traffic is marked for drop and dropped
        // by KUBE-FIREWALL (NodePort and the node-held LB IP: INPUT), so is
        // the node's own (its address is not in the cluster CIDR: OUTPUT).
        let answered = w.answered();
        let r = w.probe(client, Proto::Tcp, None, node_ip, 30201, DROPPED);
        w.expect(
            "client -> NodePort with only a remote endpoint",
            &r,
            &ProbeResult::Timeout,
        );
        let r = w.probe(client, Proto::Tcp, None, lb_remote, 80, DROPPED);
        w.expect(
            "client -> LB IP with only a remote endpoint",
            &r,
            &ProbeResult::Timeout,
        );
        let r = w.probe(node, Proto::Tcp, None, node_ip, 30201, DROPPED);
        w.expect(
            "node -> its NodePort with only a remote endpoint",
            &r,
            &ProbeResult::Timeout,
        );
        assert_eq!(w.answered(), answered, "{}: a pod was reached", w.label());
        let no_local = w.count(
            "nat",
            &xlb_remote,
            &["has no local endpoints", "-j KUBE-MARK-DROP"],
        );
        w.expect_count("local-remote XLB KUBE-MARK-DROP packets", no_local, 3);
        let dropped = w.count("filter", "KUBE-FIREWALL", &[FIREWALL_DROP]);
        assert!(
            dropped >= 3,
            "{}: KUBE-FIREWALL dropped {dropped} packets\n{}",
            w.label(),
            w.dump()
        );
        // Pods are redirected to the remote endpoint; the cluster IP works
        // for everyone.
        for dst in [node_ip, lb_remote] {
            let dport = if dst == node_ip { 30201 } else { 80 };
            let r = w.probe(pod_d, Proto::Tcp, None, dst, dport, ANSWER);
            w.expect_reply(
                &format!("pod-d -> {dst}:{dport} of local-remote"),
                &r,
                Some("pod-c"),
                w.pod_ip("pod-d"),
            );
        }
        for (from, who) in [(client, "client"), (node, "node")] {
            let r = w.probe(from, Proto::Tcp, None, svc_ip(family, 51), 80, ANSWER);
            w.expect_reply(
                &format!("{who} -> cluster IP of local-remote"),
                &r,
                Some("pod-c"),
                w.node_pod_side(),
            );
        }
        summary.push(format!(
            "{}: local endpoint sees {} (NodePort and LB); 21 pod probes redirected to KUBE-SVC-; no local endpoint: client and node dropped ({no_local} marked, KUBE-FIREWALL {dropped}), pods reach pod-c",
            w.label(),
            w.client_ip()
        ));
    }
    println!("eTP Local: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 8. Hairpin: KUBE-SEP- masquerades a pod reaching itself

#[test]
fn hairpin_is_masqueraded_by_kube_sep() {
    if !kernel_tests_enabled("hairpin_is_masqueraded_by_kube_sep") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = World::new(family, backend, &["pod-a", "pod-b"], &[], |t| {
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
        for proto in [Proto::Tcp, Proto::Udp] {
            let r = w.probe(w.pod_ns("pod-a"), proto, None, cip, 80, ANSWER);
            w.expect_reply(
                &format!("{} hairpin pod-a -> own cluster IP", proto.as_str()),
                &r,
                Some("pod-a"),
                w.node_pod_side(),
            );
            let r = w.probe(w.pod_ns("pod-b"), proto, None, cip, 80, ANSWER);
            w.expect_reply(
                &format!("{} pod-b -> cluster IP", proto.as_str()),
                &r,
                Some("pod-a"),
                w.pod_ip("pod-b"),
            );
            let hairpin = w.count(
                "nat",
                "KUBE-SEP-",
                &[
                    &format!("--comment \"paths/self:{}\"", proto.as_str()),
                    &format!("-s {}", w.host(w.pod_ip("pod-a"))),
                    "-j KUBE-MARK-MASQ",
                ],
            );
            w.expect_count(
                &format!("{} KUBE-SEP- hairpin masquerade packets", proto.as_str()),
                hairpin,
                1,
            );
        }
        summary.push(format!(
            "{}: pod-a via its own Service seen as {}, pod-b as itself",
            w.label(),
            w.node_pod_side()
        ));
    }
    println!("hairpin: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 9. Session affinity ClientIP: -m recent

#[test]
fn session_affinity_client_ip_sticks_to_one_pod() {
    if !kernel_tests_enabled("session_affinity_client_ip_sticks_to_one_pod") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], &[], |t| {
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
        assert!(w.affinity, "{}: no -m recent rules\n{}", w.label(), w.payload);
        let cip = w.svc_ip(70);
        let mut chosen = Vec::new();
        let sources = [
            (&w.topology.client, Some(w.client_ip()), Proto::Tcp, "client"),
            (&w.topology.client, Some(w.client2_ip()), Proto::Tcp, "client2"),
            (&w.topology.client, Some(w.client_ip()), Proto::Udp, "client"),
            (w.pod_ns("pod-d"), None, Proto::Tcp, "pod-d"),
        ];
        for (from, src, proto, who) in sources {
            let mut pods = BTreeSet::new();
            for i in 0..10 {
                let (r, trace) = w.probe_traced(from, proto, src, cip, 80, ANSWER);
                let (answered, _) = w.replies(&format!("{} #{i} from {who}", proto.as_str()), &[r]);
                pods.extend(answered);
                // The first connection is balanced; the kernel's list then
                // holds the source, and the tracer, given it, knows the pod.
                let want = if i == 0 { 3 } else { 1 };
                assert_eq!(
                    trace.outcomes.len(),
                    want,
                    "{}: {} #{i} from {who}: the tracer's outcomes {:?}",
                    w.label(),
                    proto.as_str(),
                    trace.outcomes.iter().map(Outcome::summary).collect::<Vec<_>>()
                );
            }
            assert_eq!(
                pods.len(),
                1,
                "{}: 10 {} connections from {who} went to {pods:?}\n{}",
                w.label(),
                proto.as_str(),
                w.dump()
            );
            chosen.push(format!("{} {who}->{}", proto.as_str(), pods.first().unwrap()));
        }
        summary.push(format!("{}: 10 each stuck: {}", w.label(), chosen.join(", ")));
    }
    println!("session affinity: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 10. IPv6: ClusterIP and NodePort through ip6tables

#[test]
fn ipv6_cluster_ip_and_node_port() {
    if !kernel_tests_enabled("ipv6_cluster_ip_and_node_port") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V6;
        let w = World::new(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
            let eps = [
                (t.pod("pod-a").unwrap(), "node-a"),
                (t.pod("pod-b").unwrap(), "node-b"),
            ];
            vec![
                service(
                    "web6",
                    family,
                    json!({
                        "type": "NodePort",
                        "clusterIP": svc_ip(family, 10).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30300), port("udp", Proto::Udp, 80, 30300)],
                    }),
                    &[],
                ),
                slice("web6", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
            ]
        });
        let (cip, masq) = (w.svc_ip(10), w.node_pod_side());
        let results = w.probes(w.pod_ns("pod-c"), 20, Proto::Tcp, None, cip, 80);
        let (pods, peers) = w.replies("tcp from pod-c to the IPv6 cluster IP", &results);
        assert_eq!(pods, set(["pod-a", "pod-b"]), "{}: balancing", w.label());
        assert_eq!(
            peers,
            ips([w.pod_ip("pod-c")]),
            "{}: a pod's source is kept",
            w.label()
        );
        let results = w.probes(&w.topology.client, 5, Proto::Tcp, None, cip, 80);
        let (_, peers) = w.replies("tcp from the client to the IPv6 cluster IP", &results);
        assert_eq!(peers, ips([masq]), "{}: the client is masqueraded", w.label());
        let results = w.probes(&w.topology.client, 20, Proto::Tcp, None, w.node_ip(), 30300);
        let (pods, peers) = w.replies("tcp from the client to the IPv6 NodePort", &results);
        assert_eq!(pods, set(["pod-a", "pod-b"]), "{}: NodePort balancing", w.label());
        assert_eq!(
            peers,
            ips([masq]),
            "{}: NodePort traffic is masqueraded",
            w.label()
        );
        let r = w.probe(&w.topology.client, Proto::Udp, None, w.node_ip(), 30300, ANSWER);
        w.expect_reply("udp from the client to the IPv6 NodePort", &r, None, masq);
        let marked = w.count(
            "nat",
            "KUBE-SERVICES",
            &[
                "\"paths/web6:tcp cluster IP\"",
                "! -s 2001:db8:2::/64",
                "-j KUBE-MARK-MASQ",
            ],
        );
        w.expect_count("IPv6 `! -s CIDR -j KUBE-MARK-MASQ` packets", marked, 5);
        summary.push(format!(
            "{}: [{cip}]:80 from pod-c kept, client masqueraded; [{}]:30300 reached both pods as {masq}",
            w.label(),
            w.node_ip()
        ));
    }
    println!("IPv6: {}", summary.join(" | "));
}
