//! Real packets through kube-proxy's nftables mode: every Service packet
//! path, in real network namespaces, IPv4 and IPv6, TCP and UDP.
//!
//! Each scenario writes Services and EndpointSlices, compiles them with the
//! real `chainsmith compile --mode nftables` for node-a (node IP 203.0.113.1 /
//! 2001:db8:1::1, ClusterCIDR detector on the pod network, NodePorts on every
//! local address, service CIDR [`nft_service_cidr`]), applies the transaction
//! with the real `nft -f` in the node namespace of a [`Topology`], reads the
//! table back with `nft list table` (`read_listing`), starts an echo server in
//! every pod and probes from the client, the node and the pods. The
//! assertions are on what the kernel did: which pod answered, which source
//! address it saw, refused vs. dropped, conntrack's DNAT entries, the
//! kernel's affinity sets; for every probe, `chainsmith_nft_tracer`, reading
//! the kernel's own listing (and, for affinity, the sets' elements listed
//! just before the probe), must predict what the kernel did, and for a
//! balanced Service the pods reached must be the trace's DNAT targets, each
//! equally likely. Where the tracer says a rule dropped or rejected a
//! packet, the kernel's own trace of it (`meta nftrace set 1` from a table
//! of the test's, reported by `nft monitor`) must end in that same rule,
//! through chains on the tracer's path. One test plants faults (a node
//! without its addresses, a table without its masquerade rule) and requires
//! the agreement check to catch each.
//!
//! Where nftables mode differs from iptables mode, the tests assert the
//! nftables spec (kube-proxy-nftables.md 3.5, 4.4, 4.5, 5): source ranges are
//! checked before DNAT (filter-prerouting-pre-dnat) and block pods too; a
//! wrong port on an active cluster IP is rejected and an unallocated address
//! of the service CIDR dropped (cluster-ips-check); there are no localhost
//! NodePorts; Services without endpoints are rejected through
//! `no-endpoint-services` / `no-endpoint-nodeports`.
//!
//! The harness is shared with the iptables suites (`common/paths.rs`, the
//! [`Nftables`] mode of its [`World`]). Runs as root with
//! `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;
#[path = "common/paths.rs"]
mod paths;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chainsmith_nft_tracer::Verdict;
use chainsmith_nftables::read_transaction;
use chainsmith_testkit::{IpFamily, Netns, ProbeResult, Proto, Topology, kernel_tests_enabled};
use serde_json::{Value, json};

use paths::{
    ANSWER, DROPPED, Mode, Nftables, World, check_balancing_from_pod_d, check_hairpin,
    check_node_port_from_client, check_off_cluster_sources_masqueraded, check_sticks_to_one_pod, endpoints,
    external_ip_cluster, hairpin_cluster, ips, load_balancer, local_policy_cluster, nft_family,
    nft_service_cidr, port, service, set, shop_cluster, slice, sticky_cluster, svc_ip, web_cluster,
};

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

type NftWorld = World<Nftables>;

/// An nftables [`World`] (no node-local Service addresses).
fn world(family: IpFamily, pods: &[&str], cluster: impl FnOnce(&Topology) -> Vec<Value>) -> NftWorld {
    World::nftables(family, pods, &[], cluster)
}

/// `objects` with a UDP twin of every Service port and EndpointSlice port
/// (same port and NodePort, named `udp`): the shared builders of the
/// LoadBalancer Services are TCP only.
fn with_udp(mut objects: Vec<Value>) -> Vec<Value> {
    for object in &mut objects {
        let ports = match object["kind"].as_str() {
            Some("Service") => &mut object["spec"]["ports"],
            _ => &mut object["ports"],
        };
        let ports = ports.as_array_mut().expect("ports");
        let twins: Vec<Value> = ports
            .iter()
            .filter(|p| p["protocol"] == "TCP")
            .map(|p| {
                let mut twin = p.clone();
                twin["name"] = json!("udp");
                twin["protocol"] = json!("UDP");
                twin
            })
            .collect();
        ports.extend(twins);
    }
    objects
}

// ---------------------------------------------------------------------------
// The kernel's own trace

