//! The netlink applier against `nft -f` in real kernels: every nftables
//! snapshot transaction (syncs of a replay in turn) applied both ways in two
//! fresh network namespaces must leave the same `nft list table`; a refused
//! transaction changes nothing and names its op; incremental ops work; the
//! ruleset generation tells commits by others from its own.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use chainsmith_nft_netlink::{NetlinkApplier, NetlinkError};
use chainsmith_nftables::{Family, Transaction, read_transaction};
use chainsmith_testkit::{Netns, kernel_tests_enabled, nft_apply, nft_list_table, table_differences};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The transactions of a snapshot (one, or one per `### sync` of a replay),
/// or `None` when it does not hold transactions.
fn snapshot_transactions(text: &str) -> Option<Vec<Transaction>> {
    let body = text.splitn(3, "---\n").nth(2)?;
    let mut chunks = vec![String::new()];
    for line in body.lines() {
        if line.starts_with("### sync") && !chunks.last()?.is_empty() {
            chunks.push(String::new());
        }
        let chunk = chunks.last_mut()?;
        chunk.push_str(line);
        chunk.push('\n');
    }
    let txs: Vec<Transaction> = chunks
        .iter()
        .map(|c| read_transaction(c, Family::Ip).ok())
        .collect::<Option<_>>()?;
    txs.iter().all(|t| !t.is_empty()).then_some(txs)
}

fn snapshots() -> Vec<(String, Vec<Transaction>)> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("nftables") && p.extension().is_some_and(|e| e == "snap"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some(txs) = snapshot_transactions(&text) {
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), txs));
        }
    }
    out
}

/// The conformance suite's `expected.nft` (and `initial.nft`) files, each a
/// whole transaction in knftables' dump form.
fn conformance() -> Vec<(String, Vec<Transaction>)> {
    let suite = root().join("testdata/conformance-nft");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&suite)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let mut files = vec!["initial.nft".to_string(), "expected.nft".to_string()];
        if let Ok(steps) = std::fs::read_dir(dir.join("steps")) {
            let mut steps: Vec<String> = steps
                .map(|e| format!("steps/{}/expected.nft", e.unwrap().file_name().to_string_lossy()))
                .collect();
            steps.sort();
            files.extend(steps);
        }
        for file in &files {
            let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            if let Ok(tx) = read_transaction(&text, Family::Ip)
                && !tx.is_empty()
            {
                let name = format!("{}/{file}", dir.file_name().unwrap().to_string_lossy());
                out.push((name, vec![tx]));
            }
        }
    }
    out
}

fn listing(netns: &Netns, family: Family) -> String {
    netns
        .run("nft", &["list", "table", family.as_str(), "kube-proxy"])
        .unwrap_or_else(|e| format!("(no table: {e})"))
}

fn netlink_apply(
    netns: &Netns,
    tx: &Transaction,
) -> Result<chainsmith_nft_netlink::ApplyReport, NetlinkError> {
    netns
        .enter(|| NetlinkApplier::new()?.apply(tx))
        .expect("enter the namespace")
}

/// Applies `txs` in turn with netlink in one namespace and `nft -f` in
/// another; returns what differs (empty when both agree after every step).
fn compare(name: &str, txs: &[Transaction]) -> String {
    let by_netlink = Netns::new("nlnl").unwrap();
    let by_nft = Netns::new("nlnft").unwrap();
    let mut out = String::new();
    for (step, tx) in txs.iter().enumerate() {
        let a = netlink_apply(&by_netlink, tx);
        let b = nft_apply(&by_nft, &tx.to_text());
        if a.is_ok() != b.is_ok() {
            out += &format!("{name} step {step}: netlink {a:?}, nft {b:?}\n");
            return out;
        }
        let (la, lb) = (listing(&by_netlink, tx.family), listing(&by_nft, tx.family));
        if la != lb {
            let tables = (
                nft_list_table(&by_netlink, tx.family),
                nft_list_table(&by_nft, tx.family),
            );
            let diff = match tables {
                (Ok(ta), Ok(tb)) => table_differences("netlink", &ta, "nft", &tb),
                other => format!("{other:?}"),
            };
            let first = la.lines().zip(lb.lines()).find(|(x, y)| x != y);
            out += &format!("{name} step {step}: listings differ; first differing line {first:?}\n{diff}\n");
            return out;
        }
    }
    out
}

