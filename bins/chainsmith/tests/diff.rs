//! `chainsmith diff --from OLD --to NEW` through the real binary: what each
//! manifest change in `snapshots/fixtures/diff/<case>/{old,new}.yaml` does to the
//! rules, per Service, locked as snapshots; the exit status as `diff(1)` has it;
//! and the JSON form tools read.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::process::{Command, Output};

use serde_json::Value;

/// Every case directory under `snapshots/fixtures/diff/`.
const CASES: &[&str] = &[
    "rollout",
    "loadbalancer-source-ranges",
    "external-traffic-policy-local",
    "port-added-service-deleted",
    "no-change",
];

/// Runs `chainsmith ARGS` in the fixture directory, whatever its exit status.
fn chainsmith(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(args)
        .current_dir(common::fixtures())
        .output()
        .expect("run chainsmith")
}

fn diff_args(case: &str) -> Vec<String> {
    let mut args: Vec<String> = ["diff", "--node", "nodes/ipv4.yaml"].map(String::from).into();
    args.extend([
        "--from".into(),
        format!("diff/{case}/old.yaml"),
        "--to".into(),
        format!("diff/{case}/new.yaml"),
    ]);
    args
}

fn diff_case(case: &str, more: &[&str]) -> Output {
    let mut args = diff_args(case);
    args.extend(more.iter().map(|s| s.to_string()));
    chainsmith(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn every_case_has_a_snapshot_and_every_directory_is_a_case() {
    let mut dirs: Vec<String> = std::fs::read_dir(common::fixtures().join("diff"))
        .expect("diff fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    cases.sort();
    assert_eq!(dirs, cases);
}

/// The text answer, with the exit status and stderr as leading `#` lines.
#[test]
fn manifest_changes_per_service() {
    for case in CASES {
        let output = diff_case(case, &[]);
        let mut text = format!("# exit status {}\n", output.status.code().expect("exit code"));
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            text.push_str("# ");
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&String::from_utf8(output.stdout).expect("utf8"));
        insta::with_settings!({
            snapshot_path => "../../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("chainsmith {}", diff_args(case).join(" ")),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("diff@{case}"), text);
        });
    }
}

/// The same review in kube-proxy's 2018 layout (its KUBE-FW chains and
/// KUBE-XLB, attributed to the Service that writes them) and in nftables mode
/// (per Service its own chains and sets, and its elements in the shared maps,
/// `service-ips`, `no-endpoint-services`, `firewall-ips`, ..., which is where
/// most of a change shows in that mode).
#[test]
fn manifest_changes_in_other_layouts_and_modes() {
    let variants: [(&[&str], &str, &[&str]); 2] = [
        (
            &["--layout", "v1.10"],
            "v1.10",
            &["loadbalancer-source-ranges", "external-traffic-policy-local"],
        ),
        (&["--mode", "nftables"], "nftables", CASES),
    ];
    for (flags, suffix, cases) in variants {
        for case in cases {
            let output = diff_case(case, flags);
            let expected = if *case == "no-change" { 0 } else { 1 };
            assert_eq!(output.status.code(), Some(expected), "{case} {suffix}");
            let mut args = diff_args(case);
            args.extend(flags.iter().map(|f| f.to_string()));
            insta::with_settings!({
                snapshot_path => "../../../snapshots",
                prepend_module_to_snapshot => false,
                description => format!("chainsmith {}", args.join(" ")),
                omit_expression => true,
            }, {
                insta::assert_snapshot!(
                    format!("diff@{case}@{suffix}"),
                    String::from_utf8(output.stdout).expect("utf8")
                );
            });
        }
    }
}

#[test]
fn exit_status_is_zero_without_rule_changes_one_with_two_on_trouble() {
    // `chainsmith_in_fixtures` insists on success, i.e. exit status 0.
    let args = diff_args("no-change");
    let same = common::chainsmith_in_fixtures(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        String::from_utf8_lossy(&same.stdout),
        "no rule changes: both states compile to the same rules\n"
    );
    assert_eq!(diff_case("rollout", &[]).status.code(), Some(1));
    // The same file on both sides is the plainest "no change".
    let itself = chainsmith(&[
        "diff",
        "--from",
        "diff/rollout/new.yaml",
        "--to",
        "diff/rollout/new.yaml",
    ]);
    assert_eq!(itself.status.code(), Some(0));
    // The reverse change is a change too, with the counts mirrored.
    let reverse = chainsmith(&[
        "diff",
        "--node",
        "nodes/ipv4.yaml",
        "--from",
        "diff/loadbalancer-source-ranges/new.yaml",
        "--to",
        "diff/loadbalancer-source-ranges/old.yaml",
    ]);
    assert_eq!(reverse.status.code(), Some(1));
    let text = String::from_utf8_lossy(&reverse.stdout);
    assert!(
        text.contains("total: 1 Service changed, +0 -10 rules, 0 chains created, 2 chains deleted"),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: Service\nmetadata: {name: web\n").expect("write");
    let broken = broken.to_str().expect("utf8 path");
    let failed = chainsmith(&["diff", "--from", broken, "--to", "diff/rollout/new.yaml"]);
    assert_eq!(failed.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("old (--from)") && stderr.contains(&format!("{broken}:2:")),
        "{stderr}"
    );
    let missing = chainsmith(&["diff", "--from", "diff/rollout/old.yaml", "--to", "no-such.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("new (--to)") && stderr.contains("no-such.yaml"),
        "{stderr}"
    );
}

#[test]
fn the_manifest_mode_excludes_the_kernel_mode() {
    for extra in [
        &["clusterip.yaml"][..],
        &["--rules", "dump.txt"],
        &["--live"],
        &["--live", "--netns", "x"],
    ] {
        let output = diff_case("rollout", extra);
        assert_eq!(output.status.code(), Some(2), "{extra:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot be used with"), "{extra:?}: {stderr}");
    }
    let lonely = chainsmith(&["diff", "--from", "diff/rollout/old.yaml"]);
    assert_eq!(lonely.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&lonely.stderr).contains("--to <NEW.yaml>"));
}

#[test]
fn json_lists_services_ports_and_chains() {
    let output = diff_case("rollout", &["--output", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["total"]["services"], 1);
    assert_eq!(json["total"]["rules_added"], 3);
    assert_eq!(json["total"]["rules_removed"], 3);
    let web = &json["services"][0];
    assert_eq!(web["service"], "shop/web");
    assert_eq!(web["change"], "changed");
    assert_eq!(web["chains_added"].as_array().expect("chains").len(), 1);
    assert_eq!(web["chains_removed"].as_array().expect("chains").len(), 1);
    let port = &web["ports"][0];
    assert_eq!(
        (&port["port_name"], &port["protocol"]),
        (&Value::from("http"), &Value::from("TCP"))
    );
    let deleted: Vec<&Value> = port["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter(|c| c["change"] == "removed")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["table"], "nat");
    assert!(
        deleted[0]["removed"][1]
            .as_str()
            .expect("rule")
            .ends_with("-j DNAT --to-destination 10.244.1.5:8080")
    );
    let empty = diff_case("no-change", &["--output", "json"]);
    let json: Value = serde_json::from_slice(&empty.stdout).expect("json");
    assert_eq!(json["services"], Value::Array(Vec::new()));
    assert_eq!(json["node"], Value::Array(Vec::new()));
}

/// nftables mode against the kernel's own listing: the listing `nft list
/// ruleset` printed after loading the compiled transaction of upstream's
/// TestOverallNFTablesRules shows no drift; with a rule and an element taken
/// out, both are named and the exit status is 1. With real kernel tests on,
/// the same live in a namespace: a flushed chain and a deleted table.
#[test]
fn drift_against_the_kernels_nftables_listing() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let case = root.join("testdata/conformance-nft/01-overall-nftables-rules");
    let listing =
        std::fs::read_to_string(root.join("crates/nftables/tests/data/overall.listing")).expect("listing");
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, cluster) = (case.join("node.yaml"), case.join("cluster.yaml"));
    let run = |listing: &str| {
        let path = dir.path().join("listing.txt");
        std::fs::write(&path, listing).expect("write");
        let args = [
            "diff",
            "--mode",
            "nftables",
            "--node",
            node.to_str().expect("utf8"),
            "--rules",
            path.to_str().expect("utf8"),
            cluster.to_str().expect("utf8"),
        ];
        chainsmith(&args)
    };
    let same = run(&listing);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("no drift"));

    let edited: String = listing
        .lines()
        .filter(|l| !l.contains("masquerade fully-random"))
        .map(|l| l.replace("172.30.0.41, ", "") + "\n")
        .collect();
    let drifted = run(&edited);
    assert_eq!(drifted.status.code(), Some(1));
    let text = String::from_utf8_lossy(&drifted.stdout);
    assert!(
        text.contains("chain masquerading: changed: 1 missing, 0 extra\n  - masquerade fully-random"),
        "{text}"
    );
    assert!(
        text.contains("set cluster-ips: changed: 1 missing, 0 extra\n  - 172.30.0.41"),
        "{text}"
    );

    if !chainsmith_testkit::kernel_tests_enabled("drift_against_the_kernels_nftables_listing") {
        return;
    }
    let netns = chainsmith_testkit::Netns::new("nftdiff").expect("netns");
    let compiled = chainsmith(&[
        "compile",
        "--mode",
        "nftables",
        "--node",
        "nodes/ipv4.yaml",
        "loadbalancer.yaml",
    ]);
    netns
        .run_with_input("nft", &["-f", "-"], &compiled.stdout)
        .expect("the kernel takes the compiled transaction");
    let live = |extra: &[&str]| {
        let mut args = vec![
            "diff",
            "--mode",
            "nftables",
            "--live",
            "--netns",
            netns.name(),
            "--node",
            "nodes/ipv4.yaml",
            "loadbalancer.yaml",
        ];
        args.extend_from_slice(extra);
        chainsmith(&args)
    };
    assert_eq!(live(&[]).status.code(), Some(0));
    netns
        .run("nft", &["flush", "chain", "ip", "kube-proxy", "masquerading"])
        .expect("flush");
    let flushed = live(&["--output", "json"]);
    assert_eq!(flushed.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&flushed.stdout).expect("json");
    assert_eq!(json["objects"][0]["name"], "masquerading");
    assert_eq!(json["objects"][0]["missing"].as_array().map(Vec::len), Some(3));
    netns
        .run("nft", &["delete", "table", "ip", "kube-proxy"])
        .expect("delete");
    let gone = live(&[]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stdout).starts_with("table ip kube-proxy: missing"));
}
