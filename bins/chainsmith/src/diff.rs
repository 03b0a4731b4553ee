//! `chainsmith diff`: what the kernel holds against what should be there.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chainsmith_applier::{Applier, Backend, NetnsRunner, Runner, SystemRunner, Tools};
use chainsmith_tracer::{Drift, DriftKind, Ruleset, drift};
use clap::{Args, ValueEnum};

use crate::input;
use crate::trace::{Output, compiled_ruleset};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Node and proxier settings.
    #[arg(long, value_name = "NODE.yaml")]
    node: Option<PathBuf>,
    /// Cluster manifests: the state whose rules should be in the kernel.
    #[arg(value_name = "CLUSTER.yaml", required = true)]
    clusters: Vec<PathBuf>,
    /// Compare with this `iptables-save` output.
    #[arg(long, value_name = "DUMP.txt", conflicts_with = "live")]
    rules: Option<PathBuf>,
    /// Compare with the kernel's tables now (runs `iptables-save`; read only).
    #[arg(long)]
    live: bool,
    /// With --live: read the tables of this network namespace.
    #[arg(long, value_name = "NAME", requires = "live")]
    netns: Option<String>,
    /// With --live: the iptables backend (default: what `iptables` uses).
    #[arg(long, value_enum, requires = "live")]
    backend: Option<BackendArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Runs the command; `Ok(true)` when the kernel drifted from the desired rules.
pub fn run(args: &DiffArgs) -> Result<bool> {
    let node = input::load_node(args.node.as_deref())?;
    let desired = compiled_ruleset(&node, &args.clusters)?;
    let dump = match (&args.rules, args.live) {
        (Some(path), _) => input::read_text(path)?,
        (None, true) => {
            let runner: Box<dyn Runner> = match &args.netns {
                Some(name) => Box::new(NetnsRunner::new(name)),
                None => Box::new(SystemRunner),
            };
            let backend = args.backend.map(|b| match b {
                BackendArg::Nft => Backend::NfTables,
                BackendArg::Legacy => Backend::Legacy,
            });
            let tools = Tools::detect(&*runner, node.ip_family, backend)?;
            let applier = Applier::new(tools, runner);
            format!("{}{}", applier.save_table("filter")?, applier.save_table("nat")?)
        }
        (None, false) => bail!("compare with --rules DUMP.txt or --live"),
    };
    let actual = Ruleset::from_dump(&dump).context("the kernel's rules do not parse")?;
    let found = drift(&desired, &actual);
    let text = match args.output {
        Output::Text => describe(&found),
        Output::Json => serde_json::to_string_pretty(&found)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(!found.is_empty())
}

fn describe(drift: &Drift) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for chain in &drift.chains {
        let what = match chain.kind {
            DriftKind::MissingChain => "missing: the chain should exist".to_string(),
            DriftKind::ExtraChain => "extra: the chain should not exist".to_string(),
            DriftKind::ChangedRules => {
                format!(
                    "changed: {} rules missing, {} rules extra",
                    chain.missing.len(),
                    chain.extra.len()
                )
            }
        };
        let _ = writeln!(out, "{} {}: {what}", chain.table, chain.chain);
        for rule in &chain.missing {
            let _ = writeln!(out, "  - {rule}");
        }
        for rule in &chain.extra {
            let _ = writeln!(out, "  + {rule}");
        }
    }
    if drift.is_empty() {
        let _ = writeln!(out, "no drift: the kernel holds exactly the rules it should");
    } else {
        let _ = writeln!(
            out,
            "{} chains differ (- should be there, + should not)",
            drift.chains.len()
        );
    }
    out
}
