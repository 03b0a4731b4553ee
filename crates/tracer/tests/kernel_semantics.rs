//! The kernel walk on small hand-written rulesets shaped like kube-proxy's
//! output: load balancing, source ranges, traffic policies, hairpin, session
//! affinity, rejects, NodePorts, the 127/8 firewall rule, IPv6, and an
//! `iptables-save` dump giving the same outcomes as the restore text.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::net::IpAddr;

use chainsmith_model::{IpFamily, Protocol};
use chainsmith_tracer::{Action, CtState, Node, Origin, Packet, Ruleset, Trace, Verdict, trace};

/// Restore text (kube-proxy's argument order), IPv4, pod CIDR 10.0.0.0/8,
/// node IP 192.168.0.2:
/// - svc1: cluster IP 172.30.0.41:80, three endpoints;
/// - svc2: LoadBalancer 5.6.7.8:80 with source range 203.0.113.0/25, NodePort
///   3002 (localhost NodePorts on), one endpoint 10.180.0.4;
/// - svc3: externalTrafficPolicy Local without local endpoints, external IP
///   192.168.99.33:80, NodePort 3003, one remote endpoint;
/// - svc4: ClientIP affinity, two endpoints;
/// - svc5: no endpoints.
const BASE: &str = r#"*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns3/svc3:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns3/svc3:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3003 -j DROP
-A KUBE-PROXY-FIREWALL -m comment --comment "ns2/svc2:p80 traffic not accepted by KUBE-FW-SVC2" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-SVC1 - [0:0]
:KUBE-SEP-SVC1A - [0:0]
:KUBE-SEP-SVC1B - [0:0]
:KUBE-SEP-SVC1C - [0:0]
:KUBE-SVC-SVC2 - [0:0]
:KUBE-EXT-SVC2 - [0:0]
:KUBE-FW-SVC2 - [0:0]
:KUBE-SEP-SVC2A - [0:0]
:KUBE-SVC-SVC3 - [0:0]
:KUBE-EXT-SVC3 - [0:0]
:KUBE-SEP-SVC3A - [0:0]
:KUBE-SVC-SVC4 - [0:0]
:KUBE-SEP-SVC4A - [0:0]
:KUBE-SEP-SVC4B - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-SVC2
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-SVC2
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-SVC3
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-SVC1
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-SVC2
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-SVC2
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-SVC3
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-SVC3
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-SVC4
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-SVC1A
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SVC1B
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j KUBE-SEP-SVC1C
-A KUBE-SEP-SVC1A -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1A -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-SVC1B -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1B -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SVC1C -m comment --comment ns1/svc1:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1C -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SVC-SVC2 -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC2 -m comment --comment "ns2/svc2:p80 -> 10.180.0.4:80" -j KUBE-SEP-SVC2A
-A KUBE-EXT-SVC2 -m comment --comment "masquerade traffic for ns2/svc2:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-SVC2 -j KUBE-SVC-SVC2
-A KUBE-FW-SVC2 -m comment --comment "ns2/svc2:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-SVC2
-A KUBE-FW-SVC2 -m comment --comment "other traffic to ns2/svc2:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-SEP-SVC2A -m comment --comment ns2/svc2:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC2A -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SVC-SVC3 -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC3 -m comment --comment "ns3/svc3:p80 -> 10.180.1.5:80" -j KUBE-SEP-SVC3A
-A KUBE-EXT-SVC3 -m comment --comment "pod traffic for ns3/svc3:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-SVC3
-A KUBE-EXT-SVC3 -m comment --comment "masquerade LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-SVC3 -m comment --comment "route LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-SVC3
-A KUBE-SEP-SVC3A -m comment --comment ns3/svc3:p80 -s 10.180.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC3A -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.5:80
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.6:80" -m recent --name KUBE-SEP-SVC4A --rcheck --seconds 10800 --reap -j KUBE-SEP-SVC4A
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.7:80" -m recent --name KUBE-SEP-SVC4B --rcheck --seconds 10800 --reap -j KUBE-SEP-SVC4B
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.6:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SVC4A
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.7:80" -j KUBE-SEP-SVC4B
-A KUBE-SEP-SVC4A -m comment --comment ns4/svc4:p80 -s 10.180.0.6 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC4A -m comment --comment ns4/svc4:p80 -m recent --name KUBE-SEP-SVC4A --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.6:80
-A KUBE-SEP-SVC4B -m comment --comment ns4/svc4:p80 -s 10.180.0.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC4B -m comment --comment ns4/svc4:p80 -m recent --name KUBE-SEP-SVC4B --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.7:80
COMMIT
"#;

