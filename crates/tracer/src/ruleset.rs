//! Tables, chains and parsed rules: what the kernel holds.
//!
//! Loading follows `iptables-restore --noflush`, as `chainsmith_restore::RuleSet`
//! models it: each `*table ... COMMIT` section is applied as a whole; a chain
//! line creates or flushes a user chain; `-A` appends, `-I` inserts, `-D`
//! deletes by text, `-X` deletes an empty chain (refused if a rule of the
//! section still jumps to it). Two differences, both because a tracer must read
//! any `iptables-save` dump: a chain line for a built-in chain only sets its
//! policy (the kernel never flushes built-in chains with `--noflush`), and a jump
//! to a name that is no chain is kept (it may be an extension target the tracer
//! does not know); the trace reports it.

use std::collections::BTreeMap;

use chainsmith_iptables::BuiltinJump;
use chainsmith_model::IpFamily;

use crate::error::TraceError;
use crate::rule::{ParsedRule, Target, tokenize};

/// One chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The chain name.
    pub name: String,
    /// The policy of a built-in chain (`ACCEPT` when not given); `None` for user chains.
    pub policy: Option<String>,
    /// The rules, in order.
    pub rules: Vec<ParsedRule>,
}

type Table = BTreeMap<String, Chain>;

/// The tables, chains and rules a packet is traced through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    tables: BTreeMap<String, Table>,
    family: Option<IpFamily>,
}

/// The built-in chains of a table.
pub fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

