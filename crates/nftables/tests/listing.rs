//! A model written by chainsmith and the kernel's listing of it compare equal
//! once both are canonical, and stop comparing equal when the model changes.
//!
//! Each `data/NAME.nft` is `chainsmith compile --mode nftables` output and
//! `data/NAME.listing` is `nft list ruleset` (nft 1.0.6, kernel 6.18) after
//! `nft -f NAME.nft` into an empty network namespace:
//! - `overall`: upstream's "overall nftables rules" conformance case;
//! - `ipv6`: snapshots/fixtures `ipv6.yaml` and `dual-stack.yaml` on
//!   `nodes/ipv6.yaml` (the kernel merges two adjacent source ranges into one
//!   interval there);
//! - `interface-detector`: `loadbalancer.yaml` and `session-affinity.yaml` on
//!   `nodes/ipv4-interface-prefix.yaml` (`iifname "veth*"`, affinity sets with
//!   10m and 3h timeouts, a firewall rule with three source ranges).

// Helpers outside #[test] functions panic on purpose, as the tests do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use chainsmith_nftables::{Family, Table, read_listing, read_transaction};

const CASES: &[(&str, &str, &str)] = &[
    (
        "overall",
        include_str!("data/overall.nft"),
        include_str!("data/overall.listing"),
    ),
    (
        "ipv6",
        include_str!("data/ipv6.nft"),
        include_str!("data/ipv6.listing"),
    ),
    (
        "interface-detector",
        include_str!("data/interface-detector.nft"),
        include_str!("data/interface-detector.listing"),
    ),
];

fn model(transaction: &str) -> Table {
    let tx = read_transaction(transaction, Family::Ip).expect("transaction reads");
    let mut table = Table::new(tx.family);
    table.apply(&tx).expect("transaction applies");
    table
}

fn listed(listing: &str, family: Family) -> Table {
    let listing = read_listing(listing).expect("listing reads");
    assert!(listing.other_tables.is_empty(), "{:?}", listing.other_tables);
    assert_eq!(listing.tables.len(), 1);
    listing.table(family).expect("kube-proxy table listed").clone()
}

#[test]
fn the_kernels_listing_holds_what_the_model_says() {
    for (name, transaction, listing) in CASES {
        let model = model(transaction);
        let listed = listed(listing, model.family());
        // The dumps first: on a mismatch they show which line differs.
        assert_eq!(listed.canonical().dump(), model.canonical().dump(), "{name}");
        assert_eq!(listed.canonical(), model.canonical(), "{name}");
    }
}

#[test]
fn the_listing_is_read_as_printed() {
    let listed = listed(include_str!("data/overall.listing"), Family::Ip);
    let rules: Vec<_> = listed.rules("masquerading").map(|(rule, _)| rule).collect();
    assert_eq!(
        rules,
        [
            "meta mark & 0x00004000 == 0x00000000 return",
            "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random",
        ]
    );
    let affinity = listed
        .set("affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80")
        .expect("affinity set");
    assert_eq!(affinity.timeout_seconds, Some(10_800));
    let pre_dnat = listed
        .chain("filter-prerouting-pre-dnat")
        .and_then(|c| c.base.as_ref());
    assert_eq!(pre_dnat.map(|b| b.priority), Some(-110));
    // Without canonical forms the two spellings differ.
    assert_ne!(listed, model(include_str!("data/overall.nft")));
}

#[test]
fn a_changed_model_no_longer_matches() {
    let listed = listed(include_str!("data/overall.listing"), Family::Ip).canonical();

    let changed_rule = include_str!("data/overall.nft")
        .replace("masquerading masquerade fully-random", "masquerading masquerade");
    assert_ne!(model(&changed_rule).canonical(), listed, "one rule changed");

    let mut one_element_less = model(include_str!("data/overall.nft"));
    let delete = read_transaction(
        "delete element ip kube-proxy cluster-ips { 172.30.0.46 }\n",
        Family::Ip,
    )
    .expect("reads");
    one_element_less.apply(&delete).expect("applies");
    assert_ne!(one_element_less.canonical(), listed, "one element removed");

    let wider_range = include_str!("data/overall.nft").replace("{ 203.0.113.0/25 }", "{ 203.0.113.0/24 }");
    assert_ne!(
        model(&wider_range).canonical(),
        listed,
        "one firewall range changed"
    );
}