/// One rule of table kube-proxy that gave a verdict to the traced packet,
/// as the kernel's trace reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelRule {
    chain: String,
    /// The rule as `nft list` prints it (comment included).
    rule: String,
    /// `jump X`, `goto X`, `drop` (a `reject` statement ends in drop), ...
    verdict: String,
}

/// `nft monitor` in the node, with a table of ours that sets `meta nftrace`
/// on packets to one address: the kernel reports every rule the packet
/// meets in table `kube-proxy`. Stopped (and the table removed) on drop.
struct KernelTrace<'w> {
    node: &'w Netns,
    family: chainsmith_nftables::Family,
    monitor: Child,
    lines: mpsc::Receiver<String>,
}

/// Our table's name (never `kube-proxy`, which the tracer reads).
const TRACE_TABLE: &str = "cs-nftrace";

impl<'w> KernelTrace<'w> {
    fn start(w: &'w NftWorld, dst: IpAddr) -> KernelTrace<'w> {
        let node = &w.topology.node;
        let family = nft_family(w.family);
        let mut monitor = Command::new("ip")
            .args(["netns", "exec", node.name(), "nft", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft monitor");
        let stdout = monitor.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let trace = KernelTrace {
            node,
            family,
            monitor,
            lines,
        };
        let addr = if w.ipv6() { "ip6" } else { "ip" };
        let table = format!(
            "add table {family} {TRACE_TABLE}\n\
             add chain {family} {TRACE_TABLE} pre {{ type filter hook prerouting priority -400 ; }}\n\
             add chain {family} {TRACE_TABLE} out {{ type filter hook output priority -400 ; }}\n\
             add rule {family} {TRACE_TABLE} pre {addr} daddr {dst} meta nftrace set 1\n\
             add rule {family} {TRACE_TABLE} out {addr} daddr {dst} meta nftrace set 1\n"
        );
        node.run_with_input("nft", &["-f", "-"], table.as_bytes())
            .expect("the trace table");
        // The monitor listens once it reports a change: add chains to our
        // table until it reports one.
        let deadline = Instant::now() + ANSWER;
        for i in 0_u32.. {
            let ready = format!("ready{i}");
            node.run("nft", &["add", "chain", family.as_str(), TRACE_TABLE, &ready])
                .expect("a chain of the trace table");
            let wait = Instant::now() + Duration::from_millis(50);
            while let Ok(line) = trace
                .lines
                .recv_timeout(wait.saturating_duration_since(Instant::now()))
            {
                if line.contains(&ready) {
                    return trace;
                }
            }
            assert!(Instant::now() < deadline, "nft monitor reports nothing");
        }
        unreachable!("a u32 of 50 ms steps outlasts the deadline")
    }

    /// The rules of table kube-proxy that gave a verdict to the first
    /// packet the kernel traced, in order, after waiting for the report to
    /// settle; and every line of the report, for messages.
    fn rules(self) -> (Vec<KernelRule>, Vec<String>) {
        std::thread::sleep(Duration::from_millis(100));
        let lines: Vec<String> = self
            .lines
            .try_iter()
            .filter(|l| l.starts_with("trace id "))
            .collect();
        let first_id = lines
            .first()
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_owned);
        let prefix = format!(" {} kube-proxy ", self.family);
        let rules = lines
            .iter()
            .filter(|l| first_id.as_deref() == l.split_whitespace().nth(2))
            .filter_map(|l| {
                let (chain, rest) = l.split_once(&prefix)?.1.split_once(" rule ")?;
                let (rule, verdict) = rest.trim_end().strip_suffix(')')?.rsplit_once(" (verdict ")?;
                Some(KernelRule {
                    chain: chain.to_owned(),
                    rule: rule.to_owned(),
                    verdict: verdict.to_owned(),
                })
            })
            .collect();
        (rules, lines)
    }
}

impl Drop for KernelTrace<'_> {
    fn drop(&mut self) {
        let _ = self
            .node
            .run("nft", &["delete", "table", self.family.as_str(), TRACE_TABLE]);
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
    }
}

/// One probe, checked against the tracer like every other, whose trace
/// must end in one drop or reject rule; the kernel's own trace of it must
/// end in that rule, and the chains where it met rules with a verdict must
/// be on the tracer's path, in order. Returns the result, the chain of
/// that rule and the kernel's chains.
fn probe_seen_by_kernel(
    w: &NftWorld,
    from: &Netns,
    proto: Proto,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> (ProbeResult, String, Vec<String>) {
    let kernel = KernelTrace::start(w, dst);
    let (result, trace) = w.probe_traced(from, proto, src, dst, port, timeout);
    let (rules, lines) = kernel.rules();
    let what = format!("{} {proto:?} -> {dst}:{port}", w.label());
    let [outcome] = &trace.outcomes[..] else {
        panic!("{what}: the tracer has several outcomes: {:?}", trace.outcomes);
    };
    let (Verdict::Dropped { by } | Verdict::Rejected { by }) = &outcome.verdict else {
        panic!("{what}: the tracer lets it through: {}", outcome.summary());
    };
    let kernel_chains = dedup(rules.iter().map(|r| r.chain.clone()));
    let last = rules.last();
    let same_rule = last.is_some_and(|last| {
        last.chain == by.chain
            && last.verdict == "drop"
            && (last.rule == by.rule || last.rule.starts_with(&format!("{} comment ", by.rule)))
    });
    assert!(
        same_rule && is_subsequence(&kernel_chains, &paths::nft_chains(outcome)),
        "{what}: the tracer ends it in {} rule {} ({}) via {:?}; the kernel's trace reports {rules:#?}\n{}",
        by.chain,
        by.index,
        by.rule,
        paths::nft_chains(outcome),
        lines.join("\n")
    );
    (result, by.chain.clone(), kernel_chains)
}

/// `items` without consecutive repeats.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if out.last() != Some(&item) {
            out.push(item);
        }
    }
    out
}