/// svc1, svc4, svc5 and the fixed rules of [`BASE`] as `iptables-save` prints
/// them (spec section 9): canonical argument order, `/32`, `--set-xmark`,
/// 11-decimal probabilities, `recent ... --mask --rsource`, `--reject-with`,
/// built-in chains with policies and kube-proxy's jumps.
const SAVED: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2024
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SERVICES -d 172.30.0.46/32 -p tcp -m comment --comment "ns5/svc5:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
# Completed on Mon Jan  1 00:00:00 2024
# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2024
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-SVC1A - [0:0]
:KUBE-SEP-SVC1B - [0:0]
:KUBE-SEP-SVC1C - [0:0]
:KUBE-SEP-SVC4A - [0:0]
:KUBE-SEP-SVC4B - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-SVC1 - [0:0]
:KUBE-SVC-SVC4 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-SVC1A -s 10.180.0.1/32 -m comment --comment ns1/svc1:p80 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1A -p tcp -m comment --comment ns1/svc1:p80 -m tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-SVC1B -s 10.180.0.2/32 -m comment --comment ns1/svc1:p80 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1B -p tcp -m comment --comment ns1/svc1:p80 -m tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SVC1C -s 10.180.0.3/32 -m comment --comment ns1/svc1:p80 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC1C -p tcp -m comment --comment ns1/svc1:p80 -m tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-SVC4A -s 10.180.0.6/32 -m comment --comment ns4/svc4:p80 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC4A -p tcp -m comment --comment ns4/svc4:p80 -m recent --set --name KUBE-SEP-SVC4A --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.180.0.6:80
-A KUBE-SEP-SVC4B -s 10.180.0.7/32 -m comment --comment ns4/svc4:p80 -j KUBE-MARK-MASQ
-A KUBE-SEP-SVC4B -p tcp -m comment --comment ns4/svc4:p80 -m recent --set --name KUBE-SEP-SVC4B --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.180.0.7:80
-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-SVC1
-A KUBE-SERVICES -d 172.30.0.44/32 -p tcp -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-SVC4
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-SVC1 ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-SVC1A
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-SVC1B
-A KUBE-SVC-SVC1 -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j KUBE-SEP-SVC1C
-A KUBE-SVC-SVC4 ! -s 10.0.0.0/8 -d 172.30.0.44/32 -p tcp -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.6:80" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-SVC4A --mask 255.255.255.255 --rsource -j KUBE-SEP-SVC4A
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.7:80" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-SVC4B --mask 255.255.255.255 --rsource -j KUBE-SEP-SVC4B
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.6:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-SVC4A
-A KUBE-SVC-SVC4 -m comment --comment "ns4/svc4:p80 -> 10.180.0.7:80" -j KUBE-SEP-SVC4B
COMMIT
# Completed on Mon Jan  1 00:00:00 2024
"#;

const NODE_IP: &str = "192.168.0.2";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn base() -> Ruleset {
    Ruleset::from_dump(BASE)
        .expect("base")
        .with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS)
}

fn node() -> Node {
    Node::new(vec![ip(NODE_IP)])
}

fn packet(src: &str, dst: &str, dport: u16, origin: Origin) -> Packet {
    Packet::new(ip(src), ip(dst), Protocol::Tcp, dport, origin)
}

