//! Round trip through a real kernel: each transaction is loaded with `nft -f -`
//! into a fresh network namespace, listed back with `nft list ruleset`, read
//! with `read_listing`, and must equal the model once both are canonical.
//! This is what keeps `canonical_rule` honest about the kernel's spelling.
//!
//! Runs when `CHAINSMITH_KERNEL_TESTS=1` and as root (needs nft and iproute2);
//! the transactions are described in `listing.rs`.

// Helpers outside #[test] functions panic on purpose, as the tests do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;

use chainsmith_nftables::{Family, Table, read_listing, read_transaction};
use chainsmith_testkit::{Netns, kernel_tests_enabled};

fn running_as_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn enabled(test: &str) -> bool {
    if !kernel_tests_enabled(test) {
        return false;
    }
    if !running_as_root() {
        let _ = writeln!(std::io::stderr(), "{test}: real-kernel test not run (needs root)");
        return false;
    }
    true
}

fn round_trip(test: &str, transaction: &str) {
    if !enabled(test) {
        return;
    }
    let tx = read_transaction(transaction, Family::Ip).expect("transaction reads");
    let mut model = Table::new(tx.family);
    model.apply(&tx).expect("transaction applies to the model");

    // Dropped at the end of this function, also when an assertion fails.
    let netns = Netns::new("lst").expect("network namespace");
    netns
        .run_with_input("nft", &["-f", "-"], transaction.as_bytes())
        .expect("the kernel takes the transaction");
    let text = netns.run("nft", &["list", "ruleset"]).expect("nft list ruleset");

    let listing = read_listing(&text).unwrap_or_else(|e| panic!("{e}\nlisting:\n{text}"));
    assert!(listing.other_tables.is_empty(), "{:?}", listing.other_tables);
    assert_eq!(listing.tables.len(), 1);
    let listed = listing.table(tx.family).expect("kube-proxy table listed");
    assert_eq!(listed.canonical().dump(), model.canonical().dump(), "{test}");
    assert_eq!(listed.canonical(), model.canonical(), "{test}");
}

#[test]
fn overall_round_trips_through_the_kernel() {
    round_trip("overall", include_str!("data/overall.nft"));
}

#[test]
fn ipv6_round_trips_through_the_kernel() {
    round_trip("ipv6", include_str!("data/ipv6.nft"));
}

#[test]
fn interface_detector_round_trips_through_the_kernel() {
    round_trip("interface-detector", include_str!("data/interface-detector.nft"));
}
