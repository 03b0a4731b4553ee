//! Every fixture cluster of `snapshots/fixtures/INDEX.yaml`, compiled by the real
//! binary and locked with insta, so a pull request shows the rule changes it
//! causes as snapshot diffs (review with `cargo insta review`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;

use common::fixtures;
use serde_json::Value;

/// Compiled output, with the diagnostics on stderr as leading `#` lines.
fn compile(args: &[&str]) -> String {
    let mut full = vec!["compile"];
    full.extend_from_slice(args);
    let output = common::chainsmith_in_fixtures(&full);
    let mut text = String::new();
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    text
}

fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path)
        .to_string()
}

#[test]
fn fixture_clusters() {
    let index_text = std::fs::read_to_string(fixtures().join("INDEX.yaml")).expect("INDEX.yaml");
    let index: Value = serde_saphyr::from_str(&index_text).expect("INDEX.yaml parses");
    let entries = index.as_array().expect("INDEX.yaml is a list");
    assert!(entries.len() >= 20, "the index lists every fixture");
    for entry in entries {
        let (cluster, node) = (
            entry["cluster"].as_str().expect("cluster"),
            entry["node"].as_str().expect("node"),
        );
        let note = entry["note"].as_str().unwrap_or_default();
        let name = format!("{}@{}", stem(cluster), stem(node));
        insta::with_settings!({
            snapshot_path => "../../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("chainsmith compile --node {node} {cluster}: {note}"),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name.clone(), compile(&["--node", node, cluster]));
        });
        // The same cluster in kube-proxy's nftables mode.
        insta::with_settings!({
            snapshot_path => "../../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("chainsmith compile --mode nftables --node {node} {cluster}: {note}"),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(
                format!("{name}@nftables"),
                compile(&["--mode", "nftables", "--node", node, cluster])
            );
        });
        // The same cluster in kube-proxy's 2018 layout.
        insta::with_settings!({
            snapshot_path => "../../../snapshots",
            prepend_module_to_snapshot => false,
            description => format!("chainsmith compile --layout v1.10 --node {node} {cluster}: {note}"),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(
                format!("{name}@v1.10"),
                compile(&["--layout", "v1.10", "--node", node, cluster])
            );
        });
    }
}

/// Runs a replay into `out` and prints each sync: its summary line, the
/// cleanup transaction if one ran first, the payload (`NN.{payload}`) and its
/// metrics as comments.
fn replay_text(args: &[&str], out: &Path, payload: &str) -> String {
    let output = common::chainsmith_in_fixtures(args);
    let summaries = String::from_utf8_lossy(&output.stderr).into_owned();
    let mut text = String::new();
    for (step, summary) in summaries.lines().enumerate() {
        let read = |ext: &str| std::fs::read_to_string(out.join(format!("{:02}.{ext}", step + 1)));
        text.push_str(&format!("### sync {summary}\n"));
        if let Ok(cleanup) = read("cleanup.nft") {
            text.push_str(&format!("## cleanup transaction\n{cleanup}## main transaction\n"));
        }
        text.push_str(&read(payload).expect("payload"));
        let metrics: String = read("metrics")
            .expect("metrics")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("# {l}\n"))
            .collect();
        text.push_str(&metrics);
    }
    text
}

/// A short sequence of cluster states replayed in both partial-sync modes
/// (and in the v1.10 layout, whose every sync is full): the snapshot shows
/// what each sync writes, and the rule metrics after it.
#[test]
fn replay_scenario() {
    let states = [
        "replay/01-initial.yaml",
        "replay/02-scale-up.yaml",
        "replay/03-delete-api.yaml",
        "replay/04-web-becomes-loadbalancer.yaml",
    ];
    for (mode, layout) in [("compat", "v1.33"), ("minimal", "v1.33"), ("compat", "v1.10")] {
        let out = tempfile::tempdir().expect("tempdir");
        let out_dir = out.path().to_str().expect("utf8 path");
        let mut args = vec![
            "replay",
            "--node",
            "nodes/ipv4.yaml",
            "--partial-sync",
            mode,
            "--layout",
            layout,
            "--out",
            out_dir,
        ];
        args.extend_from_slice(&states);
        let text = replay_text(&args, out.path(), "iptables");
        insta::with_settings!({
            snapshot_path => "../../../snapshots",
            prepend_module_to_snapshot => false,
            description => match layout {
                "v1.33" => format!("chainsmith replay --partial-sync {mode} --node nodes/ipv4.yaml {}", states.join(" ")),
                _ => format!("chainsmith replay --layout {layout} --node nodes/ipv4.yaml {}", states.join(" ")),
            },
            omit_expression => true,
        }, {
            let name = match layout {
                "v1.33" => format!("replay@{mode}"),
                _ => format!("replay@{layout}"),
            };
            insta::assert_snapshot!(name, text);
        });
    }
}

/// The same states in nftables mode, the clock one second apart: partial
/// syncs rewrite only the changed Services' chains and diff the elements;
/// chains that went away are flushed, then deleted by the next sync that
/// starts more than a second later, in a transaction of its own.
#[test]
fn replay_scenario_nftables() {
    let states = [
        "replay/01-initial.yaml",
        "replay/02-scale-up.yaml",
        "replay/03-delete-api.yaml",
        "replay/04-web-becomes-loadbalancer.yaml",
        "replay/04-web-becomes-loadbalancer.yaml",
    ];
    let clock = "0,1,2,3,5";
    let out = tempfile::tempdir().expect("tempdir");
    let out_dir = out.path().to_str().expect("utf8 path");
    let mut args = vec![
        "replay",
        "--mode",
        "nftables",
        "--node",
        "nodes/ipv4.yaml",
        "--clock",
        clock,
        "--out",
        out_dir,
    ];
    args.extend_from_slice(&states);
    let text = replay_text(&args, out.path(), "nft");
    insta::with_settings!({
        snapshot_path => "../../../snapshots",
        prepend_module_to_snapshot => false,
        description => format!("chainsmith replay --mode nftables --node nodes/ipv4.yaml --clock {clock} {}", states.join(" ")),
        omit_expression => true,
    }, {
        insta::assert_snapshot!("replay@nftables", text);
    });
}

#[test]
fn bundled_example() {
    insta::with_settings!({
        snapshot_path => "../../../snapshots",
        prepend_module_to_snapshot => false,
        description => "chainsmith compile (no arguments): the bundled example",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("example", compile(&[]));
    });
}
