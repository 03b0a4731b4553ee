//! The nftables packet tracer: what the kernel does with one packet, given
//! kube-proxy's nftables table.
//!
//! This crate owns the *meaning* of the rules kube-proxy's nftables mode
//! writes, as the kernel evaluates them. The table itself (chains, rules,
//! sets and map elements, and how transactions change them) is
//! `chainsmith_nftables::Table`'s; whether its rules came from knftables'
//! transaction text or from the kernel's `nft list ruleset` does not matter:
//! both spellings of every rule form read alike (`rule.rs`).
//!
//! Input: a [`Table`](chainsmith_nftables::Table), a [`Node`] (its local
//! addresses) and a [`Packet`] (addresses, protocol, port, where it starts,
//! conntrack state, session affinity already recorded). Output: a [`Trace`]:
//! for every distinct result of the `numgen` choices an [`Outcome`] with its
//! probability, the [`Verdict`], the destination after DNAT, masquerading,
//! the mark, the affinity recorded, and the path of [`Step`]s (every base
//! chain entered, every rule evaluated and what it did).
//!
//! Architecture invariant: pure. It knows nftables rule text and the kernel's
//! evaluation order, nothing of Kubernetes objects, plans, kube-proxy's chain
//! names or how the rules were generated; it runs no process and reads no
//! file or clock. It never guesses: a rule form, set type or element it does
//! not understand is a [`TraceError`], not a rule skipped.
//!
//! Start reading at [`Tracer::trace`] (`kernel.rs`), then `parse_rule`
//! (`rule.rs`) for what a rule means.

mod error;
mod kernel;
mod packet;
mod rule;
mod set;

pub use error::TraceError;
pub use kernel::{Action, MAX_BRANCHES, Outcome, RuleRef, Step, Trace, Tracer, Verdict, trace};
pub use packet::{CtState, Node, Origin, Packet};
