//! `chainsmith diff`: what the kernel holds against what should be there
//! (`--rules`, `--live`), or what a manifest change does to the rules, Service
//! by Service (`--from OLD --to NEW`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chainsmith_applier::{Applier, Backend, NetnsRunner, Runner, SystemRunner, Tools, backend_in_use};
use chainsmith_changes::{ChainDiff, Change, PlanDiff, PortDiff, ServiceDiff};
use chainsmith_model::NodeConfig;
use chainsmith_nft_layout::NftRules;
use chainsmith_nftables::{
    DriftKind as NftDriftKind, Family, TABLE_NAME, Table, TableDrift, drift as nft_drift, read_listing,
};
use chainsmith_planner::Plan;
use chainsmith_restore::diff_plans;
use chainsmith_tracer::{Drift, DriftKind, Ruleset, drift};
use clap::{Args, ValueEnum};

use crate::input::{self, LayoutArg, ModeArg, ProxyMode};
use crate::nft;
use crate::trace::{Output, compiled_ruleset, plan_for_node};

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
    #[arg(value_name = "CLUSTER.yaml", required_unless_present = "from")]
    clusters: Vec<PathBuf>,
    /// Compare with this `iptables-save` output (in nftables mode: `nft list
    /// ruleset` or `nft list table` output).
    #[arg(long, value_name = "DUMP.txt", conflicts_with = "live")]
    rules: Option<PathBuf>,
    /// Cluster manifests before a change (repeat for several files): show,
    /// per Service, the rules the change to --to adds and removes.
    #[arg(
        long = "from",
        value_name = "OLD.yaml",
        requires = "to",
        conflicts_with_all = ["clusters", "rules", "live", "netns", "backend"]
    )]
    from: Vec<PathBuf>,
    /// Cluster manifests after the change (repeat for several files).
    #[arg(long = "to", value_name = "NEW.yaml", requires = "from")]
    to: Vec<PathBuf>,
    /// Compare with the kernel's tables now (runs `iptables-save`, or in
    /// nftables mode `nft list table`; read only).
    #[arg(long)]
    live: bool,
    /// With --live: read the tables of this network namespace.
    #[arg(long, value_name = "NAME", requires = "live")]
    netns: Option<String>,
    #[arg(long, value_enum, requires = "live", help = concat!(
        "With --live: the iptables backend; ", crate::input::backend_default!()
    ))]
    backend: Option<BackendArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    mode: ModeArg,
    #[command(flatten)]
    layout: LayoutArg,
}

