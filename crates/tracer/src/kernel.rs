//! A packet's walk through the tables, as the kernel does it.
//!
//! The hooks, for the first packet of a connection:
//! - from outside: nat PREROUTING; then, by the (possibly translated)
//!   destination, filter INPUT and nat INPUT (local) or filter FORWARD and nat
//!   POSTROUTING;
//! - from the node: nat OUTPUT, filter OUTPUT, nat POSTROUTING, and, for a local
//!   destination, filter INPUT again as the packet comes back over `lo`.
//!
//! Packets of a known connection (state other than NEW) skip the nat table: the
//! kernel applies the translation chosen for the first packet.
//!
//! Inside a hook, rules are evaluated in order; a jump enters a chain and comes
//! back at its end or on RETURN; the end of a built-in chain applies its
//! policy. In nat, ACCEPT ends the hook without translation; DNAT/SNAT/MASQUERADE
//! translate and end it. MARK changes the mark and goes on. A `statistic` rule
//! forks the walk: with probability p it matches, with 1-p it does not, and both
//! branches go on independently; every branch is one [`Outcome`].
//!
//! A table or built-in chain missing from the ruleset (a dump of the nat table
//! alone) is walked as the kernel would hold it, empty with policy ACCEPT; the
//! trace says so in [`Trace::assumptions`], since the answer is only as good as
//! that guess about the node.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;

use chainsmith_model::IpFamily;
use serde::Serialize;

use crate::packet::{CtState, Node, Origin, Packet};
use crate::rule::{Match, ParsedRule, PortField, RecentAction, Target};
use crate::ruleset::{Chain, Ruleset};

/// Extension targets of other software that end a packet's walk through
/// the chain (a verdict or a translation of their own); the tracer does not
/// model them, and must not let a trace past one pass for the kernel's.
const ENDS_THE_WALK: [&str; 6] = ["NFQUEUE", "QUEUE", "TPROXY", "SYNPROXY", "REDIRECT", "NETMAP"];

/// At most this many branches of `statistic` forks are followed.
pub const MAX_BRANCHES: usize = 10_000;
/// Chains deeper than this are not entered (the kernel refuses loops; a dump
/// could still hold a deep chain of jumps).
const MAX_DEPTH: usize = 64;
/// Rule evaluations over the whole trace (every branch) before giving up.
/// Every branch walks from the start, so this bounds the time of a trace of
/// a dump whose forks multiply (many coin flips, or chains jumping several
/// times to the next): a few seconds.
const MAX_EVALUATIONS: usize = 5_000_000;
/// Bytes of recorded steps over the whole trace (every branch) before giving
/// up; each outcome keeps its whole path, so this bounds a trace's memory.
const MAX_PATH_BYTES: usize = 256 << 20;

/// The whole trace of one packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The packet traced.
    pub packet: Packet,
    /// One outcome per branch of the `statistic` choices (one if there are none).
    pub outcomes: Vec<Outcome>,
    /// What the tracer could not model (unknown matches or targets, missing
    /// chains, a packet of the wrong family, the branch bound), each once.
    pub warnings: Vec<String>,
    /// What the trace took for granted because the ruleset does not say (a
    /// table or built-in chain absent, taken as empty with policy ACCEPT),
    /// each once. Not warnings: the walk is exact given these.
    pub assumptions: Vec<String>,
}

impl Trace {
    /// The sum of the outcome probabilities (1 unless the branch bound was hit).
    pub fn total_probability(&self) -> f64 {
        self.outcomes.iter().map(|o| o.probability).sum()
    }
}

/// Where one branch of the walk ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The probability of this branch.
    pub probability: f64,
    /// What happens to the packet.
    pub verdict: Verdict,
    /// Whether the packet leaves masqueraded (MASQUERADE in nat POSTROUTING).
    pub masquerade: bool,
    /// The `--to-source` of an SNAT, if one applied.
    pub snat_source: Option<String>,
    /// The packet mark at the end.
    pub final_mark: u32,
    /// The `--to-destination` of the DNAT chosen, if any.
    pub nat_destination: Option<String>,
    /// The `-m recent --set` lists the connection adds its source address to
    /// (session affinity recorded for later connections).
    pub affinity_set: Vec<String>,
    /// Every chain entered and every rule that matched, in order.
    pub path: Vec<Step>,
}

