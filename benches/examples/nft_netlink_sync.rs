//! nftables mode into a real kernel, side by side (each in a fresh network
//! namespace this program creates; no packet is sent): what kube-proxy does,
//! one `nft -f` of the whole first-sync transaction, against chainsmith's
//! netlink applier sending the same transaction cut leaves first
//! (`Transaction::split_leaves_first`), then one endpoint changed on the
//! loaded table, through `nft -f` (which lists the whole table into its
//! cache first) and through netlink (which does not). With `--restart`, a
//! restarted proxy's first full sync over the loaded table, as one
//! transaction and cut leaves first (upstream's content), and keeping the
//! chains that already hold what would be written (`run`'s), each into its
//! own loaded namespace.
//! Needs root.
//!
//! `cargo run --release -p chainsmith-benches --example nft_netlink_sync -- 10000 10 [OPS [RESTART_OPS]] [--no-nft] [--restart]`
//! (OPS: operations per netlink transaction of the first sync, default the
//! applier's `FIRST_SYNC_PIECE_OPS`; RESTART_OPS the same for the restart,
//! default OPS; `--no-nft` skips the one-`nft -f` first sync, minutes at 10k
//! x 10).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chainsmith_benches::{cluster, node, toggle_endpoint};
use chainsmith_nft_netlink::{FIRST_SYNC_PIECE_OPS, NetlinkApplier};
use chainsmith_nftables::{Family, Transaction, drift};
use chainsmith_sync::NftSyncEngine;
use chainsmith_testkit::{Netns, nft_apply, nft_list_table};

type Error = Box<dyn std::error::Error>;

fn netlink(netns: &Netns) -> Result<NetlinkApplier, Error> {
    Ok(NetlinkApplier::in_netns(
        &Path::new("/run/netns").join(netns.name()),
    )?)
}

