//! A packet's walk through the table, as the kernel does it.
//!
//! The hooks, for a packet arriving from a neighbour: prerouting; then, by
//! the (possibly translated) destination, input (local) or forward and
//! postrouting. For a packet the node sends: output, postrouting, and for a
//! local destination prerouting and input again as the packet comes back in
//! over `lo` (its translation already decided, so without nat chains).
//!
//! In each hook the table's base chains run in priority order (ties by name).
//! An accept ends only that base chain: the next base chain of the hook still
//! sees the packet, while drop and reject end the packet. A base chain's end
//! accepts (kube-proxy's chains have no policy). Nat chains only see the first
//! packet of a connection, and once one of them translated in a hook (a DNAT
//! in prerouting/output, a masquerade in postrouting/input) the later ones of
//! that direction are skipped: the kernel keeps one translation per
//! connection and direction.
//!
//! `numgen random mod N` forks the walk into N branches of probability 1/N;
//! every branch is walked from the start with its choices fixed, and each
//! ends in one [`Outcome`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use chainsmith_nftables::{Family, Hook, Table};
use serde::{Serialize, Serializer};

use crate::error::TraceError;
use crate::packet::{CtState, Node, Origin, Packet};
use crate::rule::{Match, ParsedRule, Selector, Stmt, Value, VerdictStmt, family_of, key_text, parse_rule};
use crate::set::{CompiledSet, KeyType};

/// At most this many `numgen` branches are walked for one packet.
pub const MAX_BRANCHES: usize = 10_000;
/// Jumps nested deeper than this end the walk with an error; the kernel's own
/// limit is far lower, so a table that gets here is not one it would load.
const MAX_DEPTH: usize = 64;
/// Rules evaluated in one branch before the walk is taken as a loop of gotos.
const MAX_EVALUATIONS: usize = 100_000;

/// The whole trace of one packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The packet traced.
    pub packet: Packet,
    /// One outcome per distinct result of the `numgen` branches, in branch
    /// order (branches with the same result merged, their probabilities
    /// added).
    pub outcomes: Vec<Outcome>,
}

impl Trace {
    /// The sum of the outcome probabilities (1, up to rounding).
    pub fn total_probability(&self) -> f64 {
        self.outcomes.iter().map(|o| o.probability).sum()
    }
}

/// Where one branch of the walk ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The probability of this outcome.
    pub probability: f64,
    /// What happens to the packet.
    pub verdict: Verdict,
    /// The destination after DNAT, if a DNAT applied.
    pub nat_destination: Option<SocketAddr>,
    /// Whether the packet leaves masqueraded (`masquerade` in postrouting).
    pub masquerade: bool,
    /// The packet mark at the end.
    pub final_mark: u32,
    /// The sets the walk added the packet's key to (`update @affinity-...`):
    /// session affinity recorded for later connections.
    pub affinity_set: Vec<String>,
    /// Every base chain entered and every rule evaluated, in order. Of
    /// merged branches, the first one's.
    pub path: Vec<Step>,
}

impl Outcome {
    /// One line: `DNAT to 10.180.0.1:80, masquerade, then forwarded (p=0.5)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(to) = &self.nat_destination {
            parts.push(format!("DNAT to {to}"));
        }
        if self.masquerade {
            parts.push("masquerade".to_string());
        }
        if !self.affinity_set.is_empty() {
            parts.push(format!("affinity recorded in {}", self.affinity_set.join(", ")));
        }
        let verdict = match &self.verdict {
            Verdict::Delivered => "delivered locally".to_string(),
            Verdict::Forwarded => "forwarded".to_string(),
            Verdict::Sent => "sent".to_string(),
            Verdict::Dropped { by } => format!("dropped by {} rule {}", by.chain, by.index),
            Verdict::Rejected { by } => format!("rejected by {} rule {}", by.chain, by.index),
        };
        if parts.is_empty() {
            format!("{verdict} (p={})", self.probability)
        } else {
            format!("{}, then {verdict} (p={})", parts.join(", "), self.probability)
        }
    }
}

/// The fate of the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Delivered to a local socket (the destination is the node's).
    Delivered,
    /// Routed on to another host (a packet that arrived from a neighbour).
    Forwarded,
    /// The node's own packet leaves it for another host.
    Sent,
    /// Dropped by this rule (a `drop`, or a verdict map's `drop` element).
    Dropped {
        /// The rule.
        by: RuleRef,
    },
    /// Rejected by this rule.
    Rejected {
        /// The rule.
        by: RuleRef,
    },
}

/// A rule, where the walk met it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The hook.
    #[serde(serialize_with = "hook_name")]
    pub hook: Hook,
    /// The chain.
    pub chain: String,
    /// The rule's 1-based position in the chain.
    pub index: usize,
    /// The rule as stored.
    pub rule: String,
}

/// One thing that happened on the walk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The hook.
    #[serde(serialize_with = "hook_name")]
    pub hook: Hook,
    /// The chain.
    pub chain: String,
    /// The rule's 1-based position in the chain (`None` for entering a base
    /// chain, skipping it, or its end).
    pub rule_index: Option<usize>,
    /// The rule as stored.
    pub rule: Option<String>,
    /// The rule's comment.
    pub comment: Option<String>,
    /// What it did.
    pub action: Action,
}

