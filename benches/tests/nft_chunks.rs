//! `Transaction::split_leaves_first` on real first syncs: every snapshot
//! fixture's nftables transaction and the sync engine's first sync of
//! generated clusters, cut into pieces. Applied one by one to the model (which
//! refuses, as the kernel does, a rule or element naming a missing chain or
//! set), every piece is accepted and the last leaves the table the whole
//! transaction leaves; with `CHAINSMITH_KERNEL_TESTS=1` the same holds for
//! `nft -f` in a fresh network namespace, compared through `nft list table`.

// Test helpers panic on purpose, as the tests do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use chainsmith_benches::{cluster, node};
use chainsmith_nftables::{Family, Op, Table, Transaction, read_transaction};
use chainsmith_sync::NftSyncEngine;
use chainsmith_testkit::{Netns, kernel_tests_enabled, nft_apply, nft_list_table, table_differences};

/// Every `*@nftables.snap` that holds a transaction (the `compile` and
/// `replay` ones; `diff` snapshots hold none), by name.
fn fixtures() -> Vec<(String, Transaction)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../snapshots");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("snapshots")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with("@nftables.snap"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("reads");
        // The insta header ends at the second `---` line.
        // Keep only the first transaction (a replay holds one per step).
        let first: String = text
            .lines()
            .skip_while(|l| !l.starts_with("add table"))
            .take_while(|l| l.starts_with("add ") || l.starts_with("delete ") || l.starts_with("flush "))
            .map(|l| format!("{l}\n"))
            .collect();
        if first.is_empty() {
            continue;
        }
        let family = if first.starts_with("add table ip6 ") {
            Family::Ip6
        } else {
            Family::Ip
        };
        let tx = read_transaction(&first, family).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        out.push((name, tx));
    }
    assert!(
        out.len() >= 20,
        "only {} fixtures found in {}",
        out.len(),
        dir.display()
    );
    out
}

/// A first sync of `services` generated Services with 10 endpoints each.
fn first_sync(services: usize) -> Transaction {
    let input = cluster(services, 10);
    let mut engine = NftSyncEngine::new(node());
    engine.replace_state(&input.services, &input.slices);
    engine.sync(0, false).main
}

/// The piece is the ops of one chain only (its declaration, flush and
/// rules), the unit the split never cuts.
fn one_chain(piece: &Transaction) -> bool {
    let name = |op: &Op| match op {
        Op::AddChain(spec) => Some(spec.name.clone()),
        Op::FlushChain(name) => Some(name.clone()),
        Op::AddRule { chain, .. } => Some(chain.clone()),
        _ => None,
    };
    let first = piece.ops.first().and_then(name);
    first.is_some() && piece.ops.iter().all(|op| name(op) == first)
}

