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
//! chain the text itself deleted are refused there. A text read on its own
//! also says its IP family ([`RuleSet::family`]); one whose lines say two
//! families is refused, as `ip6tables-restore` refuses an IPv4 address.
//! [`RuleSet::read_rules_listing`] reads `iptables -S` output, which is one
//! table's section without its `*table` and `COMMIT` lines.

use std::collections::BTreeMap;

use chainsmith_model::IpFamily;

use crate::builtin::{builtin_chains, is_builtin_chain};
use crate::family::{FamilyCheck, FamilyConflict, header_evidence, rule_evidence};
use crate::footprint::Footprint;
use crate::read::{ChainLine, Command, Line, Numbered, ReadError, ReadProblem, lines, shape_of};
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
    family: Option<IpFamily>,
}

impl<R> Default for RuleSet<R> {
    fn default() -> RuleSet<R> {
        RuleSet {
            tables: BTreeMap::new(),
            family: None,
        }
    }
}

impl RuleSet {
    /// An empty rule set of rule texts: no table holds a chain yet.
    pub fn new() -> RuleSet {
        RuleSet::default()
    }
}

/// How a text is read.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// A payload on top of what is there: the kernel's checks, nothing more.
    Apply,
    /// One text on its own: jumps as written, and one family.
    Read,
    /// `iptables -S` output of one table: a section open from the start and
    /// committed at the end, without `*table` or `COMMIT` lines.
    Listing(&'a str),
}

impl<R: RuleLine> RuleSet<R> {
    /// Applies one `iptables-restore --noflush` payload on top of what is
    /// there. On error, the sections committed before the failing one keep
    /// their effect, as with the real tool. The family is left as it is: a
    /// payload is the caller's, who knows which tool it is for.
    pub fn apply(&mut self, payload: &str) -> Result<(), ReadError> {
        self.load(payload, Mode::Apply).map(drop)
    }

    /// Reads one `iptables-save` dump (with or without `-c` counters) or one
    /// restore payload on its own (see the module documentation).
    pub fn read(text: &str) -> Result<RuleSet<R>, ReadError> {
        RuleSet::read_with_footprint(text).map(|(rules, _)| rules)
    }

    /// [`RuleSet::read`], and what the text declared and deleted.
    pub fn read_with_footprint(text: &str) -> Result<(RuleSet<R>, Footprint<R>), ReadError> {
        let mut rules = RuleSet::default();
        let footprint = rules.load(text, Mode::Read)?;
        Ok((rules, footprint))
    }

    /// Reads `iptables -S` (or `ip6tables -S`, `iptables -S CHAIN`) output of
    /// `table`, which that output holds without naming it: `-P CHAIN POLICY`
    /// sets a built-in chain's policy, `-N CHAIN` creates a user chain, `-A`
    /// lines are rules as in a dump (a `-c PACKETS BYTES` of `-S -v` stays in
    /// the rule text, where a rule reader takes it for counters). Jumps are
    /// kept as written and the family is found as by [`RuleSet::read`]; a
    /// `*table` or `COMMIT` line is refused, since that is `iptables-save`
    /// output, to be read with [`RuleSet::read`].
    ///
    /// `table` must be one iptables has (filter, nat, mangle, raw, security),
    /// else the error is [`ReadProblem::UnknownTable`] on line 0.
    pub fn read_rules_listing(text: &str, table: &str) -> Result<RuleSet<R>, ReadError> {
        if builtin_chains(table).is_empty() {
            return Err(ReadError {
                line: 0,
                text: String::new(),
                message: ReadProblem::UnknownTable(table.to_string()),
            });
        }
        let mut rules = RuleSet::default();
        rules.load(text, Mode::Listing(table))?;
        Ok(rules)
    }

