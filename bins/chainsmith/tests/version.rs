//! `chainsmith --version` names the build: the package version, the git
//! commit it was built from and the build date, so a node's logs tell which
//! build runs.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::process::Command;

#[test]
fn version_names_the_commit_and_the_build_date() {
    let output = Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .arg("--version")
        .output()
        .expect("run chainsmith");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf8");
    let rest = text
        .trim_end()
        .strip_prefix(&format!("chainsmith {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{text:?}"));
    let (commit, rest) = rest.split_once(", built ").unwrap_or_else(|| panic!("{text:?}"));
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{text:?}"));
    // This test runs in the checkout the binary was built from.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git");
    let head = String::from_utf8(head.stdout).expect("utf8");
    assert_eq!(commit.trim_end_matches("-dirty"), head.trim(), "{text:?}");
    // An RFC 3339 UTC time: 2026-12-03T12:00:00Z.
    let bytes = date.as_bytes();
    assert!(
        date.len() == 20
            && bytes[4] == b'-'
            && bytes[10] == b'T'
            && bytes[19] == b'Z'
            && date.chars().filter(char::is_ascii_digit).count() == 14,
        "{date:?}"
    );
}
