//! `chainsmith trace`: why a packet goes where it goes.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chainsmith_k8s::Manifests;
use chainsmith_layout::Layout;
use chainsmith_model::{NodeConfig, Protocol};
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use chainsmith_tracer::{CtState, Node, Origin, Packet, Ruleset, trace};
use clap::{Args, ValueEnum};

use crate::input::{self, Example, LayoutArg};
use crate::narrate;

#[derive(Debug, Clone, Copy, ValueEnum)]
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
    /// JSON, for tools (the full trace, drift or change).
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
    /// Trace through these rules (`iptables-save` output or restore input)
    /// instead of compiling a cluster.
    #[arg(long, value_name = "DUMP.txt", conflicts_with = "clusters")]
    rules: Option<PathBuf>,
    /// Cluster manifests to compile (with --node).
    #[arg(value_name = "CLUSTER.yaml")]
    clusters: Vec<PathBuf>,
    /// Trace through a bundled example cluster and node instead of files.
    #[arg(long, value_enum, value_name = "NAME", conflicts_with_all = ["rules", "node"])]
    example: Option<Example>,
    #[command(flatten)]
    layout: LayoutArg,
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
    /// Session-affinity lists (`KUBE-SEP-...` chain names) that already hold the
    /// source address, as after earlier connections.
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
    let layout = args.layout.layout;
    let (node, ruleset) = match &args.rules {
        Some(path) => {
            let node = input::load_node(args.node.as_deref())?;
            let text = input::read_text(path)?;
            let ruleset = Ruleset::from_dump(&text)
                .with_context(|| format!("{} is not iptables-save or iptables-restore text", path.display()))?
                .with_builtin_jumps(node.ip_family, layout.builtin_jumps());
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
    let protocol = Protocol::from_api(&args.proto.to_uppercase()).context("protocol")?;
    let origin = match args.from {
        From::Outside => Origin::FromOutside,
        From::Node => Origin::FromNode,
    };
    let mut packet = Packet::new(args.src, args.dst, protocol, args.dport, origin);
    packet.conntrack = match args.state {
        State::New => CtState::New,
        State::Established => CtState::Established,
    };
    packet.recent = args.affinity.clone();
    let mut ips = local_ips(&node);
    ips.extend(&args.local_ips);
    let result = trace(&ruleset, &packet, &Node::new(ips));
    let text = match args.output {
        Output::Text => narrate::narrate(&result, layout),
        Output::Json => serde_json::to_string_pretty(&result)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}