    fn load(&mut self, text: &str, mode: Mode) -> Result<Footprint<R>, ReadError> {
        let jumps = match mode {
            Mode::Apply => Jumps::MustExist,
            Mode::Read | Mode::Listing(_) => Jumps::AsWritten,
        };
        let mut family = FamilyCheck::default();
        let mut footprint = Footprint::default();
        // The open section, with the line of its `*table`.
        let mut open: Option<(Section<R>, usize)> = None;
        let mut last_commit = None;
        let mut last_line = None;
        if let Mode::Listing(table) = mode {
            let chains = self.tables.get(table).cloned().unwrap_or_default();
            open = Some((Section::new(table, chains), 0));
        }
        for line in lines(text) {
            last_line = Some(line);
            let fail = |message: ReadProblem| ReadError {
                line: line.number,
                text: line.written.to_string(),
                message,
            };
            let refused = |message: String| fail(ReadProblem::Refused(message));
            let kind = Line::of(line.body);
            if let Line::Comment(comment) = kind {
                if !matches!(mode, Mode::Apply)
                    && let Some(evidence) = header_evidence(comment)
                {
                    family.see(line.number, evidence).map_err(|c| mixed(&line, c))?;
                }
                continue;
            }
            if let (Mode::Listing(_), Line::Table(_) | Line::Commit) = (mode, &kind) {
                return Err(refused(
                    "a `*table` or COMMIT line in `iptables -S` output: this is `iptables-save` \
                     output, to be read as such"
                        .to_string(),
                ));
            }
            let Some((section, opened)) = open.as_mut() else {
                let Line::Table(name) = kind else {
                    return Err(fail(ReadProblem::OutsideTable {
                        shape: shape_of(text, line.body),
                        after_commit: last_commit,
                    }));
                };
                // Edited on a copy: a refused section leaves the table as it was.
                let chains = self.tables.get(name).cloned().unwrap_or_default();
                open = Some((Section::new(name, chains), line.number));
                continue;
            };
            match kind {
                Line::Commit => {
                    section.check_jumps(jumps).map_err(refused)?;
                    if let Some((section, _)) = open.take() {
                        footprint.record(&section);
                        self.tables.insert(section.table, section.chains);
                    }
                    last_commit = Some(line.number);
                }
                Line::Chain(text) => section.declare(&ChainLine::parse(text).map_err(refused)?),
                Line::Command(text) => {
                    if !matches!(mode, Mode::Apply) {
                        for evidence in rule_evidence(text) {
                            family.see(line.number, evidence).map_err(|c| mixed(&line, c))?;
                        }
                    }
                    let command = Command::parse(text).map_err(refused)?;
                    section.run(command).map_err(fail)?;
                }
                Line::Table(name) => {
                    return Err(fail(ReadProblem::MissingCommit {
                        table: section.table.clone(),
                        opened: *opened,
                        next: Some(name.to_string()),
                    }));
                }
                Line::Comment(_) => {}
            }
        }
        match open {
            Some((section, _)) if matches!(mode, Mode::Listing(_)) => {
                section.check_jumps(jumps).map_err(|message| ReadError {
                    line: last_line.map_or(0, |l| l.number),
                    text: last_line.map(|l| l.written.to_string()).unwrap_or_default(),
                    message: ReadProblem::Refused(message),
                })?;
                footprint.record(&section);
                self.tables.insert(section.table, section.chains);
            }
            Some((section, opened)) => {
                return Err(ReadError {
                    line: last_line.map_or(opened, |l| l.number),
                    text: last_line.map(|l| l.written.to_string()).unwrap_or_default(),
                    message: ReadProblem::MissingCommit {
                        table: section.table,
                        opened,
                        next: None,
                    },
                });
            }
            None => {}
        }
        if !matches!(mode, Mode::Apply) {
            self.family = family.family();
        }
        Ok(footprint)
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

/// The error for a line whose family contradicts an earlier line's.
fn mixed(line: &Numbered, conflict: Box<FamilyConflict>) -> ReadError {
    ReadError {
        line: line.number,
        text: line.written.to_string(),
        message: ReadProblem::MixedFamilies(conflict),
    }
}

impl<R> RuleSet<R> {
    /// The IP family the text read says it is for ([`RuleSet::read`],
    /// [`RuleSet::read_rules_listing`]): the tool of its header comment
    /// (`# Generated by ip6tables-save ...`), else the family of its address
    /// literals; `None` when it says neither, and for payloads applied with
    /// [`RuleSet::apply`], whose family is the caller's to know.
    pub fn family(&self) -> Option<IpFamily> {
        self.family
    }

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
    use crate::read::Shape;

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
        assert!(deleted.is_err_and(|e| {
            e.message
                .to_string()
                .contains("still referenced by \"-A A -j B\"")
        }));
        let missing = set.apply("*nat\n-A A -j MISSING\nCOMMIT\n");
        assert!(missing.is_err_and(|e| e.message.to_string().contains("missing chain MISSING")));
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

    /// The error of reading `text` on its own: its line, and its display.
    fn read_error(text: &str) -> (usize, String) {
        match RuleSet::<String>::read(text) {
            Ok(_) => panic!("read:\n{text}"),
            Err(e) => (e.line, e.to_string()),
        }
    }

    const V4_RULES: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-A - [0:0]\n\
        -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SEP-A\n\
        -A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 192.168.0.10:6443\nCOMMIT\n";
    const V6_RULES: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SEP-A - [0:0]\n\
        -A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m tcp --dport 443 -j KUBE-SEP-A\n\
        -A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination [fd00::10]:6443\nCOMMIT\n";

    #[test]
    fn the_family_is_the_headers_or_the_addresses() {
        use chainsmith_model::IpFamily::{V4, V6};
        let header = |tool: &str| format!("# Generated by {tool} v1.8.9 on Mon Jan  1 00:00:00 2024\n");
        let cases = [
            (header("iptables-save") + V4_RULES, Some(V4)),
            (header("iptables-nft-save") + V4_RULES, Some(V4)),
            (header("iptables-legacy-save") + V4_RULES, Some(V4)),
            (header("ip6tables-save") + V6_RULES, Some(V6)),
            (header("ip6tables-nft-save") + V6_RULES, Some(V6)),
            (header("ip6tables-legacy-save") + V6_RULES, Some(V6)),
            (V4_RULES.to_string(), Some(V4)),
            (V6_RULES.to_string(), Some(V6)),
            (
                header("ip6tables-save") + "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
                Some(V6),
            ),
            (
                "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n".to_string(),
                None,
            ),
            (
                "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
                 *filter\nCOMMIT\n"
                    .to_string(),
                None,
            ),
        ];
        for (text, family) in cases {
            let set: RuleSet = RuleSet::read(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(set.family(), family, "{text}");
        }
        // A payload's family is its caller's: applying one neither records nor checks it.
        let mut set = RuleSet::new();
        set.apply(&(header("ip6tables-save") + V4_RULES))
            .expect("applied");
        assert_eq!(set.family(), None);
    }

    #[test]
    fn lines_of_different_families_are_refused() {
        let v6_header_v4_rules = format!("# Generated by ip6tables-save v1.8.9\n{V4_RULES}");
        assert_eq!(
            read_error(&v6_header_v4_rules),
            (
                5,
                "line 5 (`-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SEP-A`): \
                 line 1 says ip6tables-save but line 5 has IPv4 address 10.96.0.1 (-d 10.96.0.1/32)"
                    .to_string()
            )
        );
        let mixed_rules = V4_RULES.replace("192.168.0.10:6443", "[fd00::10]:6443");
        let (line, message) = read_error(&mixed_rules);
        assert_eq!(line, 5);
        assert!(
            message.ends_with(
                "line 4 has IPv4 address 10.96.0.1 (-d 10.96.0.1/32) but line 5 has IPv6 address \
                 fd00::10 (--to-destination [fd00::10]:6443)"
            ),
            "{message}"
        );
        // Two dumps of different tools run together.
        let both =
            "# Generated by iptables-save\n*filter\nCOMMIT\n# Generated by ip6tables-save\n*mangle\nCOMMIT\n";
        let (line, message) = read_error(both);
        assert_eq!(line, 4);
        assert!(
            message.contains("line 1 says iptables-save but line 4 says ip6tables-save"),
            "{message}"
        );
        let typed = RuleSet::<String>::read(both).expect_err("mixed");
        assert!(matches!(typed.message, ReadProblem::MixedFamilies(c) if (c.first_line, c.line) == (1, 4)));
    }

    #[test]
    fn a_table_without_commit_looks_truncated() {
        let (line, message) =
            read_error("*filter\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\n\n");
        assert_eq!(line, 5);
        assert_eq!(
            message,
            "line 5 (`-A KUBE-SERVICES -j RETURN`): the text ends inside table nat (from line 3) \
             without its COMMIT: it looks truncated"
        );
        let typed = RuleSet::<String>::read("*nat\n").expect_err("truncated");
        assert_eq!(
            typed.message,
            ReadProblem::MissingCommit {
                table: "nat".to_string(),
                opened: 1,
                next: None
            }
        );
        let (line, message) = read_error("*nat\n:A - [0:0]\n*filter\nCOMMIT\n");
        assert_eq!(line, 3);
        assert!(
            message.ends_with("table filter starts inside table nat (from line 1), which has no COMMIT"),
            "{message}"
        );
    }

    #[test]
    fn counters_and_comments_are_read_and_errors_quote_lines_as_written() {
        let dump = "# Generated by iptables-save v1.8.9 on Mon Jan  1 00:00:00 2024\n\
            # Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
            *nat\n:PREROUTING ACCEPT [3:180]\n:KUBE-SERVICES - [0:0]\n\
            [12:3456] -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            COMMIT\n# Completed on Mon Jan  1 00:00:00 2024\n";
        let set: RuleSet = RuleSet::read(dump).expect("dump");
        let prerouting = set.chain("nat", "PREROUTING").expect("PREROUTING");
        assert_eq!(prerouting.counters, (3, 180));
        assert_eq!(
            prerouting.rules,
            ["-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"]
        );
        assert_eq!(set.family(), Some(chainsmith_model::IpFamily::V4));
        let (line, message) = read_error("*nat\n:A - [0:0]\n  [5:300] -A MISSING -j A\nCOMMIT\n");
        assert_eq!(line, 3);
        assert_eq!(
            message,
            "line 3 (`[5:300] -A MISSING -j A`): chain MISSING does not exist in table nat"
        );
    }

    #[test]
    fn text_that_is_not_iptables_save_output_says_what_to_give() {
        let cases = [
            (
                "-P INPUT ACCEPT\n-N KUBE-SERVICES\n-A INPUT -j KUBE-SERVICES\n",
                1,
                Shape::RulesListing,
                "line 1 (`-P INPUT ACCEPT`): no `*table` line before it. This looks like `iptables -S` \
                 output, which holds one table without saying which: give `iptables-save` output, or \
                 say the table (e.g. --table nat)",
            ),
            (
                "-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-A\n",
                1,
                Shape::Grep,
                "line 1 (`-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-A`): no `*table` line before it. \
                 This looks like grep output (rules without their `*table`, chain lines and COMMIT): \
                 give the whole `iptables-save` output",
            ),
            (
                "dump.txt:-A KUBE-SERVICES -j KUBE-SVC-A\n",
                1,
                Shape::GrepPrefixed {
                    prefix: "dump.txt".to_string(),
                },
                "line 1 (`dump.txt:-A KUBE-SERVICES -j KUBE-SVC-A`): no `*table` line before it. It \
                 starts with `dump.txt:` as grep marks a match, so this looks like grep output: give \
                 the whole `iptables-save` output",
            ),
            (
                "12:-A KUBE-SERVICES -j KUBE-SVC-A\n",
                1,
                Shape::GrepPrefixed {
                    prefix: "12".to_string(),
                },
                "",
            ),
            (
                "dump.txt:3::KUBE-SERVICES - [0:0]\n",
                1,
                Shape::GrepPrefixed {
                    prefix: "dump.txt:3".to_string(),
                },
                "",
            ),
            (
                "Chain INPUT (policy ACCEPT)\ntarget     prot opt source               destination\n",
                1,
                Shape::Listing,
                "",
            ),
            ("table ip nat {\n}\n", 1, Shape::Nftables, ""),
            (
                "*nat\nCOMMIT\n-A KUBE-SERVICES -j X\n",
                3,
                Shape::Other,
                "line 3 (`-A KUBE-SERVICES -j X`): outside any table (the last one ended with COMMIT on \
                 line 2): each table starts with a `*name` line (`*filter`, `*nat`, ...)",
            ),
            ("COMMIT\n", 1, Shape::Other, ""),
        ];
        for (text, line, shape, message) in cases {
            let error = RuleSet::<String>::read(text).expect_err(text);
            assert_eq!(error.line, line, "{text}");
            assert!(
                matches!(&error.message, ReadProblem::OutsideTable { shape: s, .. } if *s == shape),
                "{text}: {error:?}"
            );
            if !message.is_empty() {
                assert_eq!(error.to_string(), message, "{text}");
            }
        }
    }

    #[test]
    fn rules_listings_are_read_with_their_table() {
        let listing = "-P PREROUTING DROP\n-P OUTPUT ACCEPT\n-N KUBE-SERVICES\n-N KUBE-SVC-A\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j KUBE-SVC-A -c 10 600\n";
        let set: RuleSet = RuleSet::read_rules_listing(listing, "nat").expect("listing");
        let prerouting = set.chain("nat", "PREROUTING").expect("PREROUTING");
        assert_eq!(prerouting.policy.as_deref(), Some("DROP"));
        assert_eq!(prerouting.rules.len(), 1);
        assert_eq!(
            rules(&set, "nat", "KUBE-SERVICES"),
            ["-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j KUBE-SVC-A -c 10 600"]
        );
        assert!(set.chain("nat", "KUBE-SVC-A").is_some_and(|c| c.rules.is_empty()));
        assert_eq!(set.family(), Some(chainsmith_model::IpFamily::V4));
        // `iptables -S CHAIN` of one user chain.
        let chain: RuleSet =
            RuleSet::read_rules_listing("-N KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-A\n", "nat")
                .expect("chain");
        assert_eq!(
            rules(&chain, "nat", "KUBE-SVC-A"),
            ["-A KUBE-SVC-A -j KUBE-SEP-A"]
        );

        let refused =
            |text: &str, table: &str| RuleSet::<String>::read_rules_listing(text, table).expect_err(text);
        let unknown = refused("-P INPUT ACCEPT\n", "nta");
        assert_eq!(unknown.message, ReadProblem::UnknownTable("nta".to_string()));
        assert_eq!(
            unknown.to_string(),
            "unknown table \"nta\": iptables has the tables filter, nat, mangle, raw and security"
        );
        assert_eq!(refused("*nat\n-P INPUT ACCEPT\nCOMMIT\n", "nat").line, 1);
        assert_eq!(refused("-P FORWARD ACCEPT\n", "nat").line, 1);
        assert_eq!(refused("-A MISSING -j ACCEPT\n", "filter").line, 1);
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
