//! Properties of one compile (a full-sync payload): consistent, one family,
//! deterministic; the nftables port objects the engine keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use chainsmith_iptables::{RuleSet, words};
use chainsmith_layout::Layout;
use chainsmith_model::{EndpointSlice, IpFamily, IpNet, NodeConfig, Service};
use chainsmith_naming::ChainName;
use chainsmith_nft_layout::{NftContext, PortObjects};
use chainsmith_planner::{Plan, PortKey};
use chainsmith_restore::normalize::{consistency_errors, first_difference};
use chainsmith_restore::render_plan;
use chainsmith_sync::{PartialSyncMode, SyncEngine, SyncKind};
use proptest::prelude::*;

use crate::cluster::{any_node_config, cluster, node_config};

fn render(plan: &Plan) -> String {
    String::from_utf8(render_plan(plan, Layout::V1_33)).expect("payloads are UTF-8")
}

/// The lines of each `*table` section of a payload.
fn sections(text: &str) -> BTreeMap<&str, Vec<&str>> {
    let mut tables = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if let Some(table) = line.strip_prefix('*') {
            current = Some(table);
        } else if line == "COMMIT" {
            current = None;
        } else if let Some(table) = current {
            tables.entry(table).or_insert_with(Vec::new).push(line);
        }
    }
    tables
}

/// Per-port chains of different service ports never share a name (every chain
/// a port could use, not only the ones it uses now); every per-service chain
/// the payload declares belongs to exactly one port that uses it; no chain is
/// declared twice in a table.
fn check_chain_names(plan: &Plan, text: &str) -> Result<(), TestCaseError> {
    let mut owner: BTreeMap<ChainName, PortKey> = BTreeMap::new();
    for port in &plan.ports {
        let info = port.info();
        let key = port.key();
        let candidates = [
            info.svc_chain(),
            info.svl_chain(),
            info.ext_chain(),
            info.fw_chain(),
        ]
        .into_iter()
        .chain(port.endpoints().iter().map(|ep| ep.chain));
        for chain in candidates {
            if let Some(other) = owner.insert(chain, key.clone()) {
                prop_assert!(other == key, "{chain} is a chain of both {other:?} and {key:?}");
            }
        }
        // Within one port, one SEP chain per endpoint.
        let seps: BTreeSet<ChainName> = port.endpoints().iter().map(|ep| ep.chain).collect();
        prop_assert_eq!(seps.len(), port.endpoints().len(), "{:?}", key);
    }
    let used: BTreeSet<ChainName> = plan
        .ports
        .iter()
        .flat_map(|p| Layout::V1_33.own_chains(p))
        .collect();
    for (table, lines) in sections(text) {
        let mut declared = BTreeSet::new();
        for line in lines {
            let Some(rest) = line.strip_prefix(':') else {
                continue;
            };
            let name = rest.split(' ').next().unwrap_or_default();
            prop_assert!(declared.insert(name), "{name} declared twice in {table}");
            if let Some(chain) = ChainName::new(name).filter(|c| c.service_chain_kind().is_some()) {
                prop_assert_eq!(table, "nat", "per-service chain {} outside nat", name);
                prop_assert!(used.contains(&chain), "{name} is declared but no port uses it");
            }
        }
        if table == "nat" {
            for chain in &used {
                prop_assert!(
                    declared.contains(chain.as_str()),
                    "{chain} is used but not declared"
                );
            }
        }
    }
    Ok(())
}

