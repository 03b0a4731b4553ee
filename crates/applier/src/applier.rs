//! Applying payloads and kube-proxy's fixed objects.

use chainsmith_iptables::{BUILTIN_JUMPS, BuiltinJump, Table};
use chainsmith_naming::{ServiceChainKind, fixed};

use chainsmith_restore::batch::split_full_payload;

use crate::tools::checked;
use crate::{Backend, Runner, Tools};

/// Tables that hold a `KUBE-PROXY-CANARY` chain; mangle is the one watched.
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

/// How every iptables command waits for the xtables lock (legacy backend;
/// nf_tables needs none): up to 5 s, kube-proxy's wait.
const LOCK_WAIT: &str = "--wait=5";

/// Chains kube-proxy owns in the fixed part of its rules (KUBE-FIREWALL is
/// shared with kubelet and left alone by cleanup, as upstream does).
const OWNED_FIXED_CHAINS: [&str; 8] = [
    fixed::KUBE_SERVICES,
    fixed::KUBE_EXTERNAL_SERVICES,
    fixed::KUBE_NODEPORTS,
    fixed::KUBE_POSTROUTING,
    fixed::KUBE_FORWARD,
    fixed::KUBE_PROXY_FIREWALL,
    fixed::KUBE_MARK_MASQ,
    fixed::KUBE_PROXY_CANARY,
];

/// Why applying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A tool could not run to its end: it did not start (missing binary,
    /// permissions) or was killed after the runner's timeout.
    #[error("cannot run {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        message: String,
    },
    /// A command exited with an error.
    #[error("{command} failed: {message}")]
    Command {
        /// The command line (for the log; it ran as an argument vector).
        command: String,
        /// Its standard error.
        message: String,
    },
    /// iptables-restore refused the payload; the tables it had not committed
    /// keep their previous rules.
    #[error("{tool} refused the payload{}: {message}", line_suffix(*line, line_text.as_deref()))]
    Restore {
        /// The restore tool.
        tool: String,
        /// The 1-based payload line it named, if it named one.
        line: Option<usize>,
        /// That line's text.
        line_text: Option<String>,
        /// Its message.
        message: String,
    },
}

