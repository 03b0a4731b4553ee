//! Restore input and `iptables-save` output back into tables, chains and rules.
//!
//! The grammar is the one kube-proxy's own test helper accepts: a table starts
//! with `*name`; chain lines (`:NAME POLICY [packets:bytes]`) come first; then
//! `-A CHAIN ...` rules on declared chains, `-X CHAIN` deletions of declared,
//! still empty chains, and `COMMIT`. Blank lines and `#` comments are ignored.

use std::collections::HashMap;

use thiserror::Error;

/// A parse failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A whole dump: tables in the order they appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The tables.
    pub tables: Vec<TableDump>,
}

/// One `*table ... COMMIT` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDump {
    /// `filter`, `nat`, `mangle`, ...
    pub name: String,
    /// Chains in declaration order.
    pub chains: Vec<ChainDump>,
}

/// One declared chain with the rules added to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDump {
    /// Chain name.
    pub name: String,
    /// `-` for user chains, the policy for built-in ones.
    pub policy: String,
    /// The `[packets:bytes]` counters as written.
    pub counters: (u64, u64),
    /// Rule lines, trimmed, starting with `-A`.
    pub rules: Vec<String>,
    /// A `-X` line deleted it.
    pub deleted: bool,
}

impl Dump {
    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&TableDump> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// A chain by table and name.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&ChainDump> {
        self.table(table)
            .and_then(|t| t.chains.iter().find(|c| c.name == chain))
    }
}

/// Parses a dump; see the module documentation for the grammar.
pub fn parse_dump(text: &str) -> Result<Dump, ParseError> {
    #[derive(PartialEq)]
    enum State {
        Table,
        Declarations,
        Rules,
    }
    let mut dump = Dump::default();
    let mut state = State::Table;
    // Chain name -> position in the current table: dumps hold 100k+ chains.
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |message: String| ParseError {
            line: line_no,
            message,
        };
        if state == State::Table {
            let Some(name) = line.strip_prefix('*') else {
                return Err(fail(format!("expected a table (\"*name\"), found {line:?}")));
            };
            dump.tables.push(TableDump {
                name: name.to_string(),
                chains: Vec::new(),
            });
            positions.clear();
            state = State::Declarations;
            continue;
        }
        let Some(table) = dump.tables.last_mut() else {
            return Err(fail("no table".to_string()));
        };
        if state == State::Declarations {
            if let Some(chain) = parse_chain_line(line) {
                let chain = chain.map_err(fail)?;
                positions.insert(chain.name.clone(), table.chains.len());
                table.chains.push(chain);
                continue;
            }
            state = State::Rules;
        }
        if line == "COMMIT" {
            state = State::Table;
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain_name = rest.split(' ').next().unwrap_or_default();
            let chain = find_chain(table, &positions, chain_name)
                .ok_or_else(|| fail(format!("rule for undeclared chain {chain_name:?}")))?;
            if chain.deleted {
                return Err(fail(format!("rule for deleted chain {chain_name:?}")));
            }
            chain.rules.push(line.to_string());
        } else if let Some(chain_name) = line.strip_prefix("-X ") {
            let chain = find_chain(table, &positions, chain_name.trim())
                .ok_or_else(|| fail(format!("deletion of undeclared chain {chain_name:?}")))?;
            if !chain.rules.is_empty() {
                return Err(fail(format!(
                    "deletion of chain {chain_name:?} after adding rules to it"
                )));
            }
            chain.deleted = true;
        } else {
            return Err(fail(format!("cannot parse {line:?}")));
        }
    }
    if state != State::Table {
        return Err(ParseError {
            line: text.lines().count(),
            message: "missing COMMIT at the end".to_string(),
        });
    }
    Ok(dump)
}

fn find_chain<'t>(
    table: &'t mut TableDump,
    positions: &HashMap<String, usize>,
    name: &str,
) -> Option<&'t mut ChainDump> {
    positions.get(name).and_then(|&at| table.chains.get_mut(at))
}

/// `:NAME POLICY [p:b]`; `None` if the line is not a chain line at all.
fn parse_chain_line(line: &str) -> Option<Result<ChainDump, String>> {
    let rest = line.strip_prefix(':')?;
    let mut words = rest.split(' ');
    let (Some(name), Some(policy), Some(counters), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Some(Err(format!("bad chain line {line:?}")));
    };
    let counters = counters
        .strip_prefix('[')
        .and_then(|c| c.strip_suffix(']'))
        .and_then(|c| c.split_once(':'))
        .and_then(|(p, b)| Some((parse_counter(p)?, parse_counter(b)?)));
    let Some(counters) = counters else {
        return Some(Err(format!("bad counters in chain line {line:?}")));
    };
    Some(Ok(ChainDump {
        name: name.to_string(),
        policy: policy.to_string(),
        counters,
        rules: Vec::new(),
        deleted: false,
    }))
}

fn parse_counter(text: &str) -> Option<u64> {
    if text.is_empty() {
        Some(0)
    } else {
        text.parse().ok()
    }
}

/// Splits a rule into words the way iptables does for restore input: a
/// double-quoted string is one word (quotes removed).
pub fn split_words(rule: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = rule.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            words.push(&quoted[..end]);
            rest = quoted.get(end + 1..).unwrap_or_default();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    words
}

/// The `--comment` value of a rule, if it has one.
pub fn comment_of(rule: &str) -> Option<&str> {
    let words = split_words(rule);
    words
        .iter()
        .position(|w| *w == "--comment")
        .and_then(|i| words.get(i + 1).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tables_chains_rules_and_deletions() {
        let text = "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n*nat\n:KUBE-SEP-X - [0:0]\n:INPUT ACCEPT [3:180]\n-X KUBE-SEP-X\nCOMMIT\n";
        let dump = parse_dump(text).expect("parses");
        assert_eq!(dump.tables.len(), 2);
        assert_eq!(
            dump.chain("filter", "KUBE-SERVICES").map(|c| c.rules.len()),
            Some(1)
        );
        assert_eq!(dump.chain("nat", "KUBE-SEP-X").map(|c| c.deleted), Some(true));
        assert_eq!(
            dump.chain("nat", "INPUT")
                .map(|c| (c.policy.as_str(), c.counters)),
            Some(("ACCEPT", (3, 180)))
        );
    }

    #[test]
    fn rejects_what_iptables_restore_rejects() {
        let cases = [
            ("-A X -j ACCEPT\n", 1),
            ("*nat\n:X - [0:0]\n-A Y -j ACCEPT\nCOMMIT\n", 3),
            ("*nat\n:X - [0:0]\n-A X -j ACCEPT\n-X X\nCOMMIT\n", 4),
            ("*nat\n:X - [0:0]\n", 2),
            ("*nat\n:X - [a:0]\nCOMMIT\n", 2),
        ];
        for (text, line) in cases {
            assert_eq!(parse_dump(text).map_err(|e| e.line), Err(line), "{text:?}");
        }
    }

    #[test]
    fn quoted_words_stay_together() {
        let rule = r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -j X"#;
        assert_eq!(comment_of(rule), Some("ns1/svc1:p80 cluster IP"));
        assert_eq!(
            comment_of("-A X -m comment --comment ns1/svc1:p80 -j Y"),
            Some("ns1/svc1:p80")
        );
        assert_eq!(split_words(rule).len(), 8);
    }
}
