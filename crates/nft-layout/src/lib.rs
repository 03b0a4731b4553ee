//! kube-proxy's nftables mode as a layout: the planner's decisions written as
//! the objects of table `kube-proxy` (family `ip` or `ip6`).
//!
//! - [`NftContext`]: the node's settings in this mode's terms (detector
//!   matches, where NodePorts are open, the Service CIDRs);
//! - [`setup`]: the fixed objects a full sync (re)writes: base chains, the
//!   dispatch and check chains, the verdict maps and sets;
//! - [`PortObjects::of`]: what one service port wants: its chains with their
//!   rules, its affinity sets and its elements in the shared maps;
//! - [`NftRules`]: the same per chain, set and map as texts, for comparing two
//!   plans Service by Service (`chainsmith diff --from/--to`).
//!
//! Architecture invariant: no decisions and no memory. Whether a port has
//! endpoints, which ones, what is masqueraded and whom a firewall admits come
//! from the planner; what was written before, which syncs are partial and
//! when stale chains go belong to the sync engine. This crate only knows how
//! upstream's nftables proxier spells a decision.

mod changes;
mod context;
mod fixed;
mod port;

pub use changes::NftRules;
pub use context::{NftContext, NodePortMatch};
pub use fixed::{ElementMap, chain_role, chains, setup};
pub use port::{OwnChain, PortObjects, endpoint_chain_base, port_base};