/// Runs the command; `Ok(true)` when the kernel drifted from the desired rules,
/// or when the change from --from to --to changes rules.
pub fn run(args: &DiffArgs) -> Result<bool> {
    args.mode.check_layout(&args.layout)?;
    let node = input::load_node(args.node.as_deref())?;
    if !args.from.is_empty() {
        return manifest_change(args, &node);
    }
    // clap's `requires` counts the flag's default (false) as present.
    if !args.live && (args.netns.is_some() || args.backend.is_some()) {
        bail!("--netns and --backend choose which kernel tables to read: use them with --live");
    }
    if args.mode.mode == ProxyMode::Nftables {
        return kernel_drift_nftables(args, &node);
    }
    let manifests = input::load_manifests(&args.clusters)?;
    input::report_diagnostics(&manifests.diagnostics);
    let desired = compiled_ruleset(&plan_for_node(&node, &manifests), args.layout.layout)?;
    let dump = match (&args.rules, args.live) {
        (Some(path), _) => input::read_text(path)?,
        (None, true) => {
            let runner: Box<dyn Runner> = match &args.netns {
                Some(name) => Box::new(NetnsRunner::new(name)),
                None => Box::new(SystemRunner::default()),
            };
            // As `run` chooses: where the kubelet writes, else the default.
            let backend = args
                .backend
                .map(|b| match b {
                    BackendArg::Nft => Backend::NfTables,
                    BackendArg::Legacy => Backend::Legacy,
                })
                .or_else(|| backend_in_use(&*runner));
            let tools = Tools::detect(&*runner, node.ip_family, backend)?;
            let applier = Applier::new(tools, runner);
            format!("{}{}", applier.save_table("filter")?, applier.save_table("nat")?)
        }
        (None, false) => bail!("compare with --rules DUMP.txt or --live"),
    };
    let actual = Ruleset::from_dump(&dump).context("the kernel's rules do not parse")?;
    if let Some(family) = actual.family().filter(|f| *f != node.ip_family) {
        bail!(
            "the rules compared are {family} rules; the node is {}",
            node.ip_family
        );
    }
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

/// nftables mode: the `kube-proxy` table of the node's family, from a
/// listing or live, against a fresh proxier's first sync of the cluster.
fn kernel_drift_nftables(args: &DiffArgs, node: &NodeConfig) -> Result<bool> {
    if args.backend.is_some() {
        bail!("--backend chooses an iptables backend; nftables mode reads table kube-proxy with nft");
    }
    let manifests = input::load_manifests(&args.clusters)?;
    input::report_diagnostics(&manifests.diagnostics);
    let (_, desired) = nft::first_sync(node, &manifests)?;
    let family = desired.family();
    let (listing, source) = match (&args.rules, args.live) {
        (Some(path), _) => (input::read_text(path)?, path.display().to_string()),
        (None, true) => {
            let runner: Box<dyn Runner> = match &args.netns {
                Some(name) => Box::new(NetnsRunner::new(name)),
                None => Box::new(SystemRunner::default()),
            };
            let output = runner
                .run("nft", &["list", "table", family.as_str(), TABLE_NAME], None)
                .context("cannot run nft")?;
            // No table at all is an answer (everything is missing), not trouble.
            if !output.success() && !output.stderr.contains("No such file or directory") {
                bail!(
                    "nft list table {family} {TABLE_NAME} failed: {}",
                    output.stderr.trim()
                );
            }
            (output.stdout, format!("nft list table {family} {TABLE_NAME}"))
        }
        (None, false) => bail!("compare with --rules LISTING.txt or --live"),
    };
    let listed =
        read_listing(&listing).with_context(|| format!("{source} does not read as nft's listing"))?;
    let absent = Table::new(family);
    let actual = listed.table(family).unwrap_or(&absent);
    let found = nft_drift(&desired, actual);
    let text = match args.output {
        Output::Text => describe_nft(&found, family),
        Output::Json => serde_json::to_string_pretty(&nft_drift_json(&found))? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(!found.is_empty())
}

fn drift_word(kind: NftDriftKind) -> &'static str {
    match kind {
        NftDriftKind::Missing => "missing",
        NftDriftKind::Extra => "extra",
        NftDriftKind::Changed => "changed",
    }
}

fn describe_nft(drift: &TableDrift, family: Family) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match drift.table {
        Some(NftDriftKind::Missing) => {
            let _ = writeln!(
                out,
                "table {family} {TABLE_NAME}: missing: the table should exist"
            );
        }
        Some(kind) => {
            let _ = writeln!(out, "table {family} {TABLE_NAME}: {}", drift_word(kind));
        }
        None => {}
    }
    for object in &drift.objects {
        let what = match object.drift {
            NftDriftKind::Missing => format!("missing: the {} should exist", object.kind),
            NftDriftKind::Extra => format!("extra: the {} should not exist", object.kind),
            NftDriftKind::Changed => format!(
                "changed: {} missing, {} extra",
                object.missing.len(),
                object.extra.len()
            ),
        };
        let _ = writeln!(out, "{} {}: {what}", object.kind, object.name);
        for line in &object.missing {
            let _ = writeln!(out, "  - {line}");
        }
        for line in &object.extra {
            let _ = writeln!(out, "  + {line}");
        }
    }
    if drift.is_empty() {
        let _ = writeln!(out, "no drift: the kernel holds exactly the rules it should");
    } else {
        let _ = writeln!(
            out,
            "{} (- should be there, + should not)",
            plural(drift.objects.len(), "object differs", "objects differ")
        );
    }
    out
}

fn nft_drift_json(drift: &TableDrift) -> serde_json::Value {
    serde_json::json!({
        "table": drift.table.map(drift_word),
        "objects": drift.objects.iter().map(|o| serde_json::json!({
            "kind": o.kind,
            "name": o.name,
            "drift": drift_word(o.drift),
            "missing": o.missing,
            "extra": o.extra,
        })).collect::<Vec<_>>(),
    })
}

