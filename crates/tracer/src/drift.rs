//! Drift: what differs between the rules that should be in the kernel and the
//! rules that are (for `chainsmith diff` and the node's canary check).
//!
//! Rules are compared as the kernel compares them (`iptables -C`): same target,
//! comment and matches, in any argument order and spelling, so an
//! `iptables-save` dump compares equal to the restore input that created it.
//! Order inside a chain matters (a balancing chain's probabilities depend on
//! it), except for the jumps from the built-in chains, which kube-proxy only
//! checks for presence.

use serde::Serialize;
use similar::{Algorithm, DiffOp, capture_diff_slices};

use crate::{ParsedRule, Ruleset};

/// How one chain differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The chain should exist and does not.
    MissingChain,
    /// The chain exists and should not (a stale kube-proxy chain).
    ExtraChain,
    /// The chain exists with different rules.
    ChangedRules,
}

/// The difference in one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDrift {
    /// `filter` or `nat`.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// How it differs.
    pub kind: DriftKind,
    /// Rules that should be there and are not (as the desired rules spell them).
    pub missing: Vec<String>,
    /// Rules that are there and should not be (as the kernel spells them).
    pub extra: Vec<String>,
}

/// Every difference, table by table, chain by chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Tables that should hold rules and are not in the actual rules at
    /// all (a dump of one table): their jumps are listed as missing too.
    pub absent_tables: Vec<String>,
    /// Chains that differ.
    pub chains: Vec<ChainDrift>,
}

impl Drift {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.absent_tables.is_empty()
    }
}

/// Chains kube-proxy owns whole: its fixed chains and the per-service ones.
fn owned(chain: &str) -> bool {
    chain.starts_with("KUBE-SVC-")
        || chain.starts_with("KUBE-SVL-")
        || chain.starts_with("KUBE-EXT-")
        || chain.starts_with("KUBE-FW-")
        || chain.starts_with("KUBE-SEP-")
        || matches!(
            chain,
            "KUBE-SERVICES"
                | "KUBE-EXTERNAL-SERVICES"
                | "KUBE-NODEPORTS"
                | "KUBE-FORWARD"
                | "KUBE-PROXY-FIREWALL"
                | "KUBE-FIREWALL"
                | "KUBE-POSTROUTING"
                | "KUBE-MARK-MASQ"
        )
}

/// A rule's identity for comparison: what `iptables -C` would consider.
fn identity(rule: &ParsedRule) -> String {
    let mut matches: Vec<String> = rule.matches.iter().map(|m| format!("{m:?}")).collect();
    matches.sort();
    format!("{:?}|{:?}|{}", rule.target, rule.comment, matches.join("|"))
}

/// Compares what should be (`desired`, e.g. a compiled payload with the
/// built-in jumps) with what is (`actual`, e.g. parsed `iptables-save`), in the
/// filter and nat tables.
pub fn drift(desired: &Ruleset, actual: &Ruleset) -> Drift {
    let mut chains = Vec::new();
    let mut absent_tables = Vec::new();
    for table in ["filter", "nat"] {
        let wanted: Vec<_> = desired
            .chains(table)
            .filter(|c| owned(&c.name) || c.policy.is_some())
            .collect();
        if !wanted.is_empty() && actual.table_names().all(|t| t != table) {
            absent_tables.push(table.to_string());
        }
        for chain in &wanted {
            // A built-in chain is absent only with its whole table: none of
            // the jumps kube-proxy needs in it are there.
            let present: &[ParsedRule] = match actual.chain(table, &chain.name) {
                Some(present) => &present.rules,
                None if chain.policy.is_some() => &[],
                None => {
                    chains.push(ChainDrift {
                        table: table.to_string(),
                        chain: chain.name.clone(),
                        kind: DriftKind::MissingChain,
                        missing: chain.rules.iter().map(|r| r.text.clone()).collect(),
                        extra: Vec::new(),
                    });
                    continue;
                }
            };
            let (missing, extra) = if chain.policy.is_some() {
                jumps_difference(&chain.rules, present)
            } else {
                ordered_difference(&chain.rules, present)
            };
            if !missing.is_empty() || !extra.is_empty() {
                chains.push(ChainDrift {
                    table: table.to_string(),
                    chain: chain.name.clone(),
                    kind: DriftKind::ChangedRules,
                    missing,
                    extra,
                });
            }
        }
        for chain in actual.chains(table).filter(|c| owned(&c.name)) {
            if desired.chain(table, &chain.name).is_none() {
                chains.push(ChainDrift {
                    table: table.to_string(),
                    chain: chain.name.clone(),
                    kind: DriftKind::ExtraChain,
                    missing: Vec::new(),
                    extra: chain.rules.iter().map(|r| r.text.clone()).collect(),
                });
            }
        }
    }
    Drift {
        absent_tables,
        chains,
    }
}

