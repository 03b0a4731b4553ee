//! How the table the kernel holds differs from the one it should hold.

use std::collections::BTreeSet;

use crate::op::Element;
use crate::table::Table;

/// Whether an object is missing, extra, or there with other content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// Should exist and does not.
    Missing,
    /// Exists and should not.
    Extra,
    /// Exists with other rules, elements or declaration.
    Changed,
}

/// One chain, set or map that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDrift {
    /// `chain`, `set` or `map`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Missing, extra or changed.
    pub drift: DriftKind,
    /// Rules or elements that should be there and are not (canonical spelling).
    pub missing: Vec<String>,
    /// Rules or elements that are there and should not be.
    pub extra: Vec<String>,
}

/// Every difference between two tables, compared in canonical spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDrift {
    /// The table should exist and does not (or the reverse).
    pub table: Option<DriftKind>,
    /// Chains, then sets and maps, by name.
    pub objects: Vec<ObjectDrift>,
}

impl TableDrift {
    /// The kernel holds what it should.
    pub fn is_empty(&self) -> bool {
        self.table.is_none() && self.objects.is_empty()
    }
}

fn rule_line(rule: &str, comment: Option<&str>) -> String {
    match comment {
        Some(comment) => format!("{rule} comment {}", crate::quote(comment)),
        None => rule.to_string(),
    }
}

fn element_line(element: &Element) -> String {
    let mut line = element.key.clone();
    if let Some(value) = &element.value {
        line.push_str(" : ");
        line.push_str(value);
    }
    line
}

/// Compares what the kernel holds (`actual`) with what it should (`desired`).
/// Rules are compared in order (a chain's order is its meaning); elements as
/// a set, by key and value (comments are not the kernel's concern). Elements
/// of dynamic sets are left out: traffic fills them.
pub fn drift(desired: &Table, actual: &Table) -> TableDrift {
    let (desired, actual) = (desired.canonical(), actual.canonical());
    let mut out = TableDrift::default();
    match (desired.exists(), actual.exists()) {
        (true, false) => out.table = Some(DriftKind::Missing),
        (false, true) => out.table = Some(DriftKind::Extra),
        _ => {}
    }
    let chains: BTreeSet<&str> = desired.chain_names().chain(actual.chain_names()).collect();
    for name in chains {
        let (want, have) = (desired.chain(name), actual.chain(name));
        let rules = |table: &Table| -> Vec<String> {
            table
                .rules(name)
                .map(|(rule, comment)| rule_line(rule, comment))
                .collect()
        };
        let (want_rules, have_rules) = (rules(&desired), rules(&actual));
        let kind = match (want, have) {
            (Some(_), None) => DriftKind::Missing,
            (None, Some(_)) => DriftKind::Extra,
            (Some(w), Some(h)) if w.base != h.base || want_rules != have_rules => DriftKind::Changed,
            _ => continue,
        };
        let (missing, extra) = ordered_difference(&want_rules, &have_rules);
        out.objects.push(ObjectDrift {
            kind: "chain",
            name: name.to_string(),
            drift: kind,
            missing,
            extra,
        });
    }
    let sets: BTreeSet<&str> = desired
        .sets()
        .chain(actual.sets())
        .map(|s| s.name.as_str())
        .collect();
    for name in sets {
        let (want, have) = (desired.set(name), actual.set(name));
        let elements =
            |table: &Table| -> BTreeSet<String> { table.elements(name).map(element_line).collect() };
        let (want_elements, have_elements) = (elements(&desired), elements(&actual));
        let drift = match (want, have) {
            (Some(_), None) => DriftKind::Missing,
            (None, Some(_)) => DriftKind::Extra,
            (Some(w), Some(h)) if w != h || want_elements != have_elements => DriftKind::Changed,
            _ => continue,
        };
        let spec = want.or(have).map(|s| s.kind.as_str()).unwrap_or("set");
        out.objects.push(ObjectDrift {
            kind: spec,
            name: name.to_string(),
            drift,
            missing: want_elements.difference(&have_elements).cloned().collect(),
            extra: have_elements.difference(&want_elements).cloned().collect(),
        });
    }
    out
}

/// Order-sensitive difference by longest common subsequence: (only in
/// `want`, only in `have`). Chains are short (nftables dispatches through
/// maps), so the quadratic table is small.
fn ordered_difference(want: &[String], have: &[String]) -> (Vec<String>, Vec<String>) {
    let (n, m) = (want.len(), have.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == have[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && want[i] == have[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            extra.push(have[j].clone());
            j += 1;
        } else {
            missing.push(want[i].clone());
            i += 1;
        }
    }
    (missing, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, read_transaction};

    fn table(text: &str) -> Table {
        let mut table = Table::new(Family::Ip);
        table
            .apply(&read_transaction(text, Family::Ip).expect("reads"))
            .expect("applies");
        table
    }

    const BASE: &str = "add table ip kube-proxy\n\
        add chain ip kube-proxy masquerading\n\
        add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
        add rule ip kube-proxy masquerading masquerade fully-random\n\
        add set ip kube-proxy cluster-ips { type ipv4_addr ; }\n\
        add element ip kube-proxy cluster-ips { 10.96.0.1 }\n";

    #[test]
    fn the_same_table_in_either_spelling_has_no_drift() {
        let listed = BASE.replace(
            "mark and 0x4000 == 0 return",
            "meta mark & 0x00004000 == 0x00000000 return",
        );
        assert!(drift(&table(BASE), &table(&listed)).is_empty());
    }

    #[test]
    fn missing_rules_extra_elements_and_a_missing_table_are_named() {
        let edited = format!(
            "{}add element ip kube-proxy cluster-ips {{ 10.96.0.2 }}\n",
            BASE.replace(
                "add rule ip kube-proxy masquerading masquerade fully-random\n",
                ""
            )
        );
        let found = drift(&table(BASE), &table(&edited));
        assert_eq!(found.objects.len(), 2, "{found:?}");
        assert_eq!(found.objects[0].name, "masquerading");
        assert_eq!(found.objects[0].missing, ["masquerade fully-random"]);
        assert_eq!(found.objects[1].extra, ["10.96.0.2"]);
        let gone = drift(&table(BASE), &Table::new(Family::Ip));
        assert_eq!(gone.table, Some(DriftKind::Missing));
    }
}
