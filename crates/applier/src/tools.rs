//! Which iptables tools to run, and what they support.

use chainsmith_model::IpFamily;

use crate::{ApplyError, Runner};

/// The kernel interface iptables drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// iptables-nft: rules live in nf_tables.
    NfTables,
    /// iptables-legacy: the x_tables interface.
    Legacy,
}

impl Backend {
    /// `nf_tables` or `legacy`, as `iptables --version` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::NfTables => "nf_tables",
            Backend::Legacy => "legacy",
        }
    }
}

/// Chains the kubelet keeps in the mangle table of the backend it uses.
const KUBELET_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// The backend the node's other agents (kubelet, CNI plugin) write with, as
/// kube-proxy's image judges it: the kubelet's chains in mangle; failing
/// that, the backend holding more rules. `None` when nothing tells them
/// apart. Rules in two backends are both enforced, but the kubelet's and the
/// proxy's must agree for their chains to see each other, and a containerised
/// proxy cannot trust its image's default.
pub fn backend_in_use(runner: &dyn Runner) -> Option<Backend> {
    let saved = |backend: Backend, table: Option<&str>| -> String {
        let tools: &[&str] = match backend {
            Backend::NfTables => &["iptables-nft-save", "ip6tables-nft-save"],
            Backend::Legacy => &["iptables-legacy-save", "ip6tables-legacy-save"],
        };
        let args: Vec<&str> = table.map(|t| vec!["-t", t]).unwrap_or_default();
        tools
            .iter()
            .filter_map(|tool| checked(runner, tool, &args).ok())
            .map(|output| output.stdout)
            .collect()
    };
    let has_kubelet_chains = |backend: Backend| {
        let mangle = saved(backend, Some("mangle"));
        mangle
            .lines()
            .filter_map(|line| line.strip_prefix(':'))
            .any(|chain| KUBELET_CHAINS.iter().any(|k| chain.split(' ').next() == Some(*k)))
    };
    match (
        has_kubelet_chains(Backend::NfTables),
        has_kubelet_chains(Backend::Legacy),
    ) {
        (true, false) => return Some(Backend::NfTables),
        (false, true) => return Some(Backend::Legacy),
        _ => {}
    }
    let rules = |backend: Backend| {
        saved(backend, None)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count()
    };
    match rules(Backend::NfTables).cmp(&rules(Backend::Legacy)) {
        std::cmp::Ordering::Greater => Some(Backend::NfTables),
        std::cmp::Ordering::Less => Some(Backend::Legacy),
        std::cmp::Ordering::Equal => None,
    }
}

/// The tool names for one family and backend, and their capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The family the tools program.
    pub family: IpFamily,
    /// The backend they drive.
    pub backend: Backend,
    /// `iptables --version` output, trimmed.
    pub version: String,
    /// `MASQUERADE --random-fully` is supported.
    pub random_fully: bool,
    names: [&'static str; 3],
}

impl Tools {
    /// Detects the tools: with `backend` given, its explicitly named binaries
    /// (`iptables-nft`, `iptables-legacy`, ...); otherwise the distribution's
    /// default `iptables`, whose backend `--version` reveals.
    pub fn detect(
        runner: &dyn Runner,
        family: IpFamily,
        backend: Option<Backend>,
    ) -> Result<Tools, ApplyError> {
        let names: [&'static str; 3] = match (family, backend) {
            (IpFamily::V4, None) => ["iptables", "iptables-restore", "iptables-save"],
            (IpFamily::V6, None) => ["ip6tables", "ip6tables-restore", "ip6tables-save"],
            (IpFamily::V4, Some(Backend::NfTables)) => {
                ["iptables-nft", "iptables-nft-restore", "iptables-nft-save"]
            }
            (IpFamily::V6, Some(Backend::NfTables)) => {
                ["ip6tables-nft", "ip6tables-nft-restore", "ip6tables-nft-save"]
            }
            (IpFamily::V4, Some(Backend::Legacy)) => [
                "iptables-legacy",
                "iptables-legacy-restore",
                "iptables-legacy-save",
            ],
            (IpFamily::V6, Some(Backend::Legacy)) => [
                "ip6tables-legacy",
                "ip6tables-legacy-restore",
                "ip6tables-legacy-save",
            ],
        };
        let version = checked(runner, names[0], &["--version"])?
            .stdout
            .trim()
            .to_string();
        let backend = match backend {
            Some(backend) => backend,
            None if version.contains("nf_tables") => Backend::NfTables,
            None if version.contains("legacy") => Backend::Legacy,
            // iptables before 1.8 had no nf_tables backend and does not say so.
            None => Backend::Legacy,
        };
        let help = runner
            .run(names[0], &["-j", "MASQUERADE", "--help"], None)
            .map_err(|e| ApplyError::Spawn {
                program: names[0].to_string(),
                message: e.to_string(),
            })?;
        let random_fully = help.stdout.contains("--random-fully") || help.stderr.contains("--random-fully");
        Ok(Tools {
            family,
            backend,
            version,
            random_fully,
            names,
        })
    }

    /// `iptables` (or `ip6tables`, `iptables-legacy`, ...).
    pub fn iptables(&self) -> &'static str {
        self.names[0]
    }

    /// `iptables-restore` and its variants.
    pub fn restore(&self) -> &'static str {
        self.names[1]
    }

    /// `iptables-save` and its variants.
    pub fn save(&self) -> &'static str {
        self.names[2]
    }
}

/// Runs a command that must succeed.
pub(crate) fn checked(
    runner: &dyn Runner,
    program: &str,
    args: &[&str],
) -> Result<crate::CommandOutput, ApplyError> {
    let output = runner.run(program, args, None).map_err(|e| ApplyError::Spawn {
        program: program.to_string(),
        message: e.to_string(),
    })?;
    if !output.success() {
        return Err(ApplyError::Command {
            command: format!("{program} {}", args.join(" ")),
            message: output.stderr.trim().to_string(),
        });
    }
    Ok(output)
}
