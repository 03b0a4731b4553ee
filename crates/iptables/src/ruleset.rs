//! What the kernel's tables hold, read back from text: tables -> chains
//! (policy, counters) -> rules.
//!
//! [`RuleSet::apply`] follows `iptables-restore --noflush`. Each
//! `*table ... COMMIT` section is applied whole or not at all. A chain line
//! creates or flushes a user chain and sets a built-in chain's policy (the
//! kernel never flushes a built-in chain with `--noflush`); `-A` appends, `-I`
//! inserts, `-D` deletes a rule by number or by its text (or any text the rule
//! type knows to be the same rule), `-N` creates, `-F` flushes, `-P` sets a
//! policy, `-X` deletes an empty user chain. Built-in chains exist before any
//! line names them. At `COMMIT` the section is refused if a rule jumps to a
//! chain that does not exist: a name that is neither a chain of the table nor
//! a target iptables provides, a chain the section deleted included.
//!
//! [`RuleSet::read`] reads one text on its own, an `iptables-save` dump or one
//! payload. A dump may jump to extension targets the list here does not know
//! and a partial payload to chains of earlier payloads, so only jumps to a
//! chain the text itself deleted are refused there.

use std::collections::BTreeMap;

use crate::builtin::is_builtin_chain;
use crate::footprint::Footprint;
use crate::read::{ChainLine, Command, Line, ReadError, lines};
use crate::section::{Jumps, Section};

/// How a rule set keeps a rule: its text, or something a reader builds
/// from the text (the tracer's parsed rules).
pub trait RuleLine: Clone {
    /// Reads a rule from its text, `-A CHAIN ...`; an error refuses the line.
    fn from_line(line: String) -> Result<Self, String>;

    /// The rule's text, as given to [`RuleLine::from_line`].
    fn line(&self) -> &str;

    /// Whether the kernel takes `self` and `other` for the same rule (`-D`
    /// with a rule, `iptables -C`). From the text alone, only the same
    /// spelling is known to be the same rule.
    fn same_rule(&self, other: &Self) -> bool {
        self.line() == other.line()
    }
}

impl RuleLine for String {
    fn from_line(line: String) -> Result<String, String> {
        Ok(line)
    }

    fn line(&self) -> &str {
        self
    }
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain<R = String> {
    /// The chain name.
    pub name: String,
    /// The policy of a built-in chain (`ACCEPT` until one is set); `None` for
    /// user chains.
    pub policy: Option<String>,
    /// The `[packets:bytes]` of the chain's last chain line (`[0:0]` without one).
    pub counters: (u64, u64),
    /// The rules, in order.
    pub rules: Vec<R>,
}

impl<R> Chain<R> {
    pub(crate) fn new(table: &str, name: &str) -> Chain<R> {
        Chain {
            name: name.to_string(),
            policy: is_builtin_chain(table, name).then(|| "ACCEPT".to_string()),
            counters: (0, 0),
            rules: Vec::new(),
        }
    }
}

/// A table's chains by name.
pub(crate) type Table<R> = BTreeMap<String, Chain<R>>;

/// The tables, chains and rules that a sequence of restore payloads, or one
/// dump, leaves behind; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet<R = String> {
    tables: BTreeMap<String, Table<R>>,
}

impl<R> Default for RuleSet<R> {
    fn default() -> RuleSet<R> {
        RuleSet {
            tables: BTreeMap::new(),
        }
    }
}

impl RuleSet {
    /// An empty rule set of rule texts: no table holds a chain yet.
    pub fn new() -> RuleSet {
        RuleSet::default()
    }
}

impl<R: RuleLine> RuleSet<R> {
    /// Applies one `iptables-restore --noflush` payload on top of what is
    /// there. On error, the sections committed before the failing one keep
    /// their effect, as with the real tool.
    pub fn apply(&mut self, payload: &str) -> Result<(), ReadError> {
        self.load(payload, Jumps::MustExist).map(drop)
    }

    /// Reads one `iptables-save` dump (with or without `-c` counters) or one
    /// restore payload on its own (see the module documentation).
    pub fn read(text: &str) -> Result<RuleSet<R>, ReadError> {
        RuleSet::read_with_footprint(text).map(|(rules, _)| rules)
    }

