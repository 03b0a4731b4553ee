//! Applying a kube-proxy payload the way kube-proxy applies it, and reading
//! back what the kernel counted. Every call runs through `ip netns exec`.

use std::collections::BTreeSet;

use chainsmith_iptables::{BUILTIN_JUMPS, BuiltinJump};

use crate::{CommandError, Netns};

/// Which proxier: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// `iptables*`.
    V4,
    /// `ip6tables*`.
    V6,
}

/// Which kernel backend the iptables tools drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-nft*`: nf_tables with xtables compatibility.
    Nft,
    /// `iptables-legacy*`: the x_tables kernel tables.
    Legacy,
}

impl Backend {
    /// `nft` / `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

/// The tool's name: `tool(V6, Legacy, "-restore")` = `ip6tables-legacy-restore`.
fn tool(family: IpFamily, backend: Backend, suffix: &str) -> String {
    let base = match family {
        IpFamily::V4 => "iptables",
        IpFamily::V6 => "ip6tables",
    };
    format!("{base}-{}{suffix}", backend.as_str())
}

/// The nfacct counters a payload names (`-m nfacct --nfacct-name X`).
fn nfacct_names(payload: &str) -> BTreeSet<&str> {
    payload
        .lines()
        .flat_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .windows(2)
                .filter(|w| w.first() == Some(&"--nfacct-name"))
                .filter_map(|w| w.get(1).copied())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Applies `payload` in `netns` as kube-proxy does on a full sync:
/// 1. creates the nfacct counters the payload names (kube-proxy creates them
///    at start-up, and a rule naming a missing counter is refused);
/// 2. `iptables-restore --noflush --wait` (`ip6tables-…` for IPv6, the
///    `-nft-`/`-legacy-` variant for the backend) with the payload on stdin;
/// 3. the jumps from the built-in chains ([`BUILTIN_JUMPS`]), in that order:
///    the target chain is created if missing (`-N`, "already exists" is
///    fine), the rule checked with `-C` and inserted at the top with `-I`
///    when missing.
///
/// Errors carry the failing command and its stderr.
pub fn apply_kube_proxy_rules(
    netns: &Netns,
    payload: &str,
    family: IpFamily,
    backend: Backend,
) -> Result<(), CommandError> {
    apply_rules_with_jumps(netns, payload, family, backend, &BUILTIN_JUMPS)
}

/// [`apply_kube_proxy_rules`] with another layout's jumps (e.g.
/// `chainsmith_iptables::V1_10_JUMPS`).
pub fn apply_rules_with_jumps(
    netns: &Netns,
    payload: &str,
    family: IpFamily,
    backend: Backend,
    jumps: &[BuiltinJump],
) -> Result<(), CommandError> {
    for counter in nfacct_names(payload) {
        if let Err(e) = netns.run("nfacct", &["add", counter])
            && !e.0.contains("exists")
        {
            return Err(e);
        }
    }
    netns.run_with_input(
        &tool(family, backend, "-restore"),
        &["--noflush", "--wait"],
        payload.as_bytes(),
    )?;
    let iptables = tool(family, backend, "");
    for jump in jumps {
        let table = jump.table.as_str();
        if let Err(e) = netns.run(&iptables, &["-w", "-t", table, "-N", jump.to])
            && !e.0.contains("already exists")
        {
            return Err(e);
        }
        let rule = jump.args();
        let mut check = vec!["-w", "-t", table, "-C", jump.from];
        check.extend_from_slice(&rule);
        if netns.run(&iptables, &check).is_err() {
            let mut insert = vec!["-w", "-t", table, "-I", jump.from];
            insert.extend_from_slice(&rule);
            netns.run(&iptables, &insert)?;
        }
    }
    Ok(())
}

/// The packets counted, summed, by the rules of `table`/`chain` whose
/// `iptables-save` text contains `needle` (e.g. `"-d 198.51.100.101/32"`;
/// `""` for every rule of the chain). Read with `iptables-save -c`.
pub fn rule_packets(
    netns: &Netns,
    family: IpFamily,
    backend: Backend,
    table: &str,
    chain: &str,
    needle: &str,
) -> Result<u64, CommandError> {
    let saved = netns.run(&tool(family, backend, "-save"), &["-c", "-t", table])?;
    let prefix = format!("-A {chain} ");
    let mut packets = 0;
    for line in saved.lines() {
        // `[packets:bytes] -A CHAIN ...`
        let Some((counters, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        if !rule.starts_with(&prefix) || !rule.contains(needle) {
            continue;
        }
        let count = counters
            .split_once(':')
            .and_then(|(p, _)| p.parse::<u64>().ok())
            .ok_or_else(|| CommandError(format!("unreadable counters in {line:?}")))?;
        packets += count;
    }
    Ok(packets)
}

/// The packets the nfacct counter `name` has counted.
pub fn nfacct_packets(netns: &Netns, name: &str) -> Result<u64, CommandError> {
    // `{ pkts = 00000000000000000003, bytes = 00000000000000000180 } = NAME;`
    let out = netns.run("nfacct", &["get", name])?;
    out.split_once("pkts = ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| CommandError(format!("unreadable nfacct output {out:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nfacct_names_and_tools() {
        let payload = "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name a_b -j DROP\n\
                       -A KUBE-NODEPORTS -m nfacct --nfacct-name c -j X\n-A X -j Y\n";
        assert_eq!(
            nfacct_names(payload).into_iter().collect::<Vec<_>>(),
            ["a_b", "c"]
        );
        assert_eq!(
            tool(IpFamily::V6, Backend::Legacy, "-restore"),
            "ip6tables-legacy-restore"
        );
        assert_eq!(tool(IpFamily::V4, Backend::Nft, ""), "iptables-nft");
    }
}
