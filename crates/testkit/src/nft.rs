//! nftables in a test's namespace: a transaction applied with the real `nft
//! -f -`, the `kube-proxy` table read back with `nft list table` through
//! [`read_listing`], and a readable account of how two tables differ.
//!
//! A model ([`Table`]) and the kernel's listing compare as values once both
//! are [`Table::canonical`]; [`table_differences`] says where they do not,
//! chain by chain and element by element, so a failing comparison shows the
//! rules that differ rather than two whole dumps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chainsmith_nftables::{Family, TABLE_NAME, Table, read_listing};

use crate::{CommandError, Netns};

/// Applies `transaction` (`nft -f` input) in `netns`, all or nothing as the
/// kernel does; the error carries nft's own message.
pub fn nft_apply(netns: &Netns, transaction: &str) -> Result<(), CommandError> {
    netns
        .run_with_input("nft", &["-f", "-"], transaction.as_bytes())
        .map(drop)
}

/// The `kube-proxy` table of `family` as the kernel holds it: `nft list table
/// FAMILY kube-proxy` in `netns`, read with [`read_listing`]. An error when
/// the table does not exist or the listing holds what a [`Table`] cannot.
pub fn nft_list_table(netns: &Netns, family: Family) -> Result<Table, CommandError> {
    let text = netns.run("nft", &["list", "table", family.as_str(), TABLE_NAME])?;
    let listing = read_listing(&text).map_err(|e| CommandError(format!("{e}\nlisting:\n{text}")))?;
    listing
        .table(family)
        .cloned()
        .ok_or_else(|| CommandError(format!("no {family} {TABLE_NAME} table in the listing:\n{text}")))
}

fn rule_text((rule, comment): (&str, Option<&str>)) -> String {
    match comment {
        Some(comment) => format!("{rule} comment {comment:?}"),
        None => rule.to_string(),
    }
}

/// Where `left` and `right` differ once both are canonical, one line per
/// difference (chains and sets only in one, declarations, rules, elements);
/// empty when they are equal. `left_name` and `right_name` label the sides.
pub fn table_differences(left_name: &str, left: &Table, right_name: &str, right: &Table) -> String {
    let (l, r) = (left.canonical(), right.canonical());
    let mut out = String::new();
    if l.exists() != r.exists() {
        let _ = writeln!(
            out,
            "table exists: {left_name} {}, {right_name} {}",
            l.exists(),
            r.exists()
        );
    }
    let chains: BTreeSet<&str> = l.chain_names().chain(r.chain_names()).collect();
    for name in chains {
        match (l.chain(name), r.chain(name)) {
            (Some(_), None) => {
                let _ = writeln!(
                    out,
                    "chain {name}: only in {left_name} ({} rules)",
                    l.rules(name).count()
                );
            }
            (None, Some(_)) => {
                let _ = writeln!(
                    out,
                    "chain {name}: only in {right_name} ({} rules)",
                    r.rules(name).count()
                );
            }
            (Some(a), Some(b)) => {
                if a != b {
                    let _ = writeln!(
                        out,
                        "chain {name}: declared as {a:?} in {left_name}, {b:?} in {right_name}"
                    );
                }
                let a: Vec<String> = l.rules(name).map(rule_text).collect();
                let b: Vec<String> = r.rules(name).map(rule_text).collect();
                if a != b {
                    rules_differ(&mut out, name, (left_name, &a), (right_name, &b));
                }
            }
            (None, None) => {}
        }
    }
    let sets: BTreeSet<&str> = l.sets().chain(r.sets()).map(|s| s.name.as_str()).collect();
    for name in sets {
        match (l.set(name), r.set(name)) {
            (Some(_), None) => {
                let _ = writeln!(out, "set {name}: only in {left_name}");
            }
            (None, Some(_)) => {
                let _ = writeln!(out, "set {name}: only in {right_name}");
            }
            (Some(a), Some(b)) => {
                if a != b {
                    let _ = writeln!(
                        out,
                        "set {name}: declared as {a:?} in {left_name}, {b:?} in {right_name}"
                    );
                }
                let elements = |t: &Table| -> BTreeMap<String, String> {
                    t.elements(name)
                        .map(|e| {
                            let mut v = e.value.clone().unwrap_or_default();
                            if let Some(c) = &e.comment {
                                let _ = write!(v, " comment {c:?}");
                            }
                            (e.key.clone(), v)
                        })
                        .collect()
                };
                let (a, b) = (elements(&l), elements(&r));
                for (key, value) in &a {
                    match b.get(key) {
                        None => {
                            let _ =
                                writeln!(out, "set {name}: element {{ {key} {value} }} only in {left_name}");
                        }
                        Some(other) if other != value => {
                            let _ = writeln!(
                                out,
                                "set {name}: element {key}: {value:?} in {left_name}, {other:?} in {right_name}"
                            );
                        }
                        Some(_) => {}
                    }
                }
                for (key, value) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                    let _ = writeln!(
                        out,
                        "set {name}: element {{ {key} {value} }} only in {right_name}"
                    );
                }
            }
            (None, None) => {}
        }
    }
    if out.is_empty() && l != r {
        let _ = writeln!(
            out,
            "the tables differ outside chains and sets:\n{left_name}:\n{}\n{right_name}:\n{}",
            l.dump(),
            r.dump()
        );
    }
    out
}

/// The rules of one chain on both sides: those only on one side, or, when
/// both hold the same rules, both orders.
fn rules_differ(out: &mut String, chain: &str, (ln, a): (&str, &[String]), (rn, b): (&str, &[String])) {
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        let mut rest: Vec<&String> = y.iter().collect();
        x.iter()
            .filter(|rule| match rest.iter().position(|r| r == rule) {
                Some(at) => {
                    rest.remove(at);
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    };
    let (only_a, only_b) = (only(a, b), only(b, a));
    if only_a.is_empty() && only_b.is_empty() {
        let _ = writeln!(out, "chain {chain}: the same rules in another order");
        for (side, rules) in [(ln, a), (rn, b)] {
            let _ = writeln!(out, "  in {side}:");
            for rule in rules {
                let _ = writeln!(out, "    {rule}");
            }
        }
        return;
    }
    for (side, rules) in [(ln, only_a), (rn, only_b)] {
        for rule in rules {
            let _ = writeln!(out, "chain {chain}: rule only in {side}: {rule}");
        }
    }
}
