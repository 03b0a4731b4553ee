//! The harness of the real-packet path suites (`kernel_paths`,
//! `kernel_paths_v1_10`, `kernel_paths_nft`): the Service and EndpointSlice
//! builders, compiling a cluster for node-a in a given [`Mode`], and the
//! [`World`] that applies the payload in a [`Topology`], runs an echo server
//! in every pod, probes, and checks every probe against the mode's tracer
//! reading the kernel's own rules.
//!
//! Two modes: [`Iptables`] (a [`Layout`] each iptables suite declares, on one
//! backend; `chainsmith_tracer` reads `iptables-save`) and [`Nftables`]
//! (`nft -f` in the node; `chainsmith_nft_tracer` reads `nft list table`).
//! Both tracers' outcomes are read as [`Branch`]es, so one agreement check
//! ([`World::disagreement`]) and the shared checks serve both. Helpers only
//! one suite's scenarios need stay in that suite.
//!
//! Included by those three suites only (`#[path = "common/paths.rs"] mod
//! paths;`), not from `common/mod.rs`: the other test binaries would carry it
//! as dead code. It calls `crate::common`, which the suites declare.

// Each suite uses its own part (the iptables suites never build an nftables
// world, the nftables suite never counts iptables rules).
#![allow(dead_code)]

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use chainsmith_iptables::BuiltinJump;
use chainsmith_nftables::{Family, Table};
use chainsmith_testkit::{
    Backend, EchoServer, IpFamily, Netns, Pod, ProbeResult, Proto, Topology, apply_rules_with_jumps,
    nft_apply, nft_list_table, probe, probe_from, probe_here,
};
use chainsmith_tracer::{Outcome, Ruleset, Trace};
use serde_json::{Value, json};

/// The port every pod's echo server listens on (the Services' targetPort).
pub const POD_PORT: u16 = 8080;
/// How long an answer may take.
pub const ANSWER: Duration = Duration::from_secs(2);
/// How long we wait before calling a packet dropped.
pub const DROPPED: Duration = Duration::from_millis(500);
/// Where a load-balanced probe series must reach every endpoint: when the
/// chance that `n` uniform draws over the trace's `N` outcomes miss one
/// (at most `N (1 - 1/N)^n`) is below this.
const MISS_BOUND: f64 = 1e-5;

/// What sets one kube-proxy iptables rule layout apart in these suites.
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
/// node-a's settings for this topology: the node IP on the client link, the
/// pod network as the cluster CIDR, then the mode's own settings.
fn node_yaml<M: Mode>(mode: &M, topology: &Topology, family: IpFamily) -> String {
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
        settings = mode.node_settings(family),
    )
}

