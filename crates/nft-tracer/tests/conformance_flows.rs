//! Upstream's packet flows (`flows.yaml` of every nftables conformance case),
//! traced as the kernel would through the cumulative table of their step.
//!
//! The table of a step is the case's `expected.nft` when the step has one;
//! otherwise it is what the chainsmith binary's `replay --mode nftables`
//! wrote for the steps so far (`NN.cleanup.nft`, then `NN.nft`), applied in
//! order. The binary is `$CHAINSMITH_BIN`, else the first `debug/chainsmith`
//! found in `$CARGO_TARGET_DIR`, this workspace's `target/` or
//! `/work/main/target/` (build it with `cargo build -p chainsmith`).
//!
//! Upstream's tracer is simpler than the kernel (see the suite's README): it
//! starts the node's own packets in prerouting, runs forward and input one
//! after the other, and follows every `numgen` branch. The trace here is
//! mapped onto its terms: `output` is each outcome's DNAT target in branch
//! order (or `DROP`/`REJECT`), `masq` whether any outcome is masqueraded.
//! Where the kernel answers otherwise, the flow is listed in [`DIVERGENT`]
//! with the kernel's answer and why.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainsmith_model::Protocol;
use chainsmith_nft_tracer::{Node, Origin, Packet, Trace, Tracer, Verdict};
use chainsmith_nftables::{Family, Table, read_transaction};
use serde_json::Value;

/// Flows where the kernel's answer differs from upstream's expected value:
/// (case, flow name, kernel output, kernel masq, why).
const DIVERGENT: &[(&str, &str, &str, bool, &str)] = &[];

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance-nft")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chainsmith_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CHAINSMITH_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join("target"), PathBuf::from("/work/main/target")])
        .map(|dir| dir.join("debug/chainsmith"));
    let tried: Vec<PathBuf> = candidates.collect();
    tried.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("no chainsmith binary (tried {tried:?}); build it with `cargo build -p chainsmith` or set CHAINSMITH_BIN")
    })
}

