//! One large transaction as a sequence of small ones, leaves first.
//!
//! The kernel's commit of one `nft -f` transaction grows worse than linearly
//! with its size (a first full sync of 10k Services x 10 endpoints: 87 s as one
//! transaction, 22 s as 21 smaller ones on kernel 6.18), so a caller may send
//! a large transaction as several. [`Transaction::split_leaves_first`] cuts
//! one so that each piece applies where the previous pieces left the table,
//! the last leaves the table the whole transaction would, and no piece ever
//! makes a chain reachable before it holds all its rules.

use std::collections::HashMap;

use crate::op::{Op, Transaction};
use crate::table::{Reference, references};

/// What an operation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subject<'t> {
    Table,
    Chain(&'t str),
    Set(&'t str),
}

fn subject(op: &Op) -> Subject<'_> {
    match op {
        Op::AddTable { .. } | Op::DeleteTable => Subject::Table,
        Op::AddChain(spec) => Subject::Chain(&spec.name),
        Op::FlushChain(name) | Op::DeleteChain(name) => Subject::Chain(name),
        Op::AddRule { chain, .. } => Subject::Chain(chain),
        Op::AddSet(spec) => Subject::Set(&spec.name),
        Op::FlushSet(_, name) | Op::DeleteSet(_, name) => Subject::Set(name),
        Op::AddElement { set, .. } | Op::DeleteElement { set, .. } => Subject::Set(set),
    }
}

/// The chains and sets an operation names besides its subject: a rule's
/// `jump`/`goto` targets (also inside an anonymous `vmap { ... }`) and `@set`
/// lookups, a map element's verdict.
fn op_references(op: &Op) -> impl Iterator<Item = Reference<'_>> {
    let text = match op {
        Op::AddRule { rule, .. } => Some(rule.as_str()),
        Op::AddElement { element, .. } => element.value.as_deref(),
        _ => None,
    };
    text.into_iter().flat_map(references)
}

/// An operation whose place relative to every other operation is kept: what
/// deletes or empties something (and the table's own declaration).
fn is_barrier_op(op: &Op) -> bool {
    matches!(
        op,
        Op::AddTable { .. }
            | Op::DeleteTable
            | Op::DeleteChain(_)
            | Op::DeleteSet(..)
            | Op::FlushSet(..)
            | Op::FlushChain(_)
            | Op::DeleteElement { .. }
    )
}

/// Operations that move together, and whether they are one barrier.
struct Units {
    /// Each unit's operations, in transaction order; units ordered by their
    /// first operation.
    ops: Vec<Vec<usize>>,
    barrier: Vec<bool>,
    /// For a chain's unit (declaration, flush and rules), its first
    /// operation; `None` for every other unit.
    chain: Vec<Option<usize>>,
}

