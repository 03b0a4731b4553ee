//! Upstream's normal form of restore text and its consistency check.
//!
//! kube-proxy's unit tests compare the proxier's output only after sorting away
//! Go's map order (`assertIPTablesRulesEqual`): tables by name; chains
//! `KUBE-NODEPORTS`, `KUBE-SERVICES`, other `KUBE-*` alphabetically, then the
//! rest; the rules of filter/nat `KUBE-NODEPORTS` and filter `KUBE-SERVICES`
//! stable-sorted by the service name at the start of their comment, nat
//! `KUBE-SERVICES` the same with its "must be the last rule" jump(s) kept last;
//! every other chain in generation order; rules grouped per chain; `-X` last.
//! [`normalize`] reproduces that, so comparing with an upstream-asserted file is
//! a byte comparison.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use chainsmith_iptables::{Chain, Footprint, ReadError, RuleSet, comment_of};

/// The service name a rule is sorted by: its comment cut at the first space or
/// colon (`"ns1/svc1:p80 cluster IP"` -> `ns1/svc1`), empty without a comment.
pub fn service_name_of(rule: &str) -> Cow<'_, str> {
    let service = |comment: &str| comment.split([' ', ':']).next().unwrap_or_default().len();
    match comment_of(rule) {
        Some(Cow::Borrowed(comment)) => Cow::Borrowed(&comment[..service(comment)]),
        Some(Cow::Owned(mut comment)) => {
            comment.truncate(service(&comment));
            Cow::Owned(comment)
        }
        None => Cow::Borrowed(""),
    }
}

fn is_last_rule(rule: &str) -> bool {
    comment_of(rule).is_some_and(|c| c.contains("must be the last rule"))
}

fn chain_rank(name: &str) -> (u8, &str) {
    match name {
        "KUBE-NODEPORTS" => (0, name),
        "KUBE-SERVICES" => (1, name),
        _ if name.starts_with("KUBE-") => (2, name),
        _ => (3, name),
    }
}

