//! The whole compile path, as `chainsmith compile` runs it: node.yaml and
//! manifest text -> model -> `Plan::compile` -> `render_plan`.
//!
//! Input: a node.yaml's text, a NUL byte, then manifest text. Without a NUL
//! byte, the whole input is the manifest and the node is the default one.
//! Checks: no panic; the payload is UTF-8, reads back on its own
//! (`RuleSet::read`), passes upstream's consistency check, and applies to an
//! empty `RuleSet` and to the tracer's `Ruleset` (what iptables-restore would
//! accept).

#![no_main]

use chainsmith_iptables::RuleSet;
use chainsmith_k8s::{parse_manifests, parse_node_config};
use chainsmith_model::NodeConfig;
use chainsmith_planner::Plan;
use chainsmith_layout::Layout;
use chainsmith_restore::normalize::consistency_errors;
use chainsmith_restore::render_plan;
use chainsmith_tracer::Ruleset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (node, manifests) = match input.split_once('\0') {
        Some((node, manifests)) => match parse_node_config(node, "node.yaml") {
            Ok(node) => (node, manifests),
            Err(_) => return,
        },
        None => (NodeConfig::default(), input),
    };
    let Ok(manifests) = parse_manifests(manifests, "cluster.yaml") else {
        return;
    };
    let plan = Plan::compile(&manifests.services, &manifests.endpoint_slices, &node);
    for diagnostic in &plan.diagnostics {
        let _ = diagnostic.to_string();
    }
    let payload = render_plan(&plan, Layout::V1_33);
    let Ok(payload) = String::from_utf8(payload) else {
        panic!("payload is not UTF-8");
    };
    if let Err(error) = RuleSet::<String>::read(&payload) {
        panic!("payload does not parse: {error}\n{payload}");
    }
    let errors = consistency_errors(&payload);
    assert!(errors.is_empty(), "{errors:?}\n{payload}");
    if let Err(error) = RuleSet::new().apply(&payload) {
        panic!("payload does not apply: {error}\n{payload}");
    }
    if let Err(error) = Ruleset::from_dump(&payload) {
        panic!("tracer cannot read the payload: {error}\n{payload}");
    }
});
