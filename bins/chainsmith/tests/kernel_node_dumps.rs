//! `chainsmith trace --rules` on dumps shaped like those operators post from
//! real nodes, each loaded as it is into a real kernel: the trace must
//! describe exactly the dump (no jump added, the dump's rule numbers, its
//! family from its header and addresses, absent tables said to be absent),
//! and predict what the kernel did with every probe.
//!
//! The dumps (`tests/data/node-dumps/`) are written by hand in the shapes of
//! kube-proxy v1.10, v1.23, v1.28 and v1.29 nodes: an operator's DROP placed
//! before an old-spelled FORWARD jump, no `KUBE-PROXY-FIREWALL`, Docker's
//! chains and FORWARD policy, other software's matches, counters, the nat
//! table alone, `ip6tables-save`, and `iptables -t nat -S` output. Every
//! address a packet is sent to is one of the test topology's (documentation
//! ranges). Each is loaded with `iptables-restore -c` (the nf_tables
//! backend) into the node of a [`Topology`]; probes come from the client,
//! its second address, the node and the pods, through the shared harness
//! (`common/paths.rs`, mode [`Dump`]): each probe's outcome must be one the
//! binary's JSON trace predicts.
//!
//! The dumps in `tests/data/node-dumps-refused/` are ones `iptables-restore`
//! refuses (truncated, `-j` without a target, junk after a target) or that
//! are not `iptables-save` output (grep's): the binary must refuse them
//! naming the line, and the real `iptables-restore --test` must refuse the
//! same ones.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`);
//! the refusals by the binary are checked without it.
//!
//! [`Topology`]: chainsmith_testkit::Topology

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;
#[path = "common/paths.rs"]
mod paths;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use chainsmith_testkit::{Backend, IpFamily, Netns, ProbeResult, Proto, Topology, kernel_tests_enabled};
use serde_json::Value;

use paths::{ANSWER, DROPPED, Dump, World, ips, set};

fn dump_path(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
        .join(name)
}

fn world(
    name: &str,
    family: IpFamily,
    node_local: &[IpAddr],
    allowed_warnings: &[&'static str],
) -> World<Dump> {
    let dump = Dump {
        file: dump_path("node-dumps", name),
        backend: Backend::Nft,
        trace_args: Vec::new(),
        allowed_warnings: allowed_warnings.to_vec(),
        load: None,
    };
    World::load(dump, family, &["pod-a", "pod-b"], node_local)
}

const CLIENT: IpAddr = IpAddr::V4(Topology::CLIENT_IPV4);
const CLIENT2: IpAddr = IpAddr::V4(Topology::CLIENT2_IPV4);
const NODE: IpAddr = IpAddr::V4(Topology::NODE_IPV4);
const POD_SIDE: IpAddr = IpAddr::V4(Topology::NODE_POD_SIDE_IPV4);

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().expect("IPv4 address"))
}