    /// [`RuleSet::read`], and what the text declared and deleted.
    pub fn read_with_footprint(text: &str) -> Result<(RuleSet<R>, Footprint<R>), ReadError> {
        let mut rules = RuleSet::default();
        let footprint = rules.load(text, Jumps::AsWritten)?;
        Ok((rules, footprint))
    }

    fn load(&mut self, text: &str, jumps: Jumps) -> Result<Footprint<R>, ReadError> {
        let mut footprint = Footprint::default();
        let mut open: Option<Section<R>> = None;
        for (line_no, line) in lines(text) {
            let fail = |message: String| ReadError {
                line: line_no,
                message,
            };
            let Some(section) = open.as_mut() else {
                let Line::Table(name) = Line::of(line) else {
                    return Err(fail(format!("expected a table (\"*name\"), found {line:?}")));
                };
                // Edited on a copy: a refused section leaves the table as it was.
                let chains = self.tables.get(name).cloned().unwrap_or_default();
                open = Some(Section::new(name, chains));
                continue;
            };
            match Line::of(line) {
                Line::Commit => {
                    section.check_jumps(jumps).map_err(fail)?;
                    if let Some(section) = open.take() {
                        footprint.record(&section);
                        self.tables.insert(section.table, section.chains);
                    }
                }
                Line::Chain(text) => section.declare(&ChainLine::parse(text).map_err(fail)?),
                Line::Command(text) => section.run(Command::parse(text).map_err(fail)?).map_err(fail)?,
                Line::Table(name) => {
                    return Err(fail(format!(
                        "table {name:?} inside table {:?} (COMMIT missing)",
                        section.table
                    )));
                }
            }
        }
        match open {
            Some(section) => Err(ReadError {
                line: text.lines().count(),
                message: format!("table {} without COMMIT", section.table),
            }),
            None => Ok(footprint),
        }
    }

