//! What a first-time user ran into (issue 14, item 10), through the real
//! binary: each test is one of the reported problems, run as the user ran it.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `tests/data/first-use`: a node whose settings draw a planner warning and a
/// cluster with a bad field, headless, ExternalName, other-proxy and
/// IPv6-only Services.
fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/first-use")
}

/// Runs `chainsmith ARGS` in the data directory (diagnostics name files
/// relatively).
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(args)
        .current_dir(data())
        .output()
        .expect("run chainsmith")
}

/// stdout and stderr of a run that must succeed.
fn ok(args: &[&str]) -> (String, String) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chainsmith {args:?} failed: {stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// stderr of a run that must fail with exit status 2 (trouble).
fn refused(args: &[&str]) -> String {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "chainsmith {args:?}: {stderr}");
    stderr
}

#[test]
fn every_diagnostic_is_printed_once() {
    let base = ["--node", "node.yaml", "cluster.yaml"];
    let commands: [&[&str]; 6] = [
        &["compile"],
        &["compile", "--mode", "nftables"],
        &["explain", "shop/web"],
        &["explain", "--mode", "nftables", "shop/web"],
        &[
            "trace",
            "--src",
            "10.244.0.9",
            "--dst",
            "10.96.0.50",
            "--dport",
            "80",
        ],
        &[
            "trace",
            "--mode",
            "nftables",
            "--src",
            "10.244.0.9",
            "--dst",
            "10.96.0.50",
            "--dport",
            "80",
        ],
    ];
    for command in commands {
        let mut args = command.to_vec();
        // The Service to explain comes last.
        let at = if command[0] == "explain" {
            args.len() - 1
        } else {
            args.len()
        };
        args.splice(at..at, base);
        let (_, stderr) = ok(&args);
        let lines: Vec<&str> = stderr.lines().collect();
        for line in &lines {
            assert_eq!(
                lines.iter().filter(|l| *l == line).count(),
                1,
                "chainsmith {args:?} printed {line:?} more than once:\n{stderr}"
            );
        }
        // Both kinds are there: the manifest's and the node's.
        assert!(stderr.contains("spec.externalIPs[1]"), "{args:?}: {stderr}");
        assert!(stderr.contains("nodePortAddresses"), "{args:?}: {stderr}");
    }
}
