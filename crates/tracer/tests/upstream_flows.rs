//! Upstream's packet flows (`flows.yaml`) through upstream's test tracer:
//! the tracer self-test on its hand-written rules, and every conformance case on
//! the cumulative ruleset its steps' expected/derived outputs leave behind.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chainsmith_model::Protocol;
use chainsmith_tracer::{Ruleset, trace_upstream_test_detailed};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks every flow of one `flows.yaml`; returns (checked, failures).
fn check_flows(path: &Path, ruleset: &Ruleset) -> (usize, Vec<String>) {
    let spec: Value = serde_saphyr::from_str(&read(path)).expect("flows.yaml");
    let local_ips: Vec<IpAddr> = spec["localIPs"]
        .as_array()
        .expect("localIPs")
        .iter()
        .map(|ip| ip.as_str().expect("ip").parse().expect("ip"))
        .collect();
    let mut failures = Vec::new();
    let flows = spec["flows"].as_array().expect("flows");
    for flow in flows {
        let ip = |key: &str| -> IpAddr { flow[key].as_str().expect(key).parse().expect(key) };
        let protocol = Protocol::from_api(flow["protocol"].as_str().unwrap_or("TCP")).expect("protocol");
        let dport = u16::try_from(flow["destPort"].as_u64().expect("destPort")).expect("port");
        let got =
            trace_upstream_test_detailed(ruleset, &local_ips, ip("sourceIP"), protocol, ip("destIP"), dport);
        let (want_output, want_masq) = (
            flow["output"].as_str().expect("output"),
            flow["masq"].as_bool().expect("masq"),
        );
        if got.output != want_output || got.masq != want_masq || got.gave_up {
            failures.push(format!(
                "{}: flow {:?}: got output={:?} masq={} gave_up={}, want output={want_output:?} masq={want_masq}\n    matched:\n      {}",
                path.display(),
                flow["name"],
                got.output,
                got.masq,
                got.gave_up,
                got.matched.join("\n      ")
            ));
        }
    }
    (flows.len(), failures)
}

#[test]
fn tracer_selftest_flows() {
    let dir = conformance_dir().join("tracer-selftest");
    let ruleset = Ruleset::from_dump(&read(&dir.join("rules.iptables"))).expect("rules");
    let (checked, failures) = check_flows(&dir.join("flows.yaml"), &ruleset);
    println!(
        "tracer-selftest: {checked} flows checked, {} passed",
        checked - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 7);
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

#[test]
fn conformance_flows_on_cumulative_rulesets() {
    let root = conformance_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("conformance")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.as_bytes().first().is_some_and(u8::is_ascii_digit))
        })
        .collect();
    cases.sort();
    let (mut files, mut checked, mut unchecked) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for case in &cases {
        let mut ruleset = Ruleset::new();
        for step in steps(case) {
            // expected.iptables (upstream-asserted) or derived.iptables: this
            // sync's restore input in normal form; partial syncs are partial.
            let output = ["expected.iptables", "derived.iptables"]
                .iter()
                .map(|f| step.join(f))
                .find(|p| p.exists());
            let flows = step.join("flows.yaml");
            let Some(output) = output else {
                if flows.exists() {
                    unchecked.push(step.display().to_string());
                }
                // Nothing later can be trusted without this step's output.
                break;
            };
            ruleset
                .apply(&read(&output))
                .unwrap_or_else(|e| panic!("{}: {e}", output.display()));
            if flows.exists() {
                let (n, mut fails) = check_flows(&flows, &ruleset);
                files += 1;
                checked += n;
                failures.append(&mut fails);
            }
        }
    }
    println!(
        "conformance: {files} flows.yaml files, {checked} flows checked, {} passed; \
         steps without an output to check on: {unchecked:?}",
        checked - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(unchecked.is_empty());
    assert_eq!(files, 34, "every flows.yaml of the suite");
}

/// The cumulative state the tracer builds, its rules parsed, equals the one of
/// rule texts (`chainsmith_iptables::RuleSet`) after every step of every case.
#[test]
fn cumulative_state_matches_the_restore_model() {
    let root = conformance_dir();
    let mut compared = 0;
    for entry in std::fs::read_dir(&root).expect("conformance") {
        let case = entry.expect("entry").path();
        if !case.join("node.yaml").exists() {
            continue;
        }
        let mut ours = Ruleset::new();
        let mut theirs = chainsmith_iptables::RuleSet::new();
        for step in steps(&case) {
            let Some(output) = ["expected.iptables", "derived.iptables"]
                .iter()
                .map(|f| step.join(f))
                .find(|p| p.exists())
            else {
                break;
            };
            let text = read(&output);
            ours.apply(&text).expect("ours");
            theirs.apply(&text).expect("theirs");
            for table in ["filter", "nat"] {
                let names: Vec<&str> = theirs.chains(table).map(|c| c.name.as_str()).collect();
                let our_names: Vec<&str> = ours.chains(table).map(|c| c.name.as_str()).collect();
                assert_eq!(our_names, names, "{} {table}", step.display());
                for name in names {
                    let our_rules: Vec<&str> = ours
                        .chain(table, name)
                        .map(|c| c.rules.iter().map(|r| r.text.as_str()).collect())
                        .unwrap_or_default();
                    let their_rules: Vec<&str> = theirs
                        .chain(table, name)
                        .map(|c| c.rules.iter().map(String::as_str).collect())
                        .unwrap_or_default();
                    assert_eq!(our_rules, their_rules, "{} {table} {name}", step.display());
                }
            }
            compared += 1;
        }
    }
    assert!(compared >= 90, "only {compared} steps compared");
}