#[test]
fn every_snapshot_transaction_lists_as_nft_f_leaves_it() {
    if !kernel_tests_enabled("every_snapshot_transaction_lists_as_nft_f_leaves_it") {
        return;
    }
    let mut all = snapshots();
    assert!(all.len() >= 25, "only {} snapshot transactions found", all.len());
    let cases = conformance();
    assert!(!cases.is_empty(), "no conformance transactions found");
    all.extend(cases);
    eprintln!(
        "comparing {} transactions: {}",
        all.iter().map(|(_, t)| t.len()).sum::<usize>(),
        all.iter()
            .map(|(n, t)| format!("{n} ({})", t.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut failures = String::new();
    for (name, txs) in &all {
        failures += &compare(name, txs);
    }
    assert!(failures.is_empty(), "{failures}");
}

fn tx(text: &str) -> Transaction {
    read_transaction(text, Family::Ip).unwrap()
}

const BASE: &str = "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }
add chain ip kube-proxy services
add chain ip kube-proxy endpoint-a
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP\" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment \"Active ClusterIPs\" ; }
add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 443 : goto endpoint-a }
add element ip kube-proxy cluster-ips { 10.96.0.1 }
add element ip kube-proxy cluster-ips { 10.96.0.2 }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy endpoint-a meta l4proto tcp dnat to 10.244.0.5:6443
";

#[test]
fn a_refused_transaction_changes_nothing_and_names_its_op() {
    if !kernel_tests_enabled("a_refused_transaction_changes_nothing_and_names_its_op") {
        return;
    }
    let netns = Netns::new("nlref").unwrap();
    netlink_apply(&netns, &tx(BASE)).unwrap();
    let before = listing(&netns, Family::Ip);
    let cases = [
        (
            "add element ip kube-proxy cluster-ips { 10.96.0.3 }\nadd rule ip kube-proxy services jump nowhere\n",
            1,
            "add rule ip kube-proxy services jump nowhere",
        ),
        (
            "flush chain ip kube-proxy services\ndelete element ip kube-proxy cluster-ips { 10.96.0.9 }\n",
            1,
            "delete element ip kube-proxy cluster-ips { 10.96.0.9 }",
        ),
        (
            "delete chain ip kube-proxy endpoint-a\n",
            0,
            "delete chain ip kube-proxy endpoint-a",
        ),
    ];
    for (text, index, line) in cases {
        match netlink_apply(&netns, &tx(text)) {
            Err(NetlinkError::Refused { index: i, op, reason }) => {
                assert_eq!((i, op.as_str()), (index, line), "{reason}");
                eprintln!("refused as expected: op {i} ({op}): {reason}");
            }
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
        assert_eq!(listing(&netns, Family::Ip), before, "{text} changed the table");
    }
    // An unknown rule form is refused before anything is sent.
    let err = netlink_apply(
        &netns,
        &tx("add rule ip kube-proxy services tcp dport 22 accept\n"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not supported yet"), "{err}");
}

#[test]
fn incremental_ops_match_nft() {
    if !kernel_tests_enabled("incremental_ops_match_nft") {
        return;
    }
    let steps = [
        BASE.to_string(),
        "flush chain ip kube-proxy endpoint-a
add rule ip kube-proxy endpoint-a ip saddr 10.244.0.5 jump services
add rule ip kube-proxy endpoint-a meta l4proto tcp dnat to 10.244.0.6:6443
delete element ip kube-proxy cluster-ips { 10.96.0.2 }
add chain ip kube-proxy endpoint-b
add element ip kube-proxy service-ips { 10.96.0.10 . udp . 53 : goto endpoint-b }
"
        .to_string(),
        "delete element ip kube-proxy service-ips { 10.96.0.10 . udp . 53 }
delete chain ip kube-proxy endpoint-b
flush set ip kube-proxy cluster-ips
flush map ip kube-proxy service-ips
delete set ip kube-proxy cluster-ips
"
        .to_string(),
        "delete table ip kube-proxy\n".to_string(),
        BASE.to_string(),
    ];
    let txs: Vec<Transaction> = steps.iter().map(|s| tx(s)).collect();
    let failures = compare("incremental", &txs);
    assert!(failures.is_empty(), "{failures}");
}

/// Not an assertion: how long the largest snapshot takes both ways, and then
/// a one-element change on top of it (where `nft -f` first lists the table).
#[test]
fn timing_of_the_large_cluster_snapshot() {
    if !kernel_tests_enabled("timing_of_the_large_cluster_snapshot") {
        return;
    }
    let text = std::fs::read_to_string(root().join("snapshots/large-cluster@ipv4@nftables.snap")).unwrap();
    let full = snapshot_transactions(&text).unwrap().remove(0);
    let small = tx("add element ip kube-proxy cluster-ips { 10.96.255.254 }
delete element ip kube-proxy cluster-ips { 10.96.255.254 }
");
    let (a, b) = (Netns::new("nltime").unwrap(), Netns::new("nfttime").unwrap());
    for (what, tx) in [
        ("full, empty table", &full),
        ("full again", &full),
        ("2-op change", &small),
    ] {
        let (report, netlink) = a
            .enter(|| {
                let mut applier = NetlinkApplier::new().unwrap();
                let start = Instant::now();
                let report = applier.apply(tx).unwrap();
                (report, start.elapsed())
            })
            .unwrap();
        let start = Instant::now();
        nft_apply(&b, &tx.to_text()).unwrap();
        let nft = start.elapsed();
        eprintln!(
            "large-cluster, {what}: {} ops, {} messages, {} bytes: netlink {netlink:?}, nft -f {nft:?}",
            tx.len(),
            report.messages,
            report.bytes
        );
    }
    assert_eq!(listing(&a, Family::Ip), listing(&b, Family::Ip));
}

#[test]
fn commits_by_others_are_noticed_and_its_own_are_not() {
    if !kernel_tests_enabled("commits_by_others_are_noticed_and_its_own_are_not") {
        return;
    }
    let netns = Netns::new("nlgen").unwrap();
    let mut applier = NetlinkApplier::in_netns(std::path::Path::new(&netns.path())).unwrap();
    assert!(
        applier.others_committed().unwrap(),
        "nothing was watched before the first call"
    );
    assert!(
        !applier.others_committed().unwrap(),
        "nothing happened in between"
    );

    let before = applier.generation().unwrap();
    applier.apply(&tx(BASE)).unwrap();
    applier
        .apply(&tx("add element ip kube-proxy cluster-ips { 10.96.0.3 }\n"))
        .unwrap();
    assert_eq!(
        applier.generation().unwrap(),
        before.wrapping_add(2),
        "one per commit"
    );
    let refused = applier.apply(&tx("add rule ip kube-proxy services jump nowhere\n"));
    assert!(
        matches!(refused, Err(NetlinkError::Refused { .. })),
        "{refused:?}"
    );
    assert!(
        !applier.others_committed().unwrap(),
        "its own two commits and a refusal"
    );

    // Another table, another program: still a commit in this namespace.
    netns.run("nft", &["add", "table", "ip", "someone-else"]).unwrap();
    assert!(applier.others_committed().unwrap());
    assert!(!applier.others_committed().unwrap());

    // Someone else's commit between two of its own.
    applier
        .apply(&tx("add element ip kube-proxy cluster-ips { 10.96.0.4 }\n"))
        .unwrap();
    netns
        .run(
            "nft",
            &[
                "delete",
                "element",
                "ip",
                "kube-proxy",
                "cluster-ips",
                "{ 10.96.0.4 }",
            ],
        )
        .unwrap();
    applier
        .apply(&tx("add element ip kube-proxy cluster-ips { 10.96.0.5 }\n"))
        .unwrap();
    assert!(applier.others_committed().unwrap());
}