fn line_suffix(line: Option<usize>, text: Option<&str>) -> String {
    match (line, text) {
        (Some(line), Some(text)) => format!(" at line {line} ({text:?})"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

/// What one apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Bytes fed to iptables-restore (0 when there was nothing to do).
    pub bytes: usize,
    /// iptables-restore runs it took.
    pub restores: usize,
}

/// Lines per restore when a full sync is split for the nf_tables backend:
/// measured best at 10k Services x 10 endpoints (15 s; 5,000 lines: 20 s,
/// 20,000: 98 s; one transaction: hours).
pub const NFT_BATCH_LINES: usize = 2500;

/// The line iptables-restore blames, from either spelling it uses
/// (`iptables-restore: line 13 failed`, `Error occurred at line: 4`).
pub fn failing_line(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|line| {
        let line = line.trim();
        if let Some(rest) = line.split("line ").nth(1).filter(|_| line.ends_with("failed")) {
            return rest.split_whitespace().next()?.parse().ok();
        }
        line.strip_prefix("Error occurred at line:")?.trim().parse().ok()
    })
}

/// Applies payloads and ensures kube-proxy's fixed objects, through one set of
/// tools and one runner.
pub struct Applier {
    tools: Tools,
    runner: Box<dyn Runner>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier using `tools` through `runner`.
    pub fn new(tools: Tools, runner: Box<dyn Runner>) -> Applier {
        Applier { tools, runner }
    }

    /// The tools in use.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    fn iptables(&self, table: &str, args: &[&str]) -> std::io::Result<crate::CommandOutput> {
        let mut full = vec![LOCK_WAIT, "-t", table];
        full.extend_from_slice(args);
        self.runner.run(self.tools.iptables(), &full, None)
    }

    fn iptables_checked(&self, table: &str, args: &[&str]) -> Result<(), ApplyError> {
        let mut full = vec![LOCK_WAIT, "-t", table];
        full.extend_from_slice(args);
        checked(&*self.runner, self.tools.iptables(), &full).map(|_| ())
    }

    /// Feeds `payload` to `iptables-restore --noflush --wait=5`. An empty
    /// payload runs nothing. Five seconds for the xtables lock, as upstream
    /// waits: a lock held longer fails the sync (retried in full) instead of
    /// stalling it.
    pub fn apply(&self, payload: &[u8]) -> Result<ApplyReport, ApplyError> {
        if payload.is_empty() {
            return Ok(ApplyReport {
                bytes: 0,
                restores: 0,
            });
        }
        let tool = self.tools.restore();
        let output = self
            .runner
            .run(tool, &["--noflush", LOCK_WAIT], Some(payload))
            .map_err(|e| ApplyError::Spawn {
                program: tool.to_string(),
                message: e.to_string(),
            })?;
        if output.success() {
            return Ok(ApplyReport {
                bytes: payload.len(),
                restores: 1,
            });
        }
        let line = failing_line(&output.stderr);
        let line_text = line
            .and_then(|n| payload.split(|b| *b == b'\n').nth(n.saturating_sub(1)))
            .map(|text| String::from_utf8_lossy(text).into_owned());
        let message = output
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(ApplyError::Restore {
            tool: tool.to_string(),
            line,
            line_text,
            message,
        })
    }

    /// Applies a full-sync payload the fastest safe way for the backend: in one
    /// piece on legacy (which copies the table on every commit), as batches of
    /// whole chains, leaves first, on nf_tables (see
    /// `chainsmith_restore::batch`). A failed batch stops the sequence; the
    /// batches before it stay applied, each of them consistent, and the caller's
    /// next sync must be a full one.
    pub fn apply_full(&self, payload: &[u8]) -> Result<ApplyReport, ApplyError> {
        if self.tools.backend == Backend::Legacy {
            return self.apply(payload);
        }
        let text = String::from_utf8_lossy(payload);
        let batches = split_full_payload(&text, NFT_BATCH_LINES).map_err(|e| ApplyError::Restore {
            tool: self.tools.restore().to_string(),
            line: Some(e.line),
            line_text: None,
            message: format!("payload does not parse: {}", e.message),
        })?;
        let mut report = ApplyReport {
            bytes: 0,
            restores: 0,
        };
        for batch in &batches {
            let done = self.apply(batch.as_bytes())?;
            report.bytes += done.bytes;
            report.restores += done.restores;
        }
        Ok(report)
    }

    /// Creates `chain` in `table` unless it exists.
    fn ensure_chain(&self, table: &str, chain: &str) -> Result<(), ApplyError> {
        let output = self
            .iptables(table, &["-N", chain])
            .map_err(|e| ApplyError::Spawn {
                program: self.tools.iptables().to_string(),
                message: e.to_string(),
            })?;
        if output.success() || output.stderr.contains("already exists") {
            return Ok(());
        }
        Err(ApplyError::Command {
            command: format!("{} -t {table} -N {chain}", self.tools.iptables()),
            message: output.stderr.trim().to_string(),
        })
    }

    /// Ensures every jump from the built-in chains of a layout (`jumps`:
    /// checked with `-C`, inserted at the top with `-I` when missing, in
    /// upstream's order), creating the target chains first. Returns how many
    /// jumps had to be inserted.
    pub fn ensure_jumps(&self, jumps: &[BuiltinJump]) -> Result<usize, ApplyError> {
        let mut inserted = 0;
        for jump in jumps {
            let table = jump.table.as_str();
            self.ensure_chain(table, jump.to)?;
            let rule = jump.args();
            let mut check = vec!["-C", jump.from];
            check.extend_from_slice(&rule);
            let exists = self
                .iptables(table, &check)
                .map_err(|e| ApplyError::Spawn {
                    program: self.tools.iptables().to_string(),
                    message: e.to_string(),
                })?
                .success();
            if !exists {
                let mut insert = vec!["-I", jump.from];
                insert.extend_from_slice(&rule);
                self.iptables_checked(table, &insert)?;
                inserted += 1;
            }
        }
        Ok(inserted)
    }

    /// Creates the empty `KUBE-PROXY-CANARY` chains whose disappearance tells
    /// that someone flushed the tables.
    pub fn ensure_canaries(&self) -> Result<(), ApplyError> {
        for table in CANARY_TABLES {
            self.ensure_chain(table, fixed::KUBE_PROXY_CANARY)?;
        }
        Ok(())
    }

    /// Whether the canary of `table` still exists.
    pub fn canary_present(&self, table: &str) -> Result<bool, ApplyError> {
        let output = self
            .iptables(table, &["-S", fixed::KUBE_PROXY_CANARY])
            .map_err(|e| ApplyError::Spawn {
                program: self.tools.iptables().to_string(),
                message: e.to_string(),
            })?;
        Ok(output.success())
    }

    /// Creates the nfacct counters the rules may name; returns for each whether
    /// it exists now (rules must not name a counter that does not).
    pub fn ensure_nfacct(&self, names: &[&str]) -> Vec<(String, bool)> {
        names
            .iter()
            .map(|name| {
                let succeeded = |args: &[&str]| {
                    self.runner
                        .run("nfacct", args, None)
                        .is_ok_and(|output| output.success())
                };
                // Adding an existing counter fails (EBUSY, "Device or resource
                // busy", whatever the version says), as after a restart:
                // whether it exists is what `get` answers.
                let ok = succeeded(&["add", name]) || succeeded(&["get", name]);
                (name.to_string(), ok)
            })
            .collect()
    }

    /// `iptables-save -t TABLE`.
    pub fn save_table(&self, table: &str) -> Result<String, ApplyError> {
        Ok(checked(&*self.runner, self.tools.save(), &["-t", table])?.stdout)
    }

    /// The names of the chains that exist in `table`.
    pub fn existing_chains(&self, table: &str) -> Result<Vec<String>, ApplyError> {
        Ok(self
            .save_table(table)?
            .lines()
            .filter_map(|line| line.strip_prefix(':'))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_string)
            .collect())
    }

    /// Removes what kube-proxy installs, as `kube-proxy --cleanup` does: the
    /// jumps from the built-in chains (not the kubelet firewall's), then every
    /// chain it owns (flushed first). Returns the number of chains deleted.
    pub fn cleanup(&self) -> Result<usize, ApplyError> {
        for jump in BUILTIN_JUMPS.iter().filter(|j| j.to != fixed::KUBE_FIREWALL) {
            let mut delete = vec!["-D", jump.from];
            delete.extend_from_slice(&jump.args());
            // A missing rule or chain is already clean.
            let _ = self.iptables(jump.table.as_str(), &delete);
        }
        let mut payload = String::new();
        let mut deleted = 0;
        for table in [Table::Filter.as_str(), Table::Nat.as_str(), "mangle"] {
            let ours: Vec<String> = self
                .existing_chains(table)?
                .into_iter()
                .filter(|c| OWNED_FIXED_CHAINS.contains(&c.as_str()) || ServiceChainKind::of(c).is_some())
                .collect();
            if ours.is_empty() {
                continue;
            }
            payload.push_str(&format!("*{table}\n"));
            for chain in &ours {
                payload.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for chain in &ours {
                payload.push_str(&format!("-X {chain}\n"));
            }
            payload.push_str("COMMIT\n");
            deleted += ours.len();
        }
        self.apply(payload.as_bytes())?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_lines_are_found_in_both_spellings() {
        let nft = "iptables-restore v1.8.9 (nf_tables): \nline 10: RULE_APPEND failed (No such file or directory): rule in chain KUBE-FORWARD\niptables-restore: line 13 failed\n";
        assert_eq!(failing_line(nft), Some(13));
        let legacy = "iptables-restore v1.8.9 (nf_tables): Chain 'KUBE-MISSING' does not exist\nError occurred at line: 4\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n";
        assert_eq!(failing_line(legacy), Some(4));
        assert_eq!(failing_line("something else"), None);
    }
}
