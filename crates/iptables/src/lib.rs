//! The iptables vocabulary chainsmith speaks, and the one reader of iptables
//! text, below every stage that writes or reads rules.
//!
//! - [`Rule`], [`Arg`], [`Target`]: one `-A CHAIN ...` line as a layout emits
//!   it, borrowed and on the stack, into a [`RuleSink`]; each [`Arg`] stands
//!   for a fixed run of `iptables-restore` tokens in upstream's order.
//! - [`Table`] and the jumps from the built-in chains ([`BuiltinJump`]) of
//!   each layout: the fixed chain layout a node holds beside the restore
//!   payload, which the applier installs and the tracer and test kit assume.
//! - Reading text back: [`words`] splits a line as `iptables-restore` does
//!   (quotes, escapes); [`RuleSet`] is what the tables hold (tables -> chains
//!   with policy and counters -> rules), read from an `iptables-save` dump or
//!   built from restore payloads applied with `--noflush` semantics, refusing
//!   what the kernel refuses. Its rules are text, or whatever a reader builds
//!   from the text ([`RuleLine`]: the tracer's parsed rules).
//!
//! Architecture invariant: a vocabulary and a reader only. It knows no
//! Service, no plan, no decision and no spelling (the renderer spells, a
//! layout decides what to emit), and not what a rule's matches mean (the
//! tracer does), so the renderer, tracer, applier and test kit can share it
//! without depending on the planner.

mod builtin;
mod footprint;
mod jumps;
mod read;
mod rules;
mod ruleset;
mod section;
mod tokenize;

pub use builtin::{builtin_chains, is_builtin_chain, is_builtin_target};
pub use footprint::{Footprint, TableFootprint};
pub use jumps::{BUILTIN_JUMPS, BuiltinJump, V1_10_JUMPS};
pub use read::ReadError;
pub use rules::{Arg, CountingSink, Rule, RuleSink, Table, Target, emit};
pub use ruleset::{Chain, RuleLine, RuleSet};
pub use tokenize::{Word, Words, comment_of, jump_of, words};
