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