fn run(ruleset: &Ruleset, packet: &Packet) -> Trace {
    let trace = trace(ruleset, packet, &node());
    assert!(
        (trace.total_probability() - 1.0).abs() < 1e-9,
        "{packet:?}: probabilities sum to {}",
        trace.total_probability()
    );
    trace
}

/// (probability, DNAT destination, masquerade, verdict) of every outcome.
fn summary(trace: &Trace) -> Vec<(f64, Option<&str>, bool, Verdict)> {
    trace
        .outcomes
        .iter()
        .map(|o| {
            (
                o.probability,
                o.nat_destination.as_deref(),
                o.masquerade,
                o.verdict,
            )
        })
        .collect()
}

/// The single outcome of a trace without statistic choices.
fn only(trace: &Trace) -> (Option<&str>, bool, Verdict) {
    assert_eq!(trace.outcomes.len(), 1, "{:#?}", trace.outcomes);
    let (p, dnat, masq, verdict) = summary(trace)[0];
    assert_eq!(p, 1.0);
    (dnat, masq, verdict)
}

/// Whether some step of the first outcome is in `chain` with a comment
/// containing `comment` and does `action`.
fn has_step(trace: &Trace, chain: &str, comment: &str, action: &Action) -> bool {
    trace.outcomes[0].path.iter().any(|s| {
        s.chain == chain && s.comment.as_deref().unwrap_or_default().contains(comment) && s.action == *action
    })
}

#[test]
fn cluster_ip_with_three_endpoints_has_three_equal_outcomes() {
    let rules = base();
    let t = run(
        &rules,
        &packet("10.0.0.2", "172.30.0.41", 80, Origin::FromOutside),
    );
    let got = summary(&t);
    let want = ["10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80"];
    assert_eq!(got.len(), 3, "{got:?}");
    for ((p, dnat, masq, verdict), want) in got.into_iter().zip(want) {
        assert!((p - 1.0 / 3.0).abs() < 1e-9, "{p}");
        assert_eq!((dnat, masq, verdict), (Some(want), false, Verdict::Pass));
    }
    // The second outcome passed the first endpoint's rule with 1 - 1/3.
    let not_taken: Vec<f64> = t.outcomes[1]
        .path
        .iter()
        .filter(|s| s.action == Action::NotTaken)
        .filter_map(|s| s.probability)
        .collect();
    assert_eq!(not_taken.len(), 1);
    assert!((not_taken[0] - 2.0 / 3.0).abs() < 1e-9);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);

    // From off the pod network: masqueraded, accepted by KUBE-FORWARD's mark rule.
    let t = run(
        &rules,
        &packet("203.0.113.9", "172.30.0.41", 80, Origin::FromOutside),
    );
    assert!(
        t.outcomes
            .iter()
            .all(|o| o.masquerade && o.verdict == Verdict::Accept && o.final_mark == 0)
    );
}

#[test]
fn load_balancer_source_ranges() {
    let rules = base();
    let allowed = run(&rules, &packet("203.0.113.5", "5.6.7.8", 80, Origin::FromOutside));
    assert_eq!(only(&allowed), (Some("10.180.0.4:80"), true, Verdict::Accept));
    assert!(has_step(
        &allowed,
        "KUBE-FW-SVC2",
        "loadbalancer IP",
        &Action::Jump {
            to: "KUBE-EXT-SVC2".into()
        }
    ));

    let denied = run(
        &rules,
        &packet("198.51.100.7", "5.6.7.8", 80, Origin::FromOutside),
    );
    assert_eq!(only(&denied), (None, false, Verdict::Drop));
    assert!(has_step(
        &denied,
        "KUBE-FW-SVC2",
        "will be dropped",
        &Action::Matched
    ));
    assert!(has_step(&denied, "KUBE-FW-SVC2", "", &Action::EndOfChain));
    assert!(has_step(
        &denied,
        "KUBE-PROXY-FIREWALL",
        "traffic not accepted by",
        &Action::Drop
    ));

    // NodePorts are not subject to source ranges.
    let nodeport = run(
        &rules,
        &packet("198.51.100.7", NODE_IP, 3002, Origin::FromOutside),
    );
    assert_eq!(only(&nodeport), (Some("10.180.0.4:80"), true, Verdict::Accept));
}

