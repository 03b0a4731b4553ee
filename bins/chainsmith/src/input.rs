//! Reading the user's files: node configuration and cluster manifests.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chainsmith_k8s::{MAX_INPUT_BYTES, Manifests, parse_manifests, parse_node_config};
use chainsmith_layout::Layout;
use chainsmith_model::{Diagnostic, IpFamily, NodeConfig, Severity};
use clap::ValueEnum;

/// How the iptables backend is chosen when none is given, in the words of
/// every option that chooses one (`chainsmith_applier::backend_in_use`, then
/// the distribution's `iptables`). A macro so that `concat!` can put it into
/// clap's help texts.
macro_rules! backend_default {
    () => {
        "by default the backend whose mangle table holds the kubelet's KUBE-IPTABLES-HINT or \
         KUBE-KUBELET-CANARY chain, else the one holding more rules, else the one `iptables` is"
    };
}
pub(crate) use backend_default;

/// A bundled example: a cluster and the node it is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Example {
    /// Everyday shapes: a LoadBalancer Service with an endpoint on this node,
    /// cluster DNS, a Local NodePort Service, a Service without endpoints.
    Default,
    /// The 2018 walk-through this project started from: the LoadBalancer
    /// Service default/sleep (LB IP 118.24.224.100) and default/kubernetes on
    /// a Tencent Cloud TKE node (best read with `--layout v1.10`).
    Seed,
}

impl Example {
    /// The node configuration and the manifests.
    pub fn load(self) -> Result<(NodeConfig, Manifests)> {
        let (node, cluster, name) = match self {
            Example::Default => (
                include_str!("example/node.yaml"),
                include_str!("example/cluster.yaml"),
                "example",
            ),
            Example::Seed => (
                include_str!("example/seed/node.yaml"),
                include_str!("example/seed/cluster.yaml"),
                "example/seed",
            ),
        };
        Ok((
            parse_node_config(node, &format!("{name}/node.yaml"))?,
            parse_manifests(cluster, &format!("{name}/cluster.yaml"))?,
        ))
    }
}

/// `--layout`: which of kube-proxy's iptables layouts to write or read.
///
/// Written by hand rather than derived so that `given` can tell a layout the
/// user chose from the default: a trace of a dump without `--layout` explains
/// it in the layout its chains show instead.
#[derive(Debug, Clone, Copy)]
pub struct LayoutArg {
    /// The layout given, or the default (`v1.33`).
    pub layout: Layout,
    /// Whether `--layout` was given.
    pub given: bool,
}

const LAYOUT_ID: &str = "layout";

impl clap::FromArgMatches for LayoutArg {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<LayoutArg, clap::Error> {
        let given = matches.get_one::<Layout>(LAYOUT_ID).copied();
        Ok(LayoutArg {
            layout: given.unwrap_or_default(),
            given: given.is_some(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        if let Some(layout) = matches.get_one::<Layout>(LAYOUT_ID) {
            *self = LayoutArg {
                layout: *layout,
                given: true,
            };
        }
        Ok(())
    }
}

impl clap::Args for LayoutArg {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new(LAYOUT_ID)
                .long("layout")
                .value_name("LAYOUT")
                .value_parser(|name: &str| name.parse::<Layout>())
                .help(
                    "The rule layout: `v1.33` (kube-proxy's current iptables mode) or `v1.10` (its 2018 \
                     layout: KUBE-FW for every load-balancer IP, KUBE-XLB, KUBE-MARK-DROP) [default: v1.33; \
                     for `trace --rules`, the layout the dump's chains show]",
                ),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        LayoutArg::augment_args(cmd)
    }
}

/// kube-proxy's proxy modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// iptables-restore input for the filter and nat tables.
    Iptables,
    /// `nft -f` input for table `kube-proxy` (families `ip`, `ip6`).
    Nftables,
}

/// `--mode`: which proxy mode's rules to write.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ModeArg {
    /// kube-proxy's proxy mode: `iptables` (in the `--layout` chosen) or
    /// `nftables` (kube-proxy's nftables mode, which has one layout).
    #[arg(long, value_enum, value_name = "MODE", default_value = "iptables")]
    pub mode: ProxyMode,
}

impl ModeArg {
    /// Refuses an iptables layout other than the default with nftables mode.
    pub fn check_layout(&self, layout: &LayoutArg) -> Result<()> {
        if self.mode == ProxyMode::Nftables && layout.layout != Layout::V1_33 {
            bail!(
                "--layout {} is an iptables layout; nftables mode writes kube-proxy's one nftables layout",
                layout.layout
            );
        }
        Ok(())
    }
}

/// The cluster and node to work on: a bundled `--example`, or files.
pub fn load_input(
    example: Option<Example>,
    node: Option<&Path>,
    clusters: &[impl AsRef<Path>],
) -> Result<(NodeConfig, Manifests)> {
    match example {
        Some(example) => {
            if node.is_some() || !clusters.is_empty() {
                bail!(
                    "--example compiles a bundled cluster and node; give it without --node and cluster files"
                );
            }
            example.load()
        }
        None => Ok((load_node(node)?, load_manifests(clusters)?)),
    }
}

/// Reads a text file, refusing anything too large to be a manifest.
pub fn read_text(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_INPUT_BYTES as u64 {
        bail!(
            "{} is {size} bytes; inputs larger than {MAX_INPUT_BYTES} bytes are refused",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The node configuration from `--node`, or the default node.
pub fn load_node(path: Option<&Path>) -> Result<NodeConfig> {
    match path {
        Some(path) => Ok(parse_node_config(&read_text(path)?, &path.display().to_string())?),
        None => Ok(NodeConfig::default()),
    }
}

/// All objects of the given manifest files, merged.
pub fn load_manifests(paths: &[impl AsRef<Path>]) -> Result<Manifests> {
    let mut all = Manifests::default();
    for path in paths {
        let path = path.as_ref();
        all.extend(parse_manifests(&read_text(path)?, &path.display().to_string())?);
    }
    Ok(all)
}

/// The notes for Services a node of `family` writes no rules for (what
/// [`chainsmith_planner::Plan::compile`] says, for callers of the sync engine).
pub fn other_family_notes(services: &[chainsmith_model::Service], family: IpFamily) -> Vec<Diagnostic> {
    services
        .iter()
        .filter_map(|service| chainsmith_planner::other_family_note(service, family))
        .collect()
}

/// Prints diagnostics to stderr, one per line, warnings first.
pub fn report_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = std::io::stderr().lock();
    for severity in [Severity::Warning, Severity::Info] {
        for diagnostic in diagnostics.iter().filter(|d| d.severity == severity) {
            let label = match severity {
                Severity::Warning => "warning",
                Severity::Info => "note",
            };
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(stderr, "{label}: {diagnostic}");
        }
    }
}

/// Prints a fatal error with its causes.
pub fn report_error(error: &anyhow::Error) {
    let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
}
