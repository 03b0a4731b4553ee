//! kube-proxy's 2018 layout (`--layout v1.10`) through the real binary: the
//! vectors of `testdata/conformance-v1.10` byte for byte, the bundled seed
//! example, the seed's own `iptables-save` listing reproduced by the real
//! `iptables-legacy-restore` and `iptables-legacy-save` in a namespace the test
//! creates, and replays (every sync full, stale chains deleted).
//!
//! The kernel check runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see
//! `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chainsmith_testkit::{Netns, kernel_tests_enabled};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn chainsmith(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(args)
        .output()
        .expect("run chainsmith")
}

/// stdout of a run that must succeed without warnings.
fn clean_stdout(args: &[&str]) -> String {
    let output = chainsmith(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chainsmith {args:?} failed: {stderr}");
    assert!(stderr.is_empty(), "chainsmith {args:?} warned: {stderr}");
    String::from_utf8(output.stdout).expect("utf8")
}

fn vectors() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata().join("conformance-v1.10"))
        .expect("vectors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("expected.iptables").exists())
        .collect();
    dirs.sort();
    dirs
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn vectors_come_out_byte_for_byte() {
    let dirs = vectors();
    assert_eq!(dirs.len(), 4, "vectors in testdata/conformance-v1.10");
    for dir in dirs {
        let got = clean_stdout(&[
            "compile",
            "--layout",
            "v1.10",
            "--node",
            path(&dir.join("node.yaml")),
            path(&dir.join("cluster.yaml")),
        ]);
        let want = std::fs::read_to_string(dir.join("expected.iptables")).expect("expected");
        assert!(
            got == want,
            "{}: {}",
            dir.display(),
            similar::TextDiff::from_lines(&want, &got)
                .unified_diff()
                .header("expected", "chainsmith")
        );
    }
}

#[test]
fn the_seed_example_is_the_seed_vector() {
    let got = clean_stdout(&["compile", "--layout", "v1.10", "--example", "seed"]);
    let want = std::fs::read_to_string(
        testdata().join("conformance-v1.10/01-seed-sleep-loadbalancer/expected.iptables"),
    )
    .expect("expected");
    assert_eq!(got, want);
}

#[test]
fn an_unknown_layout_is_refused_with_the_known_ones() {
    let output = chainsmith(&["compile", "--layout", "v1.9", "--example", "seed"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown layout \"v1.9\"") && stderr.contains("v1.33, v1.10"),
        "{stderr}"
    );
}

/// The lines of `text` that contain `needle`, sorted.
fn grep(text: &str, needle: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_seeds_listing_comes_out_of_the_kernel() {
    if !kernel_tests_enabled("the_seeds_listing_comes_out_of_the_kernel") {
        return;
    }
    let listing = std::fs::read_to_string(testdata().join("seed-listing.txt")).expect("listing");
    let payload = clean_stdout(&["compile", "--layout", "v1.10", "--example", "seed"]);
    let netns = Netns::new("seed").expect("netns");
    netns
        .run_with_input("iptables-legacy-restore", &["--noflush"], payload.as_bytes())
        .expect("iptables-legacy-restore takes the v1.10 payload");
    let saved = netns
        .run("iptables-legacy-save", &[])
        .expect("iptables-legacy-save");
    // No more and no fewer lines than the seed shows.
    for needle in [
        "118.24.224.100",
        "KUBE-FW-KHFRG3HD2BG7I4YD",
        "KUBE-SVC-KHFRG3HD2BG7I4YD",
        "KUBE-SEP-GZIIAEF444AZU3YY",
        "KUBE-MARK-DROP",
    ] {
        assert_eq!(
            grep(&saved, needle),
            grep(&listing, needle),
            "grep {needle} differs from the seed's listing; the kernel holds:\n{saved}"
        );
    }
    // The seed's excerpt of these chains is partial: its lines must be there.
    for needle in ["-A KUBE-MARK-MASQ", "-A KUBE-FIREWALL", "-A KUBE-FORWARD"] {
        for line in grep(&listing, needle) {
            assert!(
                saved.lines().any(|l| l == line),
                "missing {line:?}; the kernel holds:\n{saved}"
            );
        }
    }
}

#[test]
fn replay_writes_full_syncs_and_deletes_stale_chains() {
    let out = tempfile::tempdir().expect("tmp");
    let dir = testdata().join("conformance-v1.10/01-seed-sleep-loadbalancer");
    // The second state is the first without default/sleep and its slice.
    let full = std::fs::read_to_string(dir.join("cluster.yaml")).expect("cluster");
    let without_sleep: Vec<&str> = full
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: sleep"))
        .collect();
    let second = out.path().join("without-sleep.yaml");
    std::fs::write(&second, without_sleep.join("\n---\n")).expect("write");
    let output = chainsmith(&[
        "replay",
        "--layout",
        "v1.10",
        "--node",
        path(&dir.join("node.yaml")),
        "--out",
        path(out.path()),
        path(&dir.join("cluster.yaml")),
        path(&second),
        path(&second),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let kinds: Vec<&str> = stderr
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["full", "full", "full"], "{stderr}");
    let first = std::fs::read_to_string(out.path().join("01.iptables")).expect("01");
    assert_eq!(
        first,
        std::fs::read_to_string(dir.join("expected.iptables")).expect("expected")
    );
    let after = std::fs::read_to_string(out.path().join("02.iptables")).expect("02");
    for chain in [
        "KUBE-SVC-KHFRG3HD2BG7I4YD",
        "KUBE-FW-KHFRG3HD2BG7I4YD",
        "KUBE-SEP-GZIIAEF444AZU3YY",
    ] {
        // Declared (flushed), then deleted, before the NodePort jump that ends
        // KUBE-SERVICES.
        let declared = after.find(&format!(":{chain} - [0:0]\n")).expect("declared");
        let deleted = after.find(&format!("-X {chain}\n")).expect("deleted");
        let nodeports = after.find("-j KUBE-NODEPORTS\n").expect("nodeport jump");
        assert!(declared < deleted && deleted < nodeports, "{after}");
        assert!(!after.contains(&format!("-A {chain} ")), "{after}");
    }
    // Once deleted, a chain is not deleted again.
    let third = std::fs::read_to_string(out.path().join("03.iptables")).expect("03");
    assert!(!third.contains("-X "), "{third}");
    assert_eq!(
        third,
        after
            .lines()
            .filter(|l| !l.starts_with("-X ")
                && !l.contains("KHFRG3HD2BG7I4YD")
                && !l.contains("GZIIAEF444AZU3YY"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
}
