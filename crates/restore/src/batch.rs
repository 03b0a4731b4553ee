//! Splitting a full-sync payload into many small restores.
//!
//! iptables-nft-restore grows far worse than linearly with the size of one
//! transaction (measured here: 8 s for 43k lines, 159 s for 107k), while a
//! restore of a few thousand lines stays cheap. [`split_full_payload`] cuts a
//! payload into batches of whole chains, each declared and filled in one
//! batch, ordered so that every chain is complete before a batch that jumps to
//! it runs (leaves first: endpoint chains, then service chains, then the entry
//! chains), with deletions of stale chains last. Every intermediate state is
//! consistent: nothing ever jumps to a missing or half-filled chain. The legacy
//! backend copies the whole table on every commit, so it must get the payload
//! in one piece instead.

use std::collections::{BTreeMap, HashMap, HashSet};

use chainsmith_iptables::{Chain, Footprint, ReadError, RuleSet, jump_of};

/// Splits a full payload into batches of at most about `max_lines` lines (a
/// single chain longer than that is one batch of its own).
pub fn split_full_payload(payload: &str, max_lines: usize) -> Result<Vec<String>, ReadError> {
    let (rules, footprint): (RuleSet, Footprint) = RuleSet::read_with_footprint(payload)?;
    let mut batches = Vec::new();
    for written in &footprint.tables {
        // The chains the payload leaves, in the order it declared them.
        let chains: Vec<&Chain> = written
            .declared
            .iter()
            .filter_map(|name| rules.chain(&written.table, name))
            .collect();
        let index: HashMap<&str, usize> = chains
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        // Depth of a chain = 1 + the depth of the deepest chain it jumps to
        // within this table; leaves have depth 0. kube-proxy's chains form a DAG.
        let mut depth: Vec<Option<usize>> = vec![None; chains.len()];
        fn depth_of(
            i: usize,
            chains: &[&Chain],
            index: &HashMap<&str, usize>,
            depth: &mut Vec<Option<usize>>,
            guard: usize,
        ) -> usize {
            if let Some(d) = depth[i] {
                return d;
            }
            // A cycle (never written by kube-proxy) is cut rather than followed forever.
            if guard > chains.len() {
                return 0;
            }
            let mut d = 0;
            for rule in &chains[i].rules {
                let target = jump_of(rule);
                if let Some(&j) = target.and_then(|t| index.get(&*t)).filter(|&&j| j != i) {
                    d = d.max(1 + depth_of(j, chains, index, depth, guard + 1));
                }
            }
            depth[i] = Some(d);
            d
        }
        let mut by_depth: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..chains.len() {
            by_depth
                .entry(depth_of(i, &chains, &index, &mut depth, 0))
                .or_default()
                .push(i);
        }
        let mut batch = Batch::new(&written.table);
        for i in by_depth.into_values().flatten() {
            let chain = chains[i];
            if batch.lines > 0 && batch.lines + 1 + chain.rules.len() > max_lines {
                batches.push(batch.finish());
                batch = Batch::new(&written.table);
            }
            batch.add(&chain.name, &chain.rules);
        }
        if batch.lines > 0 {
            batches.push(batch.finish());
        }
        // Stale chains go last, in the order the payload declared them.
        let gone: HashSet<&str> = written.deleted.iter().map(|c| c.name.as_str()).collect();
        let deleted: Vec<&String> = written
            .declared
            .iter()
            .filter(|name| gone.contains(name.as_str()))
            .collect();
        if !deleted.is_empty() {
            let mut text = format!("*{}\n", written.table);
            for name in &deleted {
                text.push_str(&format!(":{name} - [0:0]\n"));
            }
            for name in &deleted {
                text.push_str(&format!("-X {name}\n"));
            }
            text.push_str("COMMIT\n");
            batches.push(text);
        }
    }
    Ok(batches)
}

struct Batch {
    table: String,
    declarations: String,
    rules: String,
    lines: usize,
}

impl Batch {
    fn new(table: &str) -> Batch {
        Batch {
            table: table.to_string(),
            declarations: String::new(),
            rules: String::new(),
            lines: 0,
        }
    }

    fn add(&mut self, chain: &str, rules: &[String]) {
        self.declarations.push_str(&format!(":{chain} - [0:0]\n"));
        for rule in rules {
            self.rules.push_str(rule);
            self.rules.push('\n');
        }
        self.lines += 1 + rules.len();
    }

    fn finish(self) -> String {
        format!("*{}\n{}{}COMMIT\n", self.table, self.declarations, self.rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j REJECT\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-1 - [0:0]\n:KUBE-SEP-2 - [0:0]\n:KUBE-SEP-OLD - [0:0]\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-SERVICES -d 198.51.100.1 -j KUBE-SVC-A\n-A KUBE-SVC-A -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-1\n-A KUBE-SVC-A -j KUBE-SEP-2\n-A KUBE-SEP-1 -s 192.0.2.1 -j KUBE-MARK-MASQ\n-A KUBE-SEP-1 -j DNAT --to-destination 192.0.2.1:80\n-A KUBE-SEP-2 -s 192.0.2.2 -j KUBE-MARK-MASQ\n-A KUBE-SEP-2 -j DNAT --to-destination 192.0.2.2:80\n-X KUBE-SEP-OLD\nCOMMIT\n";

    #[test]
    fn batches_fill_leaves_first_and_delete_last() {
        let batches = split_full_payload(PAYLOAD, 3).expect("splits");
        assert!(batches.len() >= 4, "{batches:?}");
        let position = |needle: &str| batches.iter().position(|b| b.contains(needle)).expect(needle);
        assert!(position(":KUBE-MARK-MASQ") < position(":KUBE-SEP-1"));
        assert!(position(":KUBE-SEP-2") < position(":KUBE-SVC-A"));
        assert!(position(":KUBE-SVC-A") < position("*nat\n:KUBE-SERVICES"));
        assert_eq!(position("-X KUBE-SEP-OLD"), batches.len() - 1);
        // Every batch on its own is acceptable to a kernel holding the ones before.
        let (mut batched, mut whole) = (RuleSet::new(), RuleSet::new());
        batched
            .apply("*nat\n:KUBE-SEP-OLD - [0:0]\nCOMMIT\n")
            .expect("seed");
        whole
            .apply("*nat\n:KUBE-SEP-OLD - [0:0]\nCOMMIT\n")
            .expect("seed");
        for batch in &batches {
            batched.apply(batch).unwrap_or_else(|e| panic!("{e}\n{batch}"));
        }
        whole.apply(PAYLOAD).expect("whole");
        assert_eq!(batched, whole);
    }
}
