//! What the nftables-mode commands share: a node's first full sync of a
//! cluster, as a transaction and as the table it builds.

use anyhow::{Context, Result};
use chainsmith_k8s::Manifests;
use chainsmith_model::{IpFamily, NodeConfig};
use chainsmith_nftables::{Family, Table, Transaction};
use chainsmith_sync::NftSyncEngine;

use crate::input;

/// The nftables family of a node's IP family.
pub fn family(family: IpFamily) -> Family {
    match family {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// What a fresh proxier sends to an empty node for this cluster, and the
/// table that leaves; diagnostics go to stderr.
pub fn first_sync(node: &NodeConfig, manifests: &Manifests) -> Result<(Transaction, Table)> {
    let mut engine = NftSyncEngine::new(node.clone());
    input::report_diagnostics(engine.context().diagnostics());
    input::report_diagnostics(engine.nft_context().diagnostics());
    engine.replace_state(&manifests.services, &manifests.endpoint_slices);
    input::report_diagnostics(&engine.take_diagnostics());
    input::report_diagnostics(&input::other_family_notes(&manifests.services, node.ip_family));
    let transaction = engine.sync(0, false).main;
    let mut table = Table::new(family(node.ip_family));
    table
        .apply(&transaction)
        .context("the compiled transaction is one the kernel would refuse")?;
    Ok((transaction, table))
}
