//! The vocabulary of emitted rules.
//!
//! A [`Rule`] borrows everything it prints from the plan, so emitting one costs a
//! few words on the stack. Each [`Arg`] stands for a fixed sequence of
//! iptables-restore tokens; the renderer owns the spelling, a layout owns the
//! order (which is upstream's argument order, so the text comes out identical).

use chainsmith_model::Protocol;

/// The table a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `*filter`.
    Filter,
    /// `*nat`.
    Nat,
}

impl Table {
    /// The table name as iptables spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// One match of a rule, in the token order upstream writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// `-m comment --comment TEXT`: the three parts concatenated (empty parts
    /// allowed); the renderer quotes the text when it contains a space.
    Comment([&'a str; 3]),
    /// `-m P -p P`.
    Protocol(Protocol),
    /// `[!] -s ADDR` (address or CIDR text).
    Source {
        /// The address or network text.
        addr: &'a str,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -d ADDR`.
    Destination {
        /// The address or network text.
        addr: &'a str,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -i NAME` (a trailing `+` is an iptables wildcard).
    InInterface {
        /// The interface name or prefix with `+`.
        name: &'a str,
        /// Negated with `!`.
        negated: bool,
    },
    /// `--dport N`.
    DestinationPort(u16),
    /// `-m addrtype --src-type LOCAL`.
    SourceTypeLocal,
    /// `-m addrtype --dst-type LOCAL`.
    DestinationTypeLocal,
    /// `-m addrtype ! --src-type LOCAL` (v1.10's external-IP rule).
    SourceTypeNotLocal,
    /// `-m physdev ! --physdev-is-in`: not bridged in from a local bridge port
    /// (v1.10's external-IP rule).
    NotBridgedIn,
    /// `-m statistic --mode random --probability 1/one_in` (printed `%0.10f`).
    RandomProbability {
        /// The denominator: the number of endpoints not yet passed.
        one_in: usize,
    },
    /// `-m statistic --mode random --probability 1/one_in` printed `%0.5f`, as
    /// kube-proxy wrote it until 2019.
    RandomProbabilityFiveDecimals {
        /// The denominator: the number of endpoints not yet passed.
        one_in: usize,
    },
    /// `-m recent --name NAME --rcheck --seconds T --reap`.
    RecentCheck {
        /// The recent list (the endpoint chain's name).
        name: &'a str,
        /// Affinity timeout.
        seconds: u32,
    },
    /// `-m recent --name NAME --set`.
    RecentSet {
        /// The recent list (the endpoint chain's name).
        name: &'a str,
    },
    /// `-m nfacct --nfacct-name NAME`.
    Nfacct(&'a str),
    /// `-m conntrack [!] --ctstate STATES`.
    ConntrackState {
        /// Comma-separated states.
        states: &'a str,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m mark [!] --mark MARK` (`MARK` is `value/mask`).
    Mark {
        /// `value/mask`.
        mark: &'a str,
        /// Negated with `!`.
        negated: bool,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// No `-j` at all (a comment-only rule, e.g. the end of a `KUBE-FW-` chain).
    None,
    /// `-j NAME`: a chain or a built-in verdict (`ACCEPT`, `DROP`, `REJECT`, `RETURN`).
    Jump(&'a str),
    /// `-j MARK --or-mark M`.
    MarkOr(&'a str),
    /// `-j MARK --xor-mark M`.
    MarkXor(&'a str),
    /// `-j MARK --set-xmark VALUE/MASK`.
    MarkSet(&'a str),
    /// `-j MASQUERADE [--random-fully]`.
    Masquerade {
        /// Append `--random-fully`.
        random_fully: bool,
    },
    /// `-j DNAT --to-destination ENDPOINT`.
    Dnat(&'a str),
}

impl<'a> Target<'a> {
    /// The chain or verdict jumped to, if any (`MARK`, `MASQUERADE`, `DNAT` are
    /// reported as such).
    pub fn jump_name(&self) -> Option<&'a str> {
        match self {
            Target::None => None,
            Target::Jump(name) => Some(name),
            Target::MarkOr(_) | Target::MarkXor(_) | Target::MarkSet(_) => Some("MARK"),
            Target::Masquerade { .. } => Some("MASQUERADE"),
            Target::Dnat(_) => Some("DNAT"),
        }
    }
}

/// One `-A CHAIN ...` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// The chain appended to.
    pub chain: &'a str,
    /// Matches, in order.
    pub args: &'a [Arg<'a>],
    /// The target.
    pub target: Target<'a>,
}

/// Receives emitted rules.
pub trait RuleSink {
    /// Called once per rule, in generation order.
    fn rule(&mut self, rule: &Rule<'_>);
}

impl<F: FnMut(&Rule<'_>)> RuleSink for F {
    fn rule(&mut self, rule: &Rule<'_>) {
        self(rule)
    }
}

/// Emits one rule; every rule a layout writes goes through here.
#[inline(always)]
pub fn emit(sink: &mut impl RuleSink, chain: &str, args: &[Arg<'_>], target: Target<'_>) {
    sink.rule(&Rule { chain, args, target });
}

/// Counts rules (the `sync_proxy_rules_iptables_*` metrics count lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountingSink {
    /// Rules seen.
    pub rules: usize,
}

impl RuleSink for CountingSink {
    fn rule(&mut self, _rule: &Rule<'_>) {
        self.rules += 1;
    }
}
