//! The harness of the real-packet path suites (`kernel_paths`,
//! `kernel_paths_v1_10`): the Service and EndpointSlice builders, compiling a
//! cluster for node-a with a given [`Layout`], and the [`World`] that applies
//! the payload in a [`Topology`], runs an echo server in every pod, probes,
//! and checks every probe against `chainsmith_tracer` reading the kernel's
//! own rules. What differs between layouts is a [`Layout`] value each suite
//! declares; helpers only one suite's scenarios need stay in that suite.
//!
//! Included by those two suites only (`#[path = "common/paths.rs"] mod
//! paths;`), not from `common/mod.rs`: the other test binaries would carry it
//! as dead code. It calls `crate::common`, which both suites declare.

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chainsmith_iptables::BuiltinJump;
use chainsmith_testkit::{
    Backend, EchoServer, IpFamily, Netns, Pod, ProbeResult, Proto, Topology, apply_rules_with_jumps, probe,
    probe_from, probe_here,
};
use chainsmith_tracer::{Origin, Outcome, Packet, Ruleset, Trace, Verdict};
use serde_json::{Value, json};

/// The port every pod's echo server listens on (the Services' targetPort).
pub const POD_PORT: u16 = 8080;
/// How long an answer may take.
pub const ANSWER: Duration = Duration::from_secs(2);
/// How long we wait before calling a packet dropped.
pub const DROPPED: Duration = Duration::from_millis(500);

/// What sets one kube-proxy rule layout apart in these suites.
pub struct Layout {
    /// `chainsmith compile --layout NAME`; also opens every label.
    pub name: &'static str,
    /// node.yaml's proxier settings of that kube-proxy, after those every
    /// layout here shares (node IP, interface addresses, ClusterCIDR
    /// detector on the pod network, mark bit 14, no masquerade-all, no
    /// nodePortAddresses).
    pub node_settings: fn(IpFamily) -> String,
    /// The jumps from the built-in chains kube-proxy (and the kubelet)
    /// inserted: applied after the payload, then required in the kernel's
    /// dump, so the tracer reads what that era's node held.
    pub jumps: &'static [BuiltinJump],
    /// A payload line only this layout writes: a compile that ignored
    /// `--layout` fails at once instead of testing the other layout.
    pub signature: &'static str,
    /// The iptables matches and targets the payloads need in the kernel,
    /// named when applying them fails.
    pub kernel_needs: &'static str,
    /// Whether a packet to a Service address may leave the node
    /// untranslated (v1.10: forwarded packets never meet the filter
    /// REJECTs, KUBE-MARK-DROP is enforced in INPUT and OUTPUT only); if
    /// so, the tracer may explain a timeout that way, otherwise a timeout
    /// must be a DROP.
    pub forwards_untranslated: bool,
}

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
pub fn svc_ip(family: IpFamily, n: u8) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, u16::from(n))),
    }
}