impl Outcome {
    /// One line: `DNAT to 10.180.0.1:80, masquerade, then ACCEPT (p=0.5)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(to) = &self.nat_destination {
            parts.push(format!("DNAT to {to}"));
        }
        if self.masquerade {
            parts.push("masquerade".to_string());
        }
        if let Some(to) = &self.snat_source {
            parts.push(format!("SNAT to {to}"));
        }
        if !self.affinity_set.is_empty() {
            parts.push(format!("affinity recorded in {}", self.affinity_set.join(", ")));
        }
        let verdict = match self.verdict {
            Verdict::Accept => "ACCEPT",
            Verdict::Pass => "no rule decides: passes",
            Verdict::Drop => "DROP",
            Verdict::Reject => "REJECT",
        };
        if parts.is_empty() {
            format!("{verdict} (p={})", self.probability)
        } else {
            format!("{}, then {verdict} (p={})", parts.join(", "), self.probability)
        }
    }
}

/// The fate of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let through, and at least one filter ACCEPT rule said so.
    Accept,
    /// Let through without any filter rule deciding (built-in policies ACCEPT):
    /// the packet passes, translated if a DNAT matched.
    Pass,
    /// Dropped (a DROP rule or a DROP policy).
    Drop,
    /// Rejected (a REJECT rule).
    Reject,
}

/// One thing that happened on the walk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The table.
    pub table: String,
    /// The chain.
    pub chain: String,
    /// The rule's 1-based position in the chain (`None` for entering a chain,
    /// its end or its policy).
    pub rule_index: Option<usize>,
    /// The rule as written.
    pub rule: Option<String>,
    /// The rule's comment.
    pub comment: Option<String>,
    /// What it did.
    pub action: Action,
    /// For a `statistic` rule: the chance of what happened here (p when the
    /// rule matched, 1-p when it did not).
    pub probability: Option<f64>,
    /// For [`Action::EndOfChain`] and [`Action::Return`]: the chain the walk
    /// goes back to (after a `-g`, the caller of the chain that went there);
    /// `None` when it leaves the built-in chain, whose policy then applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_to: Option<String>,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// The hook entered this built-in chain.
    Enter,
    /// The hook's built-in chain is not in the ruleset: taken as empty with
    /// policy ACCEPT (see [`Trace::assumptions`]).
    Absent,
    /// Jumped to a chain.
    Jump {
        /// The chain.
        to: String,
    },
    /// Went to a chain (`-g`).
    Goto {
        /// The chain.
        to: String,
    },
    /// RETURN to the calling chain.
    Return,
    /// The end of a user chain: back to the calling chain.
    EndOfChain,
    /// The end of a built-in chain: its policy applies.
    Policy {
        /// `ACCEPT` or `DROP`.
        policy: String,
    },
    /// Matched, no target (a comment-only rule).
    Matched,
    /// A `statistic` rule that did not match on this branch.
    NotTaken,
    /// MARK changed the mark.
    Mark {
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
    /// DNAT rewrote the destination; the nat hook ends.
    Dnat {
        /// `--to-destination`.
        to: String,
    },
    /// SNAT rewrote the source; the nat hook ends.
    Snat {
        /// `--to-source`.
        to: String,
    },
    /// MASQUERADE; the nat hook ends.
    Masquerade,
    /// ACCEPT: the hook ends, the packet goes on.
    Accept,
    /// DROP: the packet ends here.
    Drop,
    /// REJECT: the packet ends here.
    Reject,
    /// A target the tracer does not model; the walk went on as if it did nothing.
    Unmodelled {
        /// The target as written.
        target: String,
    },
}