/// Upstream's normal form of `text`. With `loose`, the chains whose upstream
/// order depends on Go map iteration (several ports of one Service, several
/// NodePort addresses, several Services in the filter drop chains) are fully
/// sorted as well; upstream itself never does this.
pub fn normalize(text: &str, loose: bool) -> Result<String, ReadError> {
    let (rules, footprint): (RuleSet, Footprint) =
        RuleSet::read_with_footprint(text.trim_start_matches([' ', '\t', '\n']))?;
    let mut out = String::with_capacity(text.len());
    for table in rules.table_names() {
        let deleted = footprint
            .table(table)
            .map(|t| t.deleted.as_slice())
            .unwrap_or_default();
        // The chains the text deleted keep their chain line and get their `-X`.
        let mut chains: Vec<(&Chain, bool)> = rules
            .chains(table)
            .map(|c| (c, false))
            .chain(deleted.iter().map(|c| (c, true)))
            .collect();
        chains.sort_by(|(a, _), (b, _)| chain_rank(&a.name).cmp(&chain_rank(&b.name)));
        out.push('*');
        out.push_str(table);
        out.push('\n');
        for (chain, _) in &chains {
            out.push_str(&format!(
                ":{} {} [{}:{}]\n",
                chain.name,
                chain.policy.as_deref().unwrap_or("-"),
                chain.counters.0,
                chain.counters.1
            ));
        }
        for (chain, _) in &chains {
            let mut rules: Vec<&str> = chain.rules.iter().map(String::as_str).collect();
            sort_chain(table, &chain.name, &mut rules, loose);
            for rule in rules {
                out.push_str(rule);
                out.push('\n');
            }
        }
        for (chain, _) in chains.iter().filter(|(_, deleted)| *deleted) {
            out.push_str("-X ");
            out.push_str(&chain.name);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    Ok(out)
}

fn sort_chain(table: &str, chain: &str, rules: &mut [&str], loose: bool) {
    let by_service = matches!(
        (table, chain),
        ("filter" | "nat", "KUBE-NODEPORTS") | ("filter", "KUBE-SERVICES")
    ) || (loose
        && table == "filter"
        && matches!(chain, "KUBE-EXTERNAL-SERVICES" | "KUBE-PROXY-FIREWALL"));
    let nat_services = table == "nat" && chain == "KUBE-SERVICES";
    if loose && (by_service || nat_services) {
        rules.sort_by(|a, b| {
            (is_last_rule(a), service_name_of(a), a).cmp(&(is_last_rule(b), service_name_of(b), b))
        });
    } else if by_service {
        rules.sort_by(|a, b| service_name_of(a).cmp(&service_name_of(b)));
    } else if nat_services {
        rules.sort_by(|a, b| match (is_last_rule(a), is_last_rule(b)) {
            (false, false) => service_name_of(a).cmp(&service_name_of(b)),
            (last_a, last_b) => last_a.cmp(&last_b),
        });
    }
}

const BUILTIN_TARGETS: [&str; 8] = [
    "ACCEPT",
    "REJECT",
    "DROP",
    "MARK",
    "RETURN",
    "DNAT",
    "SNAT",
    "MASQUERADE",
];
/// Upstream's list, plus the kubelet's `KUBE-MARK-DROP`, a fixed chain of the
/// v1.10 layout as `KUBE-FIREWALL` is of both.
const ALWAYS_ALLOWED_CHAINS: [&str; 9] = [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-FORWARD",
    "KUBE-MARK-MASQ",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
    "KUBE-MARK-DROP",
];

/// Upstream's rule-jump consistency check for full-sync payloads: every chain
/// jumped to or appended to is declared, every chain jumped to has rules
/// (KUBE-NODEPORTS excepted), every declared chain other than the fixed ones
/// is jumped to. Returns the problems found (empty when consistent).
pub fn consistency_errors(text: &str) -> Vec<String> {
    let sections: Vec<&str> = text.trim_start_matches('\n').split("COMMIT\n").collect();
    if sections.len() < 3 || sections.last().is_some_and(|rest| !rest.is_empty()) {
        return vec![format!(
            "bad rule data ({} tables)",
            sections.len().saturating_sub(1)
        )];
    }
    let mut errors = Vec::new();
    for section in &sections[..sections.len() - 1] {
        let lines: Vec<&str> = section.trim_matches('\n').lines().collect();
        let table = lines.first().and_then(|l| l.strip_prefix('*')).unwrap_or("?");
        let mut declared = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        let mut filled = BTreeSet::new();
        let mut jumped = BTreeSet::new();
        for line in &lines {
            if let Some(rest) = line.strip_prefix(':') {
                declared.insert(rest.split(' ').next().unwrap_or_default());
            }
            if let Some(rest) = line.strip_prefix("-X ") {
                deleted.insert(rest.split(' ').next().unwrap_or_default());
            }
            if let Some(rest) = line.strip_prefix("-A ") {
                filled.insert(rest.split(' ').next().unwrap_or_default());
            }
            if let Some((_, rest)) = line.split_once("-j ") {
                let target = rest.split(' ').next().unwrap_or_default();
                if !BUILTIN_TARGETS.contains(&target) {
                    jumped.insert(target);
                }
            }
        }
        let created: BTreeSet<&str> = declared.difference(&deleted).copied().collect();
        let missing: BTreeSet<&str> = jumped
            .union(&filled)
            .filter(|c| !created.contains(*c))
            .copied()
            .collect();
        if !missing.is_empty() {
            errors.push(format!(
                "some chains in {table} are used but were not created: {missing:?}"
            ));
        }
        let empty: BTreeSet<&str> = jumped
            .iter()
            .filter(|c| !filled.contains(*c) && **c != "KUBE-NODEPORTS")
            .copied()
            .collect();
        if !empty.is_empty() {
            errors.push(format!(
                "some chains in {table} are jumped to but have no rules: {empty:?}"
            ));
        }
        let extra: BTreeSet<&str> = created
            .iter()
            .filter(|c| !jumped.contains(*c) && !ALWAYS_ALLOWED_CHAINS.contains(*c))
            .copied()
            .collect();
        if !extra.is_empty() {
            errors.push(format!(
                "some chains in {table} are created but not used: {extra:?}"
            ));
        }
    }
    errors
}

/// Orders two rule lists' first difference, for readable test failures.
pub fn first_difference<'a>(want: &'a str, got: &'a str) -> Option<(usize, &'a str, &'a str)> {
    let mut want_lines = want.lines();
    let mut got_lines = got.lines();
    let mut line = 0;
    loop {
        line += 1;
        match (want_lines.next(), got_lines.next()) {
            (None, None) => return None,
            (w, g) if w.cmp(&g) == Ordering::Equal => continue,
            (w, g) => return Some((line, w.unwrap_or("<end>"), g.unwrap_or("<end>"))),
        }
    }
}