/// Order-sensitive difference of two rule lists.
fn ordered_difference(want: &[ParsedRule], have: &[ParsedRule]) -> (Vec<String>, Vec<String>) {
    let want_ids: Vec<String> = want.iter().map(identity).collect();
    let have_ids: Vec<String> = have.iter().map(identity).collect();
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    for op in capture_diff_slices(Algorithm::Myers, &want_ids, &have_ids) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => {
                missing.extend(
                    want[old_index..old_index + old_len]
                        .iter()
                        .map(|r| r.text.clone()),
                );
            }
            DiffOp::Insert {
                new_index, new_len, ..
            } => {
                extra.extend(
                    have[new_index..new_index + new_len]
                        .iter()
                        .map(|r| r.text.clone()),
                );
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                missing.extend(
                    want[old_index..old_index + old_len]
                        .iter()
                        .map(|r| r.text.clone()),
                );
                extra.extend(
                    have[new_index..new_index + new_len]
                        .iter()
                        .map(|r| r.text.clone()),
                );
            }
        }
    }
    (missing, extra)
}

/// In a built-in chain only kube-proxy's jumps count, and only their presence.
fn jumps_difference(want: &[ParsedRule], have: &[ParsedRule]) -> (Vec<String>, Vec<String>) {
    let jumps_to_ours = |rule: &&ParsedRule| matches!(&rule.target, crate::Target::Chain(to) if owned(to));
    let have_ids: Vec<String> = have.iter().filter(jumps_to_ours).map(identity).collect();
    let want_ids: Vec<String> = want.iter().filter(jumps_to_ours).map(identity).collect();
    let missing = want
        .iter()
        .filter(jumps_to_ours)
        .filter(|r| !have_ids.contains(&identity(r)))
        .map(|r| r.text.clone());
    let extra = have
        .iter()
        .filter(jumps_to_ours)
        .filter(|r| !want_ids.contains(&identity(r)))
        .map(|r| r.text.clone());
    (missing.collect(), extra.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-SERVICES -m comment --comment \"ns/a:p cluster IP\" -m tcp -p tcp -d 198.51.100.1 --dport 80 -j KUBE-SVC-A\n-A KUBE-SVC-A -m comment --comment \"ns/a:p cluster IP\" -m tcp -p tcp -d 198.51.100.1 --dport 80 ! -s 192.0.2.0/24 -j KUBE-MARK-MASQ\nCOMMIT\n";

    const SAVED: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n-A KUBE-SERVICES -d 198.51.100.1/32 -p tcp -m comment --comment \"ns/a:p cluster IP\" -m tcp --dport 80 -j KUBE-SVC-A\n-A KUBE-SVC-A -d 198.51.100.1/32 ! -s 192.0.2.0/24 -p tcp -m comment --comment \"ns/a:p cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\nCOMMIT\n";

    #[test]
    fn a_dump_of_the_same_rules_does_not_drift_but_extra_chains_do() {
        let desired = Ruleset::from_dump(PAYLOAD).expect("payload");
        let actual = Ruleset::from_dump(SAVED).expect("dump");
        let drift = drift(&desired, &actual);
        assert_eq!(drift.chains.len(), 1, "{drift:?}");
        assert_eq!(drift.chains[0].kind, DriftKind::ExtraChain);
        assert_eq!(drift.chains[0].chain, "KUBE-SEP-OLD");
    }

    #[test]
    fn a_table_absent_from_the_dump_is_named_with_its_jumps() {
        let desired = Ruleset::from_dump(&format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
             -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\nCOMMIT\n{PAYLOAD}"
        ))
        .expect("payload");
        let actual = Ruleset::from_dump(SAVED.replace(":KUBE-SEP-OLD - [0:0]\n", "").as_str()).expect("dump");
        let drift = drift(&desired, &actual);
        assert_eq!(drift.absent_tables, ["filter"]);
        let missing: Vec<(&str, &[String])> = drift
            .chains
            .iter()
            .map(|c| (c.chain.as_str(), c.missing.as_slice()))
            .collect();
        assert_eq!(missing.len(), 2, "{drift:?}");
        assert_eq!(missing[0].0, "FORWARD");
        assert!(missing[0].1[0].contains("-j KUBE-FORWARD"), "{drift:?}");
        assert_eq!(missing[1].0, "KUBE-FORWARD");
    }

    #[test]
    fn changed_and_missing_rules_are_named() {
        let desired = Ruleset::from_dump(PAYLOAD).expect("payload");
        let tampered = SAVED
            .replace(" ! -s 192.0.2.0/24", "")
            .replace(":KUBE-MARK-MASQ - [0:0]\n", "")
            .replace("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n", "")
            .replace("-j KUBE-MARK-MASQ", "-j RETURN");
        let actual = Ruleset::from_dump(&tampered).expect("dump");
        let drift = drift(&desired, &actual);
        let kinds: Vec<(&str, DriftKind)> = drift.chains.iter().map(|c| (c.chain.as_str(), c.kind)).collect();
        assert!(
            kinds.contains(&("KUBE-MARK-MASQ", DriftKind::MissingChain)),
            "{kinds:?}"
        );
        let svc = drift
            .chains
            .iter()
            .find(|c| c.chain == "KUBE-SVC-A")
            .expect("svc drift");
        assert_eq!((svc.missing.len(), svc.extra.len()), (1, 1));
    }
}