/// Traces a packet through a ruleset on a node; see the module documentation.
pub fn trace(ruleset: &Ruleset, packet: &Packet, node: &Node) -> Trace {
    let mut warnings = Warnings::default();
    let mut assumptions = Warnings::default();
    if let Some(family) = ruleset.family() {
        for ip in [packet.src, packet.dst] {
            if IpFamily::of(&ip) != family {
                warnings.push(format!(
                    "{ip} is not an {family} address; the ruleset is for {family}"
                ));
            }
        }
    }
    if packet.conntrack != CtState::New {
        warnings.push(format!(
            "state {}: the nat table is consulted only for the first packet of a connection; \
             its translation is not known here, so nat is skipped",
            packet.conntrack.as_iptables()
        ));
    }
    let mut outcomes = Vec::new();
    // Branches still to walk, last found first: the answers of an earlier
    // branch up to one fork, with that fork answered `false` instead (`None`:
    // the first branch, which answers every fork `true`). Shared, so a branch
    // with many forks is not copied once per fork.
    let mut pending: Vec<(Rc<[bool]>, Option<usize>)> = vec![(Rc::from([]), None)];
    let mut budget = Budget {
        evaluations: MAX_EVALUATIONS,
        path_bytes: MAX_PATH_BYTES,
    };
    let mut stopped = false;
    while let Some((decided, flip)) = pending.pop() {
        if budget.evaluations == 0 || budget.path_bytes == 0 {
            stopped = true;
            break;
        }
        let prefix = match flip {
            Some(i) => {
                let mut prefix = decided[..=i].to_vec();
                prefix[i] = false;
                prefix
            }
            None => decided.to_vec(),
        };
        let prefix_len = prefix.len();
        let mut run = Run::new(ruleset, packet, node, prefix, budget);
        let verdict = run.run();
        budget = run.budget;
        for warning in run.warnings.list.drain(..) {
            warnings.push(warning);
        }
        for assumption in run.assumptions.list.drain(..) {
            assumptions.push(assumption);
        }
        // Only MAX_BRANCHES outcomes are listed, so only that many more
        // branches are ever taken from the top of the stack: the rest (its
        // bottom, and this branch's earliest forks) need not be kept.
        let room = MAX_BRANCHES - outcomes.len() - 1;
        let decided: Rc<[bool]> = Rc::from(std::mem::take(&mut run.decisions));
        let first = prefix_len.max(decided.len().saturating_sub(room));
        stopped |= first > prefix_len;
        pending.extend((first..decided.len()).map(|i| (Rc::clone(&decided), Some(i))));
        if pending.len() > room {
            stopped = true;
            pending.drain(..pending.len() - room);
        }
        outcomes.push(Outcome {
            probability: run.probability,
            verdict,
            masquerade: run.masquerade,
            snat_source: run.snat_source,
            final_mark: run.mark,
            nat_destination: run.nat_destination,
            affinity_set: run.affinity_set,
            path: run.path,
        });
    }
    if stopped {
        let message = if outcomes.len() == MAX_BRANCHES {
            format!("stopped after {MAX_BRANCHES} branches of statistic choices")
        } else {
            format!("stopped after {MAX_EVALUATIONS} rule evaluations or {MAX_PATH_BYTES} bytes of steps")
        };
        warnings.push(format!("{message}; the outcomes listed do not cover every case"));
    }
    Trace {
        packet: packet.clone(),
        outcomes,
        warnings: warnings.list,
        assumptions: assumptions.list,
    }
}

/// What is left of a trace's limits ([`MAX_EVALUATIONS`], [`MAX_PATH_BYTES`]).
#[derive(Debug, Clone, Copy)]
struct Budget {
    evaluations: usize,
    path_bytes: usize,
}

/// Warnings in the order first given, each once (a rule met on every branch
/// warns on every branch).
#[derive(Debug, Default)]
struct Warnings {
    list: Vec<String>,
    seen: BTreeSet<String>,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if !self.seen.contains(&warning) {
            self.seen.insert(warning.clone());
            self.list.push(warning);
        }
    }
}

/// How a hook ended.
enum HookEnd {
    /// The packet goes on (ACCEPT, a translation, or an ACCEPT policy).
    Continue,
    /// DROP.
    Drop,
    /// REJECT.
    Reject,
}

/// How a rule evaluated.
enum Eval {
    NoMatch,
    Match,
    /// Matched on a `statistic` branch with this chance.
    MatchWithChance(f64),
    /// Did not match on a `statistic` branch with this chance.
    NoMatchWithChance(f64),
}