/// The steps of every outcome of a JSON trace, as `table chain rule N kind`.
fn steps(trace: &Value) -> Vec<String> {
    trace["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["path"].as_array().cloned().unwrap_or_default())
        .map(|step| {
            format!(
                "{} {} rule {} {}",
                step["table"].as_str().unwrap_or_default(),
                step["chain"].as_str().unwrap_or_default(),
                step["rule_index"],
                step["action"]["kind"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn v1_29_node_with_counters() {
    if !kernel_tests_enabled("v1_29_node_with_counters") {
        return;
    }
    // The mangle table marks SSH, which no probe here is.
    let w = world(
        "v1.29-counters.txt",
        IpFamily::V4,
        &[],
        &["table mangle holds 1 rule"],
    );
    let client = &w.topology.client;
    let cip = v4("198.51.100.10");
    let (_, trace) = w.probe_traced(client, Proto::Tcp, None, cip, 80, ANSWER);
    assert!(
        trace["warnings"]
            .to_string()
            .contains("table mangle holds 1 rule this trace does not walk"),
        "{trace:#}"
    );
    let (pods, peers) = w.replies(
        "cluster IP from the client",
        &w.probes(client, 24, Proto::Tcp, None, cip, 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]), "{}", w.dump());
    assert_eq!(peers, ips([POD_SIDE]), "off-cluster sources are masqueraded");
    let r = w.probe(client, Proto::Tcp, None, NODE, 30080, ANSWER);
    w.expect_reply("NodePort from the client", &r, None, POD_SIDE);
    let r = w.probe(client, Proto::Tcp, None, v4("198.51.100.11"), 80, ANSWER);
    w.expect("a Service without endpoints", &r, &ProbeResult::Refused);
    let (pods, _) = w.replies(
        "cluster IP from the node",
        &w.probes(&w.topology.node, 24, Proto::Tcp, None, cip, 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]));
}

#[test]
fn nat_table_alone() {
    if !kernel_tests_enabled("nat_table_alone") {
        return;
    }
    let w = world("nat-only.txt", IpFamily::V4, &[], &[]);
    let client = &w.topology.client;
    let (r, trace) = w.probe_traced(client, Proto::Tcp, None, v4("198.51.100.10"), 80, ANSWER);
    w.expect_reply("cluster IP from the client", &r, None, POD_SIDE);
    let steps = steps(&trace);
    assert!(
        steps
            .iter()
            .filter(|s| s.starts_with("filter "))
            .all(|s| s == "filter FORWARD rule null absent"),
        "a dump without a filter table has no filter chains to walk: {steps:#?}"
    );
    let assumed = trace["assumptions"].to_string();
    assert!(
        assumed.contains("filter") && assumed.contains("ACCEPT"),
        "the trace must say the filter table is absent and taken as ACCEPT: {trace:#}"
    );
}

#[test]
fn v1_23_node_with_docker() {
    if !kernel_tests_enabled("v1_23_node_with_docker") {
        return;
    }
    // Other software's matches: Docker's `-o docker0`, a broadcast filter.
    let w = world(
        "v1.23-docker.txt",
        IpFamily::V4,
        &[],
        &["-m pkttype", "the output interface is not modelled"],
    );
    let client = &w.topology.client;
    let (r, trace) = w.probe_traced(client, Proto::Tcp, None, NODE, 30080, ANSWER);
    w.expect_reply("NodePort from the client", &r, None, POD_SIDE);
    let steps = steps(&trace);
    // v1.23 had no KUBE-PROXY-FIREWALL; its FORWARD jump is rule 2, after
    // the broadcast filter.
    assert!(
        steps.iter().all(|s| !s.contains("KUBE-PROXY-FIREWALL")),
        "no chain the dump lacks: {steps:#?}"
    );
    assert!(
        steps.contains(&"filter FORWARD rule 2 jump".to_string()),
        "the dump's own rule numbers: {steps:#?}"
    );
    let (pods, _) = w.replies(
        "cluster IP from the client",
        &w.probes(client, 24, Proto::Tcp, None, v4("198.51.100.10"), 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]));
    // Docker publishes 8081 to pod-b, but nothing accepts it in FORWARD,
    // whose policy Docker set to DROP.
    let r = w.probe(client, Proto::Tcp, None, NODE, 8081, DROPPED);
    w.expect("Docker's published port", &r, &ProbeResult::Timeout);
}

#[test]
fn v1_10_node_with_an_operator_drop_before_kube_forward() {
    if !kernel_tests_enabled("v1_10_node_with_an_operator_drop_before_kube_forward") {
        return;
    }
    // 198.51.100.21 is routed to the node itself (GCE-style), .20 is not.
    let lb_local = v4("198.51.100.21");
    let w = world("v1.10-forward-drop.txt", IpFamily::V4, &[lb_local], &[]);
    let client = &w.topology.client;
    // The operator's `-A FORWARD -s 203.0.113.2/32 -j DROP` comes before
    // the jump to KUBE-FORWARD, spelled "kubernetes forward rules" then.
    let (r, trace) = w.probe_traced(client, Proto::Tcp, None, NODE, 30080, DROPPED);
    w.expect("NodePort from the blocked client", &r, &ProbeResult::Timeout);
    assert!(
        steps(&trace).contains(&"filter FORWARD rule 1 drop".to_string()),
        "dropped by the dump's own first FORWARD rule: {trace:#}"
    );
    let r = w.probe(client, Proto::Tcp, Some(CLIENT2), NODE, 30080, ANSWER);
    w.expect_reply("NodePort from the client's other address", &r, None, POD_SIDE);
    // Not in the source range: KUBE-FW marks for drop (0x8000); the packet
    // is forwarded untranslated (nothing in FORWARD drops marked packets)
    // or, to the node's own address, dropped by the kubelet's KUBE-FIREWALL.
    let (r, trace) = w.probe_traced(
        client,
        Proto::Tcp,
        Some(CLIENT2),
        v4("198.51.100.20"),
        80,
        DROPPED,
    );
    w.expect("LB IP from outside the source range", &r, &ProbeResult::Timeout);
    let marks: Vec<u64> = trace["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["final_mark"].as_u64())
        .collect();
    assert_eq!(marks, [0xc000], "marked for masquerade and drop: {trace:#}");
    let (r, trace) = w.probe_traced(client, Proto::Tcp, Some(CLIENT2), lb_local, 80, DROPPED);
    w.expect(
        "local LB IP from outside the source range",
        &r,
        &ProbeResult::Timeout,
    );
    assert!(
        steps(&trace).contains(&"filter KUBE-FIREWALL rule 1 drop".to_string()),
        "{trace:#}"
    );
    // In the range: on to the Service (masqueraded by KUBE-FW's first rule).
    let pod_a = w.pod_ns("pod-a");
    let (pods, peers) = w.replies(
        "LB IP from a pod",
        &w.probes(pod_a, 24, Proto::Tcp, None, v4("198.51.100.20"), 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]));
    assert_eq!(peers, ips([POD_SIDE]));
}

#[test]
fn ip6tables_save_dump_is_read_as_ipv6() {
    if !kernel_tests_enabled("ip6tables_save_dump_is_read_as_ipv6") {
        return;
    }
    // No --node: the header and the addresses say IPv6.
    let w = world("ip6tables-v1.28.txt", IpFamily::V6, &[], &[]);
    let client = &w.topology.client;
    let cip: IpAddr = "2001:db8:3::10".parse().expect("address");
    let (pods, peers) = w.replies(
        "cluster IP from the client",
        &w.probes(client, 24, Proto::Udp, None, cip, 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]));
    assert_eq!(peers, ips([IpAddr::V6(Topology::NODE_POD_SIDE_IPV6)]));
    let dns: IpAddr = "2001:db8:3::11".parse().expect("address");
    let r = w.probe(client, Proto::Udp, None, dns, 53, ANSWER);
    w.expect("a Service without endpoints", &r, &ProbeResult::Refused);
}

/// `iptables -t nat -S` output into the kernel: the lines are what
/// `iptables -t nat` takes, one by one; as restore text in one go.
fn load_rules_listing(node: &Netns, listing: &str, _family: IpFamily, backend: Backend) {
    let mut restore = String::from("*nat\n");
    for line in listing.lines() {
        let converted = if let Some(rest) = line.strip_prefix("-P ") {
            format!(":{rest} [0:0]")
        } else if let Some(chain) = line.strip_prefix("-N ") {
            format!(":{chain} - [0:0]")
        } else {
            line.to_string()
        };
        restore.push_str(&converted);
        restore.push('\n');
    }
    restore.push_str("COMMIT\n");
    let tool = format!("iptables-{}-restore", backend.as_str());
    node.run_with_input(&tool, &[], restore.as_bytes())
        .unwrap_or_else(|e| panic!("{tool} refused the -S listing: {e}"));
}

#[test]
fn iptables_s_output_with_its_table_named() {
    if !kernel_tests_enabled("iptables_s_output_with_its_table_named") {
        return;
    }
    let dump = Dump {
        file: dump_path("node-dumps", "v1.10-nat-S.txt"),
        backend: Backend::Nft,
        trace_args: vec!["--table".to_string(), "nat".to_string()],
        allowed_warnings: Vec::new(),
        load: Some(load_rules_listing),
    };
    let w = World::load(dump, IpFamily::V4, &["pod-a", "pod-b"], &[]);
    let client = &w.topology.client;
    let r = w.probe(client, Proto::Tcp, Some(CLIENT), NODE, 30080, ANSWER);
    w.expect_reply("NodePort from the client", &r, None, POD_SIDE);
    let (pods, _) = w.replies(
        "cluster IP from the client",
        &w.probes(client, 24, Proto::Tcp, None, v4("198.51.100.10"), 80),
    );
    assert_eq!(pods, set(["pod-a", "pod-b"]));
}

/// Dumps that are not what `iptables-save` writes: the binary refuses each,
/// naming the line and what is wrong (`needles`); with the kernel tests on,
/// the real `iptables-restore --test` refuses it too.
#[test]
fn refused_dumps_are_refused_like_iptables_restore() {
    let cases: [(&str, &[&str]); 4] = [
        ("truncated.txt", &["line 78", "table nat", "COMMIT", "truncated"]),
        ("jump-without-target.txt", &["line 41", "-j"]),
        ("junk-after-target.txt", &["line 50", "//"]),
        ("grep-output.txt", &["line 1", "iptables-save"]),
    ];
    let kernel = kernel_tests_enabled("refused_dumps_are_refused_like_iptables_restore");
    for (name, needles) in cases {
        let path = dump_path("node-dumps-refused", name);
        let path_text = path.to_str().expect("path");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chainsmith"))
            .args([
                "trace",
                "--rules",
                path_text,
                "--src",
                "203.0.113.2",
                "--dst",
                "198.51.100.10",
            ])
            .args(["--dport", "80"])
            .output()
            .expect("run chainsmith");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{name} was traced:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: the error does not say {needle:?}:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{name}:\n{stderr}");
        if kernel {
            let netns = Netns::new("refused").expect("netns");
            let text = std::fs::read(&path).expect("dump");
            let refused = netns.run_with_input("iptables-nft-restore", &["--test"], &text);
            assert!(refused.is_err(), "iptables-restore --test accepts {name}");
        }
    }
}

/// An `ip6tables-save` dump with an IPv4 node config: an error naming both,
/// not a trace warning that every address is of the wrong family.
#[test]
fn a_dump_of_the_other_family_than_the_node_is_refused() {
    let dump = dump_path("node-dumps", "ip6tables-v1.28.txt");
    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/example/node.yaml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args([
            "trace",
            "--node",
            node.to_str().expect("path"),
            "--rules",
            dump.to_str().expect("path"),
        ])
        .args([
            "--src",
            "2001:db8:1::2",
            "--dst",
            "2001:db8:3::10",
            "--dport",
            "80",
        ])
        .output()
        .expect("run chainsmith");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "traced across families");
    assert!(
        stderr.contains("holds IPv6 rules") && stderr.contains("is IPv4"),
        "{stderr}"
    );
}
