//! Property tests over random clusters (proptest, with shrinking).
//!
//! The generator (`cluster`) builds random but valid clusters as model values:
//! ClusterIP / NodePort / LoadBalancer Services (and ones without a type) with
//! several TCP/UDP/SCTP ports, single- and dual-stack cluster IPs, external and
//! load-balancer IPs (with `ipMode`), source ranges, both traffic policies,
//! ClientIP affinity and health-check node ports; EndpointSlices of both
//! families with ready, serving-terminating, terminating and not-ready
//! endpoints on this node, another node or none, topology hints, shared
//! addresses across slices, mismatching ports, and sometimes no endpoints at
//! all; and node settings of both families (masquerade-all, every local traffic
//! detector, nodePortAddresses, localhost NodePorts, nfacct, feature gates).
//!
//! - `compile`: one full payload is consistent (upstream's rule-jump check,
//!   unique per-port chain names, the NodePort jump last), never mixes IP
//!   families, and is byte-identical for the same input in any order.
//! - `incremental`: any sequence of cluster changes synced incrementally, in
//!   both partial-sync modes, leaves after every step exactly the tables of one
//!   full sync of that state.
//!
//! Case counts are fixed (see [`cases`]) so the suite stays fast in a debug
//! build; `PROPTEST_CASES` overrides them for a longer local run. A failure
//! proptest finds is kept in `tests/proptest-regressions/` and replayed first.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod cluster;
mod compile;
mod incremental;

use proptest::test_runner::Config;

/// A fixed number of cases (unless `PROPTEST_CASES` asks for another).
fn cases(cases: u32) -> Config {
    let default = Config::default();
    // `Config::default()` already honours PROPTEST_CASES; only replace the
    // library default of 256.
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        default.cases
    } else {
        cases
    };
    Config { cases, ..default }
}
