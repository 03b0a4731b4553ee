//! The packet tracer: what the kernel does with one packet, given a ruleset.
//!
//! This crate owns the *meaning* of rules as the kernel evaluates them; the
//! text itself (words, tables, chains, `--noflush` semantics) is read by
//! `chainsmith_iptables::RuleSet`, and each rule is parsed here into what it
//! matches and does ([`ParsedRule`]).
//!
//! Input: a ruleset — any `iptables-save` dump (canonical argument order, `/32`,
//! `--set-xmark`, ...) or kube-proxy restore payloads applied one after another
//! ([`Ruleset::from_dump`], [`Ruleset::apply`]), or `iptables -S` output of a
//! table named by the caller ([`Ruleset::from_rules_listing`]), optionally
//! completed with the jumps kube-proxy inserts into the built-in chains
//! ([`Ruleset::with_builtin_jumps`]) — and a [`Packet`] on a [`Node`]. A dump
//! records the IP family it says it is for ([`Ruleset::family`]). Output: a
//! [`Trace`]: for every branch of the `statistic` choices an [`Outcome`] with its
//! probability, the [`Verdict`], masquerading, the DNAT chosen, the mark, the
//! session-affinity lists set, and the path of [`Step`]s (each chain entered,
//! each rule that matched with its text and comment, and where each chain
//! left goes back to); plus warnings for what could not be modelled and the
//! assumptions made for what the ruleset does not hold (an absent table is
//! taken as empty with policy ACCEPT). [`trace_upstream_test`] is upstream's unit-test
//! tracer, which is what the conformance suite's `flows.yaml` files assert.
//!
//! Architecture invariant: pure. It knows the rule text and the kernel's
//! evaluation order, nothing of Kubernetes objects, plans or how rules are
//! generated; it runs no process and reads no file or clock (callers pass
//! text). Odd rules never fail a trace: they become warnings. Loading is
//! strict only for structure `iptables-restore` refuses too (a `-j` without
//! target, an option without its value, a word after a target that is none
//! of its options: [`RuleProblem`]), and other software's matches and targets
//! load as unmodelled.
//!
//! Start reading at [`trace`] (`kernel.rs`), then [`ParsedRule::parse`]
//! (`rule.rs`) for what a rule line means.

mod drift;
mod error;
mod kernel;
mod packet;
mod rule;
mod ruleset;
mod upstream;

pub use drift::{ChainDrift, Drift, DriftKind, drift};
pub use error::{RuleProblem, TraceError};
pub use kernel::{Action, MAX_BRANCHES, Outcome, Step, Trace, Verdict, trace};
pub use packet::{CtState, Node, Origin, Packet};
pub use rule::{Match, ParsedRule, PortField, PortRange, RecentAction, Target};
pub use ruleset::{Chain, Ruleset};
pub use upstream::{UpstreamTrace, trace_upstream_test, trace_upstream_test_detailed};
