//! Upstream kube-proxy's own unit-test cases (testdata/conformance), run through
//! the real `chainsmith replay` binary.
//!
//! Per step it checks every upstream assertion the case carries: the full
//! output in upstream's normal form (`expected.iptables`), the reference
//! model's output (`derived.iptables`), exact chain contents
//! (`expected-chains.yaml`), line/destination assertions (`assertions.yaml`) and
//! metric values (`metrics.yaml`), and packet flows (`flows.yaml`, through the
//! project's own tracer in upstream's unit-test semantics, on the cumulative
//! ruleset the replayed payloads build). Beyond upstream, every payload must
//! be accepted by the kernel model, full syncs must pass upstream's
//! consistency check, and after every step the tables left by the partial
//! syncs (compat and minimal) must equal those of one full sync.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainsmith_iptables::RuleSet;
use chainsmith_restore::normalize::{consistency_errors, normalize};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance")
}

struct Step {
    dir: PathBuf,
    force_full: bool,
    stale_cleanup_due: bool,
}

struct Case {
    name: String,
    dir: PathBuf,
    steps: Vec<Step>,
}

fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(conformance_dir()).expect("conformance dir") {
        let dir = entry.expect("entry").path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !dir.join("node.yaml").exists() {
            continue;
        }
        let step_dirs: Vec<PathBuf> = if dir.join("steps").is_dir() {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("steps"))
                .expect("steps")
                .map(|e| e.expect("step").path())
                .collect();
            dirs.sort();
            dirs
        } else {
            vec![dir.clone()]
        };
        let steps = step_dirs
            .into_iter()
            .map(|dir| {
                let flags = if dir.join("step.yaml").exists() {
                    load_yaml(&dir.join("step.yaml"))
                } else {
                    Value::Null
                };
                Step {
                    force_full: flags["forceFullSync"].as_bool().unwrap_or(false),
                    stale_cleanup_due: flags["staleChainCleanupDue"].as_bool().unwrap_or(false),
                    dir,
                }
            })
            .collect();
        cases.push(Case { name, dir, steps });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Runs `chainsmith replay` over a case; returns each step's payload and metrics.
fn replay(case: &Case, mode: &str, force_all_full: bool) -> Vec<(String, String)> {
    let out = tempfile::tempdir().expect("tempdir");
    let node = load_yaml(&case.dir.join("node.yaml"));
    let sync_period = node["syncPeriod"].as_str().map(parse_seconds).unwrap_or(30.0);
    let mut clock = Vec::new();
    let mut now = 0.0;
    for step in &case.steps {
        if step.stale_cleanup_due {
            now += sync_period + 1.0;
        }
        clock.push(format!("{now}"));
    }
    let full: Vec<String> = case
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.force_full || force_all_full)
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_chainsmith"));
    command
        .arg("replay")
        .arg("--node")
        .arg(case.dir.join("node.yaml"))
        .arg("--out")
        .arg(out.path());
    command
        .arg("--partial-sync")
        .arg(mode)
        .arg("--clock")
        .arg(clock.join(","));
    if !full.is_empty() {
        command.arg("--full-sync-at").arg(full.join(","));
    }
    for step in &case.steps {
        command.arg(step.dir.join("cluster.yaml"));
    }
    let output = command.output().expect("run chainsmith");
    assert!(
        output.status.success(),
        "{}: replay failed: {}",
        case.name,
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Upstream logs the same node-config problems; object warnings would mean
    // the inputs were misread.
    let object_warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:") && !l.contains("node config"))
        .collect();
    assert!(
        object_warnings.is_empty(),
        "{}: unexpected warnings:\n{}",
        case.name,
        object_warnings.join("\n")
    );
    (1..=case.steps.len())
        .map(|n| {
            let read = |ext: &str| {
                std::fs::read_to_string(out.path().join(format!("{n:02}.{ext}"))).expect("output")
            };
            (read("iptables"), read("metrics"))
        })
        .collect()
}

fn parse_seconds(text: &str) -> f64 {
    text.trim_end_matches('s').parse().unwrap_or(30.0)
}

/// `name{label="value",...} number` lines of a Prometheus text exposition.
fn metric_value(exposition: &str, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = series.split_once('{').unwrap_or((series, "}"));
            if series_name != name {
                return None;
            }
            let found: BTreeMap<String, String> = label_text
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            (found == *labels).then(|| value.parse().ok()).flatten()
        })
}

