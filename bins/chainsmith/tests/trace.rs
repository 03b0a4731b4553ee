//! `chainsmith trace` and `chainsmith explain` through the real binary: their
//! answers on the fixture clusters are locked as snapshots (a rule change that
//! changes where a packet goes shows up in review), and the JSON form is
//! checked for what tools rely on.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use serde_json::Value;

fn run(args: &[&str]) -> String {
    let output = common::chainsmith_in_fixtures(args);
    String::from_utf8(output.stdout).expect("utf8")
}

fn snapshot(name: &str, args: &[&str]) {
    insta::with_settings!({
        snapshot_path => "../../../snapshots",
        prepend_module_to_snapshot => false,
        description => format!("chainsmith {}", args.join(" ")),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, run(args));
    });
}

const V4: &[&str] = &["--node", "nodes/ipv4.yaml"];

fn with(base: &[&'static str], more: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn traces_in_plain_words() {
    let trace = |more: &[&'static str]| with(&with(&["trace"], V4), more);
    snapshot(
        "trace@nodeport-from-outside",
        &trace(&[
            "nodeport.yaml",
            "--src",
            "203.0.113.50",
            "--dst",
            "198.51.100.10",
            "--dport",
            "30080",
        ]),
    );
    snapshot(
        "trace@clusterip-from-a-pod",
        &trace(&[
            "clusterip.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.10.10",
            "--dport",
            "80",
        ]),
    );
    snapshot(
        "trace@affinity-already-recorded",
        &trace(&[
            "session-affinity.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.17.10",
            "--dport",
            "80",
            "--affinity",
            "KUBE-SEP-QAUYKM5HZASAXUBN",
        ]),
    );
    snapshot(
        "trace@no-endpoints",
        &trace(&[
            "no-endpoints.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.15.10",
            "--dport",
            "80",
        ]),
    );
}

#[test]
fn explains_every_entry_point() {
    for (name, cluster, service) in [
        (
            "explain@loadbalancer-source-ranges",
            "loadbalancer.yaml",
            "payments/partner-api",
        ),
        (
            "explain@nodeport-local-policy",
            "nodeport.yaml",
            "shop/storefront-local",
        ),
        ("explain@dual-stack-ipv6", "dual-stack.yaml", "shop/web"),
    ] {
        let node = if name.contains("ipv6") {
            "nodes/ipv6.yaml"
        } else {
            "nodes/ipv4.yaml"
        };
        snapshot(name, &["explain", "--node", node, cluster, service]);
    }
}

/// kube-proxy's 2018 layout: the seed's question (why does a public
/// load-balancer IP have a rule on every node?) on the seed's own Service, a
/// source outside loadBalancerSourceRanges, and a Local NodePort.
#[test]
fn the_2018_layout_in_plain_words() {
    snapshot(
        "explain@v1.10-seed",
        &[
            "explain",
            "--layout",
            "v1.10",
            "--example",
            "seed",
            "default/sleep",
        ],
    );
    snapshot(
        "trace@v1.10-seed-load-balancer-ip",
        &[
            "trace",
            "--layout",
            "v1.10",
            "--example",
            "seed",
            "--src",
            "203.0.113.7",
            "--dst",
            "118.24.224.100",
            "--dport",
            "80",
        ],
    );
    // The load-balancer IP as a local address of the node, as cloud guest
    // agents configure it: the drop mark then meets the kubelet's firewall.
    snapshot(
        "trace@v1.10-source-range-denied",
        &with(
            &with(&["trace", "--layout", "v1.10"], V4),
            &[
                "loadbalancer.yaml",
                "--src",
                "192.0.2.200",
                "--dst",
                "203.0.113.30",
                "--dport",
                "443",
                "--local-ip",
                "203.0.113.30",
            ],
        ),
    );
    snapshot(
        "explain@v1.10-nodeport-local-policy",
        &with(
            &with(&["explain", "--layout", "v1.10"], V4),
            &["nodeport.yaml", "shop/storefront-local"],
        ),
    );
}

#[test]
fn json_traces_carry_every_branch_with_its_probability() {
    for mode in ["iptables", "nftables"] {
        json_trace_in(mode);
    }
}

fn json_trace_in(mode: &'static str) {
    let json = run(&with(
        &with(&["trace", "--mode", mode], V4),
        &[
            "clusterip.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.10.10",
            "--dport",
            "80",
            "--output",
            "json",
        ],
    ));
    let trace: Value = serde_json::from_str(&json).expect("json");
    let outcomes = trace["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes.len(), 3, "{mode}: three endpoints");
    let total: f64 = outcomes
        .iter()
        .map(|o| o["probability"].as_f64().expect("probability"))
        .sum();
    assert!((total - 1.0).abs() < 1e-6, "{mode}: {total}");
    for outcome in outcomes {
        assert!(
            outcome["nat_destination"]
                .as_str()
                .is_some_and(|d| d.starts_with("10.244.")),
            "{outcome}"
        );
        assert!(outcome["path"].as_array().is_some_and(|p| !p.is_empty()));
    }
}

/// nftables mode: the same questions, answered from kube-proxy's nftables
/// table (verdict maps, `numgen` balancing, affinity sets).
#[test]
fn nftables_mode_in_plain_words() {
    let trace = |more: &[&'static str]| with(&with(&["trace", "--mode", "nftables"], V4), more);
    snapshot(
        "trace@nftables-nodeport-from-outside",
        &trace(&[
            "nodeport.yaml",
            "--src",
            "203.0.113.50",
            "--dst",
            "198.51.100.10",
            "--dport",
            "30080",
        ]),
    );
    snapshot(
        "trace@nftables-clusterip-from-a-pod",
        &trace(&[
            "clusterip.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.10.10",
            "--dport",
            "80",
        ]),
    );
    snapshot(
        "trace@nftables-no-endpoints",
        &trace(&[
            "no-endpoints.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.15.10",
            "--dport",
            "80",
        ]),
    );
    // The affinity set of shop/cart's (10.96.17.10) second endpoint, as compiled.
    let compiled = run(&with(
        &["compile", "--mode", "nftables"],
        &with(V4, &["session-affinity.yaml"]),
    ));
    let set = compiled
        .lines()
        .find_map(|l| {
            l.strip_prefix("add set ip kube-proxy ")
                .and_then(|rest| rest.split(' ').next())
                .filter(|name| {
                    name.starts_with("affinity-") && name.ends_with("shop/cart/tcp/http__10.244.2.110/8080")
                })
        })
        .expect("an affinity set")
        .to_string();
    let set: &'static str = Box::leak(set.into_boxed_str());
    snapshot(
        "trace@nftables-affinity-already-recorded",
        &trace(&[
            "session-affinity.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.17.10",
            "--dport",
            "80",
            "--affinity",
            set,
        ]),
    );
    for (name, cluster, service, node) in [
        (
            "explain@nftables-loadbalancer-source-ranges",
            "loadbalancer.yaml",
            "payments/partner-api",
            "nodes/ipv4.yaml",
        ),
        (
            "explain@nftables-nodeport-local-policy",
            "nodeport.yaml",
            "shop/storefront-local",
            "nodes/ipv4.yaml",
        ),
        (
            "explain@nftables-dual-stack-ipv6",
            "dual-stack.yaml",
            "shop/web",
            "nodes/ipv6.yaml",
        ),
    ] {
        snapshot(
            name,
            &["explain", "--mode", "nftables", "--node", node, cluster, service],
        );
    }
}

/// `trace --mode nftables --rules` reads the kernel's own listing: loaded
/// into a namespace and listed back, the compiled table gives the same
/// answer as compiling the cluster (real kernel tests only).
#[test]
fn nftables_traces_read_the_kernels_listing() {
    if !chainsmith_testkit::kernel_tests_enabled("nftables_traces_read_the_kernels_listing") {
        return;
    }
    let compiled = common::chainsmith_in_fixtures(&[
        "compile",
        "--mode",
        "nftables",
        "--node",
        "nodes/ipv4.yaml",
        "loadbalancer.yaml",
    ]);
    let netns = chainsmith_testkit::Netns::new("nfttrace").expect("netns");
    netns
        .run_with_input("nft", &["-f", "-"], &compiled.stdout)
        .expect("loads");
    let listing = netns.run("nft", &["list", "ruleset"]).expect("lists");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("listing.txt");
    std::fs::write(&path, listing).expect("write");
    let packet = [
        "--src",
        "203.0.113.7",
        "--dst",
        "203.0.113.30",
        "--dport",
        "443",
        "--output",
        "json",
    ];
    let from_cluster = run(&with(
        &[
            "trace",
            "--mode",
            "nftables",
            "--node",
            "nodes/ipv4.yaml",
            "loadbalancer.yaml",
        ],
        &packet,
    ));
    let mut args = vec![
        "trace",
        "--mode",
        "nftables",
        "--node",
        "nodes/ipv4.yaml",
        "--rules",
        path.to_str().expect("utf8"),
    ];
    args.extend_from_slice(&packet);
    let from_kernel = run(&args);
    // The deciding rule is named by chain and position; its text is in the
    // kernel's spelling on one side and knftables' on the other.
    let outcomes = |json: &str| -> Vec<[Value; 5]> {
        let trace: Value = serde_json::from_str(json).expect("json");
        trace["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .map(|o| {
                let verdict = &o["verdict"];
                [
                    verdict["kind"].clone(),
                    verdict["by"]["chain"].clone(),
                    verdict["by"]["index"].clone(),
                    o["nat_destination"].clone(),
                    o["probability"].clone(),
                ]
            })
            .collect()
    };
    assert_eq!(outcomes(&from_kernel), outcomes(&from_cluster));
    assert!(
        from_kernel.contains("\"dropped\""),
        "a source outside the ranges is dropped"
    );
}

/// Runs `chainsmith trace --rules DUMP ARGS` on a dump written to a file.
fn trace_dump(dump: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dump.txt");
    std::fs::write(&path, dump).expect("write");
    let mut all = vec!["trace", "--rules", path.to_str().expect("utf8")];
    all.extend_from_slice(args);
    run(&all)
}

/// A 2018 (v1.10) node's nat table: a Local LoadBalancer Service whose
/// endpoints are all on other nodes, so KUBE-XLB marks for drop; the
/// load-balancer IP is not an address of the node, so the packet is forwarded.
const V1_10_NAT: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-FW-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-XLB-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A KUBE-SERVICES -d 203.0.113.40/32 -p tcp -m comment --comment "shop/front:http loadbalancer IP" -m tcp --dport 80 -j KUBE-FW-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-FW-AAAAAAAAAAAAAAAA -m comment --comment "shop/front:http loadbalancer IP" -j KUBE-XLB-AAAAAAAAAAAAAAAA
-A KUBE-FW-AAAAAAAAAAAAAAAA -m comment --comment "shop/front:http loadbalancer IP" -j KUBE-MARK-DROP
-A KUBE-XLB-AAAAAAAAAAAAAAAA -s 10.244.0.0/16 -m comment --comment "Redirect pods trying to reach external loadbalancer VIP to clusterIP" -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-XLB-AAAAAAAAAAAAAAAA -m comment --comment "shop/front:http has no local endpoints" -j KUBE-MARK-DROP
-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "shop/front:http" -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SEP-BBBBBBBBBBBBBBBB -s 10.244.2.7/32 -m comment --comment "shop/front:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m comment --comment "shop/front:http" -m tcp -j DNAT --to-destination 10.244.2.7:8080
COMMIT
"#;

/// The filter table of that node, as the kubelet and kube-proxy of 2018 left it.
const V1_10_FILTER: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"#;

const TO_THE_LB_IP: &[&str] = &["--src", "192.0.2.9", "--dst", "203.0.113.40", "--dport", "80"];

/// A chain entered where nothing matches is shown ending, with the chain the
/// walk goes back to, and so is a RETURN.
#[test]
fn every_chain_entered_is_shown_left() {
    let text = run(&with(
        &with(&["trace"], V4),
        &[
            "no-endpoints.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.15.10",
            "--dport",
            "80",
        ],
    ));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let jump = lines
        .iter()
        .position(|l| l.starts_with("rule 1 \"kubernetes service portals\" matches: on to KUBE-SERVICES"))
        .expect("the jump to KUBE-SERVICES");
    assert_eq!(
        lines[jump + 1],
        "KUBE-SERVICES: no rule matched, back to PREROUTING",
        "{text}"
    );
    let text = run(&with(
        &with(&["trace"], V4),
        &[
            "clusterip.yaml",
            "--src",
            "10.244.1.99",
            "--dst",
            "10.96.10.10",
            "--dport",
            "80",
        ],
    ));
    assert!(text.contains("RETURN, back to POSTROUTING"), "{text}");
    // Two chains in a row where only the second matched: the first one's end is between them.
    let dump = format!("{V1_10_NAT}{V1_10_FILTER}");
    let text = trace_dump(&dump, TO_THE_LB_IP);
    assert!(
        text.contains("end of the chain, back to KUBE-XLB-AAAAAAAAAAAAAAAA"),
        "{text}"
    );
}

/// Branches that end the same way are one line of the verdict, their chances
/// summed; the JSON keeps every branch.
#[test]
fn identical_outcomes_are_counted_together() {
    let dump = r#"*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
:KUBE-SEP-3 - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-1
-A KUBE-SVC-A -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-2
-A KUBE-SVC-A -j KUBE-SEP-3
-A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.244.1.1:8080
-A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.244.1.1:8080
-A KUBE-SEP-3 -p tcp -m tcp -j DNAT --to-destination 10.244.2.2:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"#;
    let packet = ["--src", "10.244.3.3", "--dst", "10.96.0.10", "--dport", "80"];
    let text = trace_dump(dump, &packet);
    let verdicts: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Verdict"))
        .map(str::trim)
        .collect();
    assert_eq!(
        verdicts,
        [
            "Verdict, one of 3 random choices:",
            "66.7%  sent to 10.244.1.1:8080, the client's address is kept, delivered (2 of the 3 choices)",
            "33.3%  sent to 10.244.2.2:8080, the client's address is kept, delivered",
        ],
        "{text}"
    );
    let json = trace_dump(dump, &[&packet[..], &["--output", "json"]].concat());
    let trace: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(trace["outcomes"].as_array().map(Vec::len), Some(3));
}

/// A forwarded packet of a 2018 node marked by KUBE-MARK-DROP is not dropped
/// (the kubelet's KUBE-FIREWALL is in INPUT and OUTPUT): the verdict says it
/// was marked and that nothing on its path drops marked packets.
#[test]
fn a_pass_says_what_was_done_to_the_packet() {
    let text = trace_dump(&format!("{V1_10_NAT}{V1_10_FILTER}"), TO_THE_LB_IP);
    let verdict = text.lines().find(|l| l.starts_with("Verdict")).expect("verdict");
    assert!(
        verdict.contains(
            "marked 0x8000 by KUBE-MARK-DROP to be dropped, but nothing on this path drops marked packets"
        ),
        "{text}"
    );
    assert!(
        verdict.contains("no rule decided its fate: it goes on as routed"),
        "{text}"
    );
    assert!(!text.contains("not touched"), "{text}");
}

/// KUBE-FW is explained as the layout that wrote it uses it: recognised from
/// the dump, or as given with --layout, or neutrally when it cannot be told.
#[test]
fn kube_fw_is_described_per_layout() {
    let v1_10_role = "the load-balancer IP: marks for masquerade, sends on to the Service";
    let v1_33_role = "checks the source against loadBalancerSourceRanges";
    let neutral = "KUBE-FW-AAAAAAAAAAAAAAAA (a load-balancer IP's own chain)";
    let v1_10 = format!("{V1_10_NAT}{V1_10_FILTER}");
    let text = trace_dump(&v1_10, TO_THE_LB_IP);
    assert!(text.contains(v1_10_role) && !text.contains(v1_33_role), "{text}");
    let text = trace_dump(&v1_10, &with(&["--layout", "v1.33"], TO_THE_LB_IP));
    assert!(text.contains(v1_33_role) && !text.contains(v1_10_role), "{text}");
    // v1.33's spelling of the same Service: KUBE-EXT, and KUBE-FW only for source ranges.
    let v1_33 = V1_10_NAT
        .replace(
            "-A KUBE-FW-AAAAAAAAAAAAAAAA -m comment --comment \"shop/front:http loadbalancer IP\" -j KUBE-XLB-AAAAAAAAAAAAAAAA\n",
            "-A KUBE-FW-AAAAAAAAAAAAAAAA -s 192.0.2.0/24 -j KUBE-EXT-AAAAAAAAAAAAAAAA\n",
        )
        .replace("KUBE-XLB-", "KUBE-EXT-")
        .replace("-j KUBE-MARK-DROP\n-A KUBE-EXT", "-j KUBE-MARK-MASQ\n-A KUBE-EXT");
    assert!(!v1_33.contains("KUBE-XLB"));
    let text = trace_dump(&v1_33, TO_THE_LB_IP);
    assert!(text.contains(v1_33_role) && !text.contains(v1_10_role), "{text}");
    // Neither layout's own chains: KUBE-FW is named for what it is, no more.
    let unknown: String = V1_10_NAT
        .replace("-j KUBE-XLB-AAAAAAAAAAAAAAAA", "-j KUBE-SVC-AAAAAAAAAAAAAAAA")
        .lines()
        .filter(|l| {
            let fw_marks_drop = l.starts_with("-A KUBE-FW-") && l.ends_with("-j KUBE-MARK-DROP");
            !l.contains("KUBE-XLB-") && !fw_marks_drop
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let text = trace_dump(&unknown, TO_THE_LB_IP);
    assert!(text.contains(neutral), "{text}");
    assert!(!text.contains(v1_33_role) && !text.contains(v1_10_role), "{text}");
}

/// A dump of the nat table alone: the answer says the filter table is absent
/// and taken as empty with policy ACCEPT, in the text and the JSON.
#[test]
fn an_absent_table_is_an_assumption_in_the_answer() {
    let text = trace_dump(V1_10_NAT, TO_THE_LB_IP);
    let assumed = "assumed: table filter is not in the rules: its built-in chains are taken as empty with policy ACCEPT";
    assert!(text.lines().any(|l| l == assumed), "{text}");
    assert!(
        text.contains("  filter FORWARD\n    not in the rules: taken as empty with policy ACCEPT (assumed)"),
        "{text}"
    );
    let json = trace_dump(V1_10_NAT, &with(TO_THE_LB_IP, &["--output", "json"]));
    let trace: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        trace["assumptions"],
        serde_json::json!([
            "table filter is not in the rules: its built-in chains are taken as empty with policy ACCEPT"
        ])
    );
}