fn describe(drift: &Drift) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for table in &drift.absent_tables {
        let _ = writeln!(
            out,
            "table {table}: absent: the rules hold no {table} table, so none of its chains or jumps"
        );
    }
    for chain in &drift.chains {
        let what = match chain.kind {
            DriftKind::MissingChain => "missing: the chain should exist".to_string(),
            DriftKind::ExtraChain => "extra: the chain should not exist".to_string(),
            DriftKind::ChangedRules => {
                format!(
                    "changed: {} missing, {} extra",
                    plural(chain.missing.len(), "rule", "rules"),
                    plural(chain.extra.len(), "rule", "rules")
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
            "{} (- should be there, + should not)",
            plural(drift.chains.len(), "chain differs", "chains differ")
        );
    }
    out
}

/// `--from OLD --to NEW`: both states compiled for the same node and compared.
fn manifest_change(args: &DiffArgs, node: &NodeConfig) -> Result<bool> {
    let plan = |paths: &[PathBuf], which: &str| -> Result<(Plan, Vec<_>)> {
        let manifests = input::load_manifests(paths).with_context(|| format!("reading the {which} state"))?;
        let plan = Plan::compile(&manifests.services, &manifests.endpoint_slices, node);
        let mut diagnostics = manifests.diagnostics;
        diagnostics.extend(plan.diagnostics.iter().cloned());
        Ok((plan, diagnostics))
    };
    let (old, old_diagnostics) = plan(&args.from, "old (--from)")?;
    let (new, new_diagnostics) = plan(&args.to, "new (--to)")?;
    // A problem both states have (the same object at the same file and line,
    // or the same planner warning) is printed once.
    let old_only: Vec<_> = old_diagnostics
        .into_iter()
        .filter(|d| !new_diagnostics.contains(d))
        .collect();
    input::report_diagnostics(&old_only);
    input::report_diagnostics(&new_diagnostics);
    let changes = match args.mode.mode {
        ProxyMode::Iptables => diff_plans(&old, &new, args.layout.layout),
        ProxyMode::Nftables => chainsmith_changes::diff_plans(&old, &new, &NftRules),
    };
    let text = match args.output {
        Output::Text => describe_changes(&changes),
        Output::Json => serde_json::to_string_pretty(&changes)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(!changes.is_empty())
}

/// At most this many chain names in a summary line; the rest are counted.
const NAMED_CHAINS: usize = 4;

fn describe_changes(changes: &PlanDiff) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if changes.is_empty() {
        out.push_str("no rule changes: both states compile to the same rules\n");
        return out;
    }
    for service in &changes.services {
        let _ = writeln!(out, "{}", service_summary(service));
        for port in &service.ports {
            let _ = writeln!(out, "  {}", port_heading(port));
            describe_chains(&mut out, &port.chains, "    ");
        }
        out.push('\n');
    }
    if !changes.node.is_empty() {
        let (added, removed) = changes
            .node
            .iter()
            .fold((0, 0), |(a, r), c| (a + c.added.len(), r + c.removed.len()));
        let _ = writeln!(
            out,
            "rules of no Service (node settings): +{added} -{removed} rules"
        );
        describe_chains(&mut out, &changes.node, "  ");
        out.push('\n');
    }
    let total = &changes.total;
    let _ = writeln!(
        out,
        "total: {}, +{} -{} rules, {} created, {} deleted",
        plural(total.services, "Service changed", "Services changed"),
        total.rules_added,
        total.rules_removed,
        plural(total.chains_added, "chain", "chains"),
        plural(total.chains_removed, "chain", "chains"),
    );
    out
}

/// `ns/web (new): +3 -0 rules, new chains KUBE-SVC-..., ...`
fn service_summary(service: &ServiceDiff) -> String {
    let state = match service.change {
        Change::Added => " (new)",
        Change::Removed => " (removed)",
        Change::Changed => "",
    };
    let mut line = format!(
        "{}{state}: +{} -{} rules",
        service.service, service.rules_added, service.rules_removed
    );
    for (label, chains) in [
        ("new", &service.chains_added),
        ("deleted", &service.chains_removed),
    ] {
        if chains.is_empty() {
            continue;
        }
        let kind = if chains.len() == 1 { "chain" } else { "chains" };
        let named: Vec<&str> = chains.iter().take(NAMED_CHAINS).map(String::as_str).collect();
        line.push_str(&format!(", {label} {kind} {}", named.join(" ")));
        if chains.len() > NAMED_CHAINS {
            line.push_str(&format!(" and {} more", chains.len() - NAMED_CHAINS));
        }
    }
    line
}

/// `port http (TCP 80 -> 8080, new)`
fn port_heading(port: &PortDiff) -> String {
    let name = if port.port_name.is_empty() {
        "unnamed port".to_string()
    } else {
        format!("port {}", port.port_name)
    };
    let number = match (port.old_port, port.new_port) {
        (Some(old), Some(new)) if old != new => format!(" {old} -> {new}"),
        (_, Some(n)) | (Some(n), None) => format!(" {n}"),
        (None, None) => String::new(),
    };
    let state = match port.change {
        Change::Added => ", new",
        Change::Removed => ", removed",
        Change::Changed => "",
    };
    format!("{name} ({}{number}{state})", port.protocol)
}

fn describe_chains(out: &mut String, chains: &[ChainDiff], indent: &str) {
    use std::fmt::Write;
    for chain in chains {
        // nftables places are chains, sets or maps; iptables ones are chains.
        let kind = match chain.table {
            "set" | "map" => chain.table,
            _ => "chain",
        };
        let state = match chain.change {
            Change::Added => format!(" (new {kind})"),
            Change::Removed => format!(" (deleted {kind})"),
            Change::Changed => String::new(),
        };
        let _ = writeln!(out, "{indent}{} {}{state}", chain.table, chain.chain);
        for rule in &chain.removed {
            let _ = writeln!(out, "{indent}  - {rule}");
        }
        for rule in &chain.added {
            let _ = writeln!(out, "{indent}  + {rule}");
        }
    }
}

/// `1 chain`, `2 chains`: counts in messages agree with their noun.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
