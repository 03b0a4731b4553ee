//! Reading the user's files: node configuration and cluster manifests.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chainsmith_k8s::{MAX_INPUT_BYTES, Manifests, parse_manifests, parse_node_config};
use chainsmith_model::{Diagnostic, NodeConfig, Severity};

/// The cluster of the bundled example.
pub const EXAMPLE_CLUSTER: &str = include_str!("example/cluster.yaml");
/// The node of the bundled example.
pub const EXAMPLE_NODE: &str = include_str!("example/node.yaml");

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