/// The jumps to KUBE-NODEPORTS are the last rules of nat KUBE-SERVICES, and
/// nothing else jumps there.
fn check_nodeports_jump_last(text: &str) -> Result<(), TestCaseError> {
    let rules: RuleSet =
        RuleSet::read(text).map_err(|e| TestCaseError::fail(format!("unparseable payload: {e:?}")))?;
    let jumps_to_nodeports = |rule: &str| rule.ends_with(" -j KUBE-NODEPORTS");
    for table in rules.table_names() {
        for chain in rules.chains(table) {
            let in_services = table == "nat" && chain.name == "KUBE-SERVICES";
            let mut seen_jump = false;
            for rule in &chain.rules {
                if jumps_to_nodeports(rule) {
                    prop_assert!(in_services, "{} {} jumps to KUBE-NODEPORTS", table, chain.name);
                    seen_jump = true;
                } else {
                    prop_assert!(
                        !seen_jump,
                        "rule after the KUBE-NODEPORTS jump in nat KUBE-SERVICES: {rule}"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::cases(256))]

    /// Property 1: a full payload passes upstream's consistency check (every
    /// chain used is declared and filled, every declared chain is used), the
    /// model of the kernel accepts it, per-port chain names never collide, and
    /// the NodePort jump comes last.
    #[test]
    fn full_payloads_are_consistent(cluster in cluster(), node in any_node_config()) {
        let (services, slices) = cluster.materialize();
        let plan = Plan::compile(&services, &slices, &node);
        let text = render(&plan);
        let errors = consistency_errors(&text);
        prop_assert!(errors.is_empty(), "{errors:#?}\n{text}");
        if let Err(e) = RuleSet::new().apply(&text) {
            return Err(TestCaseError::fail(format!("the kernel model refuses it: {e}\n{text}")));
        }
        check_chain_names(&plan, &text)?;
        check_nodeports_jump_last(&text)?;
    }
}

proptest! {
    #![proptest_config(crate::cases(128))]

    /// Property 1 for kube-proxy's 2018 layout: the full payload passes the
    /// consistency check, the model of the kernel accepts it, the NodePort
    /// jump comes last, and its addresses are all of the node's family.
    #[test]
    fn v1_10_payloads_are_consistent(cluster in cluster(), node in any_node_config()) {
        let (services, slices) = cluster.materialize();
        let plan = Plan::compile(&services, &slices, &node);
        let text = String::from_utf8(render_plan(&plan, Layout::V1_10)).expect("payloads are UTF-8");
        let mut errors = consistency_errors(&text);
        // v1.10 declares the KUBE-XLB chain of a Local Service even without
        // endpoints and leaves it unused (the spec, section 5, steps 1 and 6).
        errors.retain(|e| {
            let unused_xlb_only = e.strip_prefix("some chains in nat are created but not used: ").is_some_and(|set| {
                set.trim_matches(|c| c == '{' || c == '}')
                    .split(", ")
                    .all(|chain| chain.trim_matches('"').starts_with("KUBE-XLB-"))
            });
            !unused_xlb_only
        });
        prop_assert!(errors.is_empty(), "{errors:#?}\n{text}");
        if let Err(e) = RuleSet::new().apply(&text) {
            return Err(TestCaseError::fail(format!("the kernel model refuses it: {e}\n{text}")));
        }
        check_nodeports_jump_last(&text)?;
        for (word, family, line) in addresses_in(&text)? {
            prop_assert_eq!(family, node.ip_family, "{} in {}", word, line);
        }
    }
}

/// The family of a word that is an address, a network or an `ip:port`.
fn family_of_word(word: &str) -> Option<IpFamily> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(IpFamily::of(&ip));
    }
    if let Ok(net) = word.parse::<IpNet>() {
        return Some(IpFamily::of_net(&net));
    }
    word.parse::<SocketAddr>().ok().map(|sa| IpFamily::of(&sa.ip()))
}

/// Every address in a payload: option values (`-s`, `-d`, `--to-destination`,
/// which must be addresses) and any other word, comments included, that reads
/// as one. Returns `(word, family, line)`.
fn addresses_in(text: &str) -> Result<Vec<(String, IpFamily, String)>, TestCaseError> {
    const ADDRESS_OPTIONS: [&str; 3] = ["-s", "-d", "--to-destination"];
    let mut found = Vec::new();
    for line in text.lines() {
        let words: Vec<String> = words(line).map(|w| w.text.into_owned()).collect();
        for (i, word) in words.iter().enumerate() {
            let option_value = i > 0 && ADDRESS_OPTIONS.contains(&words[i - 1].as_str());
            // A comment is one word; look at its parts too.
            for part in word.split_whitespace() {
                match family_of_word(part) {
                    Some(family) => found.push((part.to_string(), family, line.to_string())),
                    None => prop_assert!(!option_value, "{part:?} is not an address: {line}"),
                }
            }
        }
    }
    Ok(found)
}

proptest! {
    #![proptest_config(crate::cases(256))]

    /// Property 3: a dual-stack cluster compiled for an IPv4 node names only
    /// IPv4 addresses and for an IPv6 node only IPv6 ones, and each names every
    /// cluster IP and external IP of its family (so nothing was dropped to get
    /// there).
    #[test]
    fn outputs_never_mix_families(
        cluster in cluster(),
        node_v4 in node_config(IpFamily::V4),
        node_v6 in node_config(IpFamily::V6),
    ) {
        let (services, slices) = cluster.materialize();
        for node in [node_v4, node_v6] {
            let family = node.ip_family;
            let text = render(&Plan::compile(&services, &slices, &node));
            let found = addresses_in(&text)?;
            for (word, word_family, line) in &found {
                prop_assert_eq!(*word_family, family, "{} in the {} payload: {}", word, family, line);
            }
            let words: BTreeSet<&str> = found.iter().map(|(w, _, _)| w.as_str()).collect();
            for service in services.iter().filter(|s| !s.ports.is_empty()) {
                let Some(cluster_ip) = service.cluster_ips.get(family) else {
                    continue;
                };
                let expected = std::iter::once(cluster_ip)
                    .chain(service.external_ips.iter().copied().filter(|ip| IpFamily::of(ip) == family));
                for ip in expected {
                    prop_assert!(
                        words.contains(ip.to_string().as_str()),
                        "{} of {} missing from the {} payload:\n{}",
                        ip,
                        service.key,
                        family,
                        text
                    );
                }
            }
        }
    }
}

/// A permutation of `items` chosen by `seed` (a small xorshift; no `rand`).
fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut items = items.to_vec();
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
    items
}

