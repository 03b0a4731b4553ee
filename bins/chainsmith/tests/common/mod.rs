//! Helpers shared by the integration tests that run the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `snapshots/fixtures`: the fixture clusters and nodes.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots/fixtures")
}

/// Runs `chainsmith ARGS` in the fixture directory (so diagnostics name files
/// relatively) and fails the test if it fails.
pub fn chainsmith_in_fixtures(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(args)
        .current_dir(fixtures())
        .output()
        .expect("run chainsmith");
    assert!(
        output.status.success(),
        "chainsmith {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