#[test]
fn external_traffic_policy_local_without_local_endpoints() {
    let rules = base();
    let outside = run(
        &rules,
        &packet("198.51.100.7", "192.168.99.33", 80, Origin::FromOutside),
    );
    assert_eq!(only(&outside), (None, false, Verdict::Drop));
    assert!(has_step(
        &outside,
        "KUBE-EXTERNAL-SERVICES",
        "has no local endpoints",
        &Action::Drop
    ));

    let nodeport = run(
        &rules,
        &packet("198.51.100.7", NODE_IP, 3003, Origin::FromOutside),
    );
    assert_eq!(only(&nodeport), (None, false, Verdict::Drop));
    assert!(
        nodeport.outcomes[0]
            .path
            .iter()
            .any(|s| s.table == "filter" && s.chain == "INPUT")
    );

    // Pods short-circuit to the cluster-wide SVC chain.
    let pod = run(
        &rules,
        &packet("10.0.0.2", "192.168.99.33", 80, Origin::FromOutside),
    );
    assert_eq!(only(&pod), (Some("10.180.1.5:80"), false, Verdict::Pass));
    assert!(has_step(
        &pod,
        "KUBE-EXT-SVC3",
        "pod traffic",
        &Action::Jump {
            to: "KUBE-SVC-SVC3".into()
        }
    ));

    // The node itself: masqueraded, routed to SVC.
    let host = run(&rules, &packet(NODE_IP, "192.168.99.33", 80, Origin::FromNode));
    assert_eq!(only(&host), (Some("10.180.1.5:80"), true, Verdict::Pass));
}

#[test]
fn hairpin_is_masqueraded() {
    let t = run(
        &base(),
        &packet("10.180.0.4", "172.30.0.42", 80, Origin::FromOutside),
    );
    assert_eq!(only(&t), (Some("10.180.0.4:80"), true, Verdict::Accept));
    assert!(has_step(
        &t,
        "KUBE-SEP-SVC2A",
        "ns2/svc2:p80",
        &Action::Jump {
            to: "KUBE-MARK-MASQ".into()
        }
    ));
    let outcome = &t.outcomes[0];
    assert_eq!(outcome.final_mark, 0, "KUBE-POSTROUTING clears the bit");
    assert!(
        outcome
            .path
            .iter()
            .any(|s| s.action == Action::Mark { from: 0, to: 0x4000 })
    );
    assert!(
        outcome
            .path
            .iter()
            .any(|s| s.action == Action::Mark { from: 0x4000, to: 0 })
    );
}

#[test]
fn session_affinity() {
    let rules = base();
    let mut p = packet("10.0.0.2", "172.30.0.44", 80, Origin::FromOutside);
    let first = run(&rules, &p);
    let got: Vec<(f64, Option<&str>, Vec<String>)> = first
        .outcomes
        .iter()
        .map(|o| {
            (
                o.probability,
                o.nat_destination.as_deref(),
                o.affinity_set.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0.5, Some("10.180.0.6:80"), vec!["KUBE-SEP-SVC4A".to_string()]),
            (0.5, Some("10.180.0.7:80"), vec!["KUBE-SEP-SVC4B".to_string()]),
        ]
    );

    p.recent = vec!["KUBE-SEP-SVC4B".to_string()];
    let again = run(&rules, &p);
    assert_eq!(only(&again), (Some("10.180.0.7:80"), false, Verdict::Pass));
    assert!(has_step(
        &again,
        "KUBE-SVC-SVC4",
        "-> 10.180.0.7:80",
        &Action::Jump {
            to: "KUBE-SEP-SVC4B".into()
        }
    ));
}