/// One branch: a walk with fixed answers to the `statistic` choices.
struct Run<'a> {
    ruleset: &'a Ruleset,
    packet: &'a Packet,
    node: &'a Node,
    /// Answers to the forks met so far (a given prefix, then `true` for new ones).
    decisions: Vec<bool>,
    next_decision: usize,
    probability: f64,
    dst: IpAddr,
    dport: u16,
    mark: u32,
    dnat: bool,
    snat: bool,
    in_interface: Option<String>,
    recent: Vec<String>,
    affinity_set: Vec<String>,
    masquerade: bool,
    snat_source: Option<String>,
    nat_destination: Option<String>,
    accepted_by_rule: bool,
    /// What the trace's limits leave for this branch and the ones after it.
    budget: Budget,
    path: Vec<Step>,
    warnings: Warnings,
    assumptions: Warnings,
}

impl<'a> Run<'a> {
    fn new(
        ruleset: &'a Ruleset,
        packet: &'a Packet,
        node: &'a Node,
        decisions: Vec<bool>,
        budget: Budget,
    ) -> Run<'a> {
        Run {
            ruleset,
            packet,
            node,
            decisions,
            next_decision: 0,
            probability: 1.0,
            dst: packet.dst,
            dport: packet.dport,
            mark: packet.mark,
            dnat: false,
            snat: false,
            in_interface: match packet.origin {
                Origin::FromOutside => packet.in_interface.clone(),
                Origin::FromNode => None,
            },
            recent: packet.recent.clone(),
            affinity_set: Vec::new(),
            masquerade: false,
            snat_source: None,
            nat_destination: None,
            accepted_by_rule: false,
            budget,
            path: Vec::new(),
            warnings: Warnings::default(),
            assumptions: Warnings::default(),
        }
    }

    fn run(&mut self) -> Verdict {
        let nat = self.packet.conntrack == CtState::New;
        let hooks: &[(&str, &str)] = match self.packet.origin {
            Origin::FromOutside => &[("nat", "PREROUTING")],
            Origin::FromNode => &[("nat", "OUTPUT"), ("filter", "OUTPUT"), ("nat", "POSTROUTING")],
        };
        for &(table, hook) in hooks {
            if let Some(verdict) = self.hook(nat, table, hook) {
                return verdict;
            }
        }
        let local = self.node.is_local(&self.dst);
        let rest: &[(&str, &str)] = match (self.packet.origin, local) {
            (Origin::FromOutside, true) => &[("filter", "INPUT"), ("nat", "INPUT")],
            (Origin::FromOutside, false) => &[("filter", "FORWARD"), ("nat", "POSTROUTING")],
            (Origin::FromNode, true) => {
                self.in_interface = Some("lo".to_string());
                &[("filter", "INPUT")]
            }
            (Origin::FromNode, false) => &[],
        };
        for &(table, hook) in rest {
            if let Some(verdict) = self.hook(nat, table, hook) {
                return verdict;
            }
        }
        if self.accepted_by_rule {
            Verdict::Accept
        } else {
            Verdict::Pass
        }
    }

    /// Walks one hook; `Some` if the packet ends there.
    fn hook(&mut self, nat: bool, table: &str, hook: &str) -> Option<Verdict> {
        if table == "nat" && !nat {
            return None;
        }
        match self.walk(table, hook) {
            HookEnd::Continue => None,
            HookEnd::Drop => Some(Verdict::Drop),
            HookEnd::Reject => Some(Verdict::Reject),
        }
    }

    fn step(&mut self, table: &str, chain: &str, rule: Option<(usize, &ParsedRule)>, action: Action) {
        let text_bytes = rule.map_or(0, |(_, r)| {
            r.text.len() + r.comment.as_ref().map_or(0, String::len)
        });
        let bytes = std::mem::size_of::<Step>() + table.len() + chain.len() + text_bytes;
        self.budget.path_bytes = self.budget.path_bytes.saturating_sub(bytes);
        self.path.push(Step {
            table: table.to_string(),
            chain: chain.to_string(),
            rule_index: rule.map(|(i, _)| i + 1),
            rule: rule.map(|(_, r)| r.text.clone()),
            comment: rule.and_then(|(_, r)| r.comment.clone()),
            action,
            probability: None,
            back_to: None,
        });
    }

    /// Records where the last step (an end of chain or a RETURN) leads.
    fn set_last_back_to(&mut self, frames: &[(&Chain, usize)]) {
        if let Some(step) = self.path.last_mut() {
            step.back_to = frames.last().map(|(chain, _)| chain.name.clone());
        }
    }

    fn walk(&mut self, table: &str, hook: &str) -> HookEnd {
        let ruleset = self.ruleset;
        let Some(base) = ruleset.chain(table, hook) else {
            let absent = if ruleset.table_names().any(|t| t == table) {
                format!("chain {hook} is not in table {table}: taken as empty with policy ACCEPT")
            } else {
                format!(
                    "table {table} is not in the rules: its built-in chains are taken as empty with policy ACCEPT"
                )
            };
            self.assumptions.push(absent);
            self.step(table, hook, None, Action::Absent);
            return HookEnd::Continue;
        };
        self.step(table, hook, None, Action::Enter);
        let mut frames: Vec<(&'a Chain, usize)> = vec![(base, 0)];
        loop {
            let Some((chain, next)) = frames.last_mut() else {
                return self.policy(table, base);
            };
            let chain: &'a Chain = chain;
            let Some(rule) = chain.rules.get(*next) else {
                frames.pop();
                if frames.is_empty() {
                    return self.policy(table, base);
                }
                self.step(table, &chain.name, None, Action::EndOfChain);
                self.set_last_back_to(&frames);
                continue;
            };
            let index = *next;
            *next += 1;
            if self.budget.evaluations == 0 || self.budget.path_bytes == 0 {
                self.warnings.push(format!(
                    "gave up in {table} {hook}: the trace took {MAX_EVALUATIONS} rule evaluations \
                     or {MAX_PATH_BYTES} bytes of steps"
                ));
                return HookEnd::Continue;
            }
            self.budget.evaluations -= 1;
            let chance = match self.evaluate(rule, table) {
                Eval::NoMatch => continue,
                Eval::NoMatchWithChance(p) => {
                    self.step(table, &chain.name, Some((index, rule)), Action::NotTaken);
                    self.set_last_probability(p);
                    continue;
                }
                Eval::Match => None,
                Eval::MatchWithChance(p) => Some(p),
            };
            let here = Some((index, rule));
            let end = match &rule.target {
                Target::None => {
                    self.step(table, &chain.name, here, Action::Matched);
                    None
                }
                Target::Chain(to) | Target::Goto(to) => {
                    let goto = matches!(rule.target, Target::Goto(_));
                    let action = if goto {
                        Action::Goto { to: to.clone() }
                    } else {
                        Action::Jump { to: to.clone() }
                    };
                    self.step(table, &chain.name, here, action);
                    match ruleset.chain(table, to) {
                        Some(target) if frames.iter().any(|(entered, _)| std::ptr::eq(*entered, target)) => {
                            self.warnings.push(format!(
                                "a loop of jumps (the kernel refuses these): {to} not entered again from {}",
                                rule.text
                            ));
                        }
                        Some(target) if frames.len() < MAX_DEPTH => {
                            if goto {
                                frames.pop();
                            }
                            frames.push((target, 0));
                        }
                        Some(_) => self.warnings.push(format!(
                            "chains nested deeper than {MAX_DEPTH}: {to} not entered from {}",
                            rule.text
                        )),
                        None => self.warnings.push(format!(
                            "no chain {to} in table {table} (an extension target?): {} did nothing",
                            rule.text
                        )),
                    }
                    None
                }
                Target::Return => {
                    self.step(table, &chain.name, here, Action::Return);
                    frames.pop();
                    self.set_last_back_to(&frames);
                    None
                }
                Target::Accept => {
                    self.step(table, &chain.name, here, Action::Accept);
                    if table == "filter" {
                        self.accepted_by_rule = true;
                    }
                    Some(HookEnd::Continue)
                }
                Target::Drop => {
                    self.step(table, &chain.name, here, Action::Drop);
                    Some(HookEnd::Drop)
                }
                Target::Reject => {
                    self.step(table, &chain.name, here, Action::Reject);
                    Some(HookEnd::Reject)
                }
                Target::Mark { value, mask } => {
                    let from = self.mark;
                    self.mark = (from & !mask) ^ value;
                    self.step(table, &chain.name, here, Action::Mark { from, to: self.mark });
                    None
                }
                Target::Dnat { to } => {
                    self.step(table, &chain.name, here, Action::Dnat { to: to.clone() });
                    match parse_nat_address(to) {
                        Some((ip, port)) => {
                            self.dst = ip;
                            if let Some(port) = port {
                                self.dport = port;
                            }
                        }
                        None => self
                            .warnings
                            .push(format!("cannot read --to-destination {to:?} in {}", rule.text)),
                    }
                    self.dnat = true;
                    self.nat_destination = Some(to.clone());
                    Some(HookEnd::Continue)
                }
                Target::Snat { to } => {
                    self.step(table, &chain.name, here, Action::Snat { to: to.clone() });
                    self.snat = true;
                    self.snat_source = Some(to.clone());
                    Some(HookEnd::Continue)
                }
                Target::Masquerade { .. } => {
                    self.step(table, &chain.name, here, Action::Masquerade);
                    self.snat = true;
                    self.masquerade = true;
                    Some(HookEnd::Continue)
                }
                Target::Unknown(target) => {
                    self.step(
                        table,
                        &chain.name,
                        here,
                        Action::Unmodelled {
                            target: target.clone(),
                        },
                    );
                    let name = target.split_whitespace().next().unwrap_or_default();
                    let warning = if ENDS_THE_WALK.contains(&name) {
                        format!(
                            "target {name} ends the packet's walk in the kernel (it queues, redirects or \
                             answers it) and is not modelled: what follows it here is not what the kernel \
                             does: {}",
                            rule.text
                        )
                    } else {
                        format!(
                            "target {target:?} is not modelled; the walk goes on as if it did nothing: {}",
                            rule.text
                        )
                    };
                    self.warnings.push(warning);
                    None
                }
            };
            if let Some(p) = chance {
                self.set_last_probability(p);
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    fn set_last_probability(&mut self, p: f64) {
        if let Some(step) = self.path.last_mut() {
            step.probability = Some(p);
        }
    }

    fn policy(&mut self, table: &str, base: &Chain) -> HookEnd {
        let policy = base.policy.clone().unwrap_or_else(|| "ACCEPT".to_string());
        let end = match policy.as_str() {
            "DROP" => HookEnd::Drop,
            "ACCEPT" => HookEnd::Continue,
            other => {
                self.warnings
                    .push(format!("policy {other} of {table} {} read as ACCEPT", base.name));
                HookEnd::Continue
            }
        };
        self.step(table, &base.name, None, Action::Policy { policy });
        end
    }

    /// The answer to the next fork with probability `p` of matching.
    fn decide(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let decision = match self.decisions.get(self.next_decision) {
            Some(&d) => d,
            None => {
                self.decisions.push(true);
                true
            }
        };
        self.next_decision += 1;
        self.probability *= if decision { p } else { 1.0 - p };
        decision
    }

    /// Header matches first (the kernel checks them before any module), then
    /// modules in order; the first that fails ends the evaluation, so a
    /// `statistic` fork or a `recent --set` only happens when reached.
    fn evaluate(&mut self, rule: &ParsedRule, table: &str) -> Eval {
        let ordered = rule
            .matches
            .iter()
            .filter(|m| m.is_header())
            .chain(rule.matches.iter().filter(|m| !m.is_header()));
        let mut chance = None;
        for m in ordered {
            let matched = match m {
                Match::Statistic { probability } => {
                    let p = *probability;
                    if self.decide(p) {
                        chance = (p < 1.0).then_some(p);
                        true
                    } else {
                        return if p > 0.0 {
                            Eval::NoMatchWithChance(1.0 - p)
                        } else {
                            Eval::NoMatch
                        };
                    }
                }
                Match::Recent {
                    name,
                    action,
                    negated,
                    ..
                } => {
                    let present = self.recent.contains(name);
                    let result = match action {
                        RecentAction::Check | RecentAction::Update => present,
                        RecentAction::Set => true,
                        RecentAction::Remove => present,
                    };
                    match action {
                        RecentAction::Set | RecentAction::Update => {
                            if !present {
                                self.recent.push(name.clone());
                            }
                            if !self.affinity_set.contains(name) {
                                self.affinity_set.push(name.clone());
                            }
                        }
                        RecentAction::Remove => self.recent.retain(|r| r != name),
                        RecentAction::Check => {}
                    }
                    result != *negated
                }
                other => match self.simple_match(other, rule, table) {
                    Some(matched) => matched,
                    None => return Eval::NoMatch,
                },
            };
            if !matched {
                return Eval::NoMatch;
            }
        }
        match chance {
            Some(p) => Eval::MatchWithChance(p),
            None => Eval::Match,
        }
    }

    /// A match without side effects; `None` when it cannot be decided (the
    /// rule is then taken as not matching, with a warning).
    fn simple_match(&mut self, m: &Match, rule: &ParsedRule, table: &str) -> Option<bool> {
        let packet = self.packet;
        let result = match m {
            Match::Source { net, negated } => net.contains(&packet.src) != *negated,
            Match::Destination { net, negated } => net.contains(&self.dst) != *negated,
            Match::Protocol { name, negated } => {
                (name == "all" || name == packet.protocol.as_iptables()) != *negated
            }
            Match::InInterface { name, negated } => {
                if self.in_interface.is_none() && packet.origin == Origin::FromOutside {
                    self.warnings.push(format!(
                        "the packet's input interface is not given: taken as none of the names in \
                         \"-i {name}\" ({})",
                        rule.text
                    ));
                }
                let iface = self.in_interface.as_deref();
                iface.is_some_and(|iface| interface_matches(name, iface)) != *negated
            }
            Match::OutInterface { name, negated } => {
                self.warnings.push(format!(
                    "the output interface is not modelled: taken as none of the names in \"-o {name}\" ({})",
                    rule.text
                ));
                *negated
            }
            Match::DestinationPort { range, negated } => range.contains(self.dport) != *negated,
            Match::SourcePort { range, negated } => match packet.sport {
                Some(sport) => range.contains(sport) != *negated,
                None => {
                    self.warnings.push(format!(
                        "the packet's source port is not given; rule taken as not matching: {}",
                        rule.text
                    ));
                    return None;
                }
            },
            Match::Multiport {
                field,
                ranges,
                negated,
            } => {
                let dport = self.dport;
                let hit = |port: u16| ranges.iter().any(|r| r.contains(port));
                let found = match (field, packet.sport) {
                    (PortField::Destination, _) => hit(dport),
                    (PortField::Source, Some(sport)) => hit(sport),
                    (PortField::Either, sport) if hit(dport) || sport.is_some_and(hit) => true,
                    (PortField::Either, Some(_)) => false,
                    (_, None) => {
                        self.warnings.push(format!(
                            "the packet's source port is not given; rule taken as not matching: {}",
                            rule.text
                        ));
                        return None;
                    }
                };
                found != *negated
            }
            Match::AddrTypeLocal { source, negated } => {
                let ip = if *source { packet.src } else { self.dst };
                self.node.is_local(&ip) != *negated
            }
            Match::Mark { value, mask, negated } => (self.mark & mask == *value) != *negated,
            Match::Conntrack { states, negated } => {
                let state = packet.conntrack.as_iptables();
                let any = states
                    .iter()
                    .any(|s| s == state || (s == "DNAT" && self.dnat) || (s == "SNAT" && self.snat));
                any != *negated
            }
            Match::Nfacct { .. } => true,
            Match::PhysdevIsIn { negated } => packet.bridged_in != *negated,
            Match::Unknown(text) => {
                self.warnings.push(format!(
                    "match {text:?} is not modelled; rule taken as not matching ({table}): {}",
                    rule.text
                ));
                return None;
            }
            Match::Statistic { .. } | Match::Recent { .. } => return None,
        };
        Some(result)
    }
}

fn interface_matches(pattern: &str, iface: &str) -> bool {
    match pattern.strip_suffix('+') {
        Some(prefix) => iface.starts_with(prefix),
        None => pattern == iface,
    }
}

/// `10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1`, `fd00::1`, the first address of
/// `10.0.0.1-10.0.0.9:80-90`.
pub(crate) fn parse_nat_address(text: &str) -> Option<(IpAddr, Option<u16>)> {
    let first_port = |p: &str| p.split('-').next().and_then(|p| p.parse::<u16>().ok());
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(first_port(port)?),
            None => None,
        };
        let ip = ip.split('-').next()?;
        return Some((chainsmith_model::parse_ip_sloppy(ip)?, port));
    }
    if text.matches(':').count() > 1 {
        let ip = text.split('-').next()?;
        return Some((chainsmith_model::parse_ip_sloppy(ip)?, None));
    }
    let (ip, port) = match text.split_once(':') {
        Some((ip, port)) => (ip, Some(first_port(port)?)),
        None => (text, None),
    };
    let ip = ip.split('-').next()?;
    Some((chainsmith_model::parse_ip_sloppy(ip)?, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let cases = [
            ("10.180.0.1:80", ip("10.180.0.1").map(|i| (i, Some(80)))),
            ("[fd00::1]:80", ip("fd00::1").map(|i| (i, Some(80)))),
            ("10.0.0.1", ip("10.0.0.1").map(|i| (i, None))),
            ("fd00::1", ip("fd00::1").map(|i| (i, None))),
            ("10.0.0.1-10.0.0.9:80-90", ip("10.0.0.1").map(|i| (i, Some(80)))),
            ("nonsense", None),
            ("10.0.0.1:x", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_nat_address(text), want, "{text}");
        }
    }

    #[test]
    fn interface_wildcards() {
        assert!(interface_matches("veth+", "veth1234"));
        assert!(interface_matches("cni0", "cni0"));
        assert!(!interface_matches("cni0", "cni01"));
        assert!(interface_matches("+", "eth0"));
    }
}

#[cfg(test)]
mod assumption_tests {
    use super::*;
    use chainsmith_model::Protocol;

    const NAT_ONLY: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-1
-A KUBE-SVC-A -j KUBE-SEP-2
-A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.244.1.1:8080
-A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.244.2.1:8080
COMMIT
";

    fn packet(dst: &str) -> Packet {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        Packet::new(ip("10.244.3.3"), ip(dst), Protocol::Tcp, 80, Origin::FromOutside)
    }

    fn dump(text: &str) -> Ruleset {
        Ruleset::from_dump(text).expect("dump")
    }

    #[test]
    fn an_absent_table_is_assumed_empty_and_said_once() {
        let t = trace(&dump(NAT_ONLY), &packet("10.96.0.10"), &Node::default());
        assert_eq!(t.outcomes.len(), 2);
        assert_eq!(
            t.assumptions,
            ["table filter is not in the rules: its built-in chains are taken as empty with policy ACCEPT"]
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        for outcome in &t.outcomes {
            assert_eq!(outcome.verdict, Verdict::Pass);
            let absent: Vec<_> = outcome
                .path
                .iter()
                .filter(|s| s.action == Action::Absent)
                .map(|s| (s.table.as_str(), s.chain.as_str()))
                .collect();
            assert_eq!(absent, [("filter", "FORWARD")]);
        }
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["assumptions"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn tables_present_leave_nothing_to_assume() {
        let both = format!(
            "{NAT_ONLY}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        );
        let t = trace(&dump(&both), &packet("10.96.0.10"), &Node::default());
        assert!(t.assumptions.is_empty(), "{:?}", t.assumptions);
        assert!(t.outcomes.iter().all(|o| o.verdict == Verdict::Drop));
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["assumptions"], serde_json::json!([]));
    }

    #[test]
    fn the_end_of_a_chain_and_return_name_where_the_walk_goes_back_to() {
        let text = "*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -j KUBE-NODEPORTS
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -j RETURN
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -j RETURN
COMMIT
";
        let t = trace(&dump(text), &packet("192.0.2.1"), &Node::default());
        let back: Vec<_> = t.outcomes[0]
            .path
            .iter()
            .filter(|s| matches!(s.action, Action::EndOfChain | Action::Return))
            .map(|s| (s.chain.as_str(), s.back_to.as_deref()))
            .collect();
        assert_eq!(
            back,
            [
                ("KUBE-NODEPORTS", Some("KUBE-SERVICES")),
                ("KUBE-SERVICES", Some("PREROUTING")),
                ("FORWARD", None),
                ("KUBE-POSTROUTING", Some("POSTROUTING")),
            ]
        );
        assert!(t.assumptions.is_empty(), "{:?}", t.assumptions);
    }
}
