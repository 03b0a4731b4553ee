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
    let json = run(&with(
        &with(&["trace"], V4),
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
    assert_eq!(outcomes.len(), 3, "three endpoints");
    let total: f64 = outcomes
        .iter()
        .map(|o| o["probability"].as_f64().expect("probability"))
        .sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
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