#[derive(Default)]
struct Tally {
    cases: usize,
    steps: usize,
    checks: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, kind: &'static str, ok: bool, failure: impl FnOnce() -> String) {
        *self.checks.entry(kind).or_default() += 1;
        if !ok {
            self.failures.push(failure());
        }
    }
}

fn diff(want: &str, got: &str) -> String {
    similar::TextDiff::from_lines(want, got)
        .unified_diff()
        .header("want", "got")
        .to_string()
}

#[allow(clippy::too_many_arguments)] // One step's inputs and the two states it is checked against.
fn check_step(
    tally: &mut Tally,
    case: &Case,
    index: usize,
    step: &Step,
    payload: &str,
    metrics: &str,
    kernel: &RuleSet,
    traced: &chainsmith_tracer::Ruleset,
) {
    let tag = format!("{} step {}", case.name, index + 1);
    let normal = normalize(payload, false).unwrap_or_else(|e| panic!("{tag}: output does not parse: {e}"));
    if let Ok(want) = std::fs::read_to_string(step.dir.join("expected.iptables")) {
        tally.check("expected.iptables", normal == want, || {
            format!("{tag}: expected.iptables differs:\n{}", diff(&want, &normal))
        });
    }
    if let Ok(want) = std::fs::read_to_string(step.dir.join("derived.iptables")) {
        // Upstream's own order is map order for several ports of one Service and
        // several NodePort addresses; the suite compares those loosely (README).
        let loose = ["05-", "10-"].iter().any(|p| case.name.starts_with(p));
        let (want, got) = if loose {
            (
                normalize(&want, true).expect("derived parses"),
                normalize(payload, true).expect("parses"),
            )
        } else {
            (want, normal.clone())
        };
        tally.check("derived.iptables", want == got, || {
            format!("{tag}: derived.iptables differs:\n{}", diff(&want, &got))
        });
    }
    if step.dir.join("expected-chains.yaml").exists() {
        let written: RuleSet = RuleSet::read(payload).expect("parses");
        for chain in load_yaml(&step.dir.join("expected-chains.yaml"))
            .as_array()
            .into_iter()
            .flatten()
        {
            let (table, name) = (
                chain["table"].as_str().unwrap_or_default(),
                chain["chain"].as_str().unwrap_or_default(),
            );
            let want: Vec<&str> = chain["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let got: Vec<&str> = written
                .chain(table, name)
                .map(|c| c.rules.iter().map(String::as_str).collect())
                .unwrap_or_default();
            tally.check("expected-chains.yaml", want == got, || {
                format!("{tag}: chain {table}/{name}:\n  want {want:#?}\n  got {got:#?}")
            });
        }
    }
    if step.dir.join("assertions.yaml").exists() {
        let lines: Vec<&str> = payload.split('\n').collect();
        for assertion in load_yaml(&step.dir.join("assertions.yaml"))
            .as_array()
            .into_iter()
            .flatten()
        {
            let want = assertion["expected"].as_bool().unwrap_or(true);
            let got = if let Some(destination) = assertion["hasRuleWithDestination"].as_str() {
                let (table, chain) = (
                    assertion["table"].as_str().unwrap_or_default(),
                    assertion["chain"].as_str().unwrap_or_default(),
                );
                kernel.chain(table, chain).is_some_and(|chain| {
                    chain.rules.iter().any(|rule| {
                        let words: Vec<_> = chainsmith_iptables::words(rule).map(|w| w.text).collect();
                        words.windows(2).any(|w| w[0] == "-d" && w[1] == destination)
                    })
                })
            } else if let Some(line) = assertion["containsLine"].as_str() {
                lines.contains(&line)
            } else if let Some(text) = assertion["containsText"].as_str() {
                payload.contains(text)
            } else if let Some(count) = assertion["countLines"].as_object() {
                let prefix = count["startsWith"].as_str().unwrap_or_default();
                let containing: Vec<&str> = count
                    .get("containing")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let n = lines
                    .iter()
                    .filter(|l| l.starts_with(prefix) && containing.iter().all(|c| l.contains(c)))
                    .count();
                let expected = assertion["expected"].as_u64().unwrap_or(u64::MAX);
                tally.check("assertions.yaml", n as u64 == expected, || {
                    format!("{tag}: {assertion}: got {n}")
                });
                continue;
            } else {
                panic!("{tag}: unknown assertion {assertion}");
            };
            tally.check("assertions.yaml", got == want, || {
                format!("{tag}: assertion {assertion}: got {got}")
            });
        }
    }
    if step.dir.join("metrics.yaml").exists() {
        for metric in load_yaml(&step.dir.join("metrics.yaml"))
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = metric["name"].as_str().unwrap_or_default();
            let labels: BTreeMap<String, String> = metric["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let want = metric["value"].as_f64();
            let got = metric_value(metrics, name, &labels);
            tally.check("metrics.yaml", want == got, || {
                format!("{tag}: metric {name}{labels:?}: want {want:?}, got {got:?}")
            });
        }
    }
    if step.dir.join("flows.yaml").exists() {
        let flows = load_yaml(&step.dir.join("flows.yaml"));
        let local_ips: Vec<std::net::IpAddr> = flows["localIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str()?.parse().ok())
            .collect();
        for flow in flows["flows"].as_array().into_iter().flatten() {
            let ip = |key: &str| {
                flow[key]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("flow address")
            };
            let protocol = chainsmith_model::Protocol::from_api(flow["protocol"].as_str().unwrap_or("TCP"))
                .expect("protocol");
            let dport = u16::try_from(flow["destPort"].as_u64().expect("destPort")).expect("port");
            let (output, masq) = chainsmith_tracer::trace_upstream_test(
                traced,
                &local_ips,
                ip("sourceIP"),
                protocol,
                ip("destIP"),
                dport,
            );
            let (want_output, want_masq) = (
                flow["output"].as_str().unwrap_or_default(),
                flow["masq"].as_bool(),
            );
            tally.check("flows.yaml", output == want_output && Some(masq) == want_masq, || {
                format!("{tag}: flow {:?}: got {output:?} masq={masq}, want {want_output:?} masq={want_masq:?}", flow["name"])
            });
        }
    }
}

#[test]
fn upstream_conformance_cases() {
    let cases = cases();
    let mut tally = Tally::default();
    for case in &cases {
        tally.cases += 1;
        let compat = replay(case, "compat", false);
        let minimal = replay(case, "minimal", false);
        let full = replay(case, "compat", true);
        let (mut compat_kernel, mut minimal_kernel) = (RuleSet::new(), RuleSet::new());
        let mut traced = chainsmith_tracer::Ruleset::new();
        for (index, step) in case.steps.iter().enumerate() {
            tally.steps += 1;
            let tag = format!("{} step {}", case.name, index + 1);
            let (payload, metrics) = &compat[index];
            compat_kernel
                .apply(payload)
                .unwrap_or_else(|e| panic!("{tag}: compat payload refused: {e}"));
            traced
                .apply(payload)
                .unwrap_or_else(|e| panic!("{tag}: the tracer refused the payload: {e}"));
            minimal_kernel
                .apply(&minimal[index].0)
                .unwrap_or_else(|e| panic!("{tag}: minimal payload refused: {e}"));
            check_step(
                &mut tally,
                case,
                index,
                step,
                payload,
                metrics,
                &compat_kernel,
                &traced,
            );

            let full_payload = &full[index].0;
            let errors = consistency_errors(full_payload);
            tally.check("consistency", errors.is_empty(), || {
                format!("{tag}: full sync inconsistent: {errors:?}")
            });
            let mut fresh = RuleSet::new();
            fresh
                .apply(full_payload)
                .unwrap_or_else(|e| panic!("{tag}: full payload refused: {e}"));
            let want = fresh.to_restore_text();
            for (mode, kernel) in [("compat", &compat_kernel), ("minimal", &minimal_kernel)] {
                let got = kernel.to_restore_text();
                tally.check("incremental == full", got == want, || {
                    format!(
                        "{tag}: {mode} syncs left different tables than one full sync:\n{}",
                        diff(&want, &got)
                    )
                });
            }
        }
    }
    println!(
        "conformance: {} cases, {} steps; checks per kind: {:?}; failures: {}",
        tally.cases,
        tally.steps,
        tally.checks,
        tally.failures.len()
    );
    assert_eq!(tally.cases, 42, "the suite has 42 cases");
    assert!(
        tally.failures.is_empty(),
        "{} conformance failures:\n{}",
        tally.failures.len(),
        tally.failures.join("\n\n")
    );
}
