//! The planner: kube-proxy's iptables semantics as pure functions.
//!
//! Input: the model (`chainsmith_model::Service`, `EndpointSlice`, `NodeConfig`).
//! Output: a [`Plan`], i.e. for every service port a [`ServicePortPlan`] holding
//! the decisions upstream's `syncProxyRules` makes (which chains exist, which
//! endpoints each one balances over, what gets rejected or dropped), plus the
//! fixed chains of the node ([`NodeContext`]). Rules are not stored as text: each
//! plan *emits* them, in upstream's exact generation order and argument order, as
//! [`Rule`] values into a [`RuleSink`]. A renderer turns them into
//! `iptables-restore` text; a counter counts them; nothing is allocated per rule.
//!
//! The stages, in the order upstream runs them:
//! - [`service_ports`]: one Service -> its [`ServicePortInfo`]s for one family
//!   (`pkg/proxy/serviceport.go`);
//! - [`endpoints_by_port`]: the EndpointSlices of one Service -> the sorted,
//!   de-duplicated [`EndpointInfo`]s of each port (`endpointslicecache.go`);
//! - [`ServicePortPlan::new`]: cluster/local endpoint selection with terminating
//!   fallback and topology hints (`topology.go`) and the chain decisions
//!   (`proxier.go`).
//!
//! Architecture invariant: no I/O, clock, randomness or process; no knowledge of
//! the text format (that is the renderer's), of Kubernetes client types, or of
//! what was applied before (that is the sync engine's). The same inputs always
//! give the same plan, in the same order.

mod context;
mod endpoints;
mod jumps;
mod plan;
mod rules;
mod service_port;

pub use context::{LARGE_CLUSTER_ENDPOINTS_THRESHOLD, NodeContext, nfacct};
pub use endpoints::{EndpointInfo, PortEndpoints, endpoints_by_port};
pub use jumps::{BUILTIN_JUMPS, BuiltinJump};
pub use plan::{Plan, PortKey, PortRuleCounts, ServicePortPlan};
pub use rules::{Arg, CountingSink, Rule, RuleSink, Table, Target};
pub use service_port::{Addr, ServiceAddresses, ServicePortInfo, service_ports};
