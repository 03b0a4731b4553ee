//! Upstream's own vectors for its output normaliser (TestSortIPTablesRules):
//! the Rust normaliser must reproduce every one byte for byte.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;

use chainsmith_restore::normalize::{first_difference, normalize};

fn selftest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance/normalize-selftest")
}

#[test]
fn upstream_sort_vectors() {
    let mut checked = 0;
    for n in ["01", "02", "03", "04"] {
        let dir = selftest_dir();
        let input = std::fs::read_to_string(dir.join(format!("{n}.input.iptables"))).expect("input");
        let want = std::fs::read_to_string(dir.join(format!("{n}.normalized.iptables"))).expect("want");
        let got = normalize(&input, false).expect("parses");
        assert!(
            got == want,
            "vector {n}: first difference {:?}",
            first_difference(&want, &got)
        );
        // Upstream's expected files are already normal.
        assert_eq!(
            normalize(&want, false).expect("parses"),
            want,
            "vector {n} is not a fixed point"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