fn hook_name<S: Serializer>(hook: &Hook, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(hook.as_str())
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// The hook entered this base chain.
    Enter,
    /// A nat base chain the hook did not consult: the packet is not the first
    /// of its connection, or this direction's translation is already decided
    /// (by an earlier nat chain of the hook, or before the packet came back
    /// over `lo`).
    NatSkipped,
    /// The rule did not match.
    NotMatched,
    /// The rule matched and the walk goes on with the next rule.
    Matched,
    /// The verdict map has an element for the key.
    MapHit {
        /// The map.
        map: String,
        /// The key, as nftables prints it.
        key: String,
        /// The element's verdict.
        verdict: String,
    },
    /// The verdict map has no element for the key: the rule ends there.
    MapMiss {
        /// The map.
        map: String,
        /// The key.
        key: String,
    },
    /// `numgen random mod N` gave `value` (each value has probability 1/N).
    Numgen {
        /// The number drawn (offset included).
        value: u32,
        /// N.
        of: u32,
        /// The verdict for it; none if the map has no element for it, which
        /// ends the rule.
        verdict: Option<String>,
    },
    /// The mark changed.
    Mark {
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
    /// `update @set { ... }` added this key to the set.
    SetUpdate {
        /// The set.
        set: String,
        /// The key.
        key: String,
    },
    /// Jumped to a chain.
    Jump {
        /// The chain.
        to: String,
    },
    /// Went to a chain (it returns to the caller of this one).
    Goto {
        /// The chain.
        to: String,
    },
    /// `return` to the calling chain (in a base chain: its end).
    Return,
    /// The end of a regular chain: back to the calling chain.
    EndOfChain,
    /// The end of the base chain's walk: accept.
    EndOfBaseChain,
    /// DNAT rewrote the destination; the base chain accepts.
    Dnat {
        /// The new destination.
        to: SocketAddr,
    },
    /// `masquerade`; the base chain accepts.
    Masquerade,
    /// `accept`: this base chain ends, the hook goes on.
    Accept,
    /// `drop`.
    Drop,
    /// `reject`.
    Reject,
}

#[derive(Debug)]
struct CompiledRule<'t> {
    text: &'t str,
    comment: Option<String>,
    parsed: ParsedRule,
}

#[derive(Debug)]
struct CompiledChain<'t> {
    name: &'t str,
    nat: bool,
    rules: Vec<CompiledRule<'t>>,
}

/// A table read for tracing: every rule parsed and every set indexed once,
/// so that many packets can be traced without reading it again.
#[derive(Debug)]
pub struct Tracer<'t> {
    family: Family,
    chains: HashMap<&'t str, CompiledChain<'t>>,
    /// Base chains per hook ([`Hook::ALL`] order), sorted by priority.
    hooks: Vec<(Hook, Vec<&'t str>)>,
    sets: HashMap<&'t str, CompiledSet>,
}

/// Traces a packet through a table on a node; see the module documentation.
/// To trace several packets, read the table once with [`Tracer::new`].
pub fn trace(table: &Table, packet: &Packet, node: &Node) -> Result<Trace, TraceError> {
    Tracer::new(table)?.trace(packet, node)
}