/// Sends `pieces` in order over netlink; seconds taken.
fn send_netlink(applier: &mut NetlinkApplier, pieces: &[Transaction]) -> Result<f64, Error> {
    let start = Instant::now();
    for piece in pieces {
        applier.apply(piece)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Error> {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<usize> = words.iter().filter_map(|a| a.parse().ok()).collect();
    chainsmith_testkit::remove_own_namespaces_on_signals()?;
    let with_nft = !words.iter().any(|w| w == "--no-nft");
    let with_restart = words.iter().any(|w| w == "--restart");
    let (services, endpoints) = (
        numbers.first().copied().unwrap_or(2_500),
        numbers.get(1).copied().unwrap_or(10),
    );
    let mut input = cluster(services, endpoints);
    let mut engine = NftSyncEngine::new(node());
    engine.replace_state(&input.services, &input.slices);
    let first = engine.sync(0, false).main;
    engine.commit(true, true);
    let piece_ops = numbers.get(2).copied().unwrap_or(FIRST_SYNC_PIECE_OPS);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: {} operations, {} bytes as nft -f text",
        first.len(),
        first.to_text().len()
    )?;

    // First sync.
    let whole_nft = if with_nft {
        let netns = Netns::new("nftwhole")?;
        let start = Instant::now();
        nft_apply(&netns, &first.to_text())?;
        let seconds = start.elapsed().as_secs_f64();
        writeln!(out, "first sync, one nft -f (kube-proxy): {seconds:.2} s")?;
        Some(netns)
    } else {
        None
    };
    let split = Instant::now();
    let pieces = first.split_leaves_first(piece_ops);
    let split_ms = split.elapsed().as_secs_f64() * 1e3;
    let loaded = Netns::new("nftnetlink")?;
    let mut applier = netlink(&loaded)?;
    let seconds = send_netlink(&mut applier, &pieces)?;
    writeln!(
        out,
        "first sync, netlink, {} transactions of at most {piece_ops} operations: {seconds:.2} s (split in {split_ms:.0} ms)",
        pieces.len()
    )?;

    // One endpoint changed (its readiness flipped), on the loaded table.
    let slice = input.slices.first_mut().ok_or("no slices")?;
    *slice = toggle_endpoint(slice);
    engine.replace_state(&input.services, &input.slices);
    let compile = Instant::now();
    let change = engine.sync(1_000, false).main;
    let compile_ms = compile.elapsed().as_secs_f64() * 1e3;
    let netlink_ms = send_netlink(&mut applier, std::slice::from_ref(&change))? * 1e3;
    writeln!(
        out,
        "one endpoint changed: {} operations; compile {compile_ms:.2} ms, netlink {netlink_ms:.2} ms",
        change.len()
    )?;
    if let Some(netns) = &whole_nft {
        let start = Instant::now();
        nft_apply(netns, &change.to_text())?;
        writeln!(
            out,
            "one endpoint changed, nft -f (kube-proxy): {:.2} ms",
            start.elapsed().as_secs_f64() * 1e3
        )?;
    }
    if with_restart {
        let restart_ops = numbers.get(3).copied().unwrap_or(piece_ops);
        restart(&mut out, &loaded, &pieces, &change, &input, restart_ops)?;
    }
    Ok(())
}

/// A restarted proxy's first full sync over the loaded table (`loaded`,
/// which took `first` then `change`), one transaction there, and cut leaves
/// first into a second namespace loaded the same way; both must end equal.
fn restart(
    out: &mut impl Write,
    loaded: &Netns,
    first: &[Transaction],
    change: &Transaction,
    input: &chainsmith_benches::Cluster,
    piece_ops: usize,
) -> Result<(), Error> {
    let existing = nft_list_table(loaded, Family::Ip)?;
    let mut kept = NftSyncEngine::new(node());
    kept.keep_unchanged_chains_at_start();
    kept.set_existing(&existing);
    kept.replace_state(&input.services, &input.slices);
    let started = Instant::now();
    let keeping = kept.sync(2_000, false).main;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut restarted = NftSyncEngine::new(node());
    restarted.set_existing(&existing);
    restarted.replace_state(&input.services, &input.slices);
    let full = restarted.sync(2_000, false).main;
    let pieces = full.split_leaves_first(piece_ops);
    let mut model = existing.clone();
    for piece in &pieces {
        model.apply_in_place(piece)?;
    }
    let mut whole = existing;
    whole.apply_in_place(&full)?;
    if !drift(&whole, &model).is_empty() {
        return Err("the pieces leave another table than the whole transaction".into());
    }
    let second = Netns::new("nftrestart")?;
    let mut second_applier = netlink(&second)?;
    send_netlink(&mut second_applier, first)?;
    send_netlink(&mut second_applier, std::slice::from_ref(change))?;
    let split_seconds = send_netlink(&mut second_applier, &pieces)?;
    let whole_seconds = send_netlink(&mut netlink(loaded)?, std::slice::from_ref(&full))?;
    writeln!(
        out,
        "restart, first full sync over the loaded table ({} operations): one transaction {whole_seconds:.2} s, \
         {} transactions leaves first {split_seconds:.2} s",
        full.len(),
        pieces.len()
    )?;
    let (a, b) = (
        nft_list_table(loaded, Family::Ip)?,
        nft_list_table(&second, Family::Ip)?,
    );
    if !drift(&a, &b).is_empty() {
        return Err("the kernel's tables differ after the restart".into());
    }
    // chainsmith's node: chains that already hold what would be written stay.
    let third = Netns::new("nftkeep")?;
    let mut third_applier = netlink(&third)?;
    send_netlink(&mut third_applier, first)?;
    send_netlink(&mut third_applier, std::slice::from_ref(change))?;
    let keeping_seconds = send_netlink(&mut third_applier, std::slice::from_ref(&keeping))?;
    writeln!(
        out,
        "restart keeping unchanged chains (what `run` does): {} operations (compile {compile_ms:.0} ms), \
         one transaction {keeping_seconds:.2} s",
        keeping.len()
    )?;
    if !drift(&a, &nft_list_table(&third, Family::Ip)?).is_empty() {
        return Err("keeping unchanged chains leaves another table".into());
    }
    Ok(())
}