fn same_text(what: &str, want: &str, got: &str) -> Result<(), TestCaseError> {
    match first_difference(want, got) {
        None => Ok(()),
        Some((line, w, g)) => Err(TestCaseError::fail(format!(
            "{what}: line {line} differs\n  want: {w}\n   got: {g}"
        ))),
    }
}

fn engine_full_payload(services: &[Service], slices: &[EndpointSlice], node: &NodeConfig) -> String {
    let mut engine = SyncEngine::new(node.clone(), PartialSyncMode::Minimal);
    for service in services {
        engine.set_service(&service.key, Some(service));
    }
    for slice in slices {
        engine.set_endpoint_slice(&slice.key, Some(slice));
    }
    let outcome = engine.sync(0, false);
    assert_eq!(outcome.kind, SyncKind::Full, "the first sync is full");
    String::from_utf8(outcome.payload.to_vec()).expect("payloads are UTF-8")
}

proptest! {
    #![proptest_config(crate::cases(256))]

    /// Property 4: the same input gives byte-identical output, also with the
    /// Services and EndpointSlices in another order, and the sync engine's
    /// first (full) payload is the same bytes whatever order it learnt the
    /// objects in.
    #[test]
    fn compiling_is_deterministic(
        cluster in cluster(),
        node in any_node_config(),
        seeds in (any::<u64>(), any::<u64>()),
    ) {
        let (services, slices) = cluster.materialize();
        let plan = Plan::compile(&services, &slices, &node);
        let once = render(&plan);
        same_text("compiled twice", &once, &render(&Plan::compile(&services, &slices, &node)))?;
        let (services, slices) = (shuffled(&services, seeds.0), shuffled(&slices, seeds.1));
        let reordered = Plan::compile(&services, &slices, &node);
        same_text("input reordered", &once, &render(&reordered))?;
        prop_assert_eq!(&plan.diagnostics, &reordered.diagnostics);
        same_text("sync engine's full sync", &once, &engine_full_payload(&services, &slices, &node))?;
    }
}

proptest! {
    #![proptest_config(crate::cases(128))]

    /// What the nftables engine keeps between syncs, `PortObjects::without_rules`,
    /// is `PortObjects::of` with every chain's rules left out, and nothing else.
    #[test]
    fn port_objects_without_rules_differ_only_by_the_rules(
        cluster in cluster(),
        node in any_node_config(),
    ) {
        let (services, slices) = cluster.materialize();
        let plan = Plan::compile(&services, &slices, &node);
        let ctx = NftContext::new(&plan.ctx);
        for port in &plan.ports {
            let mut full = PortObjects::of(port, &ctx);
            for chain in &mut full.chains {
                chain.rules.clear();
            }
            prop_assert_eq!(full, PortObjects::without_rules(port, &ctx));
        }
    }
}
