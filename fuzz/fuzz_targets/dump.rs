//! `iptables-save` dumps and restore payloads: chainsmith-iptables's
//! `RuleSet` (read on its own and applied), chainsmith-restore's `normalize`
//! and `consistency_errors`, and chainsmith-tracer's `Ruleset::from_dump`,
//! `trace`, `trace_upstream_test` and `drift`.
//!
//! Input: the text of a dump. Checks: no panic; what `RuleSet` writes back
//! applies again to the same state; a ruleset has no drift from itself.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chainsmith_iptables::RuleSet;
use chainsmith_model::{IpFamily, Protocol};
use chainsmith_restore::normalize::{consistency_errors, normalize};
use chainsmith_tracer::{Node, Origin, Packet, Ruleset, drift, trace, trace_upstream_test};
use libfuzzer_sys::fuzz_target;

/// Destinations traced per input. A trace explores every branch of the
/// `statistic` forks, up to its budget (seconds under AddressSanitizer), so
/// only a few.
const MAX_DESTINATIONS: usize = 1;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((rules, footprint)) = RuleSet::<String>::read_with_footprint(text) {
        let _ = (rules.chains("nat").count(), footprint.table("nat"));
    }
    let _ = normalize(text, false);
    let _ = normalize(text, true);
    let _ = consistency_errors(text);

    let mut state = RuleSet::new();
    if state.apply(text).is_ok() {
        let written = state.to_restore_text();
        let mut again = RuleSet::new();
        assert_eq!(again.apply(&written), Ok(()), "written back:\n{written}");
        assert_eq!(again, state, "written back:\n{written}");
    }

    let Ok(ruleset) = Ruleset::from_dump(text) else {
        return;
    };
    assert!(drift(&ruleset, &ruleset).is_empty(), "drift from itself");
    let family = ruleset.family().unwrap_or(IpFamily::V4);
    let ruleset = ruleset.with_builtin_jumps(family, &chainsmith_iptables::BUILTIN_JUMPS);
    let (src, node_ip) = match family {
        IpFamily::V4 => (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2)),
        ),
        IpFamily::V6 => (
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ),
    };
    let node = Node::new(vec![node_ip]);
    for (dst, protocol, dport) in destinations(text).take(MAX_DESTINATIONS) {
        for origin in [Origin::FromOutside, Origin::FromNode] {
            let result = trace(&ruleset, &Packet::new(src, dst, protocol, dport, origin), &node);
            let _ = result.total_probability();
        }
        let _ = trace_upstream_test(&ruleset, &node.local_ips, src, protocol, dst, dport);
    }
});

/// The destinations rules of the dump match (`-d ADDR[/LEN]`, with the rule's
/// `-p` and `--dport` when present), so traced packets reach its chains.
fn destinations(text: &str) -> impl Iterator<Item = (IpAddr, Protocol, u16)> + '_ {
    text.lines().filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
        };
        let dst = after("-d")?.split('/').next()?.parse().ok()?;
        let protocol = match after("-p").copied() {
            Some("udp") => Protocol::Udp,
            Some("sctp") => Protocol::Sctp,
            _ => Protocol::Tcp,
        };
        let dport = after("--dport").and_then(|p| p.parse().ok()).unwrap_or(80);
        Some((dst, protocol, dport))
    })
}
