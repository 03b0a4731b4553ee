//! The sync engine: what a long-running proxier remembers between syncs.
//!
//! Feed it the desired state, one object at a time ([`SyncEngine::set_service`],
//! [`SyncEngine::set_endpoint_slice`]) or a whole snapshot
//! ([`SyncEngine::replace_state`]); ask for the next payload with
//! [`SyncEngine::sync`]; report whether applying it worked with
//! [`SyncEngine::commit`]. Only Services whose derived ports or whose
//! EndpointSlices changed are planned again, so the work of a sync follows the
//! size of the change, not of the cluster. That desired-state tracking is a
//! [`DesiredState`], which knows nothing of iptables, so the engine of every
//! mode records objects and plans in exactly the same way.
//!
//! A sync is full when it is the first, when the last one failed, when forced,
//! or when [`FULL_SYNC_PERIOD_MS`] has passed since the last full one. Partial
//! syncs come in two flavours ([`PartialSyncMode`]): `Compat` writes exactly
//! what upstream kube-proxy writes (every filter chain, the fixed nat chains, the
//! changed Services' chains, stale chains found by a scan), `Minimal` writes only
//! the chains whose content changed and deletes the chains that went away.
//!
//! [`NftSyncEngine`] is the same for kube-proxy's nftables mode: full syncs
//! rewrite the fixed objects and every Service, partial ones only the changed
//! Services' chains; set and map elements are diffed against what the kernel
//! holds; chains that went away are flushed at once and deleted
//! [`STALE_CHAIN_DELAY_MS`] later in a transaction of their own.
//!
//! Architecture invariant: pure and synchronous. Time is passed in
//! (milliseconds on any monotonic scale); the engine never reads a clock, runs
//! iptables or looks at the kernel. Its picture of which chains exist in the
//! kernel is what its own committed payloads created, plus what the caller
//! reports with [`SyncEngine::set_existing_nat_chains`] (e.g. from
//! `iptables-save` before a full sync after a restart) or
//! [`NftSyncEngine::set_existing`].

mod engine;
mod nftables;
mod state;

pub use engine::{
    FULL_SYNC_PERIOD_MS, PartialSyncMode, RuleCounts, SyncCounters, SyncEngine, SyncKind, SyncOutcome,
};
pub use nftables::{NftCounters, NftCounts, NftSyncEngine, NftSyncOutcome, STALE_CHAIN_DELAY_MS};
pub use state::{DesiredState, Replanned};