#[test]
fn no_endpoints_rejects() {
    let rules = base();
    for origin in [Origin::FromOutside, Origin::FromNode] {
        let src = if origin == Origin::FromNode {
            NODE_IP
        } else {
            "10.0.0.2"
        };
        let t = run(&rules, &packet(src, "172.30.0.46", 80, origin));
        assert_eq!(only(&t), (None, false, Verdict::Reject), "{origin:?}");
        assert!(has_step(&t, "KUBE-SERVICES", "has no endpoints", &Action::Reject));
    }
}

#[test]
fn localnet_firewall_rule() {
    let rules = base();
    // Not DNATed: a non-loopback source to 127.0.0.1 is dropped.
    let t = run(
        &rules,
        &packet("10.0.0.5", "127.0.0.1", 9999, Origin::FromOutside),
    );
    assert_eq!(only(&t), (None, false, Verdict::Drop));
    assert!(has_step(
        &t,
        "KUBE-FIREWALL",
        "block incoming localnet",
        &Action::Drop
    ));
    // A localhost NodePort is DNATed first.
    let t = run(
        &rules,
        &packet("10.0.0.5", "127.0.0.1", 3002, Origin::FromOutside),
    );
    assert_eq!(only(&t), (Some("10.180.0.4:80"), true, Verdict::Accept));
    // A loopback source is fine.
    let t = run(&rules, &packet("127.0.0.1", "127.0.0.1", 9999, Origin::FromNode));
    assert_eq!(only(&t), (None, false, Verdict::Pass));

    // The DNAT conntrack status exempts a DNATed packet even when its new
    // destination is still in 127/8.
    let firewall = BASE
        .lines()
        .find(|l| l.starts_with("-A KUBE-FIREWALL"))
        .expect("rule");
    let merged = Ruleset::from_dump(&format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n\
         -A KUBE-SERVICES -p tcp -d 127.0.0.1 --dport 80 -j DNAT --to-destination 127.0.0.2:8080\nCOMMIT\n\
         *filter\n:KUBE-FIREWALL - [0:0]\n{firewall}\nCOMMIT\n"
    ))
    .expect("rules")
    .with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS);
    let t = run(&merged, &packet("10.0.0.5", "127.0.0.1", 80, Origin::FromOutside));
    assert_eq!(only(&t), (Some("127.0.0.2:8080"), false, Verdict::Pass));
    let t = run(&merged, &packet("10.0.0.5", "127.0.0.1", 81, Origin::FromOutside));
    assert_eq!(only(&t), (None, false, Verdict::Drop));
}

#[test]
fn established_connections_skip_nat() {
    let mut p = packet("203.0.113.9", "10.180.0.1", 80, Origin::FromOutside);
    p.conntrack = CtState::Established;
    let t = run(&base(), &p);
    assert_eq!(only(&t), (None, false, Verdict::Accept));
    assert!(has_step(&t, "KUBE-FORWARD", "conntrack rule", &Action::Accept));
    assert!(t.warnings.iter().any(|w| w.contains("nat")));
    p.conntrack = CtState::Invalid;
    let t = run(&base(), &p);
    assert_eq!(only(&t), (None, false, Verdict::Drop));
}