impl<'t> Tracer<'t> {
    /// Reads every rule and set of the table. A rule form or set type the
    /// tracer does not understand, or a chain or set named but missing, is an
    /// error, whether or not a packet would reach it.
    pub fn new(table: &'t Table) -> Result<Tracer<'t>, TraceError> {
        let family = table.family();
        let mut sets = HashMap::new();
        for spec in table.sets() {
            let set = CompiledSet::new(spec, table.elements(&spec.name), family).map_err(|reason| {
                TraceError::Set {
                    set: spec.name.clone(),
                    reason,
                }
            })?;
            sets.insert(spec.name.as_str(), set);
        }
        let mut chains = HashMap::new();
        let mut hooks: Vec<(Hook, Vec<(i32, &'t str)>)> =
            Hook::ALL.iter().map(|h| (*h, Vec::new())).collect();
        for name in table.chain_names() {
            let Some(spec) = table.chain(name) else {
                continue;
            };
            if let Some(base) = &spec.base
                && let Some((_, list)) = hooks.iter_mut().find(|(h, _)| *h == base.hook)
            {
                list.push((base.priority, name));
            }
            let mut rules = Vec::new();
            for (i, (text, comment)) in table.rules(name).enumerate() {
                let error = |reason: String| TraceError::Rule {
                    chain: name.to_string(),
                    index: i + 1,
                    rule: text.to_string(),
                    reason,
                };
                let parsed = parse_rule(text, family).map_err(error)?;
                check_references(&parsed, table, &sets).map_err(error)?;
                let comment = comment.map(str::to_string).or_else(|| parsed.comment.clone());
                rules.push(CompiledRule {
                    text,
                    comment,
                    parsed,
                });
            }
            let nat = spec.base.as_ref().is_some_and(|b| b.chain_type == "nat");
            chains.insert(name, CompiledChain { name, nat, rules });
        }
        for (name, set) in &sets {
            if let Some(missing) = set
                .verdicts()
                .filter_map(VerdictStmt::target)
                .find(|to| table.chain(to).is_none())
            {
                return Err(TraceError::Set {
                    set: name.to_string(),
                    reason: format!("an element's verdict names chain {missing}, which does not exist"),
                });
            }
        }
        let hooks = hooks
            .into_iter()
            .map(|(hook, mut list)| {
                list.sort();
                (hook, list.into_iter().map(|(_, name)| name).collect())
            })
            .collect();
        Ok(Tracer {
            family,
            chains,
            hooks,
            sets,
        })
    }

    fn base_chains(&self, hook: Hook) -> &[&'t str] {
        self.hooks
            .iter()
            .find(|(h, _)| *h == hook)
            .map_or(&[], |(_, list)| list.as_slice())
    }

    /// Traces one packet on a node.
    pub fn trace(&self, packet: &Packet, node: &Node) -> Result<Trace, TraceError> {
        if family_of(&packet.src) != self.family || family_of(&packet.dst) != self.family {
            return Err(TraceError::Family {
                src: packet.src.to_string(),
                dst: packet.dst.to_string(),
                family: self.family.to_string(),
            });
        }
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut branches = 0;
        let mut prefix = Vec::new();
        loop {
            branches += 1;
            if branches > MAX_BRANCHES {
                return Err(TraceError::TooManyBranches(MAX_BRANCHES));
            }
            let mut run = Run::new(self, packet, node, prefix);
            let verdict = run.run()?;
            let outcome = Outcome {
                probability: run.probability,
                verdict,
                nat_destination: run.nat_destination,
                masquerade: run.masquerade,
                final_mark: run.mark,
                affinity_set: run.affinity_set,
                path: run.path,
            };
            match outcomes.iter_mut().find(|o| same_result(o, &outcome)) {
                Some(same) => same.probability += outcome.probability,
                None => outcomes.push(outcome),
            }
            // The next branch in order: the last choice that has a next
            // value takes it, the choices after it start again.
            let (mut choices, arities) = (run.choices, run.arities);
            loop {
                let Some(last) = choices.len().checked_sub(1) else {
                    return Ok(Trace {
                        packet: packet.clone(),
                        outcomes,
                    });
                };
                if choices[last] + 1 < arities[last] {
                    choices[last] += 1;
                    break;
                }
                choices.pop();
            }
            prefix = choices;
        }
    }
}

fn same_result(a: &Outcome, b: &Outcome) -> bool {
    a.verdict == b.verdict
        && a.nat_destination == b.nat_destination
        && a.masquerade == b.masquerade
        && a.final_mark == b.final_mark
        && a.affinity_set == b.affinity_set
}

/// The chains and sets a rule names exist, and its lookups fit the sets'
/// types (the kernel refuses both otherwise).
fn check_references(
    rule: &ParsedRule,
    table: &Table,
    sets: &HashMap<&str, CompiledSet>,
) -> Result<(), String> {
    let check_chain = |to: &str| {
        if table.chain(to).is_some() {
            Ok(())
        } else {
            Err(format!("no chain {to}"))
        }
    };
    let check_set = |name: &str, key: &[Selector], want_map: bool| {
        let set = sets.get(name).ok_or_else(|| format!("no set or map {name}"))?;
        if want_map && set.kind != chainsmith_nftables::SetKind::Map {
            return Err(format!("vmap @{name} is not a map"));
        }
        let types: Option<Vec<KeyType>> = key.iter().map(|s| KeyType::of(*s)).collect();
        if types.as_deref() != Some(set.types.as_slice()) {
            return Err(format!("the key does not fit the type of @{name}"));
        }
        Ok(())
    };
    for stmt in &rule.stmts {
        match stmt {
            Stmt::Verdict(v) => {
                if let Some(to) = v.target() {
                    check_chain(to)?;
                }
            }
            Stmt::Numgen { branches, .. } => {
                for to in branches.iter().filter_map(|(_, v)| v.target()) {
                    check_chain(to)?;
                }
            }
            Stmt::Vmap { key, map } => check_set(map, key, true)?,
            Stmt::Match(Match::InSet { key, set, .. }) => check_set(set, key, false)?,
            Stmt::Update { set, key } => check_set(set, key, false)?,
            Stmt::Match(_) | Stmt::SetMark(_) | Stmt::Dnat { .. } | Stmt::Masquerade => {}
        }
    }
    Ok(())
}

/// How a base chain's walk ended.
enum ChainEnd {
    Accept,
    Drop(RuleRef),
    Reject(RuleRef),
}

/// What a rule asks of the walk.
enum Flow {
    /// On to the next rule (not matched, or matched without a verdict).
    Next,
    Verdict(VerdictStmt),
    /// A translation: the base chain accepts.
    Translated,
}

/// One branch: a walk with fixed `numgen` answers.
struct Run<'r, 't> {
    tracer: &'r Tracer<'t>,
    packet: &'r Packet,
    node: &'r Node,
    /// The answers to the first forks, given; later forks take 0.
    prefix: Vec<u32>,
    choices: Vec<u32>,
    arities: Vec<u32>,
    probability: f64,
    dst: IpAddr,
    dport: u16,
    mark: u32,
    /// The input interface `iifname` compares (empty where the kernel has none).
    iif: String,
    /// Keys added to sets: the packet's affinity state, then `update`s.
    added: HashMap<String, HashSet<Vec<Value>>>,
    affinity_set: Vec<String>,
    masquerade: bool,
    nat_destination: Option<SocketAddr>,
    dst_nat_decided: bool,
    src_nat_decided: bool,
    translated_in_hook: bool,
    evaluations: usize,
    path: Vec<Step>,
}

impl<'r, 't> Run<'r, 't> {
    fn new(tracer: &'r Tracer<'t>, packet: &'r Packet, node: &'r Node, prefix: Vec<u32>) -> Run<'r, 't> {
        let mut added: HashMap<String, HashSet<Vec<Value>>> = HashMap::new();
        for (set, clients) in &packet.affinity {
            added
                .entry(set.clone())
                .or_default()
                .extend(clients.iter().map(|ip| vec![Value::Addr(*ip)]));
        }
        Run {
            tracer,
            packet,
            node,
            prefix,
            choices: Vec::new(),
            arities: Vec::new(),
            probability: 1.0,
            dst: packet.dst,
            dport: packet.dport,
            mark: packet.mark,
            iif: String::new(),
            added,
            affinity_set: Vec::new(),
            masquerade: false,
            nat_destination: None,
            dst_nat_decided: false,
            src_nat_decided: false,
            translated_in_hook: false,
            evaluations: 0,
            path: Vec::new(),
        }
    }

    fn run(&mut self) -> Result<Verdict, TraceError> {
        match &self.packet.origin {
            Origin::FromOutside { interface } => {
                self.iif = interface.clone();
                if let Some(end) = self.hook(Hook::Prerouting)? {
                    return Ok(end);
                }
                if self.node.is_local(&self.dst) {
                    if let Some(end) = self.hook(Hook::Input)? {
                        return Ok(end);
                    }
                    return Ok(Verdict::Delivered);
                }
                if let Some(end) = self.hook(Hook::Forward)? {
                    return Ok(end);
                }
                // The kernel has no input device in postrouting.
                self.iif.clear();
                if let Some(end) = self.hook(Hook::Postrouting)? {
                    return Ok(end);
                }
                Ok(Verdict::Forwarded)
            }
            Origin::FromNode => {
                for hook in [Hook::Output, Hook::Postrouting] {
                    if let Some(end) = self.hook(hook)? {
                        return Ok(end);
                    }
                }
                if !self.node.is_local(&self.dst) {
                    return Ok(Verdict::Sent);
                }
                // Looped back: received on lo like any packet, conntrack
                // entry (still new) and mark kept.
                self.iif = "lo".to_string();
                for hook in [Hook::Prerouting, Hook::Input] {
                    if let Some(end) = self.hook(hook)? {
                        return Ok(end);
                    }
                }
                Ok(Verdict::Delivered)
            }
        }
    }

    /// Runs a hook's base chains; `Some` if the packet ends there.
    fn hook(&mut self, hook: Hook) -> Result<Option<Verdict>, TraceError> {
        let dst_side = matches!(hook, Hook::Prerouting | Hook::Output);
        let new = self.packet.conntrack == CtState::New;
        let decided = if dst_side {
            self.dst_nat_decided
        } else {
            self.src_nat_decided
        };
        self.translated_in_hook = false;
        let tracer = self.tracer;
        for name in tracer.base_chains(hook) {
            let Some(chain) = tracer.chains.get(name) else {
                continue;
            };
            if chain.nat && (!new || decided || self.translated_in_hook) {
                self.step(hook, chain.name, None, Action::NatSkipped);
                continue;
            }
            self.step(hook, chain.name, None, Action::Enter);
            match self.walk(hook, chain)? {
                ChainEnd::Accept => {}
                ChainEnd::Drop(by) => return Ok(Some(Verdict::Dropped { by })),
                ChainEnd::Reject(by) => return Ok(Some(Verdict::Rejected { by })),
            }
        }
        // Whether or not a rule translated, the connection's translation for
        // this direction is now fixed (a null binding if none).
        if new && hook != Hook::Forward {
            if dst_side {
                self.dst_nat_decided = true;
            } else {
                self.src_nat_decided = true;
            }
        }
        Ok(None)
    }

    fn step(&mut self, hook: Hook, chain: &str, rule: Option<(usize, &CompiledRule<'_>)>, action: Action) {
        self.path.push(Step {
            hook,
            chain: chain.to_string(),
            rule_index: rule.map(|(i, _)| i + 1),
            rule: rule.map(|(_, r)| r.text.to_string()),
            comment: rule.and_then(|(_, r)| r.comment.clone()),
            action,
        });
    }

    fn walk(&mut self, hook: Hook, base: &'r CompiledChain<'t>) -> Result<ChainEnd, TraceError> {
        let tracer = self.tracer;
        let mut frames: Vec<(&'r CompiledChain<'t>, usize)> = vec![(base, 0)];
        loop {
            let Some((chain, next)) = frames.last_mut() else {
                return Ok(ChainEnd::Accept);
            };
            let chain: &'r CompiledChain<'t> = chain;
            let index = *next;
            let Some(rule) = chain.rules.get(index) else {
                frames.pop();
                if frames.is_empty() {
                    self.step(hook, chain.name, None, Action::EndOfBaseChain);
                    return Ok(ChainEnd::Accept);
                }
                self.step(hook, chain.name, None, Action::EndOfChain);
                continue;
            };
            *next += 1;
            self.evaluations += 1;
            if self.evaluations > MAX_EVALUATIONS {
                return Err(TraceError::Walk {
                    chain: chain.name.to_string(),
                    reason: format!("more than {MAX_EVALUATIONS} rules evaluated: a loop of gotos"),
                });
            }
            let here = (index, rule);
            let verdict = match self.evaluate(hook, chain.name, here) {
                Flow::Next => continue,
                Flow::Translated => return Ok(ChainEnd::Accept),
                Flow::Verdict(verdict) => verdict,
            };
            let rule_ref = || RuleRef {
                hook,
                chain: chain.name.to_string(),
                index: index + 1,
                rule: rule.text.to_string(),
            };
            match verdict {
                VerdictStmt::Accept => {
                    self.step(hook, chain.name, Some(here), Action::Accept);
                    return Ok(ChainEnd::Accept);
                }
                VerdictStmt::Drop => {
                    self.step(hook, chain.name, Some(here), Action::Drop);
                    return Ok(ChainEnd::Drop(rule_ref()));
                }
                VerdictStmt::Reject => {
                    self.step(hook, chain.name, Some(here), Action::Reject);
                    return Ok(ChainEnd::Reject(rule_ref()));
                }
                VerdictStmt::Continue => {}
                VerdictStmt::Return => {
                    self.step(hook, chain.name, Some(here), Action::Return);
                    frames.pop();
                }
                VerdictStmt::Jump(ref to) | VerdictStmt::Goto(ref to) => {
                    let goto = matches!(verdict, VerdictStmt::Goto(_));
                    let action = if goto {
                        Action::Goto { to: to.clone() }
                    } else {
                        Action::Jump { to: to.clone() }
                    };
                    self.step(hook, chain.name, Some(here), action);
                    // Checked when the table was read.
                    let Some(target) = tracer.chains.get(to.as_str()) else {
                        return Err(TraceError::Walk {
                            chain: chain.name.to_string(),
                            reason: format!("no chain {to}"),
                        });
                    };
                    if goto {
                        frames.pop();
                    }
                    if frames.len() >= MAX_DEPTH {
                        return Err(TraceError::Walk {
                            chain: chain.name.to_string(),
                            reason: format!("jumps nested deeper than {MAX_DEPTH}"),
                        });
                    }
                    frames.push((target, 0));
                }
            }
        }
    }

    /// Evaluates one rule's statements in order.
    fn evaluate(&mut self, hook: Hook, chain: &str, here: (usize, &CompiledRule<'_>)) -> Flow {
        let tracer = self.tracer;
        let mut acted = false;
        for stmt in &here.1.parsed.stmts {
            match stmt {
                Stmt::Match(m) => {
                    if !self.matches(m) {
                        self.step(hook, chain, Some(here), Action::NotMatched);
                        return Flow::Next;
                    }
                }
                Stmt::Vmap { key, map } => {
                    let key = self.key(key);
                    let hit = match (&key, tracer.sets.get(map.as_str())) {
                        (Some(key), Some(set)) => set.lookup(key).flatten(),
                        _ => None,
                    };
                    let key = key.as_deref().map(key_text).unwrap_or_default();
                    let map = map.clone();
                    return match hit {
                        Some(verdict) => {
                            let action = Action::MapHit {
                                map,
                                key,
                                verdict: verdict.to_string(),
                            };
                            self.step(hook, chain, Some(here), action);
                            Flow::Verdict(verdict.clone())
                        }
                        None => {
                            self.step(hook, chain, Some(here), Action::MapMiss { map, key });
                            Flow::Next
                        }
                    };
                }
                Stmt::Numgen {
                    modulus,
                    offset,
                    branches,
                } => {
                    let value = offset + self.decide(*modulus);
                    let verdict = branches
                        .iter()
                        .find(|(v, _)| *v == value)
                        .map(|(_, verdict)| verdict);
                    let action = Action::Numgen {
                        value,
                        of: *modulus,
                        verdict: verdict.map(VerdictStmt::to_string),
                    };
                    self.step(hook, chain, Some(here), action);
                    return match verdict {
                        Some(verdict) => Flow::Verdict(verdict.clone()),
                        None => Flow::Next,
                    };
                }
                Stmt::SetMark(op) => {
                    let from = self.mark;
                    self.mark = op.apply(from);
                    self.step(hook, chain, Some(here), Action::Mark { from, to: self.mark });
                    acted = true;
                }
                Stmt::Update { set, key } => {
                    if let Some(key) = self.key(key) {
                        let text = key_text(&key);
                        self.added.entry(set.clone()).or_default().insert(key);
                        if !self.affinity_set.contains(set) {
                            self.affinity_set.push(set.clone());
                        }
                        let action = Action::SetUpdate {
                            set: set.clone(),
                            key: text,
                        };
                        self.step(hook, chain, Some(here), action);
                    }
                    acted = true;
                }
                Stmt::Dnat { addr, port } => {
                    self.dst = *addr;
                    if let Some(port) = port {
                        self.dport = *port;
                    }
                    let to = SocketAddr::new(self.dst, self.dport);
                    self.nat_destination = Some(to);
                    self.translated_in_hook = true;
                    self.step(hook, chain, Some(here), Action::Dnat { to });
                    return Flow::Translated;
                }
                Stmt::Masquerade => {
                    self.masquerade = true;
                    self.translated_in_hook = true;
                    self.step(hook, chain, Some(here), Action::Masquerade);
                    return Flow::Translated;
                }
                Stmt::Verdict(verdict) => return Flow::Verdict(verdict.clone()),
            }
        }
        if !acted {
            self.step(hook, chain, Some(here), Action::Matched);
        }
        Flow::Next
    }

    /// The answer to the next fork of `arity` ways.
    fn decide(&mut self, arity: u32) -> u32 {
        let i = self.choices.len();
        let choice = self.prefix.get(i).copied().unwrap_or(0);
        self.choices.push(choice);
        self.arities.push(arity);
        self.probability /= f64::from(arity);
        choice
    }

    fn value(&self, selector: Selector) -> Option<Value> {
        Some(match selector {
            Selector::Saddr => Value::Addr(self.packet.src),
            Selector::Daddr => Value::Addr(self.dst),
            Selector::L4Proto => Value::Proto(self.packet.protocol_number()),
            Selector::Dport { proto } => {
                if proto.is_some_and(|p| p != self.packet.protocol_number()) {
                    return None;
                }
                Value::Port(self.dport)
            }
            Selector::Mark { mask } => Value::Mark(self.mark & mask),
            Selector::CtState => Value::CtState(self.packet.conntrack),
            Selector::IifName => Value::Iface(self.iif.clone()),
        })
    }

    fn key(&self, selectors: &[Selector]) -> Option<Vec<Value>> {
        selectors.iter().map(|s| self.value(*s)).collect()
    }

    fn matches(&self, m: &Match) -> bool {
        match m {
            Match::Compare {
                selector,
                negated,
                patterns,
            } => match self.value(*selector) {
                // `tcp dport != 80` still needs TCP.
                None => false,
                Some(value) => patterns.iter().any(|p| p.matches(&value)) != *negated,
            },
            Match::InSet { key, set, negated } => {
                let Some(key) = self.key(key) else {
                    return false;
                };
                let held = self
                    .tracer
                    .sets
                    .get(set.as_str())
                    .is_some_and(|s| s.lookup(&key).is_some())
                    || self.added.get(set).is_some_and(|keys| keys.contains(&key));
                held != *negated
            }
            Match::FibLocal { source, negated } => {
                let ip = if *source { self.packet.src } else { self.dst };
                self.node.is_local(&ip) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chainsmith_model::Protocol;
    use chainsmith_nftables::{Op, Transaction, read_transaction};

    use super::*;

    /// A trimmed kube-proxy ruleset (the fixed objects and five services)
    /// as knftables writes it.
    const KNFTABLES: &str = r#"add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy service-endpoints-check
add chain ip kube-proxy firewall-check
add chain ip kube-proxy services
add chain ip kube-proxy masquerading
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; }
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#;

    /// The rules as `nft list ruleset` prints them, the comment part of the
    /// rule text.
    fn kernel_spelling(rule: &str) -> String {
        rule.replace("mark set mark or 0x4000", "meta mark set meta mark | 0x00004000")
            .replace(
                "mark and 0x4000 == 0 return",
                "meta mark & 0x00004000 == 0x00000000 return",
            )
            .replace("mark set mark xor 0x4000", "meta mark set meta mark ^ 0x00004000")
            .replace("{ 172.30.0.0/16 }", "172.30.0.0/16")
            .replace("!= { 203.0.113.0/25 }", "!= 203.0.113.0/25")
        // The kernel also lists `{ 0 : goto A, 1 : goto B }`, but
        // `Table::apply` counts references by blank-separated words and takes
        // `A,` for a chain that does not exist; `rule.rs` tests that form.
    }

    fn tables() -> [Table; 2] {
        let tx = read_transaction(KNFTABLES, Family::Ip).expect("reads");
        let mut knftables = Table::new(Family::Ip);
        knftables.apply(&tx).expect("applies");
        let listed = Transaction {
            family: Family::Ip,
            ops: tx
                .ops
                .into_iter()
                .map(|op| match op {
                    Op::AddRule { chain, rule, comment } => {
                        let mut rule = kernel_spelling(&rule);
                        if let Some(comment) = comment {
                            rule.push_str(&format!(" comment {}", chainsmith_nftables::quote(&comment)));
                        }
                        Op::AddRule {
                            chain,
                            rule,
                            comment: None,
                        }
                    }
                    op => op,
                })
                .collect(),
        };
        let mut kernel = Table::new(Family::Ip);
        kernel.apply(&listed).expect("applies");
        assert_ne!(knftables.dump(), kernel.dump(), "the spellings differ");
        [knftables, kernel]
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn node() -> Node {
        Node::new(vec![ip("192.168.0.2")])
    }

    fn from_outside(src: &str, dst: &str, dport: u16) -> Packet {
        let origin = Origin::FromOutside {
            interface: "eth0".to_string(),
        };
        Packet::new(ip(src), ip(dst), Protocol::Tcp, dport, origin)
    }

    /// The trace without the rule texts, which differ between spellings.
    fn without_texts(mut trace: Trace) -> Trace {
        for outcome in &mut trace.outcomes {
            for step in &mut outcome.path {
                step.rule = None;
            }
            if let Verdict::Dropped { by } | Verdict::Rejected { by } = &mut outcome.verdict {
                by.rule.clear();
            }
        }
        trace
    }

    /// Traces in both spellings, checks they agree and the probabilities add up.
    fn traced(packet: &Packet, node: &Node) -> Trace {
        let [knftables, kernel] = tables();
        let trace = super::trace(&knftables, packet, node).expect("traces");
        let again = super::trace(&kernel, packet, node).expect("traces the listing");
        assert_eq!(without_texts(trace.clone()), without_texts(again), "{packet:?}");
        assert!((trace.total_probability() - 1.0).abs() < 1e-9, "{trace:?}");
        trace
    }

    fn only(trace: &Trace) -> &Outcome {
        assert_eq!(trace.outcomes.len(), 1, "{:#?}", trace.outcomes);
        &trace.outcomes[0]
    }

    fn dnat(to: &str) -> Option<SocketAddr> {
        Some(to.parse().expect("socket address"))
    }

    fn chains_of(outcome: &Outcome) -> Vec<(&'static str, &str, &Action)> {
        outcome
            .path
            .iter()
            .map(|s| (s.hook.as_str(), s.chain.as_str(), &s.action))
            .collect()
    }

    #[test]
    fn pod_to_cluster_ip_is_forwarded_to_the_endpoint_unmasqueraded() {
        let trace = traced(&from_outside("10.0.0.2", "172.30.0.41", 80), &node());
        let outcome = only(&trace);
        assert_eq!(outcome.verdict, Verdict::Forwarded);
        assert_eq!(outcome.nat_destination, dnat("10.180.0.1:80"));
        assert!(!outcome.masquerade);
        let path = chains_of(outcome);
        let hooks: Vec<&str> = path.iter().map(|(h, _, _)| *h).collect();
        assert_eq!(hooks.first(), Some(&"prerouting"));
        assert_eq!(hooks.last(), Some(&"postrouting"));
        assert!(path.iter().any(|(_, c, a)| *c == "services"
            && matches!(a, Action::MapHit { key, .. } if key == "172.30.0.41 . tcp . 80")));
        assert!(
            path.iter()
                .any(|(_, _, a)| matches!(a, Action::Numgen { value: 0, of: 1, .. }))
        );
        // Forwarded, so input's checks never run.
        assert!(!path.iter().any(|(h, _, _)| *h == "input"));
    }

    #[test]
    fn numgen_branches_in_order_each_half() {
        let trace = traced(&from_outside("203.0.113.2", "172.30.0.44", 80), &node());
        let got: Vec<(Option<SocketAddr>, f64, bool, u32)> = trace
            .outcomes
            .iter()
            .map(|o| (o.nat_destination, o.probability, o.masquerade, o.final_mark))
            .collect();
        assert_eq!(
            got,
            vec![
                (dnat("10.180.0.4:80"), 0.5, true, 0),
                (dnat("10.180.0.5:80"), 0.5, true, 0)
            ]
        );
        let marks: Vec<&Action> = trace.outcomes[0]
            .path
            .iter()
            .filter(|s| matches!(s.action, Action::Mark { .. }))
            .map(|s| &s.action)
            .collect();
        assert_eq!(
            marks,
            [
                &Action::Mark { from: 0, to: 0x4000 },
                &Action::Mark { from: 0x4000, to: 0 }
            ]
        );
    }

    #[test]
    fn hairpin_is_masqueraded() {
        let trace = traced(&from_outside("10.180.0.1", "172.30.0.41", 80), &node());
        let outcome = only(&trace);
        assert_eq!(outcome.nat_destination, dnat("10.180.0.1:80"));
        assert!(outcome.masquerade);
    }

    #[test]
    fn wrong_port_and_unallocated_cluster_ips() {
        let trace = traced(&from_outside("10.0.0.2", "172.30.0.41", 443), &node());
        let Verdict::Rejected { by } = &only(&trace).verdict else {
            panic!("{trace:?}");
        };
        assert_eq!(
            (by.hook, by.chain.as_str(), by.index),
            (Hook::Forward, "cluster-ips-check", 1)
        );
        let trace = traced(&from_outside("10.0.0.2", "172.30.0.50", 80), &node());
        let Verdict::Dropped { by } = &only(&trace).verdict else {
            panic!("{trace:?}");
        };
        assert_eq!((by.chain.as_str(), by.index), ("cluster-ips-check", 2));
        assert_eq!(by.rule, "ip daddr { 172.30.0.0/16 } drop");
        let comment = only(&trace).path.last().and_then(|s| s.comment.clone());
        assert_eq!(comment.as_deref(), Some("Drop traffic to unallocated ClusterIPs"));
    }

    #[test]
    fn no_endpoints_rejects_through_the_reject_chain() {
        let trace = traced(&from_outside("10.0.0.2", "172.30.0.46", 80), &node());
        let outcome = only(&trace);
        let Verdict::Rejected { by } = &outcome.verdict else {
            panic!("{trace:?}");
        };
        assert_eq!((by.chain.as_str(), by.index), ("reject-chain", 1));
        assert!(outcome.path.iter().any(|s| s.action
            == Action::MapHit {
                map: "no-endpoint-services".into(),
                key: "172.30.0.46 . tcp . 80".into(),
                verdict: "goto reject-chain".into(),
            }));
    }

    #[test]
    fn node_ports_external_local_policy_without_local_endpoints() {
        // From outside: the external chain lets it fall through untranslated,
        // then input's NodePort check drops it.
        let trace = traced(&from_outside("203.0.113.2", "192.168.0.2", 3001), &node());
        let outcome = only(&trace);
        let Verdict::Dropped { by } = &outcome.verdict else {
            panic!("{trace:?}");
        };
        assert_eq!(
            (by.hook, by.chain.as_str()),
            (Hook::Input, "nodeport-endpoints-check")
        );
        assert_eq!(outcome.nat_destination, None);
        // From the node itself: short-circuited to the cluster endpoints and
        // masqueraded.
        let mut packet = from_outside("192.168.0.2", "192.168.0.2", 3001);
        packet.origin = Origin::FromNode;
        let trace = traced(&packet, &node());
        let outcome = only(&trace);
        assert_eq!(outcome.verdict, Verdict::Sent);
        assert_eq!(outcome.nat_destination, dnat("10.180.0.2:80"));
        assert!(outcome.masquerade);
        let hooks: Vec<&str> = outcome.path.iter().map(|s| s.hook.as_str()).collect();
        assert_eq!(hooks.first(), Some(&"output"));
    }

    #[test]
    fn firewall_and_session_affinity() {
        let trace = traced(&from_outside("203.0.113.130", "5.6.7.8", 80), &node());
        let Verdict::Dropped { by } = &only(&trace).verdict else {
            panic!("{trace:?}");
        };
        assert_eq!(
            (by.hook, by.chain.as_str()),
            (Hook::Prerouting, "firewall-HVFWP5L3-ns5/svc5/tcp/p80")
        );

        let affinity = "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80";
        let trace = traced(&from_outside("203.0.113.2", "5.6.7.8", 80), &node());
        let outcome = only(&trace);
        assert_eq!(outcome.nat_destination, dnat("10.180.0.3:80"));
        assert!(outcome.masquerade);
        assert_eq!(outcome.affinity_set, [affinity]);
        assert!(
            outcome
                .path
                .iter()
                .any(|s| matches!(s.action, Action::Numgen { .. }))
        );

        // A client the set already holds goes straight to its endpoint.
        let mut packet = from_outside("203.0.113.2", "5.6.7.8", 80);
        packet.affinity = BTreeMap::from([(affinity.to_string(), vec![ip("203.0.113.2")])]);
        let trace = traced(&packet, &node());
        let outcome = only(&trace);
        assert_eq!(outcome.nat_destination, dnat("10.180.0.3:80"));
        assert!(
            !outcome
                .path
                .iter()
                .any(|s| matches!(s.action, Action::Numgen { .. }))
        );
    }

    #[test]
    fn established_packets_skip_nat_and_new_only_checks() {
        let mut packet = from_outside("10.0.0.2", "172.30.0.46", 80);
        packet.conntrack = CtState::Established;
        let trace = traced(&packet, &node());
        let outcome = only(&trace);
        assert_eq!(outcome.verdict, Verdict::Forwarded);
        assert!(
            outcome
                .path
                .iter()
                .any(|s| s.chain == "nat-prerouting" && s.action == Action::NatSkipped)
        );
    }

    #[test]
    fn the_nodes_own_packet_to_itself_comes_back_over_lo() {
        let mut packet = from_outside("192.168.0.2", "192.168.0.2", 22);
        packet.origin = Origin::FromNode;
        let trace = traced(&packet, &node());
        let outcome = only(&trace);
        assert_eq!(outcome.verdict, Verdict::Delivered);
        let entered: Vec<(&str, &str, &Action)> = chains_of(outcome)
            .into_iter()
            .filter(|(_, _, a)| matches!(a, Action::Enter | Action::NatSkipped))
            .collect();
        assert_eq!(
            entered,
            [
                ("output", "filter-output-pre-dnat", &Action::Enter),
                ("output", "nat-output", &Action::Enter),
                ("output", "filter-output", &Action::Enter),
                ("postrouting", "nat-postrouting", &Action::Enter),
                ("prerouting", "filter-prerouting-pre-dnat", &Action::Enter),
                ("prerouting", "nat-prerouting", &Action::NatSkipped),
                ("input", "filter-input", &Action::Enter),
            ]
        );
        // Loopback is local too.
        packet.dst = ip("127.0.0.1");
        assert_eq!(only(&traced(&packet, &node())).verdict, Verdict::Delivered);
    }

    fn small_table(rules: &[&str]) -> Result<Table, String> {
        let mut text = String::from(
            "add table ip kube-proxy\nadd chain ip kube-proxy pre { type filter hook prerouting priority 0 ; }\n",
        );
        for rule in rules {
            text.push_str(&format!("add rule ip kube-proxy pre {rule}\n"));
        }
        let tx = read_transaction(&text, Family::Ip).map_err(|e| e.to_string())?;
        let mut table = Table::new(Family::Ip);
        table.apply(&tx).map_err(|e| e.to_string())?;
        Ok(table)
    }

    #[test]
    fn input_interfaces_in_both_spellings() {
        for rules in [
            ["iifname \"veth*\" accept", "iifname != \"eth0\" drop"],
            ["iifname veth* accept", "iifname != eth0 drop"],
        ] {
            let table = small_table(&rules).expect("table");
            let verdict = |interface: &str| {
                let mut packet = from_outside("10.0.0.2", "10.0.0.3", 80);
                packet.origin = Origin::FromOutside {
                    interface: interface.to_string(),
                };
                let trace = super::trace(&table, &packet, &node()).expect("traces");
                only(&trace).verdict.clone()
            };
            assert_eq!(verdict("veth1234"), Verdict::Forwarded);
            assert_eq!(verdict("eth0"), Verdict::Forwarded);
            assert!(matches!(verdict("eth1"), Verdict::Dropped { .. }));
        }
    }

    #[test]
    fn an_accept_ends_only_its_own_base_chain() {
        let mut text = String::from("add table ip kube-proxy\n");
        text.push_str("add chain ip kube-proxy a { type filter hook prerouting priority -5 ; }\n");
        text.push_str("add chain ip kube-proxy b { type filter hook prerouting priority 5 ; }\n");
        text.push_str("add rule ip kube-proxy a accept\nadd rule ip kube-proxy b tcp dport 80 drop\n");
        let mut table = Table::new(Family::Ip);
        table
            .apply(&read_transaction(&text, Family::Ip).expect("reads"))
            .expect("applies");
        let trace = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node()).expect("traces");
        let Verdict::Dropped { by } = &only(&trace).verdict else {
            panic!("{trace:?}");
        };
        assert_eq!(by.chain, "b");
    }

    #[test]
    fn ipv6_dnat() {
        let text = "add table ip6 kube-proxy\n\
            add chain ip6 kube-proxy nat { type nat hook prerouting priority -100 ; }\n\
            add rule ip6 kube-proxy nat ip6 daddr fd00:172:30::41 meta l4proto tcp dnat to [fd00:10:180::1]:8080\n";
        let mut table = Table::new(Family::Ip6);
        table
            .apply(&read_transaction(text, Family::Ip6).expect("reads"))
            .expect("applies");
        let packet = from_outside("fd00:10::2", "fd00:172:30::41", 80);
        let trace = super::trace(&table, &packet, &node()).expect("traces");
        let outcome = only(&trace);
        assert_eq!(outcome.nat_destination, dnat("[fd00:10:180::1]:8080"));
        assert_eq!(
            outcome.nat_destination.map(|d| d.to_string()).as_deref(),
            Some("[fd00:10:180::1]:8080")
        );
        // An IPv4 packet does not belong to this table.
        let error = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node());
        assert!(matches!(error, Err(TraceError::Family { .. })), "{error:?}");
    }

    #[test]
    fn numgen_without_an_element_for_the_value_ends_the_rule() {
        let table = small_table(&[
            "numgen random mod 4 offset 1 vmap { 1 : drop , 2 : accept , 4 : drop }",
            "reject",
        ])
        .expect("table");
        let trace = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node()).expect("traces");
        let got: Vec<(String, f64)> = trace
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.summary().split(" (").next().unwrap_or_default().to_string(),
                    o.probability,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("dropped by pre rule 1".to_string(), 0.5),
                ("forwarded".to_string(), 0.25),
                ("rejected by pre rule 2".to_string(), 0.25)
            ]
        );
    }

    #[test]
    fn a_loop_of_gotos_is_an_error() {
        let mut text = String::from("add table ip kube-proxy\n");
        text.push_str("add chain ip kube-proxy pre { type filter hook prerouting priority 0 ; }\n");
        text.push_str("add chain ip kube-proxy a\nadd chain ip kube-proxy b\n");
        text.push_str("add rule ip kube-proxy pre goto a\n");
        text.push_str("add rule ip kube-proxy a goto b\nadd rule ip kube-proxy b goto a\n");
        let mut table = Table::new(Family::Ip);
        table
            .apply(&read_transaction(&text, Family::Ip).expect("reads"))
            .expect("applies");
        let error = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node());
        assert!(matches!(error, Err(TraceError::Walk { .. })), "{error:?}");
    }

    #[test]
    fn listed_dynamic_elements_count_and_odd_sets_are_errors() {
        let base = "add table ip kube-proxy\n\
            add chain ip kube-proxy pre { type filter hook prerouting priority 0 ; }\n";
        let with = |extra: &str| {
            let mut table = Table::new(Family::Ip);
            let text = format!("{base}{extra}");
            table
                .apply(&read_transaction(&text, Family::Ip).expect("reads"))
                .expect("applies");
            table
        };
        let table = with(
            "add set ip kube-proxy affinity-E { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }\n\
             add element ip kube-proxy affinity-E { 10.0.0.2 timeout 3h expires 2h59m }\n\
             add rule ip kube-proxy pre ip saddr @affinity-E drop\n",
        );
        let trace = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node()).expect("traces");
        assert!(matches!(only(&trace).verdict, Verdict::Dropped { .. }));
        let table = with("add set ip kube-proxy odd { type ether_addr ; }\n");
        let error = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node());
        assert!(
            matches!(&error, Err(TraceError::Set { set, .. }) if set == "odd"),
            "{error:?}"
        );
    }