/// Whether `short` is `long` with some items left out.
fn is_subsequence(short: &[String], long: &[String]) -> bool {
    let mut rest = long.iter();
    short.iter().all(|item| rest.any(|l| l == item))
}

/// Asserts `result` is what a drop does to the probe: a timeout, or, for
/// the node's own packet dropped in OUTPUT, EPERM.
fn expect_dropped(w: &NftWorld, what: &str, result: &ProbeResult, from_node: bool) {
    let eperm = matches!(result, ProbeResult::Other(e) if e.contains("Operation not permitted"));
    assert!(
        *result == ProbeResult::Timeout || (from_node && eperm),
        "{} {what}: expected a drop, got {result:?}\n{}",
        w.label(),
        w.dump()
    );
}

// ---------------------------------------------------------------------------
// 1. ClusterIP: balancing, masquerade, cluster-ips-check

#[test]
fn cluster_ip_balances_from_pods_and_the_node() {
    if !kernel_tests_enabled("cluster_ip_balances_from_pods_and_the_node") {
        return;
    }
    let mut summary = Vec::new();
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
            web_cluster(t, family, 0)
        });
        let cip = w.svc_ip(10);
        let three = set(["pod-a", "pod-b", "pod-c"]);
        let flows = check_balancing_from_pod_d(&w, cip, [(Proto::Tcp, 45), (Proto::Udp, 45)]);
        // The node's own connections are balanced too, and masqueraded
        // (its source is off the pod network).
        for proto in [Proto::Tcp, Proto::Udp] {
            let results = w.probes(&w.topology.node, 45, proto, None, cip, 80);
            let (pods, peers) = w.replies(&format!("{} from the node", proto.as_str()), &results);
            assert_eq!(
                pods,
                three,
                "{}: {} balancing from the node",
                w.label(),
                proto.as_str()
            );
            assert_eq!(
                peers,
                ips([w.node_pod_side()]),
                "{}: the node is masqueraded",
                w.label()
            );
        }
        check_off_cluster_sources_masqueraded(&w, cip);

        // nftables mode only: a wrong port of an active cluster IP is
        // rejected, an unallocated address of the service CIDR dropped.
        let mut rejected = Vec::new();
        for (from, who) in [
            (&w.topology.client, "client"),
            (w.pod_ns("pod-d"), "pod-d"),
            (&w.topology.node, "node"),
        ] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let what = format!(
                    "{} from the {who} to a wrong port of the cluster IP",
                    proto.as_str()
                );
                w.expect_refused_at_once(&what, from, proto, cip, 81, who == "node");
            }
            let (r, chain, _) = probe_seen_by_kernel(&w, from, Proto::Tcp, None, cip, 81, ANSWER);
            let what = format!("tcp from the {who} to a wrong port of the cluster IP");
            w.expect(&what, &r, &ProbeResult::Refused);
            assert_eq!(chain, "cluster-ips-check", "{}: {what}", w.label());
            rejected.push(who);
        }
        let unallocated = w.svc_ip(90);
        for (from, who) in [(&w.topology.client, "client"), (w.pod_ns("pod-d"), "pod-d")] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let (r, chain, _) = probe_seen_by_kernel(&w, from, proto, None, unallocated, 80, DROPPED);
                let what = format!(
                    "{} from the {who} to unallocated {unallocated} in {}",
                    proto.as_str(),
                    nft_service_cidr(family)
                );
                expect_dropped(&w, &what, &r, false);
                assert_eq!(chain, "cluster-ips-check", "{}: {what}", w.label());
            }
        }
        let (r, chain, _) =
            probe_seen_by_kernel(&w, &w.topology.node, Proto::Udp, None, unallocated, 80, DROPPED);
        expect_dropped(&w, "udp from the node to an unallocated cluster IP", &r, true);
        assert_eq!(chain, "cluster-ips-check", "{}", w.label());
        summary.push(format!(
            "{}: 45 tcp + 45 udp each from pod-d and the node over all 3 endpoints ({}+{} flows DNATed), client/node masqueraded; wrong port rejected from {}, unallocated {unallocated} dropped, both in cluster-ips-check",
            w.label(),
            flows[0],
            flows[1],
            rejected.join("/")
        ));
    }
    println!("cluster IP: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 2. NodePort, eTP Cluster

#[test]
fn node_port_is_masqueraded_and_has_no_localhost_variant() {
    if !kernel_tests_enabled("node_port_is_masqueraded_and_has_no_localhost_variant") {
        return;
    }
    let mut summary = Vec::new();
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b"], |t| shop_cluster(t, family));
        let (node_ip, masq) = (w.node_ip(), w.node_pod_side());
        check_node_port_from_client(&w);
        for (from, who) in [(w.pod_ns("pod-a"), "pod-a"), (&w.topology.node, "the node")] {
            for proto in [Proto::Tcp, Proto::Udp] {
                let r = w.probe(from, proto, None, node_ip, 30080, ANSWER);
                w.expect_reply(
                    &format!("{} from {who} to the NodePort", proto.as_str()),
                    &r,
                    None,
                    masq,
                );
            }
        }
        // No localhost NodePorts in nftables mode (iptables mode has them
        // for IPv4): nothing translates loopback:NodePort, nothing listens.
        let loopback = w.loopback();
        let r = w.probe(&w.topology.node, Proto::Tcp, None, loopback, 30080, ANSWER);
        w.expect(
            "tcp from the node to loopback:NodePort",
            &r,
            &ProbeResult::Refused,
        );
        summary.push(format!(
            "{}: tcp+udp from the client, pod-a and the node to {} reach both pods as {masq}; {} refused",
            w.label(),
            SocketAddr::new(node_ip, 30080),
            SocketAddr::new(loopback, 30080)
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
    for family in FAMILIES {
        // 203.0.113.0/25 admits .2 (and the node IP), not .130;
        // 2001:db8:1::/120 admits ::2 (and ::1), not ::130.
        let allowed = if family == IpFamily::V4 {
            "203.0.113.0/25"
        } else {
            "2001:db8:1::/120"
        };
        // lb-held's LB IP is on the node's loopback (routed to the node
        // itself, as on GCE): the node's own packets to it come from it.
        let held = svc_ip(family, 102);
        let w = World::nftables(family, &["pod-a", "pod-b", "pod-c"], &[held], |t| {
            with_udp(vec![
                load_balancer("lb-held", family, 32, held, 30102, &[allowed]),
                slice(
                    "lb-held",
                    family,
                    &[("tcp", Proto::Tcp)],
                    &endpoints(t, &[("pod-c", "node-a")]),
                ),
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
            ])
        });
        let (client, node) = (&w.topology.client, &w.topology.node);
        let (open, ranged) = (w.svc_ip(100), w.svc_ip(101));
        let masq = w.node_pod_side();
        let seen_before = w.server("pod-b").peers().len();
        let mut denied = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = proto.as_str();
            let r = w.probe(client, proto, Some(w.client_ip()), open, 80, ANSWER);
            w.expect_reply(
                &format!("{p} client -> LB IP without ranges"),
                &r,
                Some("pod-a"),
                masq,
            );
            let r = w.probe(client, proto, Some(w.client2_ip()), open, 80, ANSWER);
            w.expect_reply(
                &format!("{p} second client -> open LB IP"),
                &r,
                Some("pod-a"),
                masq,
            );
            let r = w.probe(w.pod_ns("pod-b"), proto, None, open, 80, ANSWER);
            w.expect_reply(&format!("{p} pod-b -> open LB IP"), &r, Some("pod-a"), masq);
            let r = w.probe(client, proto, Some(w.client_ip()), ranged, 80, ANSWER);
            w.expect_reply(
                &format!("{p} allowed client -> ranged LB IP"),
                &r,
                Some("pod-b"),
                masq,
            );
            // The node from its node IP, which is in a range.
            let r = w.probe(node, proto, Some(w.node_ip()), ranged, 80, ANSWER);
            w.expect_reply(&format!("{p} node IP -> ranged LB IP"), &r, Some("pod-b"), masq);

            // Denied: the second client, a pod (no short-circuit for pods),
            // the node from its uplink address; dropped before DNAT, in the
            // Service's firewall chain that filter-prerouting-pre-dnat /
            // filter-output-pre-dnat reach through firewall-check.
            for (from, src, who) in [
                (client, Some(w.client2_ip()), "second client"),
                (w.pod_ns("pod-a"), None, "pod-a"),
                (node, None, "the node from its uplink address"),
            ] {
                let start = Instant::now();
                let (r, chain, kernel_chains) =
                    probe_seen_by_kernel(&w, from, proto, src, ranged, 80, DROPPED);
                let what = format!("{p} {who} -> ranged LB IP");
                let from_node = who.starts_with("the node");
                expect_dropped(&w, &what, &r, from_node);
                // The kernel dropped it in a pre-DNAT filter chain, before
                // any nat chain saw it.
                let pre_dnat = if from_node {
                    "filter-output-pre-dnat"
                } else {
                    "filter-prerouting-pre-dnat"
                };
                assert!(
                    chain.starts_with("firewall-")
                        && chain.contains(&format!("paths/lb-ranged/{p}/"))
                        && kernel_chains.first().map(String::as_str) == Some(pre_dnat)
                        && !kernel_chains.iter().any(|c| c.starts_with("nat-")),
                    "{} {what}: dropped in {chain}, the kernel's chains {kernel_chains:?}",
                    w.label()
                );
                denied.push(format!("{p} {who} ({r:?} after {:?})", start.elapsed()));
            }
            // An LB IP the node holds: the same ranges; the node's own
            // packets carry the LB IP as source, which the firewall admits
            // because a range holds the node IP.
            let r = w.probe(client, proto, Some(w.client_ip()), held, 80, ANSWER);
            w.expect_reply(
                &format!("{p} allowed client -> held LB IP"),
                &r,
                Some("pod-c"),
                masq,
            );
            let (r, chain, _) =
                probe_seen_by_kernel(&w, client, proto, Some(w.client2_ip()), held, 80, DROPPED);
            expect_dropped(&w, &format!("{p} second client -> held LB IP"), &r, false);
            assert!(
                chain.contains("paths/lb-held/"),
                "{}: dropped in {chain}",
                w.label()
            );
            let (r, trace) = w.probe_traced(node, proto, None, held, 80, ANSWER);
            w.expect_reply(&format!("{p} node -> held LB IP"), &r, Some("pod-c"), masq);
            assert!(
                trace.packet.src == held,
                "{}: the node's packet to {held} came from {}",
                w.label(),
                trace.packet.src
            );
            // NodePorts are not subject to loadBalancerSourceRanges.
            let r = w.probe(client, proto, Some(w.client2_ip()), w.node_ip(), 30101, ANSWER);
            w.expect_reply(
                &format!("{p} denied client -> NodePort of the ranged LB"),
                &r,
                Some("pod-b"),
                masq,
            );
        }
        let allowed_answers = 3 * 2;
        assert_eq!(
            w.server("pod-b").peers().len(),
            seen_before + allowed_answers,
            "{}: pod-b answered a denied source",
            w.label()
        );
        summary.push(format!(
            "{}: tcp+udp: open LB reached by both clients and a pod; {allowed} admits {}, the node IP and (node-held {held}) the LB IP itself; denied in the firewall chain: {}",
            w.label(),
            w.client_ip(),
            denied.join(", ")
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
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b"], |t| {
            external_ip_cluster(t, family, &[svc_ip(family, 200)])
        });
        let external = w.svc_ip(200);
        let tcp = w.probes(&w.topology.client, 24, Proto::Tcp, None, external, 80);
        let (pods, peers) = w.replies("tcp from the client to the external IP", &tcp);
        assert_eq!(
            pods,
            set(["pod-a", "pod-b"]),
            "{}: external IP balancing",
            w.label()
        );
        assert_eq!(
            peers,
            ips([w.node_pod_side()]),
            "{}: external traffic is masqueraded",
            w.label()
        );
        let udp = w.probes(&w.topology.client, 24, Proto::Udp, None, external, 80);
        let (_, peers) = w.replies("udp from the client to the external IP", &udp);
        assert_eq!(peers, ips([w.node_pod_side()]), "{}: udp masqueraded", w.label());
        for proto in [Proto::Tcp, Proto::Udp] {
            let r = w.probe(w.pod_ns("pod-a"), proto, None, external, 80, ANSWER);
            w.expect_reply(
                &format!("{} from pod-a to the external IP", proto.as_str()),
                &r,
                None,
                w.node_pod_side(),
            );
        }
        summary.push(format!(
            "{}: {external}:80 tcp+udp from the client reached both pods as {}, from pod-a too",
            w.label(),
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
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
            with_udp(local_policy_cluster(t, family))
        });
        let (client, node, pod_d) = (&w.topology.client, &w.topology.node, w.pod_ns("pod-d"));
        let node_ip = w.node_ip();
        let mut drops = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            let p = proto.as_str();
            // A local endpoint: only it answers, and it sees the real client.
            for (dst, dport, n) in [(node_ip, 30200, 10), (w.svc_ip(110), 80, 5)] {
                let results = w.probes(client, n, proto, None, dst, dport);
                let what = format!("{p} client -> {dst}:{dport} (local endpoint)");
                let (pods, peers) = w.replies(&what, &results);
                assert_eq!(
                    pods,
                    set(["pod-a"]),
                    "{} {what}: the local endpoint only",
                    w.label()
                );
                assert_eq!(
                    peers,
                    ips([w.client_ip()]),
                    "{} {what}: eTP Local keeps the client IP\n{}",
                    w.label(),
                    w.dump()
                );
            }
            // Pods are short-circuited to every endpoint, keeping their source.
            let results = w.probes(pod_d, 24, proto, None, node_ip, 30200);
            let (pods, peers) = w.replies(&format!("{p} pod-d -> NodePort of local-ok"), &results);
            assert_eq!(
                pods,
                set(["pod-a", "pod-b"]),
                "{}: pods use every endpoint",
                w.label()
            );
            assert_eq!(
                peers,
                ips([w.pod_ip("pod-d")]),
                "{}: pods keep their source",
                w.label()
            );

            // Only a remote endpoint: outside traffic is dropped by the
            // `drop` elements of no-endpoint-nodeports / no-endpoint-services.
            let seen_before = w.server("pod-c").peers().len();
            for (dst, dport, check) in [
                (node_ip, 30201, "nodeport-endpoints-check"),
                (w.svc_ip(111), 80, "service-endpoints-check"),
            ] {
                let (r, chain, _) = probe_seen_by_kernel(&w, client, proto, None, dst, dport, DROPPED);
                let what = format!("{p} client -> {dst}:{dport} with only a remote endpoint");
                expect_dropped(&w, &what, &r, false);
                assert_eq!(chain, check, "{} {what}", w.label());
                drops.push(format!("{p} {} in {chain}", SocketAddr::new(dst, dport)));
            }
            assert_eq!(
                w.server("pod-c").peers().len(),
                seen_before,
                "{}: pod-c was reached",
                w.label()
            );
            // The cluster IP, pods and the node itself still reach it.
            let r = w.probe(client, proto, None, w.svc_ip(51), 80, ANSWER);
            w.expect_reply(
                &format!("{p} client -> cluster IP of local-remote"),
                &r,
                Some("pod-c"),
                w.node_pod_side(),
            );
            for (dst, dport) in [(node_ip, 30201), (w.svc_ip(111), 80)] {
                let r = w.probe(pod_d, proto, None, dst, dport, ANSWER);
                w.expect_reply(
                    &format!("{p} pod-d -> {dst}:{dport} of local-remote"),
                    &r,
                    Some("pod-c"),
                    w.pod_ip("pod-d"),
                );
            }
            let r = w.probe(node, proto, None, node_ip, 30201, ANSWER);
            w.expect_reply(
                &format!("{p} node -> its own NodePort of local-remote"),
                &r,
                Some("pod-c"),
                w.node_pod_side(),
            );
        }
        summary.push(format!(
            "{}: tcp+udp: local endpoint sees {}; pods short-circuited to both; remote-only dropped ({}), reachable from pod, node and cluster IP",
            w.label(),
            w.client_ip(),
            drops.join(", ")
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
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b"], |t| hairpin_cluster(t, family));
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
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b", "pod-c", "pod-d"], |t| {
            sticky_cluster(t, family)
        });
        assert!(w.affinity, "{}: no affinity sets\n{}", w.label(), w.payload);
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
            // The kernel recorded the client in the affinity set of that
            // pod's endpoint (of this protocol) and in no other of it.
            let client = src.unwrap_or_else(|| w.pod_ip("pod-d"));
            let holding: Vec<String> = Nftables::affinity(&w, client)
                .into_iter()
                .filter(|(name, clients)| {
                    name.contains(&format!("/{}/", proto.as_str())) && clients.contains(&client)
                })
                .map(|(name, _)| name)
                .collect();
            let endpoint = format!("__{}/", w.pod_ip(&pod).to_string().replace(':', "."));
            assert!(
                holding.len() == 1 && holding[0].contains(&endpoint),
                "{}: {who} stuck to {pod}; the kernel's {} affinity sets holding {client}: {holding:?}",
                w.label(),
                proto.as_str()
            );
            chosen.push(format!("{} {who}->{pod}", proto.as_str()));
        }
        summary.push(format!(
            "{}: 10 each stuck, recorded in the endpoint's set: {}",
            w.label(),
            chosen.join(", ")
        ));
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
    for family in FAMILIES {
        let w = world(family, &["pod-a"], |_| {
            vec![
                service(
                    "empty",
                    family,
                    json!({
                        "type": "NodePort",
                        "clusterIP": svc_ip(family, 80).to_string(),
                        "ports": [port("tcp", Proto::Tcp, 80, 30400), port("udp", Proto::Udp, 80, 30400)],
                    }),
                    &[],
                ),
                slice("empty", family, &[("tcp", Proto::Tcp), ("udp", Proto::Udp)], &[]),
            ]
        });
        let (cip, node_ip) = (w.svc_ip(80), w.node_ip());
        let mut slowest = Duration::ZERO;
        for (from, who) in [
            (&w.topology.client, "client"),
            (w.pod_ns("pod-a"), "pod-a"),
            (&w.topology.node, "node"),
        ] {
            for proto in [Proto::Tcp, Proto::Udp] {
                // The node's own packets to the cluster IP meet the reject
                // in OUTPUT; to its NodePort, in INPUT (after the loop back).
                let what = format!(
                    "{} from the {who} to a cluster IP without endpoints",
                    proto.as_str()
                );
                let took = w.expect_refused_at_once(&what, from, proto, cip, 80, who == "node");
                slowest = slowest.max(took);
                let what = format!(
                    "{} from the {who} to a NodePort without endpoints",
                    proto.as_str()
                );
                let took = w.expect_refused_at_once(&what, from, proto, node_ip, 30400, false);
                slowest = slowest.max(took);
            }
        }
        // The kernel rejected them where the tracer says: through the
        // no-endpoint maps' `goto reject-chain`.
        for (dst, dport) in [(cip, 80), (node_ip, 30400)] {
            let (r, chain, _) =
                probe_seen_by_kernel(&w, &w.topology.client, Proto::Tcp, None, dst, dport, ANSWER);
            w.expect(
                "tcp from the client, traced by the kernel",
                &r,
                &ProbeResult::Refused,
            );
            assert_eq!(chain, "reject-chain", "{}: {dst}:{dport}", w.label());
        }
        summary.push(format!(
            "{}: tcp+udp from client, pod, node to the cluster IP and the NodePort rejected at once (slowest {slowest:?}) by reject-chain",
            w.label()
        ));
    }
    println!("no endpoints: {}", summary.join(" | "));
}

// ---------------------------------------------------------------------------
// 9. The agreement check catches a wrong tracer

#[test]
fn a_wrong_tracer_is_caught() {
    if !kernel_tests_enabled("a_wrong_tracer_is_caught") {
        return;
    }
    let mut summary = Vec::new();
    for family in FAMILIES {
        let w = world(family, &["pod-a", "pod-b"], |t| shop_cluster(t, family));
        let (client, node_ip) = (&w.topology.client, w.node_ip());
        let result = w.probe(client, Proto::Udp, None, node_ip, 30080, ANSWER);
        w.expect_reply(
            "udp from the client to the NodePort",
            &result,
            None,
            w.node_pod_side(),
        );
        let packet = w.packet(client, Proto::Udp, w.client_ip(), node_ip, 30080);
        let branches = |table: &chainsmith_nftables::Table, node: &chainsmith_nft_tracer::Node| {
            Nftables::branches(
                &w.trace_nft(table, node, &packet, Default::default())
                    .expect("trace"),
            )
        };
        let right = branches(w.kernel_table(), &w.tracer_node());
        assert_eq!(w.disagreement(&packet, &result, &right), None, "{}", w.label());
        // A node without its addresses: `fib daddr type local` never holds,
        // so the NodePort is not dispatched and the packet is forwarded.
        let no_addresses = chainsmith_nft_tracer::Node::new(Vec::new());
        let wrong_node = w
            .disagreement(&packet, &result, &branches(w.kernel_table(), &no_addresses))
            .unwrap_or_else(|| panic!("{}: a node without addresses went unnoticed", w.label()));
        // A table whose masquerading chain lost its rules: the pod would see
        // the client.
        let mut unmasqueraded = w.kernel_table().clone();
        let flush = format!("flush chain {} kube-proxy masquerading", nft_family(family));
        unmasqueraded
            .apply(&read_transaction(&flush, nft_family(family)).expect("flush"))
            .expect("the flush applies");
        let wrong_table = w
            .disagreement(&packet, &result, &branches(&unmasqueraded, &w.tracer_node()))
            .unwrap_or_else(|| panic!("{}: a table without masquerade went unnoticed", w.label()));
        summary.push(format!(
            "{}: caught a node without addresses ({wrong_node}) and a table without masquerade ({wrong_table})",
            w.label()
        ));
    }
    println!("planted faults: {}", summary.join(" | "));
}