#[test]
fn ipv6_dnat() {
    let text = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-V6 - [0:0]
:KUBE-SEP-V6 - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:172:30::41 --dport 80 -j KUBE-SVC-V6
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SVC-V6 -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:172:30::41 --dport 80 ! -s fd00:10::/64 -j KUBE-MARK-MASQ
-A KUBE-SVC-V6 -m comment --comment "ns1/svc1:p80 -> [fd00::1]:80" -j KUBE-SEP-V6
-A KUBE-SEP-V6 -m comment --comment ns1/svc1:p80 -s fd00::1 -j KUBE-MARK-MASQ
-A KUBE-SEP-V6 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [fd00::1]:80
COMMIT
"#;
    let rules = Ruleset::from_dump(text)
        .expect("v6")
        .with_builtin_jumps(IpFamily::V6, &chainsmith_iptables::BUILTIN_JUMPS);
    let t = run(
        &rules,
        &packet("fd00:10::2", "fd00:172:30::41", 80, Origin::FromOutside),
    );
    assert_eq!(only(&t), (Some("[fd00::1]:80"), false, Verdict::Pass));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let t = run(
        &rules,
        &packet("2001:db8::9", "fd00:172:30::41", 80, Origin::FromOutside),
    );
    assert_eq!(only(&t), (Some("[fd00::1]:80"), true, Verdict::Accept));
    // A packet of the other family is reported.
    let t = run(
        &rules,
        &packet("10.0.0.2", "172.30.0.41", 80, Origin::FromOutside),
    );
    assert!(t.warnings.iter().any(|w| w.contains("not an IPv6 address")));
}

/// What must agree between two spellings of the same rules: everything but
/// rule positions and rule text.
type Comparable = Vec<(
    String,
    Option<String>,
    bool,
    u32,
    Verdict,
    Vec<String>,
    Vec<String>,
)>;

fn comparable(trace: &Trace) -> Comparable {
    trace
        .outcomes
        .iter()
        .map(|o| {
            let path = o
                .path
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {:?} {:?} {:?}",
                        s.table, s.chain, s.comment, s.action, s.probability
                    )
                })
                .collect();
            (
                format!("{:.9}", o.probability),
                o.nat_destination.clone(),
                o.masquerade,
                o.final_mark,
                o.verdict,
                o.affinity_set.clone(),
                path,
            )
        })
        .collect()
}

#[test]
fn iptables_save_dump_traces_like_the_restore_text() {
    let saved = Ruleset::from_dump(SAVED).expect("saved");
    let completed = saved
        .clone()
        .with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS);
    assert_eq!(
        completed.rule_count(),
        saved.rule_count(),
        "the dump already has every jump"
    );
    let rules = base();
    let mut affinity = packet("10.0.0.2", "172.30.0.44", 80, Origin::FromOutside);
    affinity.recent = vec!["KUBE-SEP-SVC4A".to_string()];
    let packets = [
        packet("10.0.0.2", "172.30.0.41", 80, Origin::FromOutside),
        packet("203.0.113.9", "172.30.0.41", 80, Origin::FromOutside),
        packet(NODE_IP, "172.30.0.41", 80, Origin::FromNode),
        packet("10.180.0.2", "172.30.0.41", 80, Origin::FromOutside),
        packet("10.0.0.2", "172.30.0.44", 80, Origin::FromOutside),
        affinity,
        packet("10.0.0.2", "172.30.0.46", 80, Origin::FromOutside),
        packet("10.0.0.5", "127.0.0.1", 9999, Origin::FromOutside),
    ];
    for p in &packets {
        let (from_save, from_restore) = (run(&saved, p), run(&rules, p));
        assert!(!from_save.outcomes.is_empty());
        assert_eq!(comparable(&from_save), comparable(&from_restore), "{p:?}");
        assert!(from_save.warnings.is_empty(), "{:?}", from_save.warnings);
    }
}

#[test]
fn unknown_matches_warn_and_do_not_match() {
    let rules = Ruleset::from_dump(
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m set --match-set blocked src -j DNAT --to-destination 10.9.9.9:1\n-A PREROUTING -j LOG --log-prefix x\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
    )
    .expect("dump");
    let t = run(&rules, &packet("10.0.0.2", "10.1.1.1", 80, Origin::FromOutside));
    assert_eq!(only(&t), (None, false, Verdict::Drop));
    assert!(
        t.warnings.iter().any(|w| w.contains("-m set")),
        "{:?}",
        t.warnings
    );
    assert!(t.warnings.iter().any(|w| w.contains("LOG")), "{:?}", t.warnings);
    assert!(t.outcomes[0].path.iter().any(|s| s.action
        == Action::Policy {
            policy: "DROP".into()
        }));
}

