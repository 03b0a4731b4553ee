//! Tables, chains and parsed rules: what the kernel holds.
//!
//! Reading is `chainsmith_iptables::RuleSet`'s, with the kernel's rules for
//! `iptables-restore --noflush` (sections applied whole, chain lines, `-A`,
//! `-I`, `-D`, `-N`, `-F`, `-P`, `-X`, and the check that no jump is left
//! without its chain). The tracer only adds what a rule means: each rule is
//! kept as a [`ParsedRule`], so a `-D` or a built-in jump matches a rule in any
//! spelling (`iptables -C`). A dump is read as written ([`Ruleset::from_dump`]):
//! a jump to a name that is no chain is kept (it may be an extension target the
//! tracer does not know), and the trace reports it.

use chainsmith_iptables::{BuiltinJump, RuleLine, RuleSet};
use chainsmith_model::IpFamily;

use crate::error::TraceError;
use crate::rule::ParsedRule;

/// One chain, its rules parsed.
pub type Chain = chainsmith_iptables::Chain<ParsedRule>;

impl RuleLine for ParsedRule {
    fn from_line(line: String) -> Result<ParsedRule, String> {
        ParsedRule::parse(&line).map_err(|e| e.to_string())
    }

    fn line(&self) -> &str {
        &self.text
    }

    fn same_rule(&self, other: &ParsedRule) -> bool {
        ParsedRule::same_rule(self, other)
    }
}

/// The tables, chains and rules a packet is traced through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    rules: RuleSet<ParsedRule>,
    family: Option<IpFamily>,
}

impl Ruleset {
    /// An empty ruleset: every built-in chain is empty with policy ACCEPT.
    pub fn new() -> Ruleset {
        Ruleset::default()
    }

    /// Reads an `iptables-save` dump (with or without `-c` counters) or restore
    /// text.
    pub fn from_dump(text: &str) -> Result<Ruleset, TraceError> {
        Ok(Ruleset {
            rules: RuleSet::read(text)?,
            family: None,
        })
    }

    /// Applies one `iptables-restore --noflush` payload on top of what is there
    /// (see the module documentation). On error, sections committed before the
    /// failing one keep their effect, as with the real tool.
    pub fn apply(&mut self, payload: &str) -> Result<(), TraceError> {
        Ok(self.rules.apply(payload)?)
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
            let table = jump.table.as_str();
            self.rules.ensure_chain(table, jump.to);
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
            let from = &mut self.rules.ensure_chain(table, jump.from).rules;
            if !from.iter().any(|r| r.same_rule(&rule)) {
                from.insert(0, rule);
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
        self.rules.chain(table, chain)
    }

    /// The names of the tables, sorted.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.rules.table_names()
    }

    /// The chains of a table, sorted by name.
    pub fn chains(&self, table: &str) -> impl Iterator<Item = &Chain> {
        self.rules.chains(table)
    }

    /// The number of rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.rules.rule_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Target;

    fn texts(ruleset: &Ruleset, table: &str, chain: &str) -> Vec<String> {
        ruleset
            .chain(table, chain)
            .map(|c| c.rules.iter().map(|r| r.text.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn rules_are_deleted_in_any_spelling() {
        let mut rules = Ruleset::new();
        rules
            .apply("*nat\n:A - [0:0]\n-A A -d 10.0.0.1 -m comment --comment \"x y\" -j MARK --or-mark 0x4000\n-A A -j RETURN\nCOMMIT\n")
            .expect("first");
        // As iptables-save prints the same rule: `iptables -D` finds it.
        rules
            .apply("*nat\n-D A -d 10.0.0.1/32 -m comment --comment \"x y\" -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n")
            .expect("deleted");
        assert_eq!(texts(&rules, "nat", "A"), ["-A A -j RETURN"]);
        let refused = rules.apply("*nat\n-D A -d 10.0.0.2 -j RETURN\nCOMMIT\n");
        assert!(matches!(refused, Err(TraceError::Load { line: 2, .. })));
    }

    #[test]
    fn dumps_keep_jumps_to_unknown_targets() {
        let dump = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j SOME-EXTENSION\nCOMMIT\n";
        let rules = Ruleset::from_dump(dump).expect("dump");
        assert_eq!(
            texts(&rules, "filter", "FORWARD"),
            ["-A FORWARD -j SOME-EXTENSION"]
        );
        // A payload is held to the kernel's check.
        assert!(Ruleset::new().apply(dump).is_err());
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