fn is_builtin(table: &str, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

fn new_chain(table: &str, name: &str) -> Chain {
    Chain {
        name: name.to_string(),
        policy: is_builtin(table, name).then(|| "ACCEPT".to_string()),
        rules: Vec::new(),
    }
}

impl Ruleset {
    /// An empty ruleset: every built-in chain is empty with policy ACCEPT.
    pub fn new() -> Ruleset {
        Ruleset::default()
    }

    /// Reads an `iptables-save` dump (with or without `-c` counters) or restore
    /// text.
    pub fn from_dump(text: &str) -> Result<Ruleset, TraceError> {
        let mut ruleset = Ruleset::new();
        ruleset.apply(text)?;
        Ok(ruleset)
    }

    /// Applies one `iptables-restore --noflush` payload on top of what is there
    /// (see the module documentation). On error, sections committed before the
    /// failing one keep their effect, as with the real tool.
    pub fn apply(&mut self, payload: &str) -> Result<(), TraceError> {
        // The table being edited, and the chains this section deleted.
        let mut current: Option<(String, Table, Vec<String>)> = None;
        for (index, raw) in payload.lines().enumerate() {
            let line_no = index + 1;
            let fail = |message: String| TraceError::Load {
                line: line_no,
                message,
            };
            let line = strip_counters(raw.trim());
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "COMMIT"
                && let Some((name, table, deleted)) = current.take()
            {
                check_deleted_unreferenced(&table, &deleted).map_err(fail)?;
                self.tables.insert(name, table);
                continue;
            }
            let Some((table_name, table, deleted)) = current.as_mut() else {
                let Some(name) = line.strip_prefix('*') else {
                    return Err(fail(format!("expected a table (\"*name\"), found {line:?}")));
                };
                let table = self.tables.get(name).cloned().unwrap_or_default();
                current = Some((name.to_string(), table, Vec::new()));
                continue;
            };
            let table_name = table_name.as_str();
            if let Some(rest) = line.strip_prefix(':') {
                let mut words = rest.split_whitespace();
                let (Some(name), policy) = (words.next(), words.next()) else {
                    return Err(fail(format!("bad chain line {line:?}")));
                };
                declare(table_name, table, name, policy);
                continue;
            }
            let words: Vec<String> = tokenize(line).into_iter().map(|w| w.text).collect();
            let command = words.first().map(String::as_str).unwrap_or_default();
            let chain_name = words.get(1).cloned().unwrap_or_default();
            match command {
                "-A" | "--append" | "-I" | "--insert" | "-D" | "--delete" if chain_name.is_empty() => {
                    return Err(fail(format!("{command} without a chain")));
                }
                "-A" | "--append" => {
                    let rule = rule_from(&chain_name, after_words(line, 2)).map_err(&fail)?;
                    chain_mut(table_name, table, &chain_name)
                        .map_err(&fail)?
                        .rules
                        .push(rule);
                }
                "-I" | "--insert" => {
                    let (position, body) = match words.get(2).and_then(|w| w.parse::<usize>().ok()) {
                        Some(position) => (position, after_words(line, 3)),
                        None => (1, after_words(line, 2)),
                    };
                    let rule = rule_from(&chain_name, body).map_err(&fail)?;
                    let chain = chain_mut(table_name, table, &chain_name).map_err(&fail)?;
                    if position == 0 || position > chain.rules.len() + 1 {
                        return Err(fail(format!("index {position} out of range in {chain_name}")));
                    }
                    chain.rules.insert(position - 1, rule);
                }
                "-D" | "--delete" => {
                    let chain = chain_mut(table_name, table, &chain_name).map_err(&fail)?;
                    let position = match (words.get(2).and_then(|w| w.parse::<usize>().ok()), words.len()) {
                        (Some(number), 3) => (number >= 1 && number <= chain.rules.len()).then(|| number - 1),
                        _ => {
                            let wanted = rule_from(&chain_name, after_words(line, 2)).map_err(&fail)?;
                            chain
                                .rules
                                .iter()
                                .position(|r| r.text == wanted.text)
                                .or_else(|| chain.rules.iter().position(|r| r.same_rule(&wanted)))
                        }
                    };
                    let Some(position) = position else {
                        return Err(fail(format!("no such rule in {chain_name}: {line:?}")));
                    };
                    chain.rules.remove(position);
                }
                "-N" | "--new-chain" => {
                    if table.contains_key(&chain_name) {
                        return Err(fail(format!("chain {chain_name} already exists")));
                    }
                    declare(table_name, table, &chain_name, None);
                }
                "-F" | "--flush" => {
                    if chain_name.is_empty() {
                        table.values_mut().for_each(|c| c.rules.clear());
                    } else {
                        chain_mut(table_name, table, &chain_name)
                            .map_err(&fail)?
                            .rules
                            .clear();
                    }
                }
                "-P" | "--policy" => {
                    let policy = words.get(2).cloned().unwrap_or_default();
                    if !is_builtin(table_name, &chain_name) || policy.is_empty() {
                        return Err(fail(format!("cannot set policy {policy:?} on {chain_name}")));
                    }
                    chain_mut(table_name, table, &chain_name).map_err(&fail)?.policy = Some(policy);
                }
                "-X" | "--delete-chain" => {
                    if is_builtin(table_name, &chain_name) {
                        return Err(fail(format!("cannot delete built-in chain {chain_name}")));
                    }
                    let Some(chain) = table.get(&chain_name) else {
                        return Err(fail(format!("cannot delete missing chain {chain_name:?}")));
                    };
                    if !chain.rules.is_empty() {
                        return Err(fail(format!("cannot delete non-empty chain {chain_name}")));
                    }
                    table.remove(&chain_name);
                    deleted.push(chain_name);
                }
                "-Z" | "--zero" => {}
                other => return Err(fail(format!("unsupported command {other:?} in {line:?}"))),
            }
        }
        match current {
            Some((name, ..)) => Err(TraceError::Load {
                line: payload.lines().count(),
                message: format!("table {name} without COMMIT"),
            }),
            None => Ok(()),
        }
    }

    /// Adds the jumps kube-proxy inserts into the built-in chains (`jumps`:
    /// the layout's, e.g. `chainsmith_iptables::BUILTIN_JUMPS`) where they are missing, the way
    /// kube-proxy does on a full sync: the target chain is created if absent,
    /// then each jump missing from its built-in chain (`iptables -C`: the same
    /// rule in any spelling) is inserted at the top, so later entries of the list
    /// end up above earlier ones. Use it on payloads that hold only `KUBE-*`
    /// chains (a compiled payload); a dump from a node already has the jumps and
    /// is left as it is. The jumps are the same for both families; `family`
    /// is recorded so that a trace can warn about a packet of the other family.
    pub fn with_builtin_jumps(mut self, family: IpFamily, jumps: &[BuiltinJump]) -> Ruleset {
        self.family = Some(family);
        for jump in jumps {
            let table_name = jump.table.as_str();
            let table = self.tables.entry(table_name.to_string()).or_default();
            table
                .entry(jump.to.to_string())
                .or_insert_with(|| new_chain(table_name, jump.to));
            let mut text = format!("-A {}", jump.from);
            for arg in jump.args() {
                text.push(' ');
                if arg.contains(char::is_whitespace) {
                    text.push('"');
                    text.push_str(arg);
                    text.push('"');
                } else {
                    text.push_str(arg);
                }
            }
            let Ok(rule) = ParsedRule::parse(&text) else {
                continue;
            };
            let from = table
                .entry(jump.from.to_string())
                .or_insert_with(|| new_chain(table_name, jump.from));
            if !from.rules.iter().any(|r| r.same_rule(&rule)) {
                from.rules.insert(0, rule);
            }
        }
        self
    }

    /// The IP family given to [`Ruleset::with_builtin_jumps`], if any.
    pub fn family(&self) -> Option<IpFamily> {
        self.family
    }

    /// Records the IP family of the ruleset (a trace warns about a packet of the
    /// other family).
    pub fn set_family(&mut self, family: Option<IpFamily>) {
        self.family = family;
    }

    /// A chain, or `None` if it does not exist (a missing built-in chain is
    /// empty with policy ACCEPT).
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.tables.get(table)?.get(chain)
    }

    /// The names of the tables, sorted.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The chains of a table, sorted by name.
    pub fn chains(&self, table: &str) -> impl Iterator<Item = &Chain> {
        self.tables.get(table).into_iter().flat_map(|t| t.values())
    }

    /// The number of rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .map(|c| c.rules.len())
            .sum()
    }
}

