//! `chainsmith run`: the node proxy, configured as kube-proxy is (a
//! `KubeProxyConfiguration` file and/or kube-proxy's flags).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chainsmith_applier::Backend;
use chainsmith_k8s::{PROXY_FLAGS, ProxyMode, parse_go_duration_ms, proxy_configuration_with_flags};
use chainsmith_node::Settings;
use chainsmith_sync::PartialSyncMode;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use crate::input::read_text;

/// kube-proxy flags that are booleans: given alone, they mean true.
const BOOLEAN_FLAGS: [&str; 3] = [
    "masquerade-all",
    "iptables-localhost-nodeports",
    "conntrack-tcp-be-liberal",
];

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A kube-proxy configuration file (kind KubeProxyConfiguration,
    /// kubeproxy.config.k8s.io/v1alpha1). Flags override what it says.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Remove every rule and chain kube-proxy's iptables mode installs and
    /// nftables mode's `kube-proxy` tables (ip, ip6), then exit (as
    /// `kube-proxy --cleanup`).
    #[arg(long)]
    cleanup: bool,

    /// Make the host settings `run` makes at start (conntrack and
    /// route_localnet sysctls), then exit: for a privileged init container,
    /// so that the proxy itself runs without write access to /proc/sys.
    #[arg(long, conflicts_with = "cleanup")]
    prepare_node: bool,

    /// How partial syncs are written: `minimal` (only chains whose content
    /// changed, the default) or `compat` (exactly what upstream kube-proxy
    /// writes). iptables mode only: ignored, with a warning, in nftables mode,
    /// whose partial syncs are upstream's.
    #[arg(long, value_enum)]
    partial_sync: Option<PartialSync>,

    /// How often a full resync rewrites every rule (a Go duration).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    full_sync_period: String,

    /// How long one iptables-restore (or iptables, conntrack, nfacct) may run
    /// before it is killed and the sync counted as failed (a Go duration).
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    command_timeout: String,

    #[arg(long, value_enum, help = concat!(
        "The iptables backend; ", crate::input::backend_default!(),
        ". In nftables mode only used to remove iptables-mode leftovers at start"
    ))]
    iptables_backend: Option<BackendArg>,

    /// Log lines as JSON objects instead of text.
    #[arg(long)]
    log_json: bool,

    #[command(flatten)]
    proxy_flags: ProxyFlags,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PartialSync {
    Minimal,
    Compat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Nft,
    Legacy,
}

/// kube-proxy's own flags, generated from the one table that maps each to
/// its configuration field (so `--help` and the parser cannot disagree).
#[derive(Debug, Default)]
struct ProxyFlags(Vec<(&'static str, String)>);

impl FromArgMatches for ProxyFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = ProxyFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (flag, _) in PROXY_FLAGS {
            if let Some(value) = matches.get_one::<String>(flag) {
                self.0.push((flag, value.clone()));
            }
        }
        Ok(())
    }
}

impl Args for ProxyFlags {
    fn augment_args(mut command: clap::Command) -> clap::Command {
        for (flag, field) in PROXY_FLAGS {
            let mut arg = Arg::new(*flag)
                .long(*flag)
                .value_name("VALUE")
                .action(ArgAction::Set)
                .help_heading("kube-proxy flags")
                .help(format!("Sets {field}"));
            if BOOLEAN_FLAGS.contains(flag) {
                arg = arg
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .require_equals(true);
            }
            command = command.arg(arg);
        }
        command
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

fn settings(args: &RunArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(path) => Some((read_text(path)?, path.display().to_string())),
        None => None,
    };
    let flags: Vec<(&str, &str)> = args.proxy_flags.0.iter().map(|(f, v)| (*f, v.as_str())).collect();
    let proxy = proxy_configuration_with_flags(
        file.as_ref().map(|(text, name)| (text.as_str(), name.as_str())),
        &flags,
    )?;
    let mut settings = Settings::new(proxy);
    settings.partial_sync = match args.partial_sync {
        None | Some(PartialSync::Minimal) => PartialSyncMode::Minimal,
        Some(PartialSync::Compat) => PartialSyncMode::Compat,
    };
    settings.full_sync_period_ms = parse_go_duration_ms(&args.full_sync_period)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            anyhow!(
                "--full-sync-period: {:?} is not a positive duration",
                args.full_sync_period
            )
        })?;
    settings.command_timeout = parse_go_duration_ms(&args.command_timeout)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            anyhow!(
                "--command-timeout: {:?} is not a positive duration",
                args.command_timeout
            )
        })?;
    settings.backend = args.iptables_backend.map(|b| match b {
        BackendArg::Nft => Backend::NfTables,
        BackendArg::Legacy => Backend::Legacy,
    });
    Ok(settings)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    init_logging(args.log_json);
    let settings = settings(args)?;
    if settings.proxy.mode == ProxyMode::Nftables && args.partial_sync.is_some() && !args.cleanup {
        tracing::warn!("--partial-sync is ignored in nftables mode (its partial syncs are upstream's)");
    }
    if args.cleanup {
        let deleted = chainsmith_node::cleanup(settings.backend)?;
        tracing::info!(chains_deleted = deleted, "cleanup done");
        return Ok(());
    }
    if args.prepare_node {
        let families = chainsmith_node::prepare_node(&settings)?;
        tracing::info!(?families, "node prepared");
        return Ok(());
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("CHAINSMITH_GIT_COMMIT"),
        built = env!("CHAINSMITH_BUILD_DATE"),
        mode = settings.proxy.mode.as_str(),
        config = ?settings.proxy,
        "starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(chainsmith_node::run(settings))?;
    Ok(())
}
