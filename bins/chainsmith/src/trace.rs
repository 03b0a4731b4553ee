//! `chainsmith trace`: why a packet goes where it goes.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chainsmith_k8s::Manifests;
use chainsmith_layout::{Layout, RuleSketch};
use chainsmith_model::{NodeConfig, Protocol};
use chainsmith_nft_tracer::{
    CtState as NftCtState, Node as NftNode, Origin as NftOrigin, Packet as NftPacket, trace as nft_trace,
};
use chainsmith_nftables::{TABLE_NAME, Table, read_listing, read_transaction};
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use chainsmith_tracer::{CtState, Match, Node, Origin, Packet, Ruleset, Target, trace};
use clap::{Args, ValueEnum};

use crate::input::{self, Example, LayoutArg, ModeArg, ProxyMode};
use crate::{narrate, narrate_nft, nft};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum From {
    /// The packet arrives at the node (from another host, or from a pod on it).
    Outside,
    /// The node itself sends the packet.
    Node,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// Plain words.
    Text,
    /// JSON, for tools (the full trace, drift, change or explanation).
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum State {
    /// The first packet of a connection.
    New,
    /// A packet of an established connection.
    Established,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Node and proxier settings; also gives the node's own addresses.
    #[arg(long, value_name = "NODE.yaml")]
    node: Option<PathBuf>,
    /// Trace through these rules instead of compiling a cluster:
    /// `iptables-save` output or restore input; in nftables mode `nft list
    /// ruleset` output or `nft -f` input.
    #[arg(long, value_name = "DUMP.txt", conflicts_with = "clusters")]
    rules: Option<PathBuf>,
    /// The table `--rules` holds when it is `iptables -t TABLE -S` output
    /// (one table's rules, without the `*table` line `iptables-save` writes).
    #[arg(long, value_name = "TABLE", requires = "rules")]
    table: Option<String>,
    /// Cluster manifests to compile (with --node).
    #[arg(value_name = "CLUSTER.yaml")]
    clusters: Vec<PathBuf>,
    /// Trace through a bundled example cluster and node instead of files.
    #[arg(long, value_enum, value_name = "NAME", conflicts_with_all = ["rules", "node"])]
    example: Option<Example>,
    #[command(flatten)]
    mode: ModeArg,
    #[command(flatten)]
    layout: LayoutArg,
    /// The interface a packet from outside arrives on, for `-i` / `iifname`
    /// matches (nftables mode: `eth0` unless given).
    #[arg(long, value_name = "NAME")]
    in_interface: Option<String>,
    /// Source address.
    #[arg(long)]
    src: IpAddr,
    /// Destination address.
    #[arg(long)]
    dst: IpAddr,
    /// Destination port.
    #[arg(long)]
    dport: u16,
    /// Protocol.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp", "sctp"])]
    proto: String,
    /// Where the packet comes from.
    #[arg(long, value_enum, default_value = "outside")]
    from: From,
    /// Connection state.
    #[arg(long, value_enum, default_value = "new")]
    state: State,
    /// Session-affinity lists that already hold the source address, as after
    /// earlier connections: `KUBE-SEP-...` chain names (iptables) or
    /// `affinity-...` set names (nftables). A name the rules do not use is
    /// refused, with the names they do use.
    #[arg(long = "affinity", value_name = "KUBE-SEP-...")]
    affinity: Vec<String>,
    /// Addresses of this node (for `--src-type/--dst-type LOCAL`), added to
    /// those the node config lists.
    #[arg(long = "local-ip", value_name = "IP")]
    local_ips: Vec<IpAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// A cluster planned for a node, with what the planner found printed.
pub fn plan_for_node(node: &NodeConfig, manifests: &Manifests) -> Plan {
    let plan = Plan::compile(&manifests.services, &manifests.endpoint_slices, node);
    input::report_diagnostics(&plan.diagnostics);
    plan
}

/// The rules of a plan in a layout, as the tracer reads them, with the
/// layout's jumps from the built-in chains.
pub fn compiled_ruleset(plan: &Plan, layout: Layout) -> Result<Ruleset> {
    let payload = String::from_utf8(render_plan(plan, layout)).context("payload is not UTF-8")?;
    let mut ruleset = Ruleset::new();
    ruleset
        .apply(&payload)
        .context("the compiled payload does not load")?;
    Ok(ruleset.with_builtin_jumps(plan.ctx.family(), layout.builtin_jumps()))
}

/// The node's own addresses as the node config lists them.
pub fn local_ips(node: &NodeConfig) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = node
        .interface_addresses
        .iter()
        .map(|a| a.address)
        .chain(node.node_ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

pub fn run(args: &TraceArgs) -> Result<()> {
    args.mode.check_layout(&args.layout)?;
    if args.mode.mode == ProxyMode::Nftables {
        return run_nftables(args);
    }
    let layout = args.layout.layout;
    let (node, ruleset) = match &args.rules {
        Some(path) => {
            let node = input::load_node(args.node.as_deref())?;
            let text = input::read_text(path)?;
            // Exactly the dump: a node's built-in chains hold whatever jumps
            // it had, in its spelling and place, or none.
            let mut ruleset = match &args.table {
                Some(table) => Ruleset::from_rules_listing(&text, table)
                    .with_context(|| format!("{} is not `iptables -t {table} -S` output", path.display()))?,
                None => Ruleset::from_dump(&text).with_context(|| {
                    format!("{} is not iptables-save or iptables-restore text", path.display())
                })?,
            };
            match ruleset.family() {
                Some(family) if args.node.is_some() && family != node.ip_family => bail!(
                    "{} holds {family} rules; the node ({}) is {}",
                    path.display(),
                    args.node.as_deref().unwrap_or(path).display(),
                    node.ip_family
                ),
                Some(_) => {}
                // Nothing in the dump says; the node config does if given.
                None => ruleset.set_family(args.node.is_some().then_some(node.ip_family)),
            }
            (node, ruleset)
        }
        None => {
            if args.clusters.is_empty() && args.example.is_none() {
                bail!("give cluster manifests to compile (with --node), --example NAME, or --rules DUMP.txt");
            }
            let (node, manifests) = input::load_input(args.example, args.node.as_deref(), &args.clusters)?;
            input::report_diagnostics(&manifests.diagnostics);
            let ruleset = compiled_ruleset(&plan_for_node(&node, &manifests), layout)?;
            (node, ruleset)
        }
    };
    let protocol = protocol(args)?;
    let origin = match args.from {
        From::Outside => Origin::FromOutside,
        From::Node => Origin::FromNode,
    };
    let mut packet = Packet::new(args.src, args.dst, protocol, args.dport, origin);
    packet.conntrack = match args.state {
        State::New => CtState::New,
        State::Established => CtState::Established,
    };
    check_affinity(&args.affinity, "-m recent lists", &recent_lists(&ruleset))?;
    packet.recent = args.affinity.clone();
    if args.from == From::Outside {
        packet.in_interface = args.in_interface.clone();
    }
    let mut ips = local_ips(&node);
    ips.extend(&args.local_ips);
    let mut result = trace(&ruleset, &packet, &Node::new(ips));
    result.warnings.extend(unwalked_tables(&ruleset));
    let text = match args.output {
        Output::Text => narrate::narrate(&result, narration_layout(args, &ruleset)),
        Output::Json => serde_json::to_string_pretty(&result)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

/// The `-m recent` lists the rules check or set: the session-affinity
/// lists `--affinity` may name.
fn recent_lists(ruleset: &Ruleset) -> BTreeSet<String> {
    ruleset
        .table_names()
        .flat_map(|table| ruleset.chains(table))
        .flat_map(|chain| &chain.rules)
        .flat_map(|rule| &rule.matches)
        .filter_map(|m| match m {
            Match::Recent { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Refuses an `--affinity` name the rules do not use: it would change
/// nothing, and the trace would look as if affinity did not apply.
fn check_affinity(given: &[String], what: &str, known: &BTreeSet<String>) -> Result<()> {
    let Some(unknown) = given.iter().find(|name| !known.contains(*name)) else {
        return Ok(());
    };
    if known.is_empty() {
        bail!("--affinity {unknown}: these rules have no session affinity (no {what})");
    }
    // Enough to find the right one; a large cluster has thousands.
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = known.iter().map(String::as_str).take(SHOWN).collect();
    if known.len() > SHOWN {
        names.push("...");
    }
    bail!(
        "--affinity {unknown}: no such name among the rules' {what} ({} in all: {})",
        known.len(),
        names.join(", ")
    );
}

/// Tables of a dump that hold rules the trace does not walk (kube-proxy
/// writes only filter and nat; raw and mangle belong to other software and
/// can still drop or mark a packet).
fn unwalked_tables(ruleset: &Ruleset) -> Vec<String> {
    ruleset
        .table_names()
        .filter(|table| !matches!(*table, "filter" | "nat"))
        .filter_map(|table| {
            let rules: usize = ruleset.chains(table).map(|c| c.rules.len()).sum();
            let held = if rules == 1 { "1 rule" } else { "rules" };
            (rules > 0).then(|| format!("table {table} holds {held} this trace does not walk"))
        })
        .collect()
}

/// The layout to explain chains by: the one compiled, or given with
/// `--layout`; for a dump without it, the one its chains show, if any.
fn narration_layout(args: &TraceArgs, ruleset: &Ruleset) -> Option<Layout> {
    if args.rules.is_none() || args.layout.given {
        return Some(args.layout.layout);
    }
    let rules = ruleset
        .table_names()
        .flat_map(|table| ruleset.chains(table))
        .flat_map(|chain| {
            chain.rules.iter().map(|rule| RuleSketch {
                chain: &chain.name,
                target: match &rule.target {
                    Target::Chain(to) | Target::Goto(to) => Some(to.as_str()),
                    _ => None,
                },
                comment: rule.comment.as_deref(),
            })
        });
    Layout::recognise(rules)
}

fn protocol(args: &TraceArgs) -> Result<Protocol> {
    Protocol::from_api(&args.proto.to_uppercase()).context("protocol")
}

/// The nftables table to trace through: from a file (the kernel's listing,
/// or a transaction or dump), or compiled from the cluster.
pub fn nft_table(args: &TraceArgs) -> Result<(NodeConfig, Table)> {
    match &args.rules {
        Some(path) => {
            let node = input::load_node(args.node.as_deref())?;
            let family = nft::family(node.ip_family);
            let text = input::read_text(path)?;
            let listing = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .is_some_and(|l| l.starts_with("table "));
            let table = if listing {
                let listed = read_listing(&text)
                    .with_context(|| format!("{} does not read as nft's listing", path.display()))?;
                listed
                    .table(family)
                    .cloned()
                    .with_context(|| format!("{} has no table {family} {TABLE_NAME}", path.display()))?
            } else {
                let transaction = read_transaction(&text, family).with_context(|| {
                    format!("{} is neither nft's listing nor nft -f input", path.display())
                })?;
                if transaction.family != family {
                    bail!(
                        "{} holds table {} kube-proxy; the node is {}",
                        path.display(),
                        transaction.family,
                        node.ip_family
                    );
                }
                let mut table = Table::new(family);
                table
                    .apply(&transaction)
                    .with_context(|| format!("{} is not a ruleset the kernel could hold", path.display()))?;
                table
            };
            Ok((node, table))
        }
        None => {
            if args.clusters.is_empty() && args.example.is_none() {
                bail!(
                    "give cluster manifests to compile (with --node), --example NAME, or --rules LISTING.txt"
                );
            }
            let (node, manifests) = input::load_input(args.example, args.node.as_deref(), &args.clusters)?;
            input::report_diagnostics(&manifests.diagnostics);
            let (_, table) = nft::first_sync(&node, &manifests)?;
            Ok((node, table))
        }
    }
}

fn run_nftables(args: &TraceArgs) -> Result<()> {
    let (node, table) = nft_table(args)?;
    let origin = match args.from {
        From::Outside => NftOrigin::FromOutside {
            interface: args.in_interface.clone().unwrap_or_else(|| "eth0".to_string()),
        },
        From::Node => NftOrigin::FromNode,
    };
    let mut packet = NftPacket::new(args.src, args.dst, protocol(args)?, args.dport, origin);
    packet.conntrack = match args.state {
        State::New => NftCtState::New,
        State::Established => NftCtState::Established,
    };
    // Only kube-proxy's affinity sets: a name of another set would put the
    // source address into, say, the cluster-IP set and change the trace.
    let affinity_sets: BTreeSet<String> = table
        .sets()
        .map(|set| set.name.clone())
        .filter(|name| name.starts_with("affinity-"))
        .collect();
    check_affinity(&args.affinity, "affinity sets", &affinity_sets)?;
    for set in &args.affinity {
        packet.affinity.insert(set.clone(), vec![args.src]);
    }
    let mut ips = local_ips(&node);
    ips.extend(&args.local_ips);
    let result = nft_trace(&table, &packet, &NftNode::new(ips)).context("the rules cannot be traced")?;
    let text = match args.output {
        Output::Text => narrate_nft::narrate(&result),
        Output::Json => serde_json::to_string_pretty(&result)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}
