//! The `iptables-restore` text chainsmith writes: plans rendered to text,
//! upstream's normal form, full payloads cut into batches, plans compared.
//!
//! - [`render`]: a [`chainsmith_planner::Plan`] (or parts of one) to restore
//!   input, byte for byte as upstream kube-proxy writes it: `*filter` then `*nat`,
//!   chain lines, rules in generation order, `-X` lines for stale chains, the
//!   NodePort jump last. [`render::PayloadWriter`] writes the partial payloads the
//!   sync engine asks for.
//! - [`normalize`]: upstream's test normal form (what kube-proxy's own unit tests
//!   compare) and its rule-jump consistency check.
//! - [`batch`]: a full payload cut into small restores of whole chains,
//!   leaves first, for the nf_tables backend (one big transaction there costs
//!   far more than many small ones).
//! - [`changes`]: what a port's plan and the node write, per table and chain,
//!   for `chainsmith_changes`' Service-by-Service comparison of two plans
//!   ([`diff_plans`]).
//!
//! Reading text back (words, tables, chains and rules) is
//! `chainsmith_iptables`'s; [`normalize`] and [`batch`] read through it.
//!
//! Architecture invariant: this crate knows the text format and nothing about
//! Kubernetes objects (a Service is only the `namespace/name` key its ports
//! carry); it decides no rule content (the planner does) and runs no
//! process. Rendering appends to a caller-owned buffer so the buffer can be
//! reused between syncs.

pub mod batch;
pub mod changes;
pub mod normalize;
pub mod render;

pub use changes::diff_plans;
pub use render::{PayloadWriter, render_plan, write_rule};
