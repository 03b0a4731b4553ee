//! The planner: kube-proxy's decisions as pure functions.
//!
//! Input: the model (`chainsmith_model::Service`, `EndpointSlice`, `NodeConfig`).
//! Output: a [`Plan`], i.e. for every service port a [`ServicePortPlan`] holding
//! the decisions upstream's proxier makes: which endpoints serve cluster,
//! Local-policy and external traffic (with the terminating fallback and
//! topology hints), whether each entry point reaches an endpoint or is
//! rejected or dropped, what is masqueraded, which sources a load-balancer
//! firewall admits, affinity and health checks; plus the node's resolved
//! settings ([`NodeContext`]: the local traffic detector, where NodePorts are
//! open, the masquerade mark). A plan names no rule: a layout
//! (`chainsmith-layout`) turns decisions into rules, so the v1.33 and v1.10
//! iptables layouts (and later nftables) share one set of decisions.
//!
//! The stages, in the order upstream runs them:
//! - [`service_ports`]: one Service -> its [`ServicePortInfo`]s for one family
//!   (`pkg/proxy/serviceport.go`);
//! - [`endpoints_by_port`]: the EndpointSlices of one Service -> the sorted,
//!   de-duplicated [`EndpointInfo`]s of each port (`endpointslicecache.go`);
//! - [`ServicePortPlan::new`]: cluster/local endpoint selection with terminating
//!   fallback and topology hints (`topology.go`) and the per-port decisions
//!   (`proxier.go`);
//! - [`plan_service`]: all three for one Service, as both [`Plan::compile`]
//!   and the sync engine call it.
//!
//! Architecture invariant: no I/O, clock, randomness or process; no rule text,
//! argument or fixed chain (a layout's), no Kubernetes client types, and no
//! memory of what was applied before (the sync engine's). The same inputs
//! always give the same plan, in the same order.

mod context;
mod endpoints;
mod plan;
mod service_port;

pub use context::{
    LARGE_CLUSTER_ENDPOINTS_THRESHOLD, LocalDetector, NodeContext, NodePortDestinations, nfacct,
};
pub use endpoints::{EndpointInfo, PortEndpoints, endpoints_by_port};
pub use plan::{
    EndpointsInRole, Plan, PortKey, ServicePortPlan, distinct_service_ports, other_family_note, plan_service,
};
pub use service_port::{Addr, ServiceAddresses, ServicePortInfo, service_ports};