/// A Service port `port` -> `POD_PORT`, with a NodePort unless 0.
pub fn port(name: &str, proto: Proto, port: u16, node_port: u16) -> Value {
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
pub fn service(name: &str, family: IpFamily, mut spec: Value, lb_ips: &[IpAddr]) -> Value {
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
pub fn slice(service: &str, family: IpFamily, ports: &[(&str, Proto)], endpoints: &[(&Pod, &str)]) -> Value {
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

/// The endpoints `(pod, node)` of pods of `t`.
pub fn endpoints<'t>(t: &'t Topology, on: &[(&str, &'t str)]) -> Vec<(&'t Pod, &'t str)> {
    on.iter()
        .map(|(pod, node)| (t.pod(pod).expect("pod"), *node))
        .collect()
}

/// A LoadBalancer Service `name`: cluster IP .`cip`, `lb_ip`, tcp port 80
/// with the NodePort `node_port`; `source_ranges`, unless empty, become its
/// loadBalancerSourceRanges.
pub fn load_balancer(
    name: &str,
    family: IpFamily,
    cip: u8,
    lb_ip: IpAddr,
    node_port: u16,
    source_ranges: &[&str],
) -> Value {
    let mut spec = json!({
        "type": "LoadBalancer",
        "clusterIP": svc_ip(family, cip).to_string(),
        "ports": [port("tcp", Proto::Tcp, 80, node_port)],
    });
    if !source_ranges.is_empty() {
        spec["loadBalancerSourceRanges"] = json!(source_ranges);
    }
    service(name, family, spec, &[lb_ip])
}

/// node-a's settings for this topology: the node IP on the client link, the
/// pod network as the cluster CIDR, then the layout's proxier settings.
fn node_yaml(layout: &Layout, topology: &Topology, family: IpFamily) -> String {
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
         {settings}",
        family = family_name(family),
        settings = (layout.node_settings)(family),
    )
}

/// `chainsmith compile --layout NAME --node node.yaml cluster.yaml`, which
/// must not warn.
fn compile(layout: &Layout, node: &str, objects: &[Value]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster: String = objects
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string_pretty(o).expect("json")))
        .collect();
    let (node_path, cluster_path) = (dir.path().join("node.yaml"), dir.path().join("cluster.yaml"));
    std::fs::write(&node_path, node).expect("write node.yaml");
    std::fs::write(&cluster_path, &cluster).expect("write cluster.yaml");
    let output = crate::common::chainsmith_in_fixtures(&[
        "compile",
        "--layout",
        layout.name,
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
// The Services both suites probe, as `World::new`'s `cluster`

/// `web`: cluster IP .10, tcp and udp port 80, endpoints pod-a and pod-b on
/// node-a, pod-c on node-b; a NodePort Service on `node_port` unless 0.
pub fn web_cluster(t: &Topology, family: IpFamily, node_port: u16) -> Vec<Value> {
    let eps = endpoints(
        t,
        &[("pod-a", "node-a"), ("pod-b", "node-a"), ("pod-c", "node-b")],
    );
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
}

/// `shop`: NodePort 30080 (eTP Cluster), tcp and udp, cluster IP .20,
/// endpoints pod-a on node-a and pod-b on node-b.
pub fn shop_cluster(t: &Topology, family: IpFamily) -> Vec<Value> {
    let eps = endpoints(t, &[("pod-a", "node-a"), ("pod-b", "node-b")]);
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
}

/// `ext`: cluster IP .40 with `external_ips`, tcp and udp port 80,
/// endpoints pod-a on node-a and pod-b on node-b.
pub fn external_ip_cluster(t: &Topology, family: IpFamily, external_ips: &[IpAddr]) -> Vec<Value> {
    let eps = endpoints(t, &[("pod-a", "node-a"), ("pod-b", "node-b")]);
    let external_ips: Vec<String> = external_ips.iter().map(IpAddr::to_string).collect();
    vec![
        service(
            "ext",
            family,
            json!({
                "type": "ClusterIP",
                "clusterIP": svc_ip(family, 40).to_string(),
                "externalIPs": external_ips,
                "ports": [port("tcp", Proto::Tcp, 80, 0), port("udp", Proto::Udp, 80, 0)],
            }),
            &[],
        ),
        slice("ext", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &eps),
    ]
}

/// Two LoadBalancer Services with externalTrafficPolicy Local, tcp port 80:
/// `local-ok` (cluster IP .50, LB IP .110, NodePort 30200) with endpoints
/// pod-a on node-a and pod-b on node-b, and `local-remote` (.51, .111,
/// 30201) whose only endpoint, pod-c, is on node-b.
pub fn local_policy_cluster(t: &Topology, family: IpFamily) -> Vec<Value> {
    let local = |name: &str, cip: u8, lb_ip: u8, node_port: u16, health_check: u16| {
        let mut service = load_balancer(name, family, cip, svc_ip(family, lb_ip), node_port, &[]);
        service["spec"]["externalTrafficPolicy"] = json!("Local");
        service["spec"]["healthCheckNodePort"] = json!(health_check);
        service
    };
    vec![
        local("local-ok", 50, 110, 30200, 32000),
        slice(
            "local-ok",
            family,
            &[("tcp", Proto::Tcp)],
            &endpoints(t, &[("pod-a", "node-a"), ("pod-b", "node-b")]),
        ),
        local("local-remote", 51, 111, 30201, 32001),
        slice(
            "local-remote",
            family,
            &[("tcp", Proto::Tcp)],
            &endpoints(t, &[("pod-c", "node-b")]),
        ),
    ]
}

/// `self`: cluster IP .60, tcp and udp port 80, its only endpoint pod-a on
/// node-a (which reaches itself through it).
pub fn hairpin_cluster(t: &Topology, family: IpFamily) -> Vec<Value> {
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
            &endpoints(t, &[("pod-a", "node-a")]),
        ),
    ]
}

/// `sticky`: ClientIP session affinity (600 s), cluster IP .70, tcp and udp
/// port 80, endpoints pod-a and pod-b on node-a, pod-c on node-b.
pub fn sticky_cluster(t: &Topology, family: IpFamily) -> Vec<Value> {
    let eps = endpoints(
        t,
        &[("pod-a", "node-a"), ("pod-b", "node-a"), ("pod-c", "node-b")],
    );
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
}

// ---------------------------------------------------------------------------
// Reading namespaces, traces and results

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
pub fn chains(outcome: &Outcome) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for step in &outcome.path {
        let name = format!("{}/{}", step.table, step.chain);
        if chains.last() != Some(&name) {
            chains.push(name);
        }
    }
    chains
}

/// A set of pod names.
pub fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A set of addresses.
pub fn ips<const N: usize>(items: [IpAddr; N]) -> BTreeSet<IpAddr> {
    items.into_iter().collect()
}

// ---------------------------------------------------------------------------
// A running world: topology + rules + echo servers

pub struct World {
    /// Declared first: stopped before the namespaces go.
    pub servers: Vec<EchoServer>,
    pub topology: Topology,
    pub layout: &'static Layout,
    pub family: IpFamily,
    pub backend: Backend,
    pub payload: String,
    /// The node's addresses as the kernel holds them (for the tracer's
    /// `addrtype LOCAL`).
    local: Vec<IpAddr>,
    /// The payload holds `-m recent` rules: probes read the kernel's lists.
    pub affinity: bool,
    kernel_rules: OnceCell<Ruleset>,
    /// Probes whose outcome the tracer predicted.
    agreements: Cell<usize>,
}

impl World {
    /// Builds the topology with `pods`, puts `node_local` on the node's
    /// loopback (load-balancer IPs routed to the node itself, as on GCE),
    /// compiles what `cluster` returns for it with `layout`, applies the
    /// rules with the layout's jumps, starts an echo server in every pod.
    pub fn new(
        layout: &'static Layout,
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
        let payload = compile(layout, &node_yaml(layout, &topology, family), &objects);
        assert!(
            payload.contains(layout.signature),
            "not a {} payload:\n{payload}",
            layout.name
        );
        apply_rules_with_jumps(&topology.node, &payload, family, backend, layout.jumps).unwrap_or_else(|e| {
            // Fail, never skip: a kernel without one of these cannot run the layout.
            panic!(
                "applying the {} rules ({family:?}, {backend:?}) failed: {e}\n\
                 The {} payload needs these iptables matches and targets in the kernel \
                 (xt_* modules; nft_compat for iptables-nft): {}. A missing one shows above \
                 as \"Couldn't load match\" or \"No such file or directory\".\n{payload}",
                layout.name, layout.name, layout.kernel_needs
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
            layout,
            family,
            backend,
            affinity: payload.contains("-m recent"),
            payload,
            local,
            kernel_rules: OnceCell::new(),
            agreements: Cell::new(0),
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{} {}/{}",
            self.layout.name,
            match self.family {
                IpFamily::V4 => "ipv4",
                IpFamily::V6 => "ipv6",
            },
            self.backend.as_str()
        )
    }

    pub fn ipv6(&self) -> bool {
        self.family == IpFamily::V6
    }

    /// `iptables-legacy-save`, `ip6tables-nft`, ... for this world.
    pub fn tool(&self, suffix: &str) -> String {
        let base = if self.ipv6() { "ip6tables" } else { "iptables" };
        format!("{base}-{}{suffix}", self.backend.as_str())
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.topology.pod(name).expect("pod")
    }

    pub fn pod_ns(&self, name: &str) -> &Netns {
        &self.pod(name).netns
    }

    pub fn pod_ip(&self, name: &str) -> IpAddr {
        self.pod(name).ip(self.ipv6())
    }

    pub fn server(&self, name: &str) -> &EchoServer {
        self.servers.iter().find(|s| s.pod() == name).expect("server")
    }

    /// The address of this world's family.
    fn of_family(&self, v4: Ipv4Addr, v6: Ipv6Addr) -> IpAddr {
        if self.ipv6() { v6.into() } else { v4.into() }
    }

    pub fn node_ip(&self) -> IpAddr {
        self.of_family(Topology::NODE_IPV4, Topology::NODE_IPV6)
    }

    /// Where masqueraded traffic to a pod comes from.
    pub fn node_pod_side(&self) -> IpAddr {
        self.of_family(Topology::NODE_POD_SIDE_IPV4, Topology::NODE_POD_SIDE_IPV6)
    }

    pub fn client_ip(&self) -> IpAddr {
        self.of_family(Topology::CLIENT_IPV4, Topology::CLIENT_IPV6)
    }

    pub fn client2_ip(&self) -> IpAddr {
        self.of_family(Topology::CLIENT2_IPV4, Topology::CLIENT2_IPV6)
    }

    pub fn svc_ip(&self, n: u8) -> IpAddr {
        svc_ip(self.family, n)
    }

    /// `IP/32` (`/128`) as iptables-save prints a host.
    pub fn host(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", if self.ipv6() { 128 } else { 32 })
    }

    /// `-d IP/32` (`/128`) as iptables-save prints it.
    pub fn dst_match(&self, ip: IpAddr) -> String {
        format!("-d {}", self.host(ip))
    }

    /// The rules the node's kernel holds, as the tracer reads `iptables-save`;
    /// asserts on first use that the kernel holds every built-in jump of the
    /// layout (completing the dump with them adds nothing).
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
            let completed = from_kernel.clone().with_builtin_jumps(family, self.layout.jumps);
            assert!(
                completed == from_kernel,
                "{}: the kernel lacks some of the layout's built-in jumps:\n{dump}",
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
    pub fn probe_traced(
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

    pub fn probe(
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
    pub fn probes(
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
    /// - a timeout: every branch drops, or (if the layout
    ///   [forwards untranslated](Layout::forwards_untranslated)) every branch
    ///   lets the packet leave untranslated to a destination the node routes
    ///   to the uplink;
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
                let leaves = self.layout.forwards_untranslated
                    && traced
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
    pub fn count_in(&self, netns: &Netns, table: &str, chain: &str, needles: &[&str]) -> u64 {
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
    pub fn count(&self, table: &str, chain: &str, needles: &[&str]) -> u64 {
        self.count_in(&self.topology.node, table, chain, needles)
    }

    /// What the node's kernel holds, for failure messages.
    pub fn dump(&self) -> String {
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
    pub fn replies(&self, what: &str, results: &[ProbeResult]) -> (BTreeSet<String>, BTreeSet<IpAddr>) {
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
    pub fn expect_reply(&self, what: &str, result: &ProbeResult, pod: Option<&str>, peer: IpAddr) {
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

    pub fn expect(&self, what: &str, result: &ProbeResult, want: &ProbeResult) {
        assert_eq!(result, want, "{} {what}\n{}", self.label(), self.dump());
    }

    /// One probe from `from` to a Service without endpoints, which a REJECT
    /// must refuse at once (a quarter of [`ANSWER`]); returns how long it
    /// took. `rejected_in_output`: the REJECT is met in OUTPUT, where it
    /// fails the node's own UDP send() with EPERM (its ICMP comes too late
    /// for it) instead of refusing.
    pub fn expect_refused_at_once(
        &self,
        what: &str,
        from: &Netns,
        proto: Proto,
        dst: IpAddr,
        port: u16,
        rejected_in_output: bool,
    ) -> Duration {
        let start = Instant::now();
        let r = self.probe(from, proto, None, dst, port, ANSWER);
        let took = start.elapsed();
        if rejected_in_output && proto == Proto::Udp {
            assert!(
                matches!(&r, ProbeResult::Other(e) if e.contains("Operation not permitted")),
                "{} {what}: expected send() to fail with EPERM, got {r:?}\n{}",
                self.label(),
                self.dump()
            );
        } else {
            self.expect(what, &r, &ProbeResult::Refused);
        }
        assert!(
            took < ANSWER / 4,
            "{} {what}: refused only after {took:?}",
            self.label()
        );
        took
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

// ---------------------------------------------------------------------------
// Checks both suites make

/// Balancing of [`web_cluster`] from pod-d (not an endpoint): `n` probes of
/// each protocol to `cip:80` all answered, by all three endpoints, which
/// see pod-d's own address; conntrack holds the DNAT of every flow (see
/// [`check_conntrack`]). Returns the number of flows, TCP then UDP.
pub fn check_balancing_from_pod_d(w: &World, cip: IpAddr, probes: [(Proto, usize); 2]) -> Vec<usize> {
    let three = set(["pod-a", "pod-b", "pod-c"]);
    let pod_d = w.pod_ns("pod-d");
    for (proto, n) in probes {
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
            "{}: pod traffic is not masqueraded",
            w.label()
        );
    }
    check_conntrack(w, w.pod_ip("pod-d"), cip)
}

/// The cluster IP `cip` from outside the cluster CIDR (`! -s CIDR -j
/// KUBE-MARK-MASQ`): 6 TCP connections from the client and one from the
/// node, all masqueraded; returns the trace of the node's.
pub fn check_off_cluster_sources_masqueraded(w: &World, cip: IpAddr) -> Trace {
    let masq = w.node_pod_side();
    let client = w.probes(&w.topology.client, 6, Proto::Tcp, None, cip, 80);
    let (_, peers) = w.replies("tcp from the client to the cluster IP", &client);
    assert_eq!(peers, ips([masq]), "{}: the client is masqueraded", w.label());
    let (node, trace) = w.probe_traced(&w.topology.node, Proto::Tcp, None, cip, 80, ANSWER);
    w.expect_reply("tcp from the node to the cluster IP", &node, None, masq);
    trace
}

/// [`shop_cluster`]'s NodePort on the node IP from the client: 20 TCP
/// connections reach both endpoints, all masqueraded; so does a UDP
/// exchange, whose trace it returns.
pub fn check_node_port_from_client(w: &World) -> Trace {
    let (client, node_ip, masq) = (&w.topology.client, w.node_ip(), w.node_pod_side());
    let tcp = w.probes(client, 20, Proto::Tcp, None, node_ip, 30080);
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
    let (udp, trace) = w.probe_traced(client, Proto::Udp, None, node_ip, 30080, ANSWER);
    w.expect_reply("udp from the client to the NodePort", &udp, None, masq);
    trace
}

/// Hairpin through [`hairpin_cluster`]'s cluster IP `cip`: pod-a reaching
/// itself is masqueraded (it would not accept its own address back), pod-b
/// is seen as itself.
pub fn check_hairpin(w: &World, proto: Proto, cip: IpAddr) {
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
}

/// `n` probes from `who` (`from`, bound to `src` if given) to
/// [`sticky_cluster`]'s cluster IP `cip`: one pod answers them all; returns
/// its name. The tracer, given the kernel's `-m recent` lists before each
/// probe, balances the first over the three endpoints and knows the pod of
/// every later one.
pub fn check_sticks_to_one_pod(
    w: &World,
    who: &str,
    from: &Netns,
    src: Option<IpAddr>,
    proto: Proto,
    cip: IpAddr,
    n: usize,
) -> String {
    let mut pods = BTreeSet::new();
    for i in 0..n {
        let (r, trace) = w.probe_traced(from, proto, src, cip, 80, ANSWER);
        let (answered, _) = w.replies(&format!("{} #{i} from {who}", proto.as_str()), &[r]);
        pods.extend(answered);
        // The first connection is balanced; the kernel's list then holds
        // the source, and the tracer, given it, knows the pod.
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
        "{}: {n} {} connections from {who} went to {pods:?}\n{}",
        w.label(),
        proto.as_str(),
        w.dump()
    );
    pods.into_iter().next().expect("one pod")
}

/// conntrack on the node: for every flow a pod saw from `client_ip` (source
/// port -> pod), the DNAT of the cluster IP to that pod: original tuple
/// `client_ip:port -> cip:80`, reply tuple from that pod's address and port.
/// (Two probes may share a source port, and so one flow.) Returns the number
/// of flows of each protocol, TCP then UDP.
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