    #[test]
    fn match_all_node_ports_exclude_loopback() {
        let text = "add table ip kube-proxy\n\
            add chain ip kube-proxy out { type nat hook output priority -100 ; }\n\
            add chain ip kube-proxy ep\n\
            add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; }\n\
            add rule ip kube-proxy out fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n\
            add rule ip kube-proxy ep meta l4proto tcp dnat to 10.180.0.1:80\n\
            add element ip kube-proxy service-nodeports { tcp . 3001 : goto ep }\n";
        let mut table = Table::new(Family::Ip);
        table
            .apply(&read_transaction(text, Family::Ip).expect("reads"))
            .expect("applies");
        let to = |dst: &str| {
            let mut packet = from_outside("192.168.0.2", dst, 3001);
            packet.origin = Origin::FromNode;
            let trace = super::trace(&table, &packet, &node()).expect("traces");
            only(&trace).nat_destination
        };
        assert_eq!(to("192.168.0.2"), dnat("10.180.0.1:80"));
        assert_eq!(to("127.0.0.1"), None);
        assert_eq!(to("192.168.0.9"), None);
    }

    #[test]
    fn a_rule_not_understood_is_an_error_naming_it() {
        let table =
            small_table(&["tcp dport 80 accept", "ip daddr 10.0.0.3 log prefix \"x\" drop"]).expect("table");
        let error = super::trace(&table, &from_outside("10.0.0.2", "10.0.0.3", 80), &node())
            .expect_err("not understood");
        let TraceError::Rule {
            chain, index, rule, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!((chain.as_str(), *index), ("pre", 2));
        assert_eq!(rule, "ip daddr 10.0.0.3 log prefix \"x\" drop");
    }
}
