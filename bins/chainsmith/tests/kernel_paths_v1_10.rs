//! Real packets through kube-proxy's 2018 layout (`compile --layout v1.10`),
//! in real network namespaces, on the nf_tables and the legacy backend.
//!
//! Each scenario writes Services and EndpointSlices, compiles them with the
//! real `chainsmith compile --layout v1.10` for node-a (node IP 203.0.113.1,
//! cluster CIDR = the pod network 192.0.2.0/24), applies the payload in the
//! node namespace of a [`Topology`] as kube-proxy and the kubelet of that era
//! did (`apply_rules_with_jumps` with [`V1_10_JUMPS`]: `iptables-restore
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
//! The harness is shared with `kernel_paths` (`common/paths.rs`); this file
//! holds the v1.10 [`Layout`], the helpers only its scenarios need (exact
//! counters, the uplink's counter of untranslated packets, the names of
//! KUBE-XLB-/KUBE-FW- chains) and the scenarios.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).
//!
//! [`Topology`]: chainsmith_testkit::Topology

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;
#[path = "common/paths.rs"]
mod paths;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chainsmith_iptables::V1_10_JUMPS;
use chainsmith_testkit::{Backend, IpFamily, Netns, ProbeResult, Proto, Topology, kernel_tests_enabled};
use chainsmith_tracer::Trace;
use serde_json::{Value, json};

use paths::{
    ANSWER, DROPPED, Layout, World, chains, check_balancing_from_pod_d, check_hairpin,
    check_node_port_from_client, check_off_cluster_sources_masqueraded, check_sticks_to_one_pod, endpoints,
    external_ip_cluster, hairpin_cluster, ips, load_balancer, local_policy_cluster, port, service, set,
    shop_cluster, slice, sticky_cluster, svc_ip, web_cluster,
};

const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

/// kubelet's DROP of packets marked by KUBE-MARK-DROP, as `iptables-save`
/// prints it (the payload's `0x00008000/0x00008000` comes back shortened).
const FIREWALL_DROP: &str = "-m mark --mark 0x8000/0x8000 -j DROP";

/// kube-proxy and the kubelet of 2018: mark bit 14, no --random-fully.
static V1_10: Layout = Layout {
    name: "v1.10",
    node_settings: v1_10_node_settings,
    jumps: &V1_10_JUMPS,
    signature: "-A KUBE-MARK-DROP -j MARK --set-xmark 0x00008000/0x00008000\n",
    kernel_needs: "physdev (external IPs: `-m physdev ! --physdev-is-in`), addrtype, comment, \
                   conntrack, mark, recent, statistic, tcp, udp, MARK, DNAT, MASQUERADE, REJECT",
    // No filter FORWARD jump to KUBE-SERVICES; KUBE-FIREWALL only in INPUT and OUTPUT.
    forwards_untranslated: true,
};

/// The v1.10 proxier's option beyond those every layout shares; the same
/// for both families.
fn v1_10_node_settings(_: IpFamily) -> String {
    "iptablesHasRandomFully: false\n".to_owned()
}

/// A [`World`] of the v1.10 layout; `node_local` go on the node's loopback.
fn world(
    family: IpFamily,
    backend: Backend,
    pods: &[&str],
    node_local: &[IpAddr],
    cluster: impl FnOnce(&Topology) -> Vec<Value>,
) -> World {
    World::new(&V1_10, family, backend, pods, node_local, cluster)
}

/// What only these scenarios ask of a world.
impl World {
    /// Packets for `dst` the uplink received (see [`World::watch_uplink`]).
    fn uplink_packets(&self, dst: IpAddr) -> u64 {
        self.count_in(
            &self.topology.uplink,
            "raw",
            "PREROUTING",
            &[&self.dst_match(dst)],
        )
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

    fn expect_count(&self, what: &str, got: u64, want: u64) {
        assert_eq!(got, want, "{} {what}\n{}", self.label(), self.dump());
    }

    /// How many peers all echo servers have answered.
    fn answered(&self) -> usize {
        self.servers.iter().map(|s| s.peers().len()).sum()
    }
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

#[test]
fn cluster_ip_balances_and_masquerades_only_off_cluster_sources() {
    if !kernel_tests_enabled("cluster_ip_balances_and_masquerades_only_off_cluster_sources") {
        return;
    }
    let mut summary = Vec::new();
    for backend in BACKENDS {
        let family = IpFamily::V4;
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], &[], |t| {
            web_cluster(t, family, 0)
        });
        let cip = w.svc_ip(10);
        // From a pod (inside the cluster CIDR): balanced, source kept.
        let flows = check_balancing_from_pod_d(&w, cip, [(Proto::Tcp, 45), (Proto::Udp, 30)]);
        // From outside the cluster CIDR: `! -s 192.0.2.0/24 -j KUBE-MARK-MASQ`.
        let trace = check_off_cluster_sources_masqueraded(&w, cip);
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
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
            shop_cluster(t, family)
        });
        let node_ip = w.node_ip();
        let masq = w.node_pod_side();
        let trace = check_node_port_from_client(&w);
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
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
            vec![
                load_balancer("lb-open", family, 30, svc_ip(family, 100), 30100, &[]),
                slice(
                    "lb-open",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &endpoints(t, &[("pod-a", "node-a"), ("pod-b", "node-b")]),
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
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
            external_ip_cluster(t, family, &[far, near])
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
            let dst = w.dst_match(ip);
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
        let w = world(family, backend, &["pod-a"], &[], |_| {
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
                load_balancer("lb-empty", family, 81, lb, 30401, &[]),
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
                let what = format!(
                    "{} from the {who} to {dst}:{dport} without endpoints",
                    proto.as_str()
                );
                // Only the node's own packets to the cluster IP meet the
                // REJECT in OUTPUT; to its own addresses they loop to INPUT.
                let in_output = who == "node" && dst == cip;
                let took = w.expect_refused_at_once(&what, from, proto, dst, dport, in_output);
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
        let w = world(family, backend, &["pod-a", "pod-b"], &[lb], |t| {
            let pod_b = endpoints(t, &[("pod-b", "node-a")]);
            vec![
                load_balancer("lb-ranged", family, 31, lb, 30101, &[allowed]),
                slice("lb-ranged", family, &[("tcp", Proto::Tcp)], &pod_b),
                load_balancer("lb-ranged-far", family, 32, lb_far, 30102, &[allowed]),
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
        let w = world(family, backend, &pods, &[lb_remote], |t| {
            local_policy_cluster(t, family)
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
        let w = world(family, backend, &["pod-a", "pod-b"], &[], |t| {
            hairpin_cluster(t, family)
        });
        let cip = w.svc_ip(60);
        for proto in [Proto::Tcp, Proto::Udp] {
            check_hairpin(&w, proto, cip);
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
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c", "pod-d"], &[], |t| {
            sticky_cluster(t, family)
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
            let pod = check_sticks_to_one_pod(&w, who, from, src, proto, cip, 10);
            chosen.push(format!("{} {who}->{pod}", proto.as_str()));
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
        let w = world(family, backend, &["pod-a", "pod-b", "pod-c"], &[], |t| {
            let eps = endpoints(t, &[("pod-a", "node-a"), ("pod-b", "node-b")]);
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
