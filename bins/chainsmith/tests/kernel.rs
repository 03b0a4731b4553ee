//! Real kernel: every compiled fixture is accepted by the real
//! `iptables-restore` / `ip6tables-restore`, on the nf_tables and the legacy
//! backend, each in a network namespace the test creates and removes; and
//! what the kernel then holds (read back with `iptables-save`) has exactly the
//! chains and the number of rules per chain that the payload declared.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;

use chainsmith_restore::parse_dump;
use chainsmith_testkit::{Netns, kernel_tests_enabled};
use common::fixtures;
use serde_json::Value;

fn compile(node: &str, cluster: &str) -> String {
    let output = common::chainsmith_in_fixtures(&["compile", "--node", node, cluster]);
    String::from_utf8(output.stdout).expect("utf8")
}

/// Rules per (table, chain) of a restore payload or an `iptables-save` dump,
/// counting only chains whose name starts with `KUBE-`.
fn rule_counts(text: &str) -> BTreeMap<(String, String), usize> {
    let dump = parse_dump(text).expect("parses");
    let mut counts = BTreeMap::new();
    for table in &dump.tables {
        for chain in table
            .chains
            .iter()
            .filter(|c| c.name.starts_with("KUBE-") && !c.deleted)
        {
            counts.insert((table.name.clone(), chain.name.clone()), chain.rules.len());
        }
    }
    counts
}

#[test]
fn compiled_fixtures_are_accepted_by_both_kernel_backends() {
    if !kernel_tests_enabled("compiled_fixtures_are_accepted_by_both_kernel_backends") {
        return;
    }
    let index: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(fixtures().join("INDEX.yaml")).expect("index"))
            .expect("yaml");
    let mut applied = 0;
    for entry in index.as_array().expect("list") {
        let (cluster, node) = (
            entry["cluster"].as_str().expect("cluster"),
            entry["node"].as_str().expect("node"),
        );
        let node_config: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(fixtures().join(node)).expect("node"))
                .expect("yaml");
        let ipv6 = node_config["ipFamily"].as_str() == Some("IPv6");
        let payload = compile(node, cluster);
        let want = rule_counts(&payload);
        for (restore, save) in [
            if ipv6 {
                ("ip6tables-restore", "ip6tables-save")
            } else {
                ("iptables-restore", "iptables-save")
            },
            if ipv6 {
                ("ip6tables-legacy-restore", "ip6tables-legacy-save")
            } else {
                ("iptables-legacy-restore", "iptables-legacy-save")
            },
        ] {
            let netns = Netns::new("fixture").expect("netns");
            // The rules name nfacct counters that kube-proxy creates first.
            for counter in ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"] {
                if payload.contains(&format!("--nfacct-name {counter}")) {
                    netns.run("nfacct", &["add", counter]).expect("nfacct add");
                }
            }
            netns
                .run_with_input(restore, &["--noflush", "--wait"], payload.as_bytes())
                .unwrap_or_else(|e| panic!("{cluster} with {node}: {restore} refused the payload: {e}"));
            let saved = format!(
                "{}{}",
                netns.run(save, &["-t", "filter"]).expect("save filter"),
                netns.run(save, &["-t", "nat"]).expect("save nat")
            );
            assert_eq!(rule_counts(&saved), want, "{cluster} with {node} via {restore}");
            applied += 1;
        }
    }
    println!("{applied} payloads applied to a real kernel");
    assert!(applied >= 40);
}