    /// The whole state as restore text (tables and chains sorted by name,
    /// rules in order), e.g. to compare two states or to normalise them.
    pub fn to_restore_text(&self) -> String {
        let mut out = String::new();
        for (table, chains) in &self.tables {
            out.push_str(&format!("*{table}\n"));
            for chain in chains.values() {
                let policy = chain.policy.as_deref().unwrap_or("-");
                let (packets, bytes) = chain.counters;
                out.push_str(&format!(":{} {policy} [{packets}:{bytes}]\n", chain.name));
            }
            for rule in chains.values().flat_map(|c| &c.rules) {
                out.push_str(rule.line());
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

impl<R> RuleSet<R> {
    /// A chain, or `None` if it does not exist (a built-in chain no line
    /// named is empty, with policy ACCEPT).
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain<R>> {
        self.tables.get(table)?.get(chain)
    }

    /// The chains of a table, sorted by name.
    pub fn chains(&self, table: &str) -> impl Iterator<Item = &Chain<R>> {
        self.tables.get(table).into_iter().flat_map(|t| t.values())
    }

    /// The names of the tables, sorted.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The number of rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .map(|c| c.rules.len())
            .sum()
    }

    /// A chain, created empty if it does not exist (as `iptables -N` would,
    /// or a built-in chain with policy ACCEPT), for rules added in place.
    pub fn ensure_chain(&mut self, table: &str, chain: &str) -> &mut Chain<R> {
        self.tables
            .entry(table.to_string())
            .or_default()
            .entry(chain.to_string())
            .or_insert_with(|| Chain::new(table, chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'r>(set: &'r RuleSet, table: &str, chain: &str) -> Vec<&'r str> {
        set.chain(table, chain)
            .map(|c| c.rules.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn error_line(result: Result<(), ReadError>) -> Result<(), usize> {
        result.map_err(|e| e.line)
    }

    /// nat `A` jumping to `B`, which accepts.
    fn a_jumps_to_b() -> RuleSet {
        let mut set = RuleSet::new();
        set.apply("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j ACCEPT\nCOMMIT\n")
            .expect("first");
        set
    }

    #[test]
    fn declared_chains_are_flushed_and_undeclared_ones_kept() {
        let mut set = a_jumps_to_b();
        set.apply("*nat\n:B - [0:0]\n-A B -j DROP\nCOMMIT\n")
            .expect("second");
        assert_eq!(rules(&set, "nat", "A"), ["-A A -j B"]);
        assert_eq!(rules(&set, "nat", "B"), ["-A B -j DROP"]);
    }

    #[test]
    fn refused_sections_change_nothing() {
        let mut set = a_jumps_to_b();
        let before = set.clone();
        // B is still referenced by A, so it cannot go.
        let deleted = set.apply("*nat\n:B - [0:0]\n-X B\nCOMMIT\n");
        assert_eq!(error_line(deleted.clone()), Err(4));
        assert!(deleted.is_err_and(|e| e.message.contains("still referenced by \"-A A -j B\"")));
        let missing = set.apply("*nat\n-A A -j MISSING\nCOMMIT\n");
        assert!(missing.is_err_and(|e| e.message.contains("missing chain MISSING")));
        assert_eq!(set, before);
        // A later section that fails leaves the earlier ones applied.
        assert_eq!(
            error_line(set.apply("*filter\n:F - [0:0]\nCOMMIT\n*nat\n-A A -j MISSING\nCOMMIT\n")),
            Err(6)
        );
        assert_eq!(set.chains("filter").count(), 1);
    }

    #[test]
    fn insert_and_delete_by_number_or_text() {
        let mut set = RuleSet::new();
        set.apply("*filter\n:A - [0:0]\n-A A -m comment --comment \"x y\" -j ACCEPT\nCOMMIT\n")
            .expect("first");
        set.apply(
            "*filter\n-I A 1 -j DROP\n-I A -j RETURN\n-D A -m comment --comment \"x y\" -j ACCEPT\nCOMMIT\n",
        )
        .expect("edit");
        assert_eq!(rules(&set, "filter", "A"), ["-A A -j RETURN", "-A A -j DROP"]);
        set.apply("*filter\n-D A 2\nCOMMIT\n").expect("by number");
        assert_eq!(rules(&set, "filter", "A"), ["-A A -j RETURN"]);
    }

    #[test]
    fn chains_are_created_flushed_and_deleted() {
        let mut set = RuleSet::new();
        set.apply("*filter\n-N A\n-A A -j DROP\n-N B\n-A B -j A\nCOMMIT\n")
            .expect("created");
        assert_eq!(error_line(set.apply("*filter\n-N A\nCOMMIT\n")), Err(2));
        set.apply("*filter\n-F B\n-X B\n-F\nCOMMIT\n").expect("flushed");
        assert_eq!(rules(&set, "filter", "A"), Vec::<&str>::new());
        assert!(set.chain("filter", "B").is_none());
        set.apply("*filter\n-P INPUT DROP\n-Z\nCOMMIT\n").expect("policy");
        assert_eq!(
            set.chain("filter", "INPUT").and_then(|c| c.policy.as_deref()),
            Some("DROP")
        );
    }

    #[test]
    fn builtin_chains_always_exist_and_keep_their_rules() {
        let mut set = RuleSet::new();
        set.apply("*nat\n:X - [0:0]\n-A PREROUTING -j X\nCOMMIT\n")
            .expect("first");
        set.apply("*nat\n:PREROUTING DROP [1:2]\n:X - [0:0]\nCOMMIT\n")
            .expect("second");
        let prerouting = set.chain("nat", "PREROUTING").expect("built-in");
        assert_eq!(prerouting.rules, ["-A PREROUTING -j X"]);
        assert_eq!(
            (prerouting.policy.as_deref(), prerouting.counters),
            (Some("DROP"), (1, 2))
        );
        for refused in [
            "*nat\n-X PREROUTING\nCOMMIT\n",
            "*nat\n-P X ACCEPT\nCOMMIT\n",
            "*nat\n-N OUTPUT\nCOMMIT\n",
        ] {
            assert_eq!(error_line(set.apply(refused)), Err(2), "{refused:?}");
        }
    }

    #[test]
    fn refuses_what_iptables_restore_refuses() {
        let cases = [
            ("-A X -j ACCEPT\n", 1),
            ("COMMIT\n", 1),
            ("*nat\n:X - [0:0]\n-A Y -j ACCEPT\nCOMMIT\n", 3),
            ("*nat\n:X - [0:0]\n-A X -j ACCEPT\n-X X\nCOMMIT\n", 4),
            ("*nat\n:X - [0:0]\n", 2),
            ("*nat\n:X - [a:0]\nCOMMIT\n", 2),
            ("*nat\n:X - [0:0] extra\nCOMMIT\n", 2),
            ("*nat\n-D PREROUTING -j ACCEPT\nCOMMIT\n", 2),
            ("*nat\n-I PREROUTING 3 -j ACCEPT\nCOMMIT\n", 2),
            ("*nat\n-A -j ACCEPT\nCOMMIT\n", 2),
            ("*nat\n-N \"a b\"\nCOMMIT\n", 2),
            ("*nat\n-Q X\nCOMMIT\n", 2),
            ("*nat\n*filter\nCOMMIT\n", 2),
        ];
        for (text, line) in cases {
            assert_eq!(error_line(RuleSet::new().apply(text)), Err(line), "{text:?}");
            assert_eq!(
                error_line(RuleSet::<String>::read(text).map(drop)),
                Err(line),
                "{text:?}"
            );
        }
    }

    #[test]
    fn dumps_keep_policies_counters_and_unknown_targets() {
        let dump = "# Generated by iptables-save\n*filter\n:INPUT DROP [10:600]\n:FORWARD ACCEPT [0:0]\n:DOCKER - [0:0]\n[3:180] -A INPUT -j DOCKER\n-A DOCKER -j LOG --log-prefix x\n-A FORWARD -j SOME-EXTENSION\nCOMMIT\n# Completed\n";
        let set: RuleSet = RuleSet::read(dump).expect("dump");
        let input = set.chain("filter", "INPUT").expect("INPUT");
        assert_eq!(
            (input.policy.as_deref(), input.counters),
            (Some("DROP"), (10, 600))
        );
        assert_eq!(rules(&set, "filter", "INPUT"), ["-A INPUT -j DOCKER"]);
        assert_eq!(set.rule_count(), 3);
        // Applied as a payload, the unknown name must be a chain.
        assert_eq!(error_line(RuleSet::new().apply(dump)), Err(9));
    }

    #[test]
    fn a_text_alone_may_jump_to_chains_it_does_not_hold() {
        let partial = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-OLD - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-ELSEWHERE\n-X KUBE-SEP-OLD\nCOMMIT\n";
        let (set, footprint): (RuleSet, Footprint) = RuleSet::read_with_footprint(partial).expect("reads");
        assert_eq!(
            rules(&set, "nat", "KUBE-SERVICES"),
            ["-A KUBE-SERVICES -j KUBE-SVC-ELSEWHERE"]
        );
        let nat = footprint.table("nat").expect("nat");
        assert_eq!(nat.declared, ["KUBE-SERVICES", "KUBE-SEP-OLD"]);
        let deleted: Vec<&str> = nat.deleted.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(deleted, ["KUBE-SEP-OLD"]);
        // Deleting a chain the text still jumps to is refused all the same.
        let dangling = "*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-X B\nCOMMIT\n";
        assert!(RuleSet::<String>::read(dangling).is_err());
    }

    #[test]
    fn written_back_it_reads_the_same() {
        let mut set = RuleSet::new();
        set.apply("*filter\n:INPUT DROP [1:2]\n:A - [0:0]\n-A A -m comment --comment \"a \\\"b\\\"\" -j ACCEPT\n-A INPUT -j A\nCOMMIT\n*nat\nCOMMIT\n")
            .expect("applies");
        let written = set.to_restore_text();
        let mut again = RuleSet::new();
        again.apply(&written).expect("written back");
        assert_eq!(again, set, "{written}");
    }

    #[test]
    fn odd_texts_never_panic() {
        let text = "*nat\n:A - [0:0]\n:PREROUTING ACCEPT [1:2]\n[1:2] -A A -j\n-I A 1\n-I A x -j B\n-D A 1\n-P PREROUTING DROP\n-N B\n-F\n-X\n-Z\n!\n-A\nCOMMIT\nCOMMIT\n*\n:\n-D\n\"\n-A \"A\n";
        for cut in 0..=text.len() {
            if let Some(prefix) = text.get(..cut) {
                let _ = RuleSet::<String>::read(prefix);
                let _ = RuleSet::new().apply(prefix);
            }
        }
        for line in text.lines() {
            let _ = RuleSet::new().apply(&format!("*filter\n{line}\nCOMMIT\n"));
        }
    }
}
