//! What `iptables-restore --noflush` payloads leave behind, without a kernel.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::parse::split_words;

/// A payload line the kernel would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ApplyError {
    /// 1-based line in the payload.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

const BUILTIN_TARGETS: [&str; 12] = [
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "MARK",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "LOG",
    "CONNMARK",
    "NOTRACK",
    "CT",
];

/// The chains and rules of each table, as a sequence of payloads leaves them.
///
/// Each `*table ... COMMIT` section is applied atomically, as iptables-restore
/// does: a chain line creates or flushes, `-A` appends, `-I` inserts, `-D`
/// deletes a rule by its text, `-X` deletes an empty chain that nothing jumps
/// to. A section that jumps to a missing chain or deletes a referenced one is
/// refused as a whole and leaves the table unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl RuleSet {
    /// An empty rule set (no chains in any table).
    pub fn new() -> RuleSet {
        RuleSet::default()
    }

    /// Applies one payload; on error, tables committed before the failing
    /// section keep their new content (as with the real tool).
    pub fn apply(&mut self, payload: &str) -> Result<(), ApplyError> {
        let mut current: Option<(String, BTreeMap<String, Vec<String>>)> = None;
        for (index, raw) in payload.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            let fail = |message: String| ApplyError {
                line: line_no,
                message,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((_, table)) = current.as_mut() else {
                let Some(name) = line.strip_prefix('*') else {
                    return Err(fail(format!("expected a table, found {line:?}")));
                };
                let table = self.tables.get(name).cloned().unwrap_or_default();
                current = Some((name.to_string(), table));
                continue;
            };
            if line == "COMMIT" {
                check_references(table).map_err(fail)?;
                let (name, table) = current.take().unwrap_or_default();
                self.tables.insert(name, table);
                continue;
            }
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split(' ').next().unwrap_or_default();
                table.entry(name.to_string()).or_default().clear();
                continue;
            }
            let words = split_words(line);
            let (Some(&command), Some(&chain_name)) = (words.first(), words.get(1)) else {
                return Err(fail(format!("cannot parse {line:?}")));
            };
            let rule_text = || after_words(line, 2);
            match command {
                "-A" => chain_mut(table, chain_name)
                    .map_err(&fail)?
                    .push(format!("-A {chain_name} {}", rule_text())),
                "-I" => {
                    let (position, body) = match words.get(2).and_then(|w| w.parse::<usize>().ok()) {
                        Some(position) => (position, after_words(line, 3)),
                        None => (1, rule_text()),
                    };
                    let chain = chain_mut(table, chain_name).map_err(&fail)?;
                    if position == 0 || position > chain.len() + 1 {
                        return Err(fail(format!("index {position} out of range in {chain_name}")));
                    }
                    chain.insert(position - 1, format!("-A {chain_name} {body}"));
                }
                "-D" => {
                    let wanted = format!("-A {chain_name} {}", rule_text());
                    let chain = chain_mut(table, chain_name).map_err(&fail)?;
                    let position = chain.iter().position(|rule| *rule == wanted);
                    let Some(position) = position else {
                        return Err(fail(format!("no such rule in {chain_name}: {line:?}")));
                    };
                    chain.remove(position);
                }
                "-X" => {
                    let Some(chain) = table.get(chain_name) else {
                        return Err(fail(format!("cannot delete missing chain {chain_name}")));
                    };
                    if !chain.is_empty() {
                        return Err(fail(format!("cannot delete non-empty chain {chain_name}")));
                    }
                    table.remove(chain_name);
                }
                other => return Err(fail(format!("unsupported command {other:?}"))),
            }
        }
        match current {
            Some((name, _)) => Err(ApplyError {
                line: payload.lines().count(),
                message: format!("table {name} without COMMIT"),
            }),
            None => Ok(()),
        }
    }

    /// The rules of one chain, or `None` if it does not exist.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&[String]> {
        self.tables.get(table)?.get(chain).map(Vec::as_slice)
    }

    /// The names of the chains of a table, sorted.
    pub fn chain_names(&self, table: &str) -> impl Iterator<Item = &str> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|chains| chains.keys().map(String::as_str))
    }

    /// The whole state as restore text (tables and chains sorted by name, rules
    /// in order), e.g. to compare two states or to feed the normaliser.
    pub fn to_restore_text(&self) -> String {
        let mut out = String::new();
        for (table, chains) in &self.tables {
            out.push_str(&format!("*{table}\n"));
            for name in chains.keys() {
                out.push_str(&format!(":{name} - [0:0]\n"));
            }
            for rules in chains.values() {
                for rule in rules {
                    out.push_str(rule);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The text after the first `count` words (a quoted comment keeps its quotes).
fn after_words(line: &str, count: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..count {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

fn chain_mut<'t>(
    table: &'t mut BTreeMap<String, Vec<String>>,
    name: &str,
) -> Result<&'t mut Vec<String>, String> {
    table
        .get_mut(name)
        .ok_or_else(|| format!("chain {name} does not exist"))
}

fn check_references(table: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    for rules in table.values() {
        for rule in rules {
            let words = split_words(rule);
            let target = words
                .iter()
                .position(|w| *w == "-j")
                .and_then(|i| words.get(i + 1));
            if let Some(target) = target.filter(|t| !BUILTIN_TARGETS.contains(t) && !table.contains_key(**t))
            {
                return Err(format!("rule jumps to missing chain {target}: {rule:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_chains_are_flushed_and_undeclared_ones_kept() {
        let mut rules = RuleSet::new();
        rules
            .apply("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j ACCEPT\nCOMMIT\n")
            .expect("first");
        rules
            .apply("*nat\n:B - [0:0]\n-A B -j DROP\nCOMMIT\n")
            .expect("second");
        assert_eq!(rules.chain("nat", "A"), Some(&["-A A -j B".to_string()][..]));
        assert_eq!(rules.chain("nat", "B"), Some(&["-A B -j DROP".to_string()][..]));
    }

    #[test]
    fn refused_sections_change_nothing() {
        let mut rules = RuleSet::new();
        rules
            .apply("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j ACCEPT\nCOMMIT\n")
            .expect("first");
        let before = rules.clone();
        // B is still referenced by A, so it cannot go.
        assert!(rules.apply("*nat\n:B - [0:0]\n-X B\nCOMMIT\n").is_err());
        assert!(rules.apply("*nat\n-A A -j MISSING\nCOMMIT\n").is_err());
        assert_eq!(rules, before);
    }

    #[test]
    fn insert_and_delete_by_text() {
        let mut rules = RuleSet::new();
        rules
            .apply("*filter\n:A - [0:0]\n-A A -m comment --comment \"x y\" -j ACCEPT\nCOMMIT\n")
            .expect("first");
        rules
            .apply("*filter\n-I A 1 -j DROP\n-D A -m comment --comment \"x y\" -j ACCEPT\nCOMMIT\n")
            .expect("edit");
        assert_eq!(
            rules.chain("filter", "A"),
            Some(&["-A A -j DROP".to_string()][..])
        );
    }
}
