//! `chainsmith compile`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chainsmith_planner::Plan;
use chainsmith_restore::render_plan;
use clap::Args;

use crate::input::{self, Example, LayoutArg, ModeArg, ProxyMode};
use crate::nft;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Node and proxier settings (the conformance suite's node.yaml keys).
    /// Defaults to an IPv4 node with kube-proxy's production defaults and no
    /// local-traffic detector.
    #[arg(long, value_name = "NODE.yaml")]
    node: Option<PathBuf>,
    /// Multi-document Kubernetes YAML with Services and EndpointSlices (also
    /// `kind: List`, as `kubectl get -o yaml` prints). With none, a bundled
    /// example cluster and node are compiled.
    #[arg(value_name = "CLUSTER.yaml")]
    clusters: Vec<PathBuf>,
    /// Compile a bundled example cluster and node instead of files.
    #[arg(long, value_enum, value_name = "NAME")]
    example: Option<Example>,
    #[command(flatten)]
    mode: ModeArg,
    #[command(flatten)]
    layout: LayoutArg,
}

pub fn run(args: &CompileArgs) -> Result<()> {
    let example = match args.example {
        None if args.clusters.is_empty() && args.node.is_none() => Some(Example::Default),
        chosen => chosen,
    };
    args.mode.check_layout(&args.layout)?;
    let (node, manifests) = input::load_input(example, args.node.as_deref(), &args.clusters)?;
    input::report_diagnostics(&manifests.diagnostics);
    let output = match args.mode.mode {
        ProxyMode::Iptables => {
            let plan = Plan::compile(&manifests.services, &manifests.endpoint_slices, &node);
            input::report_diagnostics(&plan.diagnostics);
            render_plan(&plan, args.layout.layout)
        }
        // A fresh proxier's first sync: what kube-proxy sends to an empty node.
        ProxyMode::Nftables => nft::first_sync(&node, &manifests)?.0.to_text().into_bytes(),
    };
    std::io::stdout()
        .lock()
        .write_all(&output)
        .context("cannot write to stdout")
}