/// `:NAME POLICY`: creates or flushes a user chain; sets a built-in chain's policy.
fn declare(table_name: &str, table: &mut Table, name: &str, policy: Option<&str>) {
    let chain = table
        .entry(name.to_string())
        .or_insert_with(|| new_chain(table_name, name));
    if is_builtin(table_name, name) {
        if let Some(policy) = policy.filter(|p| *p != "-") {
            chain.policy = Some(policy.to_string());
        }
    } else {
        chain.rules.clear();
    }
}

/// The kernel refuses a section that deletes a chain some rule still jumps to.
fn check_deleted_unreferenced(table: &Table, deleted: &[String]) -> Result<(), String> {
    let user = table.values().flat_map(|c| &c.rules).find(|r| {
        matches!(&r.target, Target::Chain(t) | Target::Goto(t)
            if deleted.contains(t) && !table.contains_key(t))
    });
    match user {
        Some(user) => Err(format!("deleted chain still referenced by {:?}", user.text)),
        None => Ok(()),
    }
}

fn chain_mut<'t>(table_name: &str, table: &'t mut Table, name: &str) -> Result<&'t mut Chain, String> {
    if is_builtin(table_name, name) {
        return Ok(table
            .entry(name.to_string())
            .or_insert_with(|| new_chain(table_name, name)));
    }
    table
        .get_mut(name)
        .ok_or_else(|| format!("chain {name} does not exist in table {table_name}"))
}

fn rule_from(chain: &str, body: &str) -> Result<ParsedRule, String> {
    let text = if body.is_empty() {
        format!("-A {chain}")
    } else {
        format!("-A {chain} {body}")
    };
    ParsedRule::parse(&text).map_err(|e| e.to_string())
}

/// `[12:3456] -A ...` (iptables-save -c) -> `-A ...`.
fn strip_counters(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((counters, rest)) if counters.chars().all(|c| c.is_ascii_digit() || c == ':') => {
            rest.trim_start()
        }
        _ => line,
    }
}