/// Groups the operations: a chain declared in the transaction whose
/// operations are `add chain`, at most one `flush chain`, and rules after the
/// flush is one unit (so it is written whole, in one piece, and never seen
/// half-written); a `delete element` re-added later with the same key is one
/// unit with that `add element`; every other operation is a unit of its own.
fn units(tx: &Transaction) -> Units {
    let n = tx.ops.len();
    // Per chain: its operations, whether it is declared, flushes, deleted.
    #[derive(Default)]
    struct ChainOps {
        ops: Vec<usize>,
        declared: bool,
        flushes: usize,
        deleted: bool,
        rule_before_flush: bool,
    }
    let mut chains: HashMap<&str, ChainOps> = HashMap::new();
    for (i, op) in tx.ops.iter().enumerate() {
        if let Subject::Chain(name) = subject(op) {
            let entry = chains.entry(name).or_default();
            entry.ops.push(i);
            match op {
                Op::AddChain(_) => entry.declared = true,
                Op::FlushChain(_) => entry.flushes += 1,
                Op::DeleteChain(_) => entry.deleted = true,
                Op::AddRule { .. } if entry.flushes == 0 => entry.rule_before_flush = true,
                _ => {}
            }
        }
    }
    // A rule before the flush only matters when there is a flush.
    let whole =
        |c: &ChainOps| c.declared && !c.deleted && c.flushes <= 1 && !(c.flushes == 1 && c.rule_before_flush);

    // `delete element` paired with the next `add element` of its key, unless
    // the set is flushed or deleted in between.
    let mut paired: Vec<Option<usize>> = vec![None; n];
    let mut pending: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, op) in tx.ops.iter().enumerate() {
        match op {
            Op::DeleteElement { set, key } => {
                pending.insert((set.as_str(), key.as_str()), i);
            }
            Op::AddElement { set, element } => {
                if let Some(at) = pending.remove(&(set.as_str(), element.key.as_str())) {
                    paired[at] = Some(i);
                }
            }
            Op::FlushSet(_, name) | Op::DeleteSet(_, name) => pending.retain(|(set, _), _| set != name),
            Op::DeleteTable => pending.clear(),
            _ => {}
        }
    }

    let mut unit_of: Vec<Option<usize>> = vec![None; n];
    let mut out = Units {
        ops: Vec::new(),
        barrier: Vec::new(),
        chain: Vec::new(),
    };
    for (i, op) in tx.ops.iter().enumerate() {
        if unit_of[i].is_some() {
            continue;
        }
        let id = out.ops.len();
        let (members, barrier, chain) = match (subject(op), op) {
            (Subject::Chain(name), _) if chains.get(name).is_some_and(whole) => {
                let members = chains.get(name).map(|c| c.ops.clone()).unwrap_or_default();
                (members, false, Some(i))
            }
            (_, Op::DeleteElement { .. }) => match paired[i] {
                Some(add) => (vec![i, add], false, None),
                None => (vec![i], true, None),
            },
            _ => (vec![i], is_barrier_op(op), None),
        };
        for &member in &members {
            unit_of[member] = Some(id);
        }
        out.ops.push(members);
        out.barrier.push(barrier);
        out.chain.push(chain);
    }
    out
}

