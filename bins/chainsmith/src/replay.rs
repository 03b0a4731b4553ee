//! `chainsmith replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chainsmith_iptables::RuleSet;
use chainsmith_k8s::Manifests;
use chainsmith_model::IpFamily;
use chainsmith_nft_netlink::{ApplyReport, NetlinkApplier};
use chainsmith_nftables::{Table, Transaction, read_transaction};
use chainsmith_sync::{NftSyncEngine, PartialSyncMode, SyncEngine, SyncKind};
use clap::{Args, ValueEnum};

use crate::diff::plural;
use crate::input::{self, LayoutArg, ModeArg, ProxyMode};
use crate::metrics::{NftMetrics, RuleMetrics};
use crate::nft;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PartialSync {
    /// Exactly upstream kube-proxy's partial payloads.
    Compat,
    /// Only the chains whose content changed.
    Minimal,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Node and proxier settings (the conformance suite's node.yaml keys).
    #[arg(long, value_name = "NODE.yaml")]
    node: PathBuf,
    /// Directory for the payload of each sync NN (NN.iptables; in nftables
    /// mode NN.nft, and NN.cleanup.nft when stale chains were deleted first)
    /// and its metrics (NN.metrics).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// What iptables partial syncs write (default compat; the v1.10 layout has
    /// none: every sync is full).
    #[arg(long, value_enum)]
    partial_sync: Option<PartialSync>,
    /// nftables mode: the kernel's ruleset before the first sync, in dump form
    /// (`add table ...` lines), as a restarted proxier finds it.
    #[arg(long, value_name = "FILE")]
    existing_ruleset: Option<PathBuf>,
    /// nftables mode: also apply each sync into this network namespace (`ip
    /// netns` name) with the netlink applier `run` uses (the existing ruleset
    /// first, if given), and write NN.apply.json: the sync's kind, the time
    /// the kernel took, the transactions and bytes sent.
    #[arg(long, value_name = "NAME")]
    apply_netns: Option<String>,
    /// Syncs (1-based) to force full, as after a failed restore or a flush.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    full_sync_at: Vec<usize>,
    /// The simulated second at which each sync runs (default: all at 0). In
    /// nftables mode it decides when stale chains are old enough to delete.
    #[arg(long, value_name = "T1,T2,...", value_delimiter = ',')]
    clock: Vec<f64>,
    #[command(flatten)]
    mode: ModeArg,
    #[command(flatten)]
    layout: LayoutArg,
    /// Complete cluster states, one per sync (objects not listed are deleted).
    #[arg(value_name = "STATE.yaml", required = true)]
    states: Vec<PathBuf>,
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    if !args.clock.is_empty() && args.clock.len() != args.states.len() {
        bail!(
            "--clock has {} for {}",
            plural(args.clock.len(), "value", "values"),
            plural(args.states.len(), "state", "states")
        );
    }
    if let Some(bad) = args
        .full_sync_at
        .iter()
        .find(|n| **n == 0 || **n > args.states.len())
    {
        bail!(
            "--full-sync-at {bad} is not a sync between 1 and {}",
            args.states.len()
        );
    }
    args.mode.check_layout(&args.layout)?;
    let clock_ms = clock_millis(&args.clock)?;
    match args.mode.mode {
        ProxyMode::Iptables => {
            if args.existing_ruleset.is_some() {
                bail!("--existing-ruleset is an nftables ruleset; give it with --mode nftables");
            }
            if args.apply_netns.is_some() {
                bail!("--apply-netns applies nftables transactions; give it with --mode nftables");
            }
            replay_iptables(args, read_states(args, &clock_ms)?)
        }
        ProxyMode::Nftables => {
            if args.partial_sync.is_some() {
                bail!("--partial-sync chooses iptables partial syncs; nftables mode has upstream's only");
            }
            replay_nftables(args, read_states(args, &clock_ms)?)
        }
    }
}

fn replay_iptables(args: &ReplayArgs, syncs: Vec<Sync>) -> Result<()> {
    let node = input::load_node(Some(&args.node))?;
    prepare_out(&args.out)?;
    let family = node.ip_family;
    let mode = match args.partial_sync.unwrap_or(PartialSync::Compat) {
        PartialSync::Compat => PartialSyncMode::Compat,
        PartialSync::Minimal => PartialSyncMode::Minimal,
    };
    let mut engine = SyncEngine::with_layout(node, mode, args.layout.layout);
    input::report_diagnostics(engine.context().diagnostics());
    // Every payload is applied to a model of the kernel's tables, which refuses
    // what iptables-restore would refuse.
    let mut kernel = RuleSet::new();
    let mut stderr = std::io::stderr().lock();
    for sync in syncs {
        let Sync {
            step,
            state,
            manifests,
            now_ms,
            force_full,
        } = sync;
        report_state(&manifests, family);
        engine.replace_state(&manifests.services, &manifests.endpoint_slices);
        input::report_diagnostics(&engine.take_diagnostics());
        let outcome = engine.sync(now_ms, force_full);
        let payload = std::str::from_utf8(outcome.payload)
            .context("payload is not UTF-8")?
            .to_string();
        let (kind, counts) = (outcome.kind, outcome.counts);
        kernel.apply(&payload).with_context(|| {
            format!(
                "sync {step} ({}) produced a payload the kernel would refuse",
                state.display()
            )
        })?;
        engine.commit(true);
        write(&args.out.join(format!("{step:02}.iptables")), &payload)?;
        let metrics = RuleMetrics::new()?;
        metrics.record(family, &counts, payload.len());
        write(&args.out.join(format!("{step:02}.metrics")), &metrics.encode()?)?;
        let kind = match kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        let rules = if counts.filter_last + counts.nat_last == 1 {
            "rule"
        } else {
            "rules"
        };
        let _ = writeln!(
            stderr,
            "{step:02} {kind:<7} {}, {} filter + {} nat {rules} written, {} deleted ({})",
            plural(payload.len(), "byte", "bytes"),
            counts.filter_last,
            counts.nat_last,
            plural(counts.nat_deleted_chains, "chain", "chains"),
            state.display()
        );
    }
    Ok(())
}

/// nftables mode: every transaction goes through a model of the kernel's
/// table, which refuses what the kernel would refuse.
fn replay_nftables(args: &ReplayArgs, syncs: Vec<Sync>) -> Result<()> {
    let node = input::load_node(Some(&args.node))?;
    let ip_family = node.ip_family;
    let family = nft::family(ip_family);
    let mut engine = NftSyncEngine::new(node);
    input::report_diagnostics(engine.context().diagnostics());
    input::report_diagnostics(engine.nft_context().diagnostics());
    let mut kernel = Table::new(family);
    let existing = match &args.existing_ruleset {
        Some(path) => {
            let text = input::read_text(path)?;
            let existing = read_transaction(&text, family).with_context(|| format!("{}", path.display()))?;
            if existing.family != family {
                bail!(
                    "{} holds table {} kube-proxy; the node programs family {family} ({})",
                    path.display(),
                    existing.family,
                    ip_family
                );
            }
            kernel
                .apply(&existing)
                .with_context(|| format!("{} is not a ruleset the kernel could hold", path.display()))?;
            engine.set_existing(&kernel);
            Some((path, existing))
        }
        None => None,
    };
    let mut applier = match &args.apply_netns {
        Some(name) => Some(NamespaceApplier::open(name)?),
        None => None,
    };
    // Every input has been read: the outputs of an earlier run can go.
    prepare_out(&args.out)?;
    if let (Some(applier), Some((path, existing))) = (&mut applier, &existing) {
        applier
            .apply(existing)
            .with_context(|| format!("applying {} in the namespace", path.display()))?;
    }
    let mut stderr = std::io::stderr().lock();
    // The namespace has no table until the first sync (unless an existing
    // ruleset was put there first).
    let mut into_empty = args.existing_ruleset.is_none();
    for sync in syncs {
        let Sync {
            step,
            state,
            manifests,
            now_ms,
            force_full,
        } = sync;
        report_state(&manifests, ip_family);
        engine.replace_state(&manifests.services, &manifests.endpoint_slices);
        input::report_diagnostics(&engine.take_diagnostics());
        let outcome = engine.sync(now_ms, force_full);
        let refused = |what: &str| {
            format!(
                "sync {step} ({}) produced a {what} transaction the kernel would refuse",
                state.display()
            )
        };
        if let Some(cleanup) = &outcome.cleanup {
            kernel.apply(cleanup).with_context(|| refused("cleanup"))?;
            write(
                &args.out.join(format!("{step:02}.cleanup.nft")),
                &cleanup.to_text(),
            )?;
        }
        let main = outcome.main.to_text();
        kernel.apply(&outcome.main).with_context(|| refused("main"))?;
        if let Some(applier) = &mut applier {
            let kind = match outcome.kind {
                SyncKind::Full => "full",
                SyncKind::Partial => "partial",
            };
            let report = applier
                .sync(outcome.cleanup.as_ref(), &outcome.main, kind, into_empty)
                .with_context(|| format!("sync {step} ({}) in the namespace", state.display()))?;
            write(&args.out.join(format!("{step:02}.apply.json")), &report)?;
            into_empty = false;
        }
        engine.commit(true, true);
        write(&args.out.join(format!("{step:02}.nft")), &main)?;
        let metrics = NftMetrics::new()?;
        metrics.record(ip_family, &outcome.counts, &engine.counters(), main.len());
        write(&args.out.join(format!("{step:02}.metrics")), &metrics.encode()?)?;
        let kind = match outcome.kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        let _ = writeln!(
            stderr,
            "{step:02} {kind:<7} {}, {}, {} written, {}, {} flushed as stale, {} deleted ({})",
            plural(outcome.main.len(), "operation", "operations"),
            plural(main.len(), "byte", "bytes"),
            plural(outcome.counts.chains_written, "chain", "chains"),
            plural(
                outcome.counts.element_changes,
                "element change",
                "element changes"
            ),
            plural(outcome.counts.stale_flushed, "chain", "chains"),
            outcome.counts.stale_deleted,
            state.display()
        );
    }
    Ok(())
}

/// `--apply-netns`: the netlink applier in a named network namespace.
struct NamespaceApplier {
    netlink: NetlinkApplier,
    name: String,
}

impl NamespaceApplier {
    fn open(name: &str) -> Result<NamespaceApplier> {
        let path = Path::new("/run/netns").join(name);
        let netlink = NetlinkApplier::in_netns(&path)
            .with_context(|| format!("cannot reach network namespace {name} ({})", path.display()))?;
        Ok(NamespaceApplier {
            netlink,
            name: name.to_string(),
        })
    }

    fn apply(&mut self, transaction: &Transaction) -> Result<ApplyReport> {
        self.netlink
            .apply(transaction)
            .with_context(|| format!("network namespace {}", self.name))
    }

    /// Applies one sync (its cleanup transaction first) and returns
    /// NN.apply.json: the kind, the seconds the kernel took, the
    /// transactions and bytes sent. A first sync into a namespace without
    /// the table goes in pieces ([`NetlinkApplier::apply_main`]).
    fn sync(
        &mut self,
        cleanup: Option<&Transaction>,
        main: &Transaction,
        kind: &str,
        into_empty: bool,
    ) -> Result<String> {
        let started = Instant::now();
        let mut bytes = 0;
        let mut transactions = 0;
        if let Some(cleanup) = cleanup {
            bytes += self.apply(cleanup)?.bytes;
            transactions += 1;
        }
        let (main_bytes, main_transactions) = self
            .netlink
            .apply_main(main, into_empty)
            .with_context(|| format!("network namespace {}", self.name))?;
        bytes += main_bytes;
        transactions += main_transactions;
        let report = serde_json::json!({
            "kind": kind,
            "apply_seconds": started.elapsed().as_secs_f64(),
            "transactions": transactions,
            "bytes": bytes,
        });
        Ok(serde_json::to_string_pretty(&report)? + "\n")
    }
}

/// One sync to run.
struct Sync<'a> {
    /// Its number, from 1.
    step: usize,
    /// The file of its cluster state.
    state: &'a Path,
    /// The cluster state.
    manifests: Manifests,
    /// Its simulated time.
    now_ms: u64,
    /// Whether it is forced full.
    force_full: bool,
}