/// `chainsmith compile MODE-ARGS --node node.yaml cluster.yaml`, which must
/// not warn.
fn compile(mode_args: &[&str], node: &str, objects: &[Value]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster: String = objects
        .iter()
        .map(|o| format!("---\n{}\n", serde_json::to_string_pretty(o).expect("json")))
        .collect();
    let (node_path, cluster_path) = (dir.path().join("node.yaml"), dir.path().join("cluster.yaml"));
    std::fs::write(&node_path, node).expect("write node.yaml");
    std::fs::write(&cluster_path, &cluster).expect("write cluster.yaml");
    let mut args = vec!["compile"];
    args.extend_from_slice(mode_args);
    args.extend([
        "--node",
        node_path.to_str().expect("path"),
        cluster_path.to_str().expect("path"),
    ]);
    let output = crate::common::chainsmith_in_fixtures(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim().is_empty(),
        "compile {mode_args:?} warned:\n{stderr}\ncluster:\n{cluster}"
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

/// The `-m recent` lists of the node's kernel that hold `src` (ClientIP
/// session affinity recorded by earlier connections).
fn recent_lists_holding(node: &Netns, src: IpAddr) -> Vec<String> {
    node.enter(|| {
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

/// [`chains`] of an outcome in `chainsmith trace --output json`.
fn json_chains(outcome: &Value) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for step in outcome["path"].as_array().into_iter().flatten() {
        let name = format!(
            "{}/{}",
            step["table"].as_str().unwrap_or_default(),
            step["chain"].as_str().unwrap_or_default()
        );
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
// Modes: how the rules get into the kernel, and which tracer explains them

/// How a [`World`] puts a cluster's rules into the node's kernel, and which
/// tracer, reading them back from the kernel, must explain every probe.
pub trait Mode: Sized {
    /// The tracer's answer for one packet.
    type Trace;
    /// The session affinity the node's kernel holds, read before a probe.
    type Affinity: Debug + Clone;
    /// The start of every label: `v1.33 ipv4/nft`, `nftables ipv6`.
    fn label(&self, family: IpFamily) -> String;
    /// The `chainsmith compile` options that select this mode.
    fn compile_args(&self) -> Vec<&'static str>;
    /// node.yaml's lines of this mode, after those every mode shares.
    fn node_settings(&self, family: IpFamily) -> String;
    /// Checks the payload is this mode's and applies it in the node.
    fn install(&self, node: &Netns, payload: &str, family: IpFamily);
    /// Whether the payload records ClientIP session affinity.
    fn has_affinity(payload: &str) -> bool;
    /// The affinity state the node's kernel holds for `src` now.
    fn affinity(w: &World<Self>, src: IpAddr) -> Self::Affinity;
    /// Traces `packet` on the rules the node's kernel holds, given the
    /// affinity state read before it was sent; returns the trace and a
    /// description of the packet for messages.
    fn trace(w: &World<Self>, packet: &ProbePacket, affinity: Self::Affinity) -> (Self::Trace, String);
    /// The trace's outcomes in the words both tracers share.
    fn branches(trace: &Self::Trace) -> Vec<Branch>;
    /// How far a balanced Service's outcome may be from 1/N: `numgen
    /// random mod N` is exact, `-m statistic --probability` is printed with
    /// 10 decimals (v1.10: 5).
    const BALANCE_TOLERANCE: f64;
    /// Whether a timeout may be a packet leaving the node untranslated
    /// (see [`Layout::forwards_untranslated`]).
    fn forwards_untranslated(&self) -> bool;
    /// What the node's kernel holds (rules, with counters where the mode
    /// has them), for failure messages.
    fn kernel_rules_text(w: &World<Self>) -> String;
}

/// One probe as the tracers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePacket {
    /// The node's interface it arrives on; `None`: the node sends it.
    pub interface: Option<String>,
    pub proto: Proto,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
}

/// What happens to a packet at the end of a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Let through: delivered, forwarded or sent (translated or not).
    Passes,
    Dropped,
    Rejected,
}

/// One outcome of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub probability: f64,
    pub fate: Fate,
    /// `IP:port` (`[IP]:port`) after DNAT.
    pub nat_destination: Option<String>,
    pub masquerade: bool,
    /// The chains it went through, in order.
    pub chains: Vec<String>,
    /// The tracer's one-line account.
    pub summary: String,
}

/// kube-proxy's iptables mode in a [`Layout`], on one iptables backend.
pub struct Iptables {
    pub layout: &'static Layout,
    pub backend: Backend,
    /// The kernel's rules as the tracer reads `iptables-save` (read once).
    kernel_rules: OnceCell<Ruleset>,
}

impl Mode for Iptables {
    type Trace = Trace;
    /// The `-m recent` lists holding the source.
    type Affinity = Vec<String>;
    const BALANCE_TOLERANCE: f64 = 1e-4;

    fn label(&self, family: IpFamily) -> String {
        format!(
            "{} {}/{}",
            self.layout.name,
            family_label(family),
            self.backend.as_str()
        )
    }

    fn compile_args(&self) -> Vec<&'static str> {
        vec!["--layout", self.layout.name]
    }

    fn node_settings(&self, family: IpFamily) -> String {
        (self.layout.node_settings)(family)
    }

    fn install(&self, node: &Netns, payload: &str, family: IpFamily) {
        let layout = self.layout;
        assert!(
            payload.contains(layout.signature),
            "not a {} payload:\n{payload}",
            layout.name
        );
        apply_rules_with_jumps(node, payload, family, self.backend, layout.jumps).unwrap_or_else(|e| {
            // Fail, never skip: a kernel without one of these cannot run the layout.
            panic!(
                "applying the {} rules ({family:?}, {:?}) failed: {e}\n\
                 The {} payload needs these iptables matches and targets in the kernel \
                 (xt_* modules; nft_compat for iptables-nft): {}. A missing one shows above \
                 as \"Couldn't load match\" or \"No such file or directory\".\n{payload}",
                layout.name, self.backend, layout.name, layout.kernel_needs
            )
        });
    }

    fn has_affinity(payload: &str) -> bool {
        payload.contains("-m recent")
    }

    fn affinity(w: &World<Self>, src: IpAddr) -> Vec<String> {
        if !w.affinity {
            return Vec::new();
        }
        recent_lists_holding(&w.topology.node, src)
    }

    fn trace(w: &World<Self>, packet: &ProbePacket, recent: Vec<String>) -> (Trace, String) {
        use chainsmith_tracer::{Origin, Packet};
        let origin = match packet.interface {
            None => Origin::FromNode,
            Some(_) => Origin::FromOutside,
        };
        let mut traced = Packet::new(
            packet.src,
            packet.dst,
            model_protocol(packet.proto),
            packet.port,
            origin,
        );
        traced.recent = recent;
        let trace = chainsmith_tracer::trace(
            w.kernel_rules(),
            &traced,
            &chainsmith_tracer::Node::new(w.local.clone()),
        );
        let what = format!(
            "{} {:?} {} -> {}:{} ({origin:?}, affinity lists {:?})",
            w.label(),
            packet.proto,
            packet.src,
            packet.dst,
            packet.port,
            traced.recent
        );
        assert!(
            trace.warnings.is_empty(),
            "{what}: the tracer warned {:?}",
            trace.warnings
        );
        (trace, what)
    }

    fn branches(trace: &Trace) -> Vec<Branch> {
        use chainsmith_tracer::Verdict;
        trace
            .outcomes
            .iter()
            .map(|o| Branch {
                probability: o.probability,
                fate: match o.verdict {
                    Verdict::Accept | Verdict::Pass => Fate::Passes,
                    Verdict::Drop => Fate::Dropped,
                    Verdict::Reject => Fate::Rejected,
                },
                nat_destination: o.nat_destination.clone(),
                masquerade: o.masquerade,
                chains: chains(o),
                summary: o.summary(),
            })
            .collect()
    }

    fn forwards_untranslated(&self) -> bool {
        self.layout.forwards_untranslated
    }

    fn kernel_rules_text(w: &World<Self>) -> String {
        w.topology
            .node
            .run(&w.tool("-save"), &["-c"])
            .unwrap_or_else(|e| e.to_string())
    }
}

/// kube-proxy's nftables mode: table `kube-proxy` of family `ip` or `ip6`,
/// applied with `nft -f`, read back with `nft list table` for
/// `chainsmith_nft_tracer`.
#[derive(Default)]
pub struct Nftables {
    /// The table as the kernel listed it right after the apply, before any
    /// packet (its affinity sets empty: each probe is given the sets' state
    /// read just before it).
    table: OnceCell<Table>,
}

/// The service CIDR of nftables worlds (`serviceCIDRs`, for the
/// "unallocated cluster IP" DROP): the lower half of the Service range,
/// every `svc_ip(family, n)` with n < 128.
pub fn nft_service_cidr(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "198.51.100.0/25",
        IpFamily::V6 => "2001:db8:3::/121",
    }
}

/// The nftables family of a world's IP family.
pub fn nft_family(family: IpFamily) -> Family {
    match family {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

impl Mode for Nftables {
    type Trace = chainsmith_nft_tracer::Trace;
    /// Every affinity set of the table and the client addresses it holds.
    type Affinity = BTreeMap<String, Vec<IpAddr>>;
    const BALANCE_TOLERANCE: f64 = 1e-12;

    fn label(&self, family: IpFamily) -> String {
        format!("nftables {}", family_label(family))
    }

    fn compile_args(&self) -> Vec<&'static str> {
        vec!["--mode", "nftables"]
    }

    fn node_settings(&self, family: IpFamily) -> String {
        format!("serviceCIDRs: [\"{}\"]\n", nft_service_cidr(family))
    }

    fn install(&self, node: &Netns, payload: &str, family: IpFamily) {
        let family = nft_family(family);
        assert!(
            payload.contains(&format!("add table {family} kube-proxy")),
            "not an nftables payload for {family}:\n{payload}"
        );
        nft_apply(node, payload).unwrap_or_else(|e| panic!("nft -f refused the payload: {e}\n{payload}"));
        let table = nft_list_table(node, family).unwrap_or_else(|e| panic!("reading the table back: {e}"));
        assert!(self.table.set(table).is_ok(), "installed twice");
    }

    fn has_affinity(payload: &str) -> bool {
        payload.contains(" affinity-")
    }

    fn affinity(w: &World<Self>, _src: IpAddr) -> BTreeMap<String, Vec<IpAddr>> {
        if !w.affinity {
            return BTreeMap::new();
        }
        let listed = nft_list_table(&w.topology.node, nft_family(w.family)).expect("nft list table");
        listed
            .sets()
            .filter(|set| set.name.starts_with("affinity-"))
            .map(|set| {
                let clients = listed
                    .elements(&set.name)
                    .map(|e| {
                        e.key
                            .parse::<IpAddr>()
                            .unwrap_or_else(|_| panic!("{}: element {:?} is no address", set.name, e.key))
                    })
                    .collect();
                (set.name.clone(), clients)
            })
            .collect()
    }

    fn trace(
        w: &World<Self>,
        packet: &ProbePacket,
        affinity: BTreeMap<String, Vec<IpAddr>>,
    ) -> (chainsmith_nft_tracer::Trace, String) {
        let what = format!(
            "{} {:?} {} -> {}:{} (from {}, affinity {affinity:?})",
            w.label(),
            packet.proto,
            packet.src,
            packet.dst,
            packet.port,
            packet.interface.as_deref().unwrap_or("the node")
        );
        let trace = w
            .trace_nft(w.kernel_table(), &w.tracer_node(), packet, affinity)
            .unwrap_or_else(|e| panic!("{what}: the tracer cannot trace the kernel's table: {e}"));
        (trace, what)
    }

    fn branches(trace: &chainsmith_nft_tracer::Trace) -> Vec<Branch> {
        use chainsmith_nft_tracer::Verdict;
        trace
            .outcomes
            .iter()
            .map(|o| Branch {
                probability: o.probability,
                fate: match o.verdict {
                    Verdict::Delivered | Verdict::Forwarded | Verdict::Sent => Fate::Passes,
                    Verdict::Dropped { .. } => Fate::Dropped,
                    Verdict::Rejected { .. } => Fate::Rejected,
                },
                nat_destination: o.nat_destination.map(|to| to.to_string()),
                masquerade: o.masquerade,
                chains: nft_chains(o),
                summary: o.summary(),
            })
            .collect()
    }

    fn forwards_untranslated(&self) -> bool {
        false
    }

    fn kernel_rules_text(w: &World<Self>) -> String {
        w.topology
            .node
            .run("nft", &["list", "ruleset"])
            .unwrap_or_else(|e| e.to_string())
    }
}

fn family_label(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

fn model_protocol(proto: Proto) -> chainsmith_model::Protocol {
    match proto {
        Proto::Tcp => chainsmith_model::Protocol::Tcp,
        Proto::Udp => chainsmith_model::Protocol::Udp,
    }
}

/// The chains an nftables trace outcome went through, in order.
pub fn nft_chains(outcome: &chainsmith_nft_tracer::Outcome) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for step in &outcome.path {
        if chains.last() != Some(&step.chain) {
            chains.push(step.chain.clone());
        }
    }
    chains
}

// ---------------------------------------------------------------------------
// A running world: topology + rules + echo servers

/// A dump written by hand in the shape operators post from real nodes
/// (`iptables-save` of some kube-proxy version, other software's chains,
/// counters, one table, IPv6, ...): loaded whole into the node as it is with
/// `iptables-restore -c`, nothing compiled and no jump added, and traced by
/// the real `chainsmith trace --rules` on the same file, which must describe
/// exactly that dump.
pub struct Dump {
    /// The file given to `iptables-restore` and to `trace --rules`.
    pub file: std::path::PathBuf,
    pub backend: Backend,
    /// `chainsmith trace` options beyond the packet's (e.g. `--table nat`).
    pub trace_args: Vec<String>,
    /// Warnings the trace may give (substrings): the other software's matches
    /// the tracer does not model, each of which must be one the kernel did
    /// not take either for the probes sent.
    pub allowed_warnings: Vec<&'static str>,
    /// How the dump reaches the kernel; `None`: `iptables-restore -c`.
    pub load: Option<fn(&Netns, &str, IpFamily, Backend)>,
}

impl Mode for Dump {
    /// `chainsmith trace --output json`.
    type Trace = Value;
    /// The `-m recent` lists holding the source.
    type Affinity = Vec<String>;
    /// `--probability` is printed with 10 (old kube-proxy: 5) decimals.
    const BALANCE_TOLERANCE: f64 = 1e-4;

    fn label(&self, family: IpFamily) -> String {
        let name = self.file.file_name().map(|n| n.to_string_lossy().into_owned());
        format!(
            "dump {} {}/{}",
            name.unwrap_or_default(),
            family_label(family),
            self.backend.as_str()
        )
    }

    fn compile_args(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn node_settings(&self, _family: IpFamily) -> String {
        String::new()
    }

    fn install(&self, node: &Netns, payload: &str, family: IpFamily) {
        if let Some(load) = self.load {
            return load(node, payload, family, self.backend);
        }
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let restore = format!("{base}-{}-restore", self.backend.as_str());
        node.run_with_input(&restore, &["-c"], payload.as_bytes())
            .unwrap_or_else(|e| panic!("{restore} refused {}: {e}", self.file.display()));
    }

    fn has_affinity(payload: &str) -> bool {
        payload.contains("-m recent")
    }

    fn affinity(w: &World<Self>, src: IpAddr) -> Vec<String> {
        if !w.affinity {
            return Vec::new();
        }
        recent_lists_holding(&w.topology.node, src)
    }

    fn trace(w: &World<Self>, packet: &ProbePacket, recent: Vec<String>) -> (Value, String) {
        let file = w.mode.file.to_str().expect("path");
        let (src, dst, port) = (
            packet.src.to_string(),
            packet.dst.to_string(),
            packet.port.to_string(),
        );
        let mut args = vec![
            "trace",
            "--rules",
            file,
            "--src",
            &src,
            "--dst",
            &dst,
            "--dport",
            &port,
            "--proto",
            packet.proto.as_str(),
            "--output",
            "json",
        ];
        match &packet.interface {
            Some(interface) => args.extend(["--from", "outside", "--in-interface", interface.as_str()]),
            None => args.extend(["--from", "node"]),
        }
        args.extend(w.mode.trace_args.iter().map(String::as_str));
        let local: Vec<String> = w.local.iter().map(IpAddr::to_string).collect();
        for ip in &local {
            args.extend(["--local-ip", ip.as_str()]);
        }
        for list in &recent {
            args.extend(["--affinity", list.as_str()]);
        }
        let output = crate::common::chainsmith_in_fixtures(&args);
        let what = format!(
            "{} {:?} {} -> {}:{} (from {:?}, affinity lists {recent:?})",
            w.label(),
            packet.proto,
            packet.src,
            packet.dst,
            packet.port,
            packet.interface
        );
        assert!(
            output.status.success(),
            "{what}: chainsmith {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let trace: Value = serde_json::from_slice(&output.stdout).expect("trace JSON");
        for warning in trace["warnings"].as_array().into_iter().flatten() {
            let warning = warning.as_str().unwrap_or_default();
            assert!(
                w.mode
                    .allowed_warnings
                    .iter()
                    .any(|allowed| warning.contains(allowed)),
                "{what}: the tracer warned {warning:?}"
            );
        }
        (trace, what)
    }

    fn branches(trace: &Value) -> Vec<Branch> {
        let outcomes = trace["outcomes"].as_array().cloned().unwrap_or_default();
        outcomes
            .iter()
            .map(|o| {
                let verdict = o["verdict"].as_str().unwrap_or_default();
                let nat_destination = o["nat_destination"].as_str().map(str::to_string);
                let masquerade = o["masquerade"].as_bool().unwrap_or_default();
                let probability = o["probability"].as_f64().unwrap_or_default();
                Branch {
                    probability,
                    fate: match verdict {
                        "drop" => Fate::Dropped,
                        "reject" => Fate::Rejected,
                        _ => Fate::Passes,
                    },
                    summary: format!(
                        "{verdict} to {nat_destination:?}, masquerade {masquerade} (p={probability})"
                    ),
                    nat_destination,
                    masquerade,
                    chains: json_chains(o),
                }
            })
            .collect()
    }

    /// Every dump here leaves untranslated Service traffic to the node's
    /// routes, as a node does.
    fn forwards_untranslated(&self) -> bool {
        true
    }

    fn kernel_rules_text(w: &World<Self>) -> String {
        let base = if w.ipv6() { "ip6tables" } else { "iptables" };
        w.topology
            .node
            .run(&format!("{base}-{}-save", w.mode.backend.as_str()), &["-c"])
            .unwrap_or_else(|e| e.to_string())
    }
}

impl World<Dump> {
    /// Builds the topology with `pods`, puts `node_local` on the node's
    /// loopback, loads the dump as it is, starts an echo server in every pod.
    pub fn load(dump: Dump, family: IpFamily, pods: &[&str], node_local: &[IpAddr]) -> World<Dump> {
        let text = std::fs::read_to_string(&dump.file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dump.file.display()));
        World::build_with(dump, family, pods, node_local, |_, _| text)
    }
}

pub struct World<M: Mode = Iptables> {
    /// Declared first: stopped before the namespaces go.
    pub servers: Vec<EchoServer>,
    pub topology: Topology,
    pub mode: M,
    pub family: IpFamily,
    pub payload: String,
    /// The node's addresses as the kernel holds them (for the tracers'
    /// `addrtype LOCAL` / `fib ... type local`).
    local: Vec<IpAddr>,
    /// The payload records session affinity: probes read the kernel's state.
    pub affinity: bool,
    /// Probes whose outcome the tracer predicted.
    agreements: Cell<usize>,
}

impl World<Iptables> {
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
        let mode = Iptables {
            layout,
            backend,
            kernel_rules: OnceCell::new(),
        };
        World::build(mode, family, pods, node_local, cluster)
    }

    pub fn layout(&self) -> &'static Layout {
        self.mode.layout
    }

    /// `iptables-legacy-save`, `ip6tables-nft`, ... for this world.
    pub fn tool(&self, suffix: &str) -> String {
        let base = if self.ipv6() { "ip6tables" } else { "iptables" };
        format!("{base}-{}{suffix}", self.mode.backend.as_str())
    }

    /// The rules the node's kernel holds, as the tracer reads `iptables-save`;
    /// asserts on first use that the kernel holds every built-in jump of the
    /// layout (completing the dump with them adds nothing).
    fn kernel_rules(&self) -> &Ruleset {
        self.mode.kernel_rules.get_or_init(|| {
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
            let completed = from_kernel
                .clone()
                .with_builtin_jumps(family, self.mode.layout.jumps);
            assert!(
                completed == from_kernel,
                "{}: the kernel lacks some of the layout's built-in jumps:\n{dump}",
                self.label()
            );
            completed
        })
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
}

impl World<Nftables> {
    /// [`World::new`] in nftables mode: the payload of `chainsmith compile
    /// --mode nftables` applied with `nft -f` in the node, and read back.
    pub fn nftables(
        family: IpFamily,
        pods: &[&str],
        node_local: &[IpAddr],
        cluster: impl FnOnce(&Topology) -> Vec<Value>,
    ) -> World<Nftables> {
        World::build(Nftables::default(), family, pods, node_local, cluster)
    }

    /// The `kube-proxy` table as the kernel listed it after the apply.
    pub fn kernel_table(&self) -> &Table {
        self.mode.table.get().expect("installed")
    }

    /// The node as the tracer needs it: its addresses as the kernel holds them.
    pub fn tracer_node(&self) -> chainsmith_nft_tracer::Node {
        chainsmith_nft_tracer::Node::new(self.local.clone())
    }

    /// Traces `packet` through `table` on `node` (the kernel's, or one a
    /// test changed on purpose).
    pub fn trace_nft(
        &self,
        table: &Table,
        node: &chainsmith_nft_tracer::Node,
        packet: &ProbePacket,
        affinity: BTreeMap<String, Vec<IpAddr>>,
    ) -> Result<chainsmith_nft_tracer::Trace, chainsmith_nft_tracer::TraceError> {
        use chainsmith_nft_tracer::{Origin, Packet};
        let origin = match &packet.interface {
            None => Origin::FromNode,
            Some(interface) => Origin::FromOutside {
                interface: interface.clone(),
            },
        };
        let mut traced = Packet::new(
            packet.src,
            packet.dst,
            model_protocol(packet.proto),
            packet.port,
            origin,
        );
        traced.affinity = affinity;
        chainsmith_nft_tracer::trace(table, &traced, node)
    }
}

impl<M: Mode> World<M> {
    /// Builds the topology with `pods`, puts `node_local` on the node's
    /// loopback, compiles what `cluster` returns for it in `mode`, installs
    /// the rules, starts an echo server in every pod.
    fn build(
        mode: M,
        family: IpFamily,
        pods: &[&str],
        node_local: &[IpAddr],
        cluster: impl FnOnce(&Topology) -> Vec<Value>,
    ) -> World<M> {
        World::build_with(mode, family, pods, node_local, |topology, mode| {
            let objects = cluster(topology);
            compile(&mode.compile_args(), &node_yaml(mode, topology, family), &objects)
        })
    }

    /// [`World::build`] with the rules `payload` returns for the topology
    /// instead of a compiled cluster.
    fn build_with(
        mode: M,
        family: IpFamily,
        pods: &[&str],
        node_local: &[IpAddr],
        payload: impl FnOnce(&Topology, &M) -> String,
    ) -> World<M> {
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
        let payload = payload(&topology, &mode);
        mode.install(&topology.node, &payload, family);
        let local = addresses(&topology.node);
        let servers = topology
            .pods
            .iter()
            .map(|pod| EchoServer::start(&pod.netns, &pod.name, POD_PORT).expect("echo server"))
            .collect();
        World {
            servers,
            topology,
            mode,
            family,
            affinity: M::has_affinity(&payload),
            payload,
            local,
            agreements: Cell::new(0),
        }
    }

    pub fn label(&self) -> String {
        self.mode.label(self.family)
    }

    pub fn ipv6(&self) -> bool {
        self.family == IpFamily::V6
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

    /// The node's loopback address of this family.
    pub fn loopback(&self) -> IpAddr {
        self.of_family(Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
    }

    /// `IP/32` (`/128`) as iptables-save prints a host.
    pub fn host(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", if self.ipv6() { 128 } else { 32 })
    }

    /// `-d IP/32` (`/128`) as iptables-save prints it.
    pub fn dst_match(&self, ip: IpAddr) -> String {
        format!("-d {}", self.host(ip))
    }

    /// The packet a probe from `from` (from the address `src`) sends: the
    /// node's interface it arrives on, none if the node sends it.
    pub fn packet(&self, from: &Netns, proto: Proto, src: IpAddr, dst: IpAddr, port: u16) -> ProbePacket {
        let t = &self.topology;
        let interface = if from.name() == t.node.name() {
            None
        } else if from.name() == t.client.name() {
            Some(t.node_client_interface.clone())
        } else if from.name() == t.uplink.name() {
            Some(t.node_uplink_interface.clone())
        } else {
            let pod = t
                .pods
                .iter()
                .find(|p| p.netns.name() == from.name())
                .unwrap_or_else(|| panic!("{} is not a namespace of this world", from.name()));
            Some(pod.node_interface.clone())
        };
        ProbePacket {
            interface,
            proto,
            src,
            dst,
            port,
        }
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
    ) -> (ProbeResult, M::Trace) {
        let source = src.unwrap_or_else(|| route_source(from, dst));
        let affinity = M::affinity(self, source);
        let result = match src {
            Some(src) => probe_from(from, proto, src, dst, port, timeout),
            None => probe(from, proto, dst, port, timeout),
        };
        let packet = self.packet(from, proto, source, dst, port);
        let trace = self.agree(&packet, affinity, &result);
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
    /// against the tracer. Where all are answered (and the world records
    /// no affinity), the trace's outcomes must be equally likely and, once
    /// `n` makes missing one unlikely (below [`MISS_BOUND`]), the pods that
    /// answered must be exactly the trace's DNAT targets.
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
            // The tracer is given the kernel's affinity state before each one.
            return (0..n)
                .map(|_| self.probe(from, proto, src, dst, port, ANSWER))
                .collect();
        }
        let source = src.unwrap_or_else(|| route_source(from, dst));
        let affinity = M::affinity(self, source);
        let results: Vec<ProbeResult> = from
            .enter(|| {
                (0..n)
                    .map(|_| probe_here(proto, src, dst, port, ANSWER))
                    .collect()
            })
            .expect("enter");
        let packet = self.packet(from, proto, source, dst, port);
        let mut branches = Vec::new();
        for result in &results {
            branches = M::branches(&self.agree(&packet, affinity.clone(), result));
        }
        self.check_balanced(&packet, &results, &branches);
        results
    }

    /// See [`World::probes`].
    fn check_balanced(&self, packet: &ProbePacket, results: &[ProbeResult], branches: &[Branch]) {
        if branches.is_empty() || !results.iter().all(|r| matches!(r, ProbeResult::Reply { .. })) {
            return;
        }
        let what = format!("{} {packet:?}", self.label());
        let outcomes = branches.len();
        let uniform = 1.0 / outcomes as f64;
        assert!(
            branches
                .iter()
                .all(|b| (b.probability - uniform).abs() <= M::BALANCE_TOLERANCE),
            "{what}: the tracer's {outcomes} outcomes are not equally likely: {:?}",
            branches.iter().map(|b| &b.summary).collect::<Vec<_>>()
        );
        let exponent = i32::try_from(results.len()).unwrap_or(i32::MAX);
        if outcomes as f64 * (1.0 - uniform).powi(exponent) >= MISS_BOUND {
            return;
        }
        let targets: BTreeSet<String> = branches
            .iter()
            .filter_map(|b| b.nat_destination.clone())
            .collect();
        let reached: BTreeSet<String> = results
            .iter()
            .filter_map(ProbeResult::pod)
            .map(|pod| SocketAddr::new(self.pod_ip(pod), POD_PORT).to_string())
            .collect();
        assert_eq!(
            reached,
            targets,
            "{what}: {} probes reached these endpoints, the tracer's DNAT targets are others\n{}",
            results.len(),
            self.dump()
        );
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

    /// Asserts that the mode's tracer, on the rules the kernel holds,
    /// predicts `result` for `packet` (see [`World::disagreement`]).
    fn agree(&self, packet: &ProbePacket, affinity: M::Affinity, result: &ProbeResult) -> M::Trace {
        let (trace, what) = M::trace(self, packet, affinity);
        if let Some(why) = self.disagreement(packet, result, &M::branches(&trace)) {
            panic!("{what}: {why}");
        }
        self.agreements.set(self.agreements.get() + 1);
        trace
    }

    /// Why `branches` (a trace of `packet`) do not explain what the kernel
    /// did with it, if they do not:
    /// - a reply: every branch delivers with a DNAT, one of them to the pod
    ///   that answered, masquerading exactly when the pod saw another
    ///   address than the sender's;
    /// - a timeout: every branch drops, or (if the mode
    ///   [forwards untranslated](Layout::forwards_untranslated)) every branch
    ///   lets the packet leave untranslated to a destination the node routes
    ///   to the uplink;
    /// - a refusal: every branch rejects, or every branch delivers it
    ///   untranslated to one of the node's own addresses (where nothing
    ///   listens);
    /// - EPERM on the node's own send: every branch rejects or drops (in
    ///   OUTPUT).
    pub fn disagreement(
        &self,
        packet: &ProbePacket,
        result: &ProbeResult,
        branches: &[Branch],
    ) -> Option<String> {
        let verdicts: Vec<&str> = branches.iter().map(|b| b.summary.as_str()).collect();
        let all = |f: &dyn Fn(&Branch) -> bool| !branches.is_empty() && branches.iter().all(f);
        let untranslated = |b: &Branch| b.fate == Fate::Passes && b.nat_destination.is_none();
        match result {
            ProbeResult::Reply { pod, peer_ip } => {
                let to = SocketAddr::new(self.pod_ip(pod), POD_PORT).to_string();
                if !all(&|b| b.fate == Fate::Passes && b.nat_destination.is_some()) {
                    return Some(format!(
                        "{pod} answered, but not every branch of the tracer delivers: {verdicts:?}"
                    ));
                }
                let Some(branch) = branches
                    .iter()
                    .find(|b| b.nat_destination.as_deref() == Some(to.as_str()))
                else {
                    return Some(format!(
                        "the kernel delivered to {pod} ({to}), the tracer says {verdicts:?}"
                    ));
                };
                (branch.masquerade != (*peer_ip != packet.src)).then(|| {
                    format!(
                        "{pod} saw {peer_ip}; the tracer says {verdicts:?} via {:?}",
                        branch.chains
                    )
                })
            }
            ProbeResult::Timeout => {
                let dropped = all(&|b| b.fate == Fate::Dropped);
                let leaves = self.mode.forwards_untranslated()
                    && all(&untranslated)
                    && self.routes_to_uplink(packet.dst);
                (!dropped && !leaves).then(|| format!("timed out, the tracer says {verdicts:?}"))
            }
            ProbeResult::Refused => {
                let rejected = all(&|b| b.fate == Fate::Rejected);
                let node_local = packet.dst.is_loopback() || self.local.contains(&packet.dst);
                let closed = node_local && all(&untranslated);
                (!rejected && !closed).then(|| format!("refused, the tracer says {verdicts:?}"))
            }
            // A REJECT or DROP in OUTPUT fails the node's own send with EPERM.
            ProbeResult::Other(error) if packet.interface.is_none() && error.contains("not permitted") => {
                (!all(&|b| matches!(b.fate, Fate::Rejected | Fate::Dropped)))
                    .then(|| format!("{error}, the tracer says {verdicts:?}"))
            }
            other => Some(format!(
                "{other:?} has no tracer counterpart; the tracer says {verdicts:?}"
            )),
        }
    }

    /// What the node's kernel holds, for failure messages.
    pub fn dump(&self) -> String {
        let conntrack = self
            .topology
            .node
            .run(
                "conntrack",
                &["-L", "-f", if self.ipv6() { "ipv6" } else { "ipv4" }],
            )
            .unwrap_or_else(|e| e.to_string());
        format!(
            "--- payload\n{}--- kernel ({})\n{}--- conntrack\n{conntrack}",
            self.payload,
            self.label(),
            M::kernel_rules_text(self)
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

    /// How many probes the tracer predicted so far.
    pub fn agreements(&self) -> usize {
        self.agreements.get()
    }
}

impl<M: Mode> Drop for World<M> {
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
pub fn check_balancing_from_pod_d<M: Mode>(
    w: &World<M>,
    cip: IpAddr,
    probes: [(Proto, usize); 2],
) -> Vec<usize> {
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
pub fn check_off_cluster_sources_masqueraded<M: Mode>(w: &World<M>, cip: IpAddr) -> M::Trace {
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
pub fn check_node_port_from_client<M: Mode>(w: &World<M>) -> M::Trace {
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
pub fn check_hairpin<M: Mode>(w: &World<M>, proto: Proto, cip: IpAddr) {
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
/// its name. The tracer, given the kernel's affinity state (`-m recent`
/// lists, `affinity-` sets) before each probe, balances the first over the
/// three endpoints and knows the pod of every later one.
pub fn check_sticks_to_one_pod<M: Mode>(
    w: &World<M>,
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
        let branches = M::branches(&trace);
        assert_eq!(
            branches.len(),
            want,
            "{}: {} #{i} from {who}: the tracer's outcomes {:?}",
            w.label(),
            proto.as_str(),
            branches.iter().map(|b| &b.summary).collect::<Vec<_>>()
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
fn check_conntrack<M: Mode>(w: &World<M>, client_ip: IpAddr, cip: IpAddr) -> Vec<usize> {
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
