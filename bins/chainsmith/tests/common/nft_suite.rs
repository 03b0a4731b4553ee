//! Upstream's nftables conformance cases (testdata/conformance-nft) and how
//! `chainsmith replay --mode nftables` runs them: shared by the suite's own
//! test (`conformance_nft`) and the real-kernel one (`kernel_nft`).
//!
//! Included by those two only (`#[path = "common/nft_suite.rs"] mod
//! nft_suite;`); it calls `crate::common`, which both declare.

use std::path::{Path, PathBuf};

use chainsmith_nftables::Family;
use serde_json::Value;

pub fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table family a node.yaml's `ipFamily` programs.
pub fn family_of(node: &Path) -> Family {
    match load_yaml(node)["ipFamily"].as_str() {
        Some("IPv6") => Family::Ip6,
        _ => Family::Ip,
    }
}

/// One case: its directory, its steps in order (the case directory itself
/// for a single-step case) and its family.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub steps: Vec<PathBuf>,
    pub family: Family,
}

impl Case {
    /// The ruleset a previous kube-proxy left, if the case starts from one.
    pub fn initial(&self) -> Option<PathBuf> {
        Some(self.dir.join("initial.nft")).filter(|p| p.exists())
    }

    /// Replays every step into `out` (NN.nft, NN.cleanup.nft, NN.metrics).
    pub fn replay(&self, out: &Path) {
        replay(
            &self.dir.join("node.yaml"),
            &self.steps,
            self.initial().as_deref(),
            out,
        );
    }
}

/// Every case of the suite, by name.
pub fn cases() -> Vec<Case> {
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance-nft");
    let mut cases: Vec<Case> = std::fs::read_dir(suite)
        .expect("suite")
        .map(|e| e.expect("entry").path())
        .filter(|dir| dir.join("node.yaml").exists())
        .map(|dir| {
            let mut steps: Vec<PathBuf> = if dir.join("steps").is_dir() {
                std::fs::read_dir(dir.join("steps"))
                    .expect("steps")
                    .map(|e| e.expect("step").path())
                    .collect()
            } else {
                vec![dir.clone()]
            };
            steps.sort();
            Case {
                name: dir.file_name().expect("name").to_string_lossy().into_owned(),
                family: family_of(&dir.join("node.yaml")),
                dir,
                steps,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// `chainsmith replay --mode nftables` over `steps` (each a directory with a
/// cluster.yaml) into `out`. A step with `ageStaleChains: true` runs 2 s
/// after the one before (upstream moves its stale-chain times 2 s back); the
/// others run at the same instant.
pub fn replay(node: &Path, steps: &[PathBuf], initial: Option<&Path>, out: &Path) {
    replay_with(node, steps, initial, out, &[]);
}

/// [`replay`] with more `chainsmith replay` arguments (`--apply-netns NAME`).
pub fn replay_with(node: &Path, steps: &[PathBuf], initial: Option<&Path>, out: &Path, more: &[&str]) {
    let mut now = 0u32;
    let clock: Vec<String> = steps
        .iter()
        .map(|step| {
            let step_file = step.join("step.yaml");
            if step_file.exists() && load_yaml(&step_file)["ageStaleChains"].as_bool() == Some(true) {
                now += 2;
            }
            now.to_string()
        })
        .collect();
    let clock = clock.join(",");
    let text = |p: &Path| p.to_str().expect("utf8 path").to_string();
    let mut args: Vec<String> = ["replay", "--mode", "nftables", "--node"]
        .map(String::from)
        .into();
    args.extend([text(node), "--out".into(), text(out), "--clock".into(), clock]);
    if let Some(initial) = initial {
        args.extend(["--existing-ruleset".into(), text(initial)]);
    }
    args.extend(more.iter().map(|a| a.to_string()));
    args.extend(steps.iter().map(|s| text(&s.join("cluster.yaml"))));
    crate::common::chainsmith_in_fixtures(&args.iter().map(String::as_str).collect::<Vec<_>>());
}