/// The step directories of a case, in order (a single-step case is its own step).
fn steps(case: &Path) -> Vec<PathBuf> {
    let steps = case.join("steps");
    if !steps.is_dir() {
        return vec![case.to_path_buf()];
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&steps)
        .expect("steps")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn apply_file(table: &mut Table, path: &Path) {
    let tx =
        read_transaction(&read(path), table.family()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    table
        .apply(&tx)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Runs one sync per step with the binary; returns the directory of payloads.
fn replay(case: &Path, steps: &[PathBuf]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    // Upstream's `ageStaleChains()` moves the recorded times 2 s back: the
    // same as running that step 2 s after the previous one.
    let mut clock = Vec::new();
    let mut now = 0;
    for step in steps {
        let step_yaml = step.join("step.yaml");
        if step_yaml.exists() && yaml(&step_yaml)["ageStaleChains"].as_bool() == Some(true) {
            now += 2;
        }
        clock.push(now.to_string());
    }
    let mut command = Command::new(chainsmith_binary());
    command
        .args(["replay", "--mode", "nftables", "--node"])
        .arg(case.join("node.yaml"))
        .arg("--out")
        .arg(out.path())
        .arg("--clock")
        .arg(clock.join(","));
    let initial = case.join("initial.nft");
    if initial.exists() {
        command.arg("--existing-ruleset").arg(initial);
    }
    command.args(steps.iter().map(|s| s.join("cluster.yaml")));
    let output = command.output().expect("runs chainsmith");
    assert!(
        output.status.success(),
        "{}: chainsmith replay failed: {}",
        case.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The trace in upstream's terms: (output, masq).
fn upstream_view(trace: &Trace) -> (String, bool) {
    let mut labels: Vec<String> = Vec::new();
    for outcome in &trace.outcomes {
        let label = match &outcome.verdict {
            Verdict::Dropped { .. } => "DROP".to_string(),
            Verdict::Rejected { .. } => "REJECT".to_string(),
            _ => outcome.nat_destination.map(|d| d.to_string()).unwrap_or_default(),
        };
        if !label.is_empty() && !labels.contains(&label) {
            labels.push(label);
        }
    }
    (labels.join(", "), trace.outcomes.iter().any(|o| o.masquerade))
}

struct Tally {
    files: usize,
    flows: usize,
    divergent: usize,
    failures: Vec<String>,
}

fn check_flows(case: &str, path: &Path, table: &Table, tally: &mut Tally) {
    let spec = yaml(path);
    let local_ips: Vec<IpAddr> = spec["localIPs"]
        .as_array()
        .expect("localIPs")
        .iter()
        .map(|ip| ip.as_str().expect("ip").parse().expect("ip"))
        .collect();
    let node = Node::new(local_ips);
    let tracer = Tracer::new(table).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tally.files += 1;
    for flow in spec["flows"].as_array().expect("flows") {
        tally.flows += 1;
        let name = flow["name"].as_str().expect("name");
        let ip = |key: &str| -> IpAddr { flow[key].as_str().expect(key).parse().expect(key) };
        let protocol = Protocol::from_api(flow["protocol"].as_str().unwrap_or("TCP")).expect("protocol");
        let dport = u16::try_from(flow["destPort"].as_u64().expect("destPort")).expect("port");
        let (src, dst) = (ip("sourceIP"), ip("destIP"));
        let origin = if node.local_ips.contains(&src) {
            Origin::FromNode
        } else {
            Origin::FromOutside {
                interface: "eth0".to_string(),
            }
        };
        let packet = Packet::new(src, dst, protocol, dport, origin);
        let trace = tracer
            .trace(&packet, &node)
            .unwrap_or_else(|e| panic!("{}: flow {name:?}: {e}", path.display()));
        assert!(
            (trace.total_probability() - 1.0).abs() < 1e-9,
            "{name}: {trace:?}"
        );
        let (output, masq) = upstream_view(&trace);
        let upstream = (
            flow["output"].as_str().expect("output").to_string(),
            flow["masq"].as_bool().expect("masq"),
        );
        let want = match DIVERGENT.iter().find(|d| d.0 == case && d.1 == name) {
            Some(&(_, _, output, masq, _)) => {
                tally.divergent += 1;
                assert_ne!(
                    (output.to_string(), masq),
                    upstream,
                    "{case} {name}: listed as divergent but is not"
                );
                (output.to_string(), masq)
            }
            None => upstream,
        };
        if (output.clone(), masq) != want {
            let summaries: Vec<String> = trace.outcomes.iter().map(|o| o.summary()).collect();
            let steps: Vec<String> = trace
                .outcomes
                .first()
                .map(|o| {
                    o.path
                        .iter()
                        .map(|s| {
                            format!(
                                "{} {} #{:?} {:?}: {:?}",
                                s.hook.as_str(),
                                s.chain,
                                s.rule_index,
                                s.rule.as_deref().unwrap_or(""),
                                s.action
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            tally.failures.push(format!(
                "{}: flow {name:?} ({src} -> {dst}:{dport}): got output={output:?} masq={masq}, want output={:?} masq={}\n    outcomes: {summaries:?}\n    path of the first:\n      {}",
                path.display(),
                want.0,
                want.1,
                steps.join("\n      ")
            ));
        }
    }
}

#[test]
fn conformance_flows_as_the_kernel_would() {
    let root = conformance_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("conformance")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("node.yaml").exists())
        .collect();
    cases.sort();
    let mut tally = Tally {
        files: 0,
        flows: 0,
        divergent: 0,
        failures: Vec::new(),
    };
    for case in &cases {
        let steps = steps(case);
        if !steps.iter().any(|s| s.join("flows.yaml").exists()) {
            continue;
        }
        let name = case.file_name().and_then(|n| n.to_str()).expect("case name");
        let family = match yaml(&case.join("node.yaml"))["ipFamily"].as_str() {
            Some("IPv6") => Family::Ip6,
            _ => Family::Ip,
        };
        let needs_replay = steps
            .iter()
            .any(|s| s.join("flows.yaml").exists() && !s.join("expected.nft").exists());
        let payloads = needs_replay.then(|| replay(case, &steps));
        let mut cumulative = Table::new(family);
        if payloads.is_some() && case.join("initial.nft").exists() {
            apply_file(&mut cumulative, &case.join("initial.nft"));
        }
        for (i, step) in steps.iter().enumerate() {
            if let Some(dir) = &payloads {
                let cleanup = dir.path().join(format!("{:02}.cleanup.nft", i + 1));
                if cleanup.exists() {
                    apply_file(&mut cumulative, &cleanup);
                }
                apply_file(&mut cumulative, &dir.path().join(format!("{:02}.nft", i + 1)));
            }
            let flows = step.join("flows.yaml");
            if !flows.exists() {
                continue;
            }
            let expected = step.join("expected.nft");
            if expected.exists() {
                let mut table = Table::new(family);
                apply_file(&mut table, &expected);
                check_flows(name, &flows, &table, &mut tally);
            } else {
                check_flows(name, &flows, &cumulative, &mut tally);
            }
        }
    }
    println!(
        "{} flows.yaml files, {} flows: {} as upstream expects, {} divergent (kernel-faithful), {} failed",
        tally.files,
        tally.flows,
        tally.flows - tally.divergent - tally.failures.len(),
        tally.divergent,
        tally.failures.len()
    );
    assert!(tally.failures.is_empty(), "{}", tally.failures.join("\n"));
    assert_eq!(tally.files, 31, "every flows.yaml of the suite");
    assert_eq!(tally.divergent, DIVERGENT.len(), "every divergence listed is met");
}
