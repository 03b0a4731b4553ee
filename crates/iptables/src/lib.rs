//! The iptables vocabulary chainsmith speaks, below every stage that writes or
//! reads rules.
//!
//! - [`Rule`], [`Arg`], [`Target`]: one `-A CHAIN ...` line as a layout emits
//!   it, borrowed and on the stack, into a [`RuleSink`]; each [`Arg`] stands
//!   for a fixed run of `iptables-restore` tokens in upstream's order.
//! - [`Table`] and the jumps from the built-in chains ([`BuiltinJump`]) of
//!   each layout: the fixed chain layout a node holds beside the restore
//!   payload, which the applier installs and the tracer and test kit assume.
//!
//! Architecture invariant: a vocabulary only. It knows no Service, no plan,
//! no decision and no spelling (the renderer spells, a layout decides what to
//! emit), so the tracer, applier and test kit can share it without depending on
//! the planner.

mod jumps;
mod rules;

pub use jumps::{BUILTIN_JUMPS, BuiltinJump, V1_10_JUMPS};
pub use rules::{Arg, CountingSink, Rule, RuleSink, Table, Target, emit};
