//! Upstream kube-proxy's nftables unit-test cases (testdata/conformance-nft),
//! run through the real `chainsmith replay --mode nftables` binary.
//!
//! Per step it checks, on the table that the step's transactions build (a
//! model that refuses what the kernel refuses): the whole ruleset against
//! upstream's `expected.nft` (compared as upstream does: objects as a set,
//! rules in chain order), the operation counts, stale chains and map lookups
//! of `assertions.yaml`, and the metric values of `metrics.yaml`. The packet
//! flows of `flows.yaml` go through the project's nftables tracer
//! (crates/nft-tracer/tests/conformance_flows.rs) and the suite's own checker
//! (scripts/check-conformance-with-python.sh), which reads these outputs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "common/nft_suite.rs"]
mod nft_suite;

use chainsmith_nftables::{Family, Table, read_transaction};
use nft_suite::{cases, load_yaml, replay};
use serde_json::Value;

/// The table a dump describes. Upstream's expected texts come in blocks, a
/// rule sometimes before the chain it jumps to; like upstream's comparison,
/// objects are taken by type first (table, chains, sets, maps, rules,
/// elements), lines of one type in their order.
fn table_of(text: &str, family: Family, what: &str) -> Table {
    let rank = |line: &&str| {
        let object = line.split(' ').nth(1).unwrap_or_default();
        ["table", "chain", "set", "map", "rule", "element"]
            .iter()
            .position(|o| *o == object)
            .unwrap_or(6)
    };
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(rank);
    let text = lines.join("\n");
    let mut table = Table::new(family);
    let tx = read_transaction(&text, family).unwrap_or_else(|e| panic!("{what}: {e}"));
    table.apply(&tx).unwrap_or_else(|e| panic!("{what}: {e}"));
    table
}

fn ops(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// The value of one sample in a Prometheus text exposition.
fn metric(text: &str, name: &str, labels: &serde_json::Map<String, Value>) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let all = labels.iter().all(|(k, v)| {
            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            rest.contains(&format!("{k}=\"{v}\""))
        });
        (rest.starts_with('{') && all).then(|| value.parse().ok())?
    })
}

#[test]
fn every_case_matches_upstream() {
    let cases = cases();
    assert_eq!(cases.len(), 32, "the suite has 32 cases");
    let mut checked = 0;
    for case in &cases {
        let out = tempfile::tempdir().expect("tempdir");
        let initial = case.initial();
        case.replay(out.path());
        let mut kernel = match &initial {
            Some(path) => table_of(
                &std::fs::read_to_string(path).unwrap(),
                case.family,
                "initial.nft",
            ),
            None => Table::new(case.family),
        };
        for (i, step) in case.steps.iter().enumerate() {
            let tag = format!("{} step {}", case.name, i + 1);
            let read =
                |suffix: &str| std::fs::read_to_string(out.path().join(format!("{:02}.{suffix}", i + 1)));
            if let Ok(cleanup) = read("cleanup.nft") {
                let tx = read_transaction(&cleanup, case.family).expect("cleanup reads");
                kernel
                    .apply(&tx)
                    .unwrap_or_else(|e| panic!("{tag}: cleanup: {e}"));
            }
            let main = read("nft").unwrap_or_else(|e| panic!("{tag}: {e}"));
            let tx = read_transaction(&main, case.family).expect("main reads");
            kernel.apply(&tx).unwrap_or_else(|e| panic!("{tag}: {e}"));
            let expected = step.join("expected.nft");
            if expected.exists() {
                let want = table_of(
                    &std::fs::read_to_string(&expected).unwrap(),
                    case.family,
                    "expected.nft",
                );
                assert_eq!(
                    kernel.dump(),
                    want.dump(),
                    "{tag}: ruleset differs from expected.nft"
                );
                checked += 1;
            }
            let assertions = step.join("assertions.yaml");
            if assertions.exists() {
                for assertion in load_yaml(&assertions).as_array().unwrap() {
                    if let Some(n) = assertion["lastTransactionOps"].as_u64() {
                        assert_eq!(ops(&main) as u64, n, "{tag}: operations of the main transaction");
                    }
                    if let Some(relative) = assertion.get("lastTransactionOpsRelative") {
                        let setup_dir = tempfile::tempdir().expect("tempdir");
                        let empty = setup_dir.path().join("empty");
                        std::fs::create_dir(&empty).unwrap();
                        std::fs::write(empty.join("cluster.yaml"), "").unwrap();
                        replay(&case.dir.join("node.yaml"), &[empty], None, setup_dir.path());
                        let setup = std::fs::read_to_string(setup_dir.path().join("01.nft")).unwrap();
                        let plus = relative["plus"].as_u64().unwrap() as usize;
                        assert_eq!(ops(&main), ops(&setup) + plus, "{tag}: setupOps + {plus}");
                        // Kept for the python checker's own count.
                        std::fs::write(out.path().join("setup.nft"), setup).unwrap();
                    }
                    if let Some(stale) = assertion["staleChains"].as_array() {
                        let mut want: Vec<&str> = stale.iter().map(|c| c.as_str().unwrap()).collect();
                        want.sort();
                        let got: Vec<&str> = kernel
                            .chain_names()
                            .filter(|c| c.contains('/') && kernel.rules(c).next().is_none())
                            .collect();
                        assert_eq!(got, want, "{tag}: stale (flushed, not yet deleted) chains");
                    }
                    if let Some(lookup) = assertion.get("mapHasElement") {
                        let key: Vec<&str> = lookup["key"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|k| k.as_str().unwrap())
                            .collect();
                        let found = kernel
                            .element(lookup["map"].as_str().unwrap(), &key.join(" . "))
                            .is_some();
                        assert_eq!(found, assertion["expected"].as_bool().unwrap(), "{tag}: {lookup}");
                    }
                }
            }
            let metrics = step.join("metrics.yaml");
            if metrics.exists() {
                let text = read("metrics").expect("metrics written");
                for m in load_yaml(&metrics).as_array().unwrap() {
                    let name = m["name"].as_str().unwrap();
                    let got = metric(&text, name, m["labels"].as_object().unwrap());
                    assert_eq!(got, m["value"].as_f64(), "{tag}: {name} {}", m["labels"]);
                }
            }
        }
    }
    assert_eq!(checked, 14, "every expected.nft of the suite is compared");
}