/// Every sync, with every state file read before anything is written: a
/// file that does not read fails the replay before sync 01 is written.
fn read_states<'a>(args: &'a ReplayArgs, clock_ms: &[u64]) -> Result<Vec<Sync<'a>>> {
    args.states
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let step = index + 1;
            Ok(Sync {
                step,
                state,
                manifests: input::load_manifests(&[state])?,
                now_ms: clock_ms.get(index).copied().unwrap_or(0),
                force_full: args.full_sync_at.contains(&step),
            })
        })
        .collect()
}

/// A state's problems, printed when its sync runs.
fn report_state(manifests: &Manifests, family: IpFamily) {
    input::report_diagnostics(&manifests.diagnostics);
    input::report_diagnostics(&input::other_family_notes(&manifests.services, family));
}

/// Creates `--out`, or removes what an earlier replay wrote there (`NN.iptables`,
/// `NN.nft`, `NN.cleanup.nft`, `NN.metrics`, `NN.apply.json`): a shorter or
/// other-mode run would otherwise leave syncs that are not its own beside
/// its output. Anything else in the directory is left alone.
fn prepare_out(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !name.to_str().is_some_and(is_replay_output) {
            continue;
        }
        std::fs::remove_file(entry.path())
            .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        removed += 1;
    }
    if removed > 0 {
        let _ = writeln!(
            std::io::stderr().lock(),
            "note: removed {} an earlier replay wrote to {}",
            plural(removed, "file", "files"),
            dir.display()
        );
    }
    Ok(())
}

/// Whether a file name is one replay writes: `NN.iptables`, `NN.nft`,
/// `NN.cleanup.nft`, `NN.metrics` or `NN.apply.json` (two digits or more).
fn is_replay_output(name: &str) -> bool {
    let Some((step, kind)) = name.split_once('.') else {
        return false;
    };
    step.len() >= 2
        && step.bytes().all(|b| b.is_ascii_digit())
        && matches!(
            kind,
            "iptables" | "nft" | "cleanup.nft" | "metrics" | "apply.json"
        )
}

fn clock_millis(seconds: &[f64]) -> Result<Vec<u64>> {
    let mut previous = 0.0;
    seconds
        .iter()
        .map(|&s| {
            if !s.is_finite() || s < 0.0 || s < previous {
                bail!("--clock values must be non-negative and non-decreasing, got {s}");
            }
            previous = s;
            // Float seconds to whole milliseconds; the range check above keeps it sane.
            Ok((s * 1000.0).round() as u64)
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
