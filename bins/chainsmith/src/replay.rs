//! `chainsmith replay`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chainsmith_iptables::RuleSet;
use chainsmith_sync::{PartialSyncMode, SyncEngine, SyncKind};
use clap::{Args, ValueEnum};

use crate::input::{self, LayoutArg};
use crate::metrics::RuleMetrics;

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
    /// Directory for NN.iptables (payload of sync NN) and NN.metrics.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// What partial syncs write (the v1.10 layout has none: every sync is full).
    #[arg(long, value_enum, default_value = "compat")]
    partial_sync: PartialSync,
    /// Syncs (1-based) to force full, as after a failed restore or a flush.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    full_sync_at: Vec<usize>,
    /// The simulated second at which each sync runs (default: all at 0).
    #[arg(long, value_name = "T1,T2,...", value_delimiter = ',')]
    clock: Vec<f64>,
    #[command(flatten)]
    layout: LayoutArg,
    /// Complete cluster states, one per sync (objects not listed are deleted).
    #[arg(value_name = "STATE.yaml", required = true)]
    states: Vec<PathBuf>,
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    if !args.clock.is_empty() && args.clock.len() != args.states.len() {
        bail!(
            "--clock has {} values for {} states",
            args.clock.len(),
            args.states.len()
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
    let clock_ms = clock_millis(&args.clock)?;
    let node = input::load_node(Some(&args.node))?;
    let family = node.ip_family;
    let mode = match args.partial_sync {
        PartialSync::Compat => PartialSyncMode::Compat,
        PartialSync::Minimal => PartialSyncMode::Minimal,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut engine = SyncEngine::with_layout(node, mode, args.layout.layout);
    input::report_diagnostics(engine.context().diagnostics());
    // Every payload is applied to a model of the kernel's tables, which refuses
    // what iptables-restore would refuse.
    let mut kernel = RuleSet::new();
    let mut stderr = std::io::stderr().lock();
    for (index, state) in args.states.iter().enumerate() {
        let step = index + 1;
        let manifests = input::load_manifests(&[state])?;
        input::report_diagnostics(&manifests.diagnostics);
        engine.replace_state(&manifests.services, &manifests.endpoint_slices);
        input::report_diagnostics(&engine.take_diagnostics());
        let now_ms = clock_ms.get(index).copied().unwrap_or(0);
        let outcome = engine.sync(now_ms, args.full_sync_at.contains(&step));
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
        let _ = writeln!(
            stderr,
            "{step:02} {kind:<7} {} bytes, {} filter + {} nat rules written, {} chains deleted ({})",
            payload.len(),
            counts.filter_last,
            counts.nat_last,
            counts.nat_deleted_chains,
            state.display()
        );
    }
    Ok(())
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