#[test]
fn targets_that_end_the_walk_are_not_passed_off_as_doing_nothing() {
    let rules = Ruleset::from_dump(
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
    )
    .expect("dump");
    let t = run(&rules, &packet("10.0.0.2", "10.1.1.1", 80, Origin::FromOutside));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("target REDIRECT ends the packet's walk in the kernel")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn branches_are_bounded() {
    // 20 chained coin flips would be a million branches.
    let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for _ in 0..20 {
        text.push_str("-A PREROUTING -m statistic --mode random --probability 0.5 -j MARK --or-mark 0x1\n");
    }
    text.push_str("COMMIT\n");
    let rules = Ruleset::from_dump(&text).expect("dump");
    let t = trace(
        &rules,
        &packet("10.0.0.2", "10.1.1.1", 80, Origin::FromOutside),
        &node(),
    );
    assert_eq!(t.outcomes.len(), chainsmith_tracer::MAX_BRANCHES);
    assert!(t.warnings.iter().any(|w| w.contains("stopped after")));
}

/// Found while fuzzing (`fuzz/` target `dump`): every branch walks from the
/// start and keeps its path, so a dump whose forks multiply took time and
/// memory without bound (a loop of jumps, which the kernel refuses: seconds
/// and gigabytes; a thousand coin flips: 3 GB; chains each jumping twice to
/// the next: exponential). Loops are not entered again, and the whole trace
/// has a budget.
#[test]
fn work_is_bounded() {
    let p = || packet("10.0.0.2", "10.1.1.1", 80, Origin::FromOutside);
    let looped = "*nat\n:PREROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A PREROUTING -j A\n\
        -A A -m statistic --mode random --probability 0.5 -j B\n-A A -j B\n\
        -A B -j A\n-A B -j A\nCOMMIT\n";
    let t = trace(&Ruleset::from_dump(looped).expect("dump"), &p(), &node());
    assert_eq!(t.outcomes.len(), 2);
    assert!(
        t.warnings.iter().any(|w| w.contains("a loop of jumps")),
        "{:?}",
        t.warnings
    );

    let mut flips = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n");
    for _ in 0..1000 {
        flips.push_str("-A PREROUTING -m statistic --mode random --probability 0.5\n");
    }
    flips.push_str("COMMIT\n");
    let mut doubling = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j C0\n");
    for i in 0..30 {
        doubling.push_str(&format!(":C{i} - [0:0]\n"));
        for _ in 0..2 {
            let next = i + 1;
            doubling.push_str(&format!(
                "-A C{i} -m statistic --mode random --probability 0.5 -j C{next}\n"
            ));
        }
    }
    doubling.push_str(":C30 - [0:0]\nCOMMIT\n");
    for text in [flips, doubling] {
        let t = trace(&Ruleset::from_dump(&text).expect("dump"), &p(), &node());
        assert!(!t.outcomes.is_empty());
        assert!(
            t.warnings.iter().any(|w| w.contains("stopped after")),
            "{:?}",
            t.warnings
        );
    }
}

#[test]
fn trace_serializes_to_json() {
    let t = run(
        &base(),
        &packet("10.180.0.4", "172.30.0.42", 80, Origin::FromOutside),
    );
    let json = serde_json::to_value(&t).expect("json");
    assert_eq!(json["packet"]["protocol"], "tcp");
    assert_eq!(json["packet"]["origin"], "from_outside");
    assert_eq!(json["outcomes"][0]["verdict"], "accept");
    assert_eq!(json["outcomes"][0]["nat_destination"], "10.180.0.4:80");
    let kinds: Vec<&str> = json["outcomes"][0]["path"]
        .as_array()
        .expect("path")
        .iter()
        .filter_map(|s| s["action"]["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"dnat") && kinds.contains(&"masquerade"),
        "{kinds:?}"
    );
    println!("{}", t.outcomes[0].summary());
}