impl Transaction {
    /// This transaction as a sequence of smaller ones, each at most `max_ops`
    /// operations (0 counts as 1), to be applied one after the other: each
    /// applies wherever the previous ones left the table (if this one would
    /// apply there), and after the last the table is exactly what this one
    /// would leave. An empty transaction gives none; one of at most
    /// `max_ops` operations is returned as it is.
    ///
    /// # Pieces and their order
    ///
    /// The operations are read in three parts:
    ///
    /// - the **head**: everything up to the last operation that deletes or
    ///   empties something (`delete table|chain|set|element`, `flush
    ///   chain|set`) before the body, extended to the last rule of every
    ///   chain whose rewrite starts there. For a sync engine's full sync
    ///   this is the setup: the table, base chains deleted and re-created,
    ///   dispatch chains, sets and maps. It stays in the first piece, in its
    ///   order, whole even when it is longer than `max_ops`: it flushes and
    ///   refills chains packets already pass through;
    /// - the **body**: only additions (chains with their flush and rules,
    ///   sets, elements, a `delete element` followed by the `add element` of
    ///   the same key), reordered **leaves first**: a chain declared here is
    ///   written whole (`add chain`, `flush chain`, every `add rule`, in
    ///   their order, in one piece) after every chain and set its rules name
    ///   (`jump`, `goto`, the verdicts of an anonymous `vmap { 0 : goto A ,
    ///   ... }`, `@set`), and before every rule and map element that names
    ///   it; an element comes after its set or map's declaration and after
    ///   the chain its verdict names. Otherwise the transaction's order is
    ///   kept. Pieces are filled with whole units in that order; a unit
    ///   longer than `max_ops` (one chain with more rules) is a piece of its
    ///   own;
    /// - the **tail**: the deletions and flushes after the body (stale
    ///   chains emptied, affinity sets and leftover elements deleted), last,
    ///   in their order, cut anywhere.
    ///
    /// A transaction with a deletion in the middle of its additions keeps
    /// everything up to that deletion in the head, so it splits less (in the
    /// extreme, not at all), never wrongly.
    ///
    /// # Why this is safe
    ///
    /// The final table is the same because every chain's operations keep
    /// their order (rule order is all that matters within a chain), every
    /// element key's operations keep theirs, and operations on different
    /// chains, sets and keys commute. Each piece applies because whatever an
    /// operation names was declared in the head, earlier in the body (the
    /// order above), or before the transaction; deletions keep their place
    /// relative to everything, so nothing is deleted while still named.
    ///
    /// Between two pieces the kernel holds a table packets use. In it, every
    /// chain the body writes (declared, flushed at most once, rules after the
    /// flush: every chain of a sync engine's Service) holds all its rules
    /// once anything reaches it: it becomes reachable only through a rule or
    /// map element sent after it, in its piece or a later one. So a packet meets either a Service not written yet
    /// (its map elements are missing) or a Service's complete chains, never
    /// a half-written chain or a dangling verdict.
    ///
    /// # Splitting over an earlier table
    ///
    /// Into a table that did not exist (or was empty), the pieces only add
    /// Services one group at a time, which is never worse for traffic than
    /// the missing table was. Over a table left by an earlier proxier, a
    /// Service's chains may for a moment be a mix of old and new chains
    /// (each one whole), and a Service whose elements come in a later piece
    /// still runs on the old rules until then; stale chains are emptied only
    /// in the tail, after every rule and element that replaced them (between
    /// two pieces of the tail, a removed Service's leftover element may lead
    /// to its emptied chain: its packets are not balanced, as they would not
    /// be once the element is gone). That is
    /// what a sequence of partial syncs would show, but not the single atomic
    /// switch upstream makes, so callers that want upstream's guarantee split
    /// only when the table did not exist before the sync.
    pub fn split_leaves_first(&self, max_ops: usize) -> Vec<Transaction> {
        let max_ops = max_ops.max(1);
        let n = self.ops.len();
        if n == 0 {
            return Vec::new();
        }
        if n <= max_ops {
            return vec![self.clone()];
        }
        let units = units(self);
        let count = units.ops.len();
        let first = |u: usize| units.ops[u].first().copied().unwrap_or(0);
        let last = |u: usize| units.ops[u].last().copied().unwrap_or(0);

        // The tail: the longest run of barriers that ends the transaction.
        // Barriers are single operations, so no other unit reaches into it.
        let mut tail_unit = count;
        while tail_unit > 0 && units.barrier[tail_unit - 1] {
            tail_unit -= 1;
        }
        // The head: up to the last barrier before the tail, then every unit
        // that starts there, whole.
        let mut head_end = (0..tail_unit)
            .rev()
            .find(|&u| units.barrier[u])
            .map_or(0, |u| first(u) + 1);
        let mut body_unit = 0;
        while body_unit < tail_unit && first(body_unit) < head_end {
            head_end = head_end.max(last(body_unit) + 1);
            body_unit += 1;
        }
        let body: Vec<usize> = (body_unit..tail_unit).collect();

        let order = leaves_first(self, &units, &body);

        let mut pieces: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = (0..head_end).collect();
        let groups = order
            .iter()
            .map(|&u| units.ops[u].as_slice())
            .chain((tail_unit..count).map(|u| units.ops[u].as_slice()));
        for group in groups {
            if !current.is_empty() && current.len() + group.len() > max_ops {
                pieces.push(std::mem::take(&mut current));
            }
            current.extend_from_slice(group);
        }
        if !current.is_empty() {
            pieces.push(current);
        }
        pieces
            .into_iter()
            .map(|indices| Transaction {
                family: self.family,
                ops: indices.into_iter().map(|i| self.ops[i].clone()).collect(),
            })
            .collect()
    }
}

