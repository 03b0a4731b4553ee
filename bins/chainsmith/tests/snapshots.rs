//! Every fixture cluster of `snapshots/fixtures/INDEX.yaml`, compiled by the real
//! binary and locked with insta, so a pull request shows the rule changes it
//! causes as snapshot diffs (review with `cargo insta review`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots/fixtures")
}

/// Compiles in the fixture directory so diagnostics name files relatively.
fn compile(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .arg("compile")
        .args(args)
        .current_dir(fixtures())
        .output()
        .expect("run chainsmith");
    assert!(
        output.status.success(),
        "compile {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
            insta::assert_snapshot!(name, compile(&["--node", node, cluster]));
        });
    }
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
