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
use std::process::Command;

use chainsmith_iptables::{BUILTIN_JUMPS, RuleSet, V1_10_JUMPS};
use chainsmith_testkit::{Netns, kernel_tests_enabled};
use common::fixtures;
use serde_json::Value;

fn compile(layout: &str, node: &str, cluster: &str) -> String {
    let output = common::chainsmith_in_fixtures(&["compile", "--layout", layout, "--node", node, cluster]);
    String::from_utf8(output.stdout).expect("utf8")
}

/// Both layouts: kube-proxy v1.33's and its 2018 one.
const LAYOUTS: [&str; 2] = ["v1.33", "v1.10"];

/// Rules per (table, chain) of a restore payload or an `iptables-save` dump,
/// counting only chains whose name starts with `KUBE-`.
fn rule_counts(text: &str) -> BTreeMap<(String, String), usize> {
    let rules: RuleSet = RuleSet::read(text).expect("parses");
    let mut counts = BTreeMap::new();
    for table in rules.table_names() {
        for chain in rules.chains(table).filter(|c| c.name.starts_with("KUBE-")) {
            counts.insert((table.to_string(), chain.name.clone()), chain.rules.len());
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
        for layout in LAYOUTS {
            let payload = compile(layout, node, cluster);
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
                    .unwrap_or_else(|e| {
                        panic!("{cluster} with {node} ({layout}): {restore} refused the payload: {e}")
                    });
                let saved = format!(
                    "{}{}",
                    netns.run(save, &["-t", "filter"]).expect("save filter"),
                    netns.run(save, &["-t", "nat"]).expect("save nat")
                );
                assert_eq!(
                    rule_counts(&saved),
                    want,
                    "{cluster} with {node} ({layout}) via {restore}"
                );
                applied += 1;
            }
        }
    }
    println!("{applied} payloads applied to a real kernel");
    assert!(applied >= 80);
}

/// `chainsmith diff --live` reads the kernel's tables back: right after a full
/// sync (payload plus kube-proxy's jumps, as the node does it) every fixture
/// shows no drift on both backends; after someone edits the tables, the edits
/// are named.
#[test]
fn diff_reads_live_tables_and_names_drift() {
    use chainsmith_applier::{Applier, Backend, NetnsRunner, Tools};
    use chainsmith_model::IpFamily;
    if !kernel_tests_enabled("diff_reads_live_tables_and_names_drift") {
        return;
    }
    let index: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(fixtures().join("INDEX.yaml")).expect("index"))
            .expect("yaml");
    let mut clean = 0;
    for entry in index.as_array().expect("list") {
        let (cluster, node) = (
            entry["cluster"].as_str().expect("cluster"),
            entry["node"].as_str().expect("node"),
        );
        let node_config: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(fixtures().join(node)).expect("node"))
                .expect("yaml");
        let family = if node_config["ipFamily"].as_str() == Some("IPv6") {
            IpFamily::V6
        } else {
            IpFamily::V4
        };
        for (layout, jumps) in [("v1.33", &BUILTIN_JUMPS[..]), ("v1.10", &V1_10_JUMPS[..])] {
            let payload = compile(layout, node, cluster);
            for (backend, flag) in [(Backend::NfTables, "nft"), (Backend::Legacy, "legacy")] {
                let netns = Netns::new("diff").expect("netns");
                let runner = NetnsRunner::new(netns.name());
                let applier = Applier::new(
                    Tools::detect(&runner, family, Some(backend)).expect("tools"),
                    Box::new(runner),
                );
                for counter in ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"] {
                    if payload.contains(&format!("--nfacct-name {counter}")) {
                        netns.run("nfacct", &["add", counter]).expect("nfacct add");
                    }
                }
                applier.apply(payload.as_bytes()).expect("apply");
                applier.ensure_jumps(jumps).expect("jumps");
                let diff = |netns: &Netns| {
                    Command::new(env!("CARGO_BIN_EXE_chainsmith"))
                        .args([
                            "diff",
                            "--layout",
                            layout,
                            "--node",
                            node,
                            cluster,
                            "--live",
                            "--netns",
                            netns.name(),
                            "--backend",
                            flag,
                        ])
                        .current_dir(fixtures())
                        .output()
                        .expect("run chainsmith")
                };
                let output = diff(&netns);
                let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "{cluster} with {node} ({layout}) via {flag}:\n{stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                clean += 1;
                if cluster == "mixed-cluster.yaml" && family == IpFamily::V4 && layout == "v1.33" {
                    let iptables = applier.tools().iptables();
                    netns
                        .run(iptables, &["-t", "nat", "-D", "KUBE-SERVICES", "1"])
                        .expect("delete a rule");
                    netns
                        .run(iptables, &["-t", "nat", "-N", "KUBE-SEP-STALESTALESTALE"])
                        .expect("add a chain");
                    netns
                        .run(iptables, &["-t", "filter", "-D", "INPUT", "1"])
                        .expect("delete a jump");
                    let output = diff(&netns);
                    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                    assert_eq!(output.status.code(), Some(1), "{stdout}");
                    assert!(
                        stdout.contains("nat KUBE-SERVICES: changed: 1 rule missing, 0 rules extra"),
                        "{stdout}"
                    );
                    assert!(stdout.contains("nat KUBE-SEP-STALESTALESTALE: extra"), "{stdout}");
                    assert!(
                        stdout.contains("filter INPUT: changed: 1 rule missing"),
                        "{stdout}"
                    );
                    netns.run(iptables, &["-t", "nat", "-F"]).expect("flush nat");
                    let output = diff(&netns);
                    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                    assert!(
                        stdout.contains("nat KUBE-MARK-MASQ: changed: 1 rule missing"),
                        "a flushed nat table is noticed:\n{stdout}"
                    );
                }
            }
        }
    }
    println!("{clean} fixture payloads read back from the kernel without drift");
}