/// The body's units in the order they are sent: in transaction order, except
/// that a unit waits for the units it depends on (depth first).
fn leaves_first(tx: &Transaction, units: &Units, body: &[usize]) -> Vec<usize> {
    // Where chains and sets are declared in the body.
    let mut chain_unit: HashMap<&str, usize> = HashMap::new();
    let mut chain_decls: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    let mut set_decls: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for &u in body {
        for &i in &units.ops[u] {
            match &tx.ops[i] {
                Op::AddChain(spec) if units.chain[u].is_some() => {
                    chain_unit.insert(spec.name.as_str(), u);
                }
                Op::AddChain(spec) => chain_decls.entry(spec.name.as_str()).or_default().push((i, u)),
                Op::AddSet(spec) => set_decls.entry(spec.name.as_str()).or_default().push((i, u)),
                _ => {}
            }
        }
    }
    let declared_before = |decls: Option<&Vec<(usize, usize)>>, at: usize| -> Vec<usize> {
        decls
            .into_iter()
            .flatten()
            .filter(|(i, _)| *i < at)
            .map(|(_, u)| *u)
            .collect()
    };

    // What each unit waits for.
    let mut deps: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut last_subject: HashMap<Subject<'_>, usize> = HashMap::new();
    let mut last_key: HashMap<(&str, &str), usize> = HashMap::new();
    for &u in body {
        let mut wait = Vec::new();
        for &i in &units.ops[u] {
            let op = &tx.ops[i];
            for reference in op_references(op) {
                match reference {
                    Reference::Chain(name) => match chain_unit.get(name) {
                        Some(&v) => wait.push(v),
                        None => wait.extend(declared_before(chain_decls.get(name), i)),
                    },
                    Reference::Set(name) => wait.extend(declared_before(set_decls.get(name), i)),
                }
            }
            match op {
                Op::AddElement { set, element } => {
                    wait.extend(declared_before(set_decls.get(set.as_str()), i));
                    if let Some(&v) = last_key.get(&(set.as_str(), element.key.as_str())) {
                        wait.push(v);
                    }
                    last_key.insert((set.as_str(), element.key.as_str()), u);
                }
                Op::DeleteElement { set, key } => {
                    wait.extend(declared_before(set_decls.get(set.as_str()), i));
                    if let Some(&v) = last_key.get(&(set.as_str(), key.as_str())) {
                        wait.push(v);
                    }
                }
                _ if units.chain[u].is_none() => {
                    // Rules of a chain not declared here, standalone
                    // declarations, sets: in order per object.
                    let subject = subject(op);
                    if let Some(&v) = last_subject.get(&subject) {
                        wait.push(v);
                    }
                    last_subject.insert(subject, u);
                }
                _ => {}
            }
        }
        wait.retain(|&v| v != u);
        wait.dedup();
        deps.insert(u, wait);
    }

    // Depth first, without recursion: a unit is sent after what it waits
    // for. A cycle (which the kernel refuses anyway for chains) is broken
    // by sending the unit met again in transaction order.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        New,
        Open,
        Sent,
    }
    let mut mark: HashMap<usize, Mark> = body.iter().map(|&u| (u, Mark::New)).collect();
    let mut order = Vec::with_capacity(body.len());
    let empty = Vec::new();
    for &root in body {
        if mark.get(&root) != Some(&Mark::New) {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark.insert(root, Mark::Open);
        while let Some((u, next)) = stack.pop() {
            let waits = deps.get(&u).unwrap_or(&empty);
            if let Some(&v) = waits.get(next) {
                stack.push((u, next + 1));
                if mark.get(&v) == Some(&Mark::New) {
                    mark.insert(v, Mark::Open);
                    stack.push((v, 0));
                }
            } else {
                mark.insert(u, Mark::Sent);
                order.push(u);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, Table, read_transaction};

    fn tx(text: &str) -> Transaction {
        read_transaction(text, Family::Ip).expect("reads")
    }

    fn texts(pieces: &[Transaction]) -> Vec<String> {
        pieces.iter().map(Transaction::to_text).collect()
    }

    /// Applies the pieces one by one and the whole at once; both must work
    /// and agree.
    fn check(whole: &Transaction, max_ops: usize) -> Vec<Transaction> {
        let pieces = whole.split_leaves_first(max_ops);
        let mut expected = Table::new(whole.family);
        expected.apply(whole).expect("the whole applies");
        let mut table = Table::new(whole.family);
        for (k, piece) in pieces.iter().enumerate() {
            table
                .apply(piece)
                .unwrap_or_else(|e| panic!("piece {k} refused: {e}\n{}", texts(&pieces).join("----\n")));
        }
        assert_eq!(table.canonical(), expected.canonical());
        assert_eq!(pieces.iter().map(Transaction::len).sum::<usize>(), whole.len());
        pieces
    }

    const SETUP: &str = "add table ip kube-proxy
add chain ip kube-proxy nat-output
delete chain ip kube-proxy nat-output
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
flush chain ip kube-proxy nat-output
add chain ip kube-proxy services
flush chain ip kube-proxy services
add rule ip kube-proxy nat-output jump services
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
";

    fn service(n: usize) -> String {
        format!(
            "add chain ip kube-proxy ep-{n}a
flush chain ip kube-proxy ep-{n}a
add chain ip kube-proxy ep-{n}b
flush chain ip kube-proxy ep-{n}b
add chain ip kube-proxy svc-{n}
flush chain ip kube-proxy svc-{n}
add set ip kube-proxy aff-{n} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}
add element ip kube-proxy service-ips {{ 10.0.0.{n} . tcp . 80 : goto svc-{n} }}
add rule ip kube-proxy ep-{n}a update @aff-{n} {{ ip saddr }}
add rule ip kube-proxy ep-{n}a dnat to 10.1.0.{n}:80
add rule ip kube-proxy ep-{n}b dnat to 10.2.0.{n}:80
add rule ip kube-proxy svc-{n} numgen random mod 2 vmap {{ 0 : goto ep-{n}a , 1 : goto ep-{n}b }}
"
        )
    }

    fn sync(services: usize) -> Transaction {
        let mut text = SETUP.to_string();
        for n in 0..services {
            text.push_str(&service(n));
        }
        tx(&text)
    }

    #[test]
    fn setup_first_then_whole_services_leaves_first() {
        let whole = sync(3);
        let pieces = check(&whole, 12);
        // The head (up to the base chain's flush) first, as it is; then the
        // dispatch chain whole before the base chain's jump to it.
        assert_eq!(pieces[0].ops[..5], whole.ops[..5]);
        let first = pieces[0].to_text();
        let at = |text: &str| first.find(text).unwrap_or(usize::MAX);
        assert!(at("add map ip kube-proxy service-ips") < at("add chain ip kube-proxy services"));
        assert!(at("vmap @service-ips") < at("jump services"));
        assert!(at("jump services") < first.len());
        let second = texts(&pieces).concat();
        let lines: Vec<&str> = second.lines().collect();
        // Endpoint chains whole (after the affinity set their rule names),
        // then the service chain, then the element naming it.
        let line = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or(usize::MAX)
        };
        assert!(line("add set ip kube-proxy aff-0") < line("add rule ip kube-proxy ep-0a update"));
        assert_eq!(
            line("add rule ip kube-proxy ep-0a update"),
            line("add chain ip kube-proxy ep-0a") + 2
        );
        assert!(line("add rule ip kube-proxy ep-0b dnat") < line("add chain ip kube-proxy svc-0"));
        assert!(line("add rule ip kube-proxy svc-0") < line("add element ip kube-proxy service-ips"));
        assert!(line("add element ip kube-proxy service-ips") < lines.len());
    }
    #[test]
    fn every_size_applies_and_ends_equal() {
        let whole = sync(7);
        for max_ops in 0..=whole.len() + 1 {
            let pieces = check(&whole, max_ops);
            for piece in &pieces[1..] {
                // Units are at most 4 operations here.
                assert!(piece.len() <= max_ops.max(4), "{max_ops}: {}", piece.len());
            }
        }
        assert_eq!(whole.split_leaves_first(whole.len()), vec![whole.clone()]);
        assert!(Transaction::new(Family::Ip).split_leaves_first(5).is_empty());
    }

    #[test]
    fn a_reference_before_the_chain_is_written_waits_for_it() {
        // The service chain is declared first, and its rule names a chain
        // declared after it.
        let whole = tx("add table ip kube-proxy
add chain ip kube-proxy svc
add chain ip kube-proxy ep
add rule ip kube-proxy svc goto ep
add rule ip kube-proxy ep dnat to 10.1.0.1:80
");
        // `svc` is rewritten whole after `ep`, so `ep` comes first.
        let pieces = check(&whole, 1);
        let order: Vec<String> = pieces.iter().map(Transaction::to_text).collect();
        assert_eq!(
            order.concat(),
            "add table ip kube-proxy
add chain ip kube-proxy ep
add rule ip kube-proxy ep dnat to 10.1.0.1:80
add chain ip kube-proxy svc
add rule ip kube-proxy svc goto ep
"
        );
    }

    #[test]
    fn a_chain_is_never_cut_and_replaced_elements_stay_paired() {
        let mut text = SETUP.to_string();
        text.push_str(&service(1));
        text.push_str("delete element ip kube-proxy service-ips { 10.0.0.1 . tcp . 80 }\n");
        text.push_str("add element ip kube-proxy service-ips { 10.0.0.1 . tcp . 80 : drop }\n");
        text.push_str("add chain ip kube-proxy long\nflush chain ip kube-proxy long\n");
        for k in 0..10 {
            text.push_str(&format!("add rule ip kube-proxy long ip saddr 10.9.9.{k} drop\n"));
        }
        let whole = tx(&text);
        let pieces = check(&whole, 3);
        let long = pieces
            .iter()
            .find(|p| p.to_text().contains("add chain ip kube-proxy long"))
            .expect("the long chain");
        assert_eq!(long.len(), 12);
        let pair = pieces
            .iter()
            .find(|p| p.to_text().contains("delete element"))
            .expect("the pair");
        assert!(pair.to_text().contains(": drop }"));
    }

    #[test]
    fn deletions_and_flushes_at_the_end_stay_last() {
        let mut before = Table::new(Family::Ip);
        before.apply(&sync(3)).expect("applies");
        // A later full sync: Service 2 gone (its chains emptied, its affinity
        // set and element deleted at the end), Service 3 new.
        let mut text = SETUP.replace(
            "add chain ip kube-proxy nat-output\ndelete chain ip kube-proxy nat-output\n",
            "",
        );
        for n in [0, 1, 3] {
            text.push_str(&service(n));
        }
        text.push_str(
            "flush chain ip kube-proxy ep-2a
flush chain ip kube-proxy ep-2b
flush chain ip kube-proxy svc-2
delete set ip kube-proxy aff-2
delete element ip kube-proxy service-ips { 10.0.0.2 . tcp . 80 }
",
        );
        let whole = tx(&text);
        let mut expected = before.clone();
        expected.apply(&whole).expect("the whole applies");
        let pieces = whole.split_leaves_first(10);
        let mut table = before;
        for piece in &pieces {
            table.apply(piece).expect("piece applies");
        }
        assert_eq!(table.canonical(), expected.canonical());
        let last = pieces.last().expect("pieces").to_text();
        assert!(
            last.ends_with("delete element ip kube-proxy service-ips { 10.0.0.2 . tcp . 80 }\n"),
            "{last}"
        );
        let all: String = texts(&pieces).concat();
        let flush = all.find("flush chain ip kube-proxy ep-2a").expect("flush");
        assert!(all.rfind("add element").expect("elements") < flush);
    }

    #[test]
    fn a_deletion_among_the_additions_keeps_what_precedes_it_in_the_head() {
        let mut text = SETUP.to_string();
        text.push_str(&service(0));
        text.push_str("add chain ip kube-proxy gone\ndelete chain ip kube-proxy gone\n");
        text.push_str(&service(1));
        let whole = tx(&text);
        let pieces = check(&whole, 5);
        // Everything up to the deletion is one piece.
        assert_eq!(pieces[0].len(), SETUP.lines().count() + 12 + 2);
    }
}