/// The text after the first `count` whitespace-separated words.
fn after_words(line: &str, count: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..count {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ruleset: &Ruleset, table: &str, chain: &str) -> Vec<String> {
        ruleset
            .chain(table, chain)
            .map(|c| c.rules.iter().map(|r| r.text.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn payloads_apply_cumulatively() {
        let mut rules = Ruleset::new();
        rules
            .apply("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j ACCEPT\nCOMMIT\n")
            .expect("first");
        rules
            .apply("*nat\n:B - [0:0]\n-A B -j DROP\nCOMMIT\n")
            .expect("second");
        assert_eq!(texts(&rules, "nat", "A"), ["-A A -j B"]);
        assert_eq!(texts(&rules, "nat", "B"), ["-A B -j DROP"]);
        // B is referenced by A: refused, nothing changes.
        let before = rules.clone();
        assert!(rules.apply("*nat\n:B - [0:0]\n-X B\nCOMMIT\n").is_err());
        assert_eq!(rules, before);
        rules
            .apply(
                "*nat\n-I A 1 -m comment --comment \"x y\" -j RETURN\n-D A -j B\n:B - [0:0]\n-X B\nCOMMIT\n",
            )
            .expect("third");
        assert_eq!(
            texts(&rules, "nat", "A"),
            [r#"-A A -m comment --comment "x y" -j RETURN"#]
        );
        assert!(rules.chain("nat", "B").is_none());
    }

    #[test]
    fn dumps_keep_policies_counters_and_unknown_targets() {
        let dump = "# Generated by iptables-save\n*filter\n:INPUT DROP [10:600]\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n[3:180] -A INPUT -j DOCKER\n-A DOCKER -j LOG --log-prefix x\n-A FORWARD -j REDIRECT\nCOMMIT\n# Completed\n";
        let rules = Ruleset::from_dump(dump).expect("dump");
        assert_eq!(
            rules.chain("filter", "INPUT").and_then(|c| c.policy.as_deref()),
            Some("DROP")
        );
        assert_eq!(texts(&rules, "filter", "INPUT"), ["-A INPUT -j DOCKER"]);
        assert_eq!(rules.rule_count(), 3);
    }

    #[test]
    fn refuses_what_iptables_restore_refuses() {
        let cases = [
            ("-A X -j ACCEPT\n", 1),
            ("*nat\n:X - [0:0]\n-A Y -j ACCEPT\nCOMMIT\n", 3),
            ("*nat\n:X - [0:0]\n-A X -j ACCEPT\n-X X\nCOMMIT\n", 4),
            ("*nat\n:X - [0:0]\n", 2),
            ("*nat\n-D PREROUTING -j ACCEPT\nCOMMIT\n", 2),
            ("*nat\n-I PREROUTING 3 -j ACCEPT\nCOMMIT\n", 2),
        ];
        for (text, line) in cases {
            let got = Ruleset::from_dump(text).map(|_| ()).map_err(|e| match e {
                TraceError::Load { line, .. } => line,
                TraceError::NotARule(_) => 0,
            });
            assert_eq!(got, Err(line), "{text:?}");
        }
    }

    #[test]
    fn odd_dumps_never_panic() {
        let text = "*nat\n:A - [0:0]\n:PREROUTING ACCEPT [1:2]\n[1:2] -A A -j\n-I A 1\n-I A x -j B\n-D A 1\n-P PREROUTING DROP\n-N B\n-F\n-X\n-Z\n!\n-A\nCOMMIT\nCOMMIT\n*\n:\n-D\n";
        for cut in 0..=text.len() {
            if let Some(prefix) = text.get(..cut) {
                let _ = Ruleset::from_dump(prefix);
            }
        }
        for line in text.lines() {
            let _ = Ruleset::from_dump(&format!("*filter\n{line}\nCOMMIT\n"));
        }
    }

    #[test]
    fn builtin_jumps_follow_upstream_order_and_are_not_duplicated() {
        let rules = Ruleset::new().with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS);
        let targets = |chain: &str| -> Vec<String> {
            rules
                .chain("filter", chain)
                .map(|c| {
                    c.rules
                        .iter()
                        .map(|r| match &r.target {
                            Target::Chain(t) => t.clone(),
                            other => format!("{other:?}"),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            targets("INPUT"),
            [
                "KUBE-FIREWALL",
                "KUBE-PROXY-FIREWALL",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES"
            ]
        );
        assert_eq!(
            targets("FORWARD"),
            [
                "KUBE-PROXY-FIREWALL",
                "KUBE-FORWARD",
                "KUBE-SERVICES",
                "KUBE-EXTERNAL-SERVICES"
            ]
        );
        assert_eq!(
            targets("OUTPUT"),
            ["KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"]
        );
        assert_eq!(
            texts(&rules, "nat", "PREROUTING"),
            [r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#]
        );
        assert_eq!(rules.rule_count(), 14);
        let again = rules
            .clone()
            .with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS);
        assert_eq!(again, rules);
        // The same jumps as iptables-save prints them count as present.
        let saved = Ruleset::from_dump(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n",
        )
        .expect("dump")
        .with_builtin_jumps(IpFamily::V4, &chainsmith_iptables::BUILTIN_JUMPS);
        assert_eq!(texts(&saved, "nat", "PREROUTING").len(), 1);
    }
}