/// Splits `whole` and checks it against the model, starting from `before`.
fn check_model(label: &str, before: &Table, whole: &Transaction, max_ops: usize) -> Vec<Transaction> {
    let pieces = whole.split_leaves_first(max_ops);
    let mut expected = before.clone();
    expected
        .apply(whole)
        .unwrap_or_else(|e| panic!("{label}: the whole refused: {e}"));
    let mut table = before.clone();
    for (k, piece) in pieces.iter().enumerate() {
        table.apply(piece).unwrap_or_else(|e| {
            panic!(
                "{label} max {max_ops}: piece {k} of {} refused: {e}",
                pieces.len()
            )
        });
        // The first piece holds the head, which stays whole.
        assert!(
            k == 0 || piece.len() <= max_ops.max(1) || one_chain(piece),
            "{label} max {max_ops}: piece {k} has {} ops",
            piece.len()
        );
    }
    let differences = table_differences("pieces", &table, "whole", &expected);
    assert!(differences.is_empty(), "{label} max {max_ops}:\n{differences}");
    assert_eq!(table.canonical(), expected.canonical(), "{label} max {max_ops}");
    let mut ops: Vec<String> = pieces
        .iter()
        .flat_map(|p| p.to_text().lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut all: Vec<String> = whole.to_text().lines().map(str::to_string).collect();
    ops.sort();
    all.sort();
    assert_eq!(
        ops, all,
        "{label}: the pieces hold exactly the transaction's operations"
    );
    pieces
}

#[test]
fn fixture_first_syncs_apply_piece_by_piece_in_the_model() {
    for (name, whole) in fixtures() {
        let empty = Table::new(whole.family);
        for max_ops in [1, 2, 5, 13, 40, 100, whole.len()] {
            let pieces = check_model(&name, &empty, &whole, max_ops);
            if max_ops >= whole.len() {
                assert_eq!(pieces, vec![whole.clone()]);
            }
        }
    }
}

#[test]
fn generated_first_syncs_apply_piece_by_piece_in_the_model() {
    let small = first_sync(30);
    check_model("30x10", &Table::new(small.family), &small, 1);
    let whole = first_sync(500);
    let empty = Table::new(whole.family);
    for max_ops in [100, 2_000, 9_000] {
        let pieces = check_model("500x10", &empty, &whole, max_ops);
        if max_ops == 2_000 {
            assert!(pieces.len() >= whole.len() / 2_000, "{}", pieces.len());
        }
    }
}

/// A first sync after a restart over an earlier proxier's table: Services
/// gone, endpoints gone (stale chains flushed, elements deleted at the end),
/// endpoint chains kept.
#[test]
fn a_first_sync_over_an_earlier_table_applies_piece_by_piece_in_the_model() {
    let mut before = Table::new(Family::Ip);
    before.apply(&first_sync(150)).expect("earlier table");
    let input = cluster(120, 8);
    let mut engine = NftSyncEngine::new(node());
    engine.set_existing(&before);
    engine.replace_state(&input.services, &input.slices);
    let whole = engine.sync(0, false).main;
    for max_ops in [3, 50, 700] {
        let pieces = check_model("over 150x10, 120x8", &before, &whole, max_ops);
        // Stale chains (flushed, never declared here) are emptied only after
        // every addition.
        let text: String = pieces.iter().map(Transaction::to_text).collect();
        let lines: Vec<&str> = text.lines().collect();
        let declared = |flush: &str| {
            let chain = flush.trim_start_matches("flush chain ");
            let add = format!("add chain {chain}");
            lines
                .iter()
                .any(|l| *l == add || l.starts_with(&format!("{add} ")))
        };
        let first_stale_flush = lines
            .iter()
            .position(|l| l.starts_with("flush chain ") && !declared(l));
        let last_addition = lines.iter().rposition(|l| l.starts_with("add "));
        assert!(first_stale_flush.is_some());
        assert!(
            last_addition < first_stale_flush,
            "max {max_ops}: {last_addition:?} {first_stale_flush:?}\n{}",
            lines[first_stale_flush.unwrap_or(0)..].join("\n")
        );
    }
}

fn kernel_equal(label: &str, whole: &Transaction, max_ops: usize) -> usize {
    kernel_equal_over(label, None, whole, max_ops)
}

/// Applies `before` (if any) and then `whole` at once in one namespace, and
/// `before` and `whole`'s pieces one by one in another; both are accepted and
/// the tables listed equal. Returns the number of pieces.
fn kernel_equal_over(
    label: &str,
    before: Option<&Transaction>,
    whole: &Transaction,
    max_ops: usize,
) -> usize {
    let pieces = whole.split_leaves_first(max_ops);
    let earlier = |netns: &Netns| {
        if let Some(before) = before {
            nft_apply(netns, &before.to_text())
                .unwrap_or_else(|e| panic!("{label}: earlier table refused: {e}"));
        }
    };
    let single = Netns::new("chw").expect("netns");
    earlier(&single);
    nft_apply(&single, &whole.to_text()).unwrap_or_else(|e| panic!("{label}: whole refused: {e}"));
    let expected = nft_list_table(&single, whole.family).expect("listed");
    drop(single);
    let split = Netns::new("chp").expect("netns");
    earlier(&split);
    for (k, piece) in pieces.iter().enumerate() {
        nft_apply(&split, &piece.to_text()).unwrap_or_else(|e| {
            panic!(
                "{label} max {max_ops}: piece {k} of {} refused: {e}",
                pieces.len()
            )
        });
    }
    let listed = nft_list_table(&split, whole.family).expect("listed");
    let differences = table_differences("pieces", &listed, "whole", &expected);
    assert!(differences.is_empty(), "{label} max {max_ops}:\n{differences}");
    assert_eq!(listed.canonical(), expected.canonical(), "{label}");
    pieces.len()
}

#[test]
fn kernel_takes_fixture_pieces_in_order() {
    if !kernel_tests_enabled("kernel_takes_fixture_pieces_in_order") {
        return;
    }
    let wanted = [
        "clusterip@ipv4@nftables.snap",
        "session-affinity@ipv4@nftables.snap",
        "loadbalancer@ipv4@nftables.snap",
        "loadbalancer@ipv4-nodeport-addresses@nftables.snap",
        "mixed-cluster@ipv4@nftables.snap",
        "mixed-cluster@ipv6@nftables.snap",
        "large-cluster@ipv4@nftables.snap",
    ];
    let fixtures = fixtures();
    for name in wanted {
        let (_, whole) = fixtures.iter().find(|(n, _)| n == name).expect(name);
        for max_ops in [3, 40] {
            let pieces = kernel_equal(name, whole, max_ops);
            assert!(pieces > 1, "{name}: {pieces} pieces");
        }
    }
}

#[test]
fn kernel_takes_a_generated_first_sync_in_pieces() {
    if !kernel_tests_enabled("kernel_takes_a_generated_first_sync_in_pieces") {
        return;
    }
    let whole = first_sync(1_000);
    let pieces = kernel_equal("1000x10", &whole, 2_000);
    assert!(
        pieces >= whole.len() / 2_000,
        "{pieces} pieces of {}",
        whole.len()
    );
}

#[test]
fn kernel_takes_pieces_over_an_earlier_table() {
    if !kernel_tests_enabled("kernel_takes_pieces_over_an_earlier_table") {
        return;
    }
    let earlier = first_sync(300);
    let mut before = Table::new(Family::Ip);
    before.apply(&earlier).expect("earlier table");
    let input = cluster(240, 8);
    let mut engine = NftSyncEngine::new(node());
    engine.set_existing(&before);
    engine.replace_state(&input.services, &input.slices);
    let whole = engine.sync(0, false).main;
    let pieces = kernel_equal_over("over 300x10, 240x8", Some(&earlier), &whole, 500);
    assert!(pieces > 1, "{pieces}");
}
