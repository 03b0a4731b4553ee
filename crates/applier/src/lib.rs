//! The applier: the only crate that changes the kernel's tables.
//!
//! [`Applier::apply`] pipes a payload into `iptables-restore --noflush --wait`
//! (`ip6tables-restore` for IPv6) and, when it fails, reports the payload line
//! and the tool's message; iptables-restore commits each table atomically, so a
//! refused table keeps its previous rules. On full syncs the caller also runs
//! [`Applier::ensure_jumps`] (the jumps from the built-in chains, checked with
//! `-C` and inserted with `-I` as upstream does), [`Applier::ensure_canaries`]
//! and [`Applier::ensure_nfacct`]. [`Tools::detect`] finds the tools' backend
//! (nf_tables or legacy) and whether `--random-fully` is supported;
//! [`backend_in_use`] tells which backend the node's kubelet writes with.
//!
//! Every command runs through a [`Runner`] with an argument vector, never a
//! shell: [`SystemRunner`] on a node, [`NetnsRunner`] inside a network namespace
//! (tests, or a node whose proxier lives in one).
//!
//! Architecture invariant: knows how to run iptables and what kube-proxy's
//! fixed objects are (jumps, canaries, counters); it does not decide rule
//! content (the planner does) nor what to sync (the sync engine does).

mod applier;
mod runner;
mod tools;

pub use applier::{Applier, ApplyError, ApplyReport, CANARY_TABLES, failing_line};
pub use runner::{CommandOutput, DEFAULT_COMMAND_TIMEOUT, NetnsRunner, Runner, SystemRunner};
pub use tools::{Backend, Tools, backend_in_use};
