//! A model of one nftables table that applies transactions as the kernel does.

use std::collections::{BTreeMap, HashMap};

use crate::canonical::{canonical_key, canonical_rule};
use crate::op::{ChainSpec, Element, Family, Op, SetKind, SetSpec, Transaction};

/// Why the kernel would refuse a transaction: the failing operation (1-based,
/// as `nft -f` counts lines) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {index} ({text}): {reason}")]
pub struct ApplyError {
    /// 1-based index of the operation.
    pub index: usize,
    /// The operation's text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleEntry {
    rule: String,
    comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainState {
    spec: ChainSpec,
    rules: Vec<RuleEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SetState {
    spec: SetSpec,
    elements: BTreeMap<String, Element>,
}

/// One table (`kube-proxy` in one family): chains with their rules, sets and
/// maps with their elements, and how often each chain and set is referenced,
/// which decides what may be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    family: Family,
    exists: bool,
    comment: Option<String>,
    chains: BTreeMap<String, ChainState>,
    sets: BTreeMap<String, SetState>,
    chain_refs: HashMap<String, usize>,
    set_refs: HashMap<String, usize>,
}

impl Table {
    /// A table that does not exist yet.
    pub fn new(family: Family) -> Table {
        Table {
            family,
            exists: false,
            comment: None,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
            chain_refs: HashMap::new(),
            set_refs: HashMap::new(),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The table exists.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// Names of every chain, sorted.
    pub fn chain_names(&self) -> impl Iterator<Item = &str> {
        self.chains.keys().map(String::as_str)
    }

    /// A chain's declaration, if it exists.
    pub fn chain(&self, name: &str) -> Option<&ChainSpec> {
        self.chains.get(name).map(|c| &c.spec)
    }

    /// The rules of a chain as `(rule, comment)`, in order; empty if it does not exist.
    pub fn rules(&self, chain: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.chains
            .get(chain)
            .into_iter()
            .flat_map(|c| c.rules.iter())
            .map(|r| (r.rule.as_str(), r.comment.as_deref()))
    }

    /// Every set and map declaration, sorted by name.
    pub fn sets(&self) -> impl Iterator<Item = &SetSpec> {
        self.sets.values().map(|s| &s.spec)
    }

    /// A set's or map's declaration, if it exists.
    pub fn set(&self, name: &str) -> Option<&SetSpec> {
        self.sets.get(name).map(|s| &s.spec)
    }

    /// The elements of a set or map, by key.
    pub fn elements(&self, set: &str) -> impl Iterator<Item = &Element> {
        self.sets.get(set).into_iter().flat_map(|s| s.elements.values())
    }

    /// The element with this key text.
    pub fn element(&self, set: &str, key: &str) -> Option<&Element> {
        self.sets.get(set).and_then(|s| s.elements.get(key))
    }

    /// Applies a transaction all or nothing: on error the table is unchanged.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), ApplyError> {
        if tx.family != self.family {
            return Err(ApplyError {
                index: 1,
                text: String::new(),
                reason: format!(
                    "a transaction for family {} sent to table of {}",
                    tx.family, self.family
                ),
            });
        }
        let mut next = self.clone();
        for (i, op) in tx.ops.iter().enumerate() {
            next.apply_op(op).map_err(|reason| {
                let mut text = String::new();
                op.write(self.family, &mut text);
                ApplyError {
                    index: i + 1,
                    text,
                    reason,
                }
            })?;
        }
        *self = next;
        Ok(())
    }

    /// Applies a transaction the kernel already took, op by op and without
    /// the copy [`Table::apply`] makes to be all or nothing: its cost follows
    /// the transaction, not the table. On error the table is left part-way
    /// (a model that disagrees with the kernel is to be dropped anyway).
    pub fn apply_in_place(&mut self, tx: &Transaction) -> Result<(), ApplyError> {
        if tx.family != self.family {
            return Err(ApplyError {
                index: 1,
                text: String::new(),
                reason: format!(
                    "a transaction for family {} sent to table of {}",
                    tx.family, self.family
                ),
            });
        }
        for (i, op) in tx.ops.iter().enumerate() {
            if let Err(reason) = self.apply_op(op) {
                let mut text = String::new();
                op.write(self.family, &mut text);
                return Err(ApplyError {
                    index: i + 1,
                    text,
                    reason,
                });
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), String> {
        if let Op::AddTable { comment } = op {
            if !self.exists {
                self.exists = true;
                self.comment = comment.clone();
            }
            return Ok(());
        }
        if !self.exists {
            return Err("no such table".into());
        }
        match op {
            Op::AddTable { .. } => {}
            Op::DeleteTable => *self = Table::new(self.family),
            Op::AddChain(spec) => match self.chains.get(&spec.name) {
                // Without a hook, adding an existing chain changes nothing;
                // with one, the hook and priority cannot change in place.
                Some(existing) if spec.base.is_some() && existing.spec.base != spec.base => {
                    return Err("the chain exists with another type, hook or priority".into());
                }
                Some(_) => {}
                None => {
                    self.chains.insert(
                        spec.name.clone(),
                        ChainState {
                            spec: spec.clone(),
                            rules: Vec::new(),
                        },
                    );
                }
            },
            Op::FlushChain(name) => {
                let chain = self.chains.get_mut(name).ok_or("no such chain")?;
                let rules = std::mem::take(&mut chain.rules);
                for rule in &rules {
                    self.count_refs(&rule.rule, false);
                }
            }
            Op::DeleteChain(name) => {
                if !self.chains.contains_key(name) {
                    return Err("no such chain".into());
                }
                if self.chain_refs.get(name).copied().unwrap_or(0) > 0 {
                    return Err("the chain is still jumped to (device or resource busy)".into());
                }
                if let Some(chain) = self.chains.remove(name) {
                    for rule in &chain.rules {
                        self.count_refs(&rule.rule, false);
                    }
                }
            }
            Op::AddRule { chain, rule, comment } => {
                if !self.chains.contains_key(chain) {
                    return Err("no such chain".into());
                }
                self.check_refs(rule)?;
                self.count_refs(rule, true);
                if let Some(state) = self.chains.get_mut(chain) {
                    state.rules.push(RuleEntry {
                        rule: rule.clone(),
                        comment: comment.clone(),
                    });
                }
            }
            Op::AddSet(spec) => match self.sets.get(&spec.name) {
                Some(existing)
                    if existing.spec.kind != spec.kind || existing.spec.type_text != spec.type_text =>
                {
                    return Err(format!(
                        "{} exists with another type ({})",
                        spec.name, existing.spec.type_text
                    ));
                }
                // Kernels since 6.11 take a new default timeout for an existing
                // set (elements added before keep theirs); the rest stays.
                Some(_) => {
                    if let (Some(timeout), Some(set)) = (spec.timeout_seconds, self.sets.get_mut(&spec.name))
                    {
                        set.spec.timeout_seconds = Some(timeout);
                    }
                }
                None => {
                    self.sets.insert(
                        spec.name.clone(),
                        SetState {
                            spec: spec.clone(),
                            elements: BTreeMap::new(),
                        },
                    );
                }
            },
            Op::FlushSet(kind, name) => {
                let set = self.set_of_kind(*kind, name)?;
                let elements = std::mem::take(&mut set.elements);
                for element in elements.values() {
                    self.count_value_refs(element, false);
                }
            }
            Op::DeleteSet(kind, name) => {
                self.set_of_kind(*kind, name)?;
                if self.set_refs.get(name).copied().unwrap_or(0) > 0 {
                    return Err("the set is still used by a rule (device or resource busy)".into());
                }
                if let Some(set) = self.sets.remove(name) {
                    for element in set.elements.values() {
                        self.count_value_refs(element, false);
                    }
                }
            }
            Op::AddElement { set, element } => {
                let kind = self.sets.get(set).ok_or("no such set or map")?.spec.kind;
                match (kind, &element.value) {
                    (SetKind::Set, Some(_)) => return Err("a set element has no value".into()),
                    (SetKind::Map, None) => return Err("a map element needs a value".into()),
                    _ => {}
                }
                if let Some(value) = &element.value {
                    self.check_refs(value)?;
                }
                let existing = self.sets.get(set).and_then(|s| s.elements.get(&element.key));
                match existing {
                    Some(existing) if existing.value != element.value => {
                        return Err("the element exists with another value (file exists)".into());
                    }
                    Some(_) => {}
                    None => {
                        self.count_value_refs(element, true);
                        if let Some(state) = self.sets.get_mut(set) {
                            state.elements.insert(element.key.clone(), element.clone());
                        }
                    }
                }
            }
            Op::DeleteElement { set, key } => {
                let state = self.sets.get_mut(set).ok_or("no such set or map")?;
                let removed = state.elements.remove(key).ok_or("no such element")?;
                self.count_value_refs(&removed, false);
            }
        }
        Ok(())
    }

    fn set_of_kind(&mut self, kind: SetKind, name: &str) -> Result<&mut SetState, String> {
        match self.sets.get_mut(name) {
            Some(set) if set.spec.kind == kind => Ok(set),
            _ => Err(format!("no such {}", kind.as_str())),
        }
    }

    fn check_refs(&self, text: &str) -> Result<(), String> {
        for reference in references(text) {
            match reference {
                Reference::Chain(name) if !self.chains.contains_key(name) => {
                    return Err(format!("no chain {name}"));
                }
                Reference::Set(name) if !self.sets.contains_key(name) => {
                    return Err(format!("no set or map {name}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn count_refs(&mut self, text: &str, add: bool) {
        for reference in references(text) {
            let (counts, name) = match reference {
                Reference::Chain(name) => (&mut self.chain_refs, name),
                Reference::Set(name) => (&mut self.set_refs, name),
            };
            let count = counts.entry(name.to_string()).or_default();
            *count = if add { *count + 1 } else { count.saturating_sub(1) };
        }
    }

    fn count_value_refs(&mut self, element: &Element, add: bool) {
        if let Some(value) = &element.value {
            self.count_refs(value, add);
        }
    }

    /// The table as operations that rebuild it: table, chains, sets and maps
    /// (sorted by name), rules (chains sorted, rules in order), elements.
    pub fn to_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        if !self.exists {
            return ops;
        }
        ops.push(Op::AddTable {
            comment: self.comment.clone(),
        });
        ops.extend(self.chains.values().map(|c| Op::AddChain(c.spec.clone())));
        for kind in [SetKind::Set, SetKind::Map] {
            ops.extend(
                self.sets
                    .values()
                    .filter(|s| s.spec.kind == kind)
                    .map(|s| Op::AddSet(s.spec.clone())),
            );
        }
        for (name, chain) in &self.chains {
            ops.extend(chain.rules.iter().map(|r| Op::AddRule {
                chain: name.clone(),
                rule: r.rule.clone(),
                comment: r.comment.clone(),
            }));
        }
        for kind in [SetKind::Set, SetKind::Map] {
            for (name, set) in self.sets.iter().filter(|(_, s)| s.spec.kind == kind) {
                ops.extend(set.elements.values().map(|e| Op::AddElement {
                    set: name.clone(),
                    element: e.clone(),
                }));
            }
        }
        ops
    }

    /// The table with everything both knftables and the kernel may spell
    /// their own way in one spelling, for comparing a model with what `nft
    /// list` printed ([`crate::read_listing`]): `model.canonical() ==
    /// listed.canonical()` exactly when the kernel holds what the model says.
    ///
    /// Rules go through [`crate::canonical_rule`], element keys through
    /// [`crate::canonical_key`]; set flags are sorted and type texts spaced
    /// once. The elements of `dynamic` sets are left out: the packet path
    /// adds them (`update @set`), so the kernel holds entries no writer
    /// wrote. Priorities and timeouts are numbers on both sides already.
    pub fn canonical(&self) -> Table {
        let mut table = Table::new(self.family);
        table.exists = self.exists;
        table.comment.clone_from(&self.comment);
        for (name, chain) in &self.chains {
            let rules = chain
                .rules
                .iter()
                .map(|r| RuleEntry {
                    rule: canonical_rule(&r.rule),
                    comment: r.comment.clone(),
                })
                .collect();
            table.chains.insert(
                name.clone(),
                ChainState {
                    spec: chain.spec.clone(),
                    rules,
                },
            );
        }
        for (name, set) in &self.sets {
            let mut spec = set.spec.clone();
            spec.type_text = spec.type_text.split_whitespace().collect::<Vec<_>>().join(" ");
            spec.flags.sort();
            spec.flags.dedup();
            let dynamic = spec.flags.iter().any(|f| f == "dynamic");
            let elements = set
                .elements
                .values()
                .filter(|_| !dynamic)
                .map(|e| {
                    let key = canonical_key(&e.key);
                    let element = Element {
                        key: key.clone(),
                        value: e.value.clone(),
                        comment: e.comment.clone(),
                    };
                    (key, element)
                })
                .collect();
            table.sets.insert(name.clone(), SetState { spec, elements });
        }
        table.recount();
        table
    }

    /// Recomputes the reference counts from the rules and elements: a model
    /// keeps zero counts of names it once referenced, a table read afresh
    /// does not, and that history must not make equal contents unequal.
    fn recount(&mut self) {
        self.chain_refs.clear();
        self.set_refs.clear();
        let rules: Vec<String> = self
            .chains
            .values()
            .flat_map(|c| c.rules.iter().map(|r| r.rule.clone()))
            .collect();
        let elements: Vec<Element> = self
            .sets
            .values()
            .flat_map(|s| s.elements.values().cloned())
            .collect();
        for rule in &rules {
            self.count_refs(rule, true);
        }
        for element in &elements {
            self.count_value_refs(element, true);
        }
    }

    /// knftables' dump form: [`Table::to_ops`] as text, one line each.
    pub fn dump(&self) -> String {
        Transaction {
            family: self.family,
            ops: self.to_ops(),
        }
        .to_text()
    }
}

pub(crate) enum Reference<'t> {
    Chain(&'t str),
    Set(&'t str),
}

/// The chains (`jump X`, `goto X`) and sets (`@S`) a rule or map value names.
/// The kernel lists anonymous map elements as `0 : goto A, 1 : goto B`
/// (knftables writes ` , `); names cannot hold a comma, so a trailing one
/// is the separator.
pub(crate) fn references(text: &str) -> impl Iterator<Item = Reference<'_>> {
    let mut words = text.split(' ').peekable();
    std::iter::from_fn(move || {
        while let Some(word) = words.next() {
            if word == "jump" || word == "goto" {
                if let Some(target) = words.next() {
                    return Some(Reference::Chain(target.strip_suffix(',').unwrap_or(target)));
                }
            } else if let Some(set) = word.strip_prefix('@') {
                return Some(Reference::Set(set.strip_suffix(',').unwrap_or(set)));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_transaction;

    fn tx(text: &str) -> Transaction {
        read_transaction(text, Family::Ip).expect("reads")
    }

    const BASE: &str = r#"add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-A
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 : goto service-A }
"#;

    fn base() -> Table {
        let mut table = Table::new(Family::Ip);
        table.apply(&tx(BASE)).expect("base applies");
        table
    }

    #[test]
    fn refused_transactions_leave_the_table_unchanged() {
        let mut table = base();
        let before = table.clone();
        let error = table
            .apply(&tx(
                "add chain ip kube-proxy x\nadd rule ip kube-proxy x goto missing\n",
            ))
            .expect_err("missing chain");
        assert_eq!(error.index, 2);
        assert!(error.reason.contains("no chain missing"), "{error}");
        assert_eq!(table, before);
    }

    #[test]
    fn in_place_application_ends_where_the_checked_one_does() {
        let step = tx("add chain ip kube-proxy service-B\n\
             add element ip kube-proxy service-ips { 172.30.0.2 . tcp . 80 : goto service-B }\n\
             delete element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 }\n\
             delete chain ip kube-proxy service-A\n");
        let (mut checked, mut in_place) = (base(), base());
        checked.apply(&step).expect("applies");
        in_place.apply_in_place(&step).expect("applies");
        assert_eq!(in_place, checked);
        let error = in_place
            .apply_in_place(&tx("add rule ip kube-proxy service-B goto missing\n"))
            .expect_err("missing chain");
        assert_eq!(error.index, 1);
    }

    #[test]
    fn a_chain_is_deleted_only_once_nothing_points_at_it() {
        let mut table = base();
        let delete = tx("delete chain ip kube-proxy service-A\n");
        assert!(table.apply(&delete).expect_err("busy").reason.contains("busy"));
        table
            .apply(&tx(
                "delete element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 }\n",
            ))
            .expect("element goes");
        table.apply(&delete).expect("then the chain goes");
        assert!(table.chain("service-A").is_none());
    }

    #[test]
    fn elements_are_identified_by_key_and_not_silently_replaced() {
        let mut table = base();
        table
            .apply(&tx(
                "add element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 : goto service-A }\n",
            ))
            .expect("same element again is a no-op");
        let error = table
            .apply(&tx(
                "add element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 : drop }\n",
            ))
            .expect_err("another value");
        assert!(error.reason.contains("another value"), "{error}");
        assert!(
            table
                .apply(&tx(
                    "delete element ip kube-proxy service-ips { 10.0.0.1 . tcp . 80 }\n"
                ))
                .is_err()
        );
    }

    #[test]
    fn base_chains_cannot_change_hook_in_place() {
        let mut table = base();
        table
            .apply(&tx(
                "add chain ip kube-proxy in { type filter hook input priority 0 ; }\n",
            ))
            .expect("new base chain");
        assert!(
            table
                .apply(&tx(
                    "add chain ip kube-proxy in { type filter hook input priority -110 ; }\n"
                ))
                .is_err()
        );
        table
            .apply(&tx(concat!(
                "delete chain ip kube-proxy in\n",
                "add chain ip kube-proxy in { type filter hook input priority -110 ; }\n"
            )))
            .expect("delete and re-add");
    }

    #[test]
    fn canonical_forgets_history_and_learned_entries() {
        let mut with_history = base();
        with_history
            .apply(&tx(concat!(
                "add chain ip kube-proxy gone\n",
                "add rule ip kube-proxy services jump gone\n",
                "flush chain ip kube-proxy services\n",
                "delete chain ip kube-proxy gone\n",
                "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n",
            )))
            .expect("applies");
        // Equal contents; only the zero reference count of `gone` remains.
        assert_ne!(with_history, base());
        assert_eq!(with_history.canonical(), base().canonical());

        let affinity = "add set ip kube-proxy affinity-A { type ipv4_addr ; flags timeout,dynamic ; timeout 10800s ; }\n";
        let mut model = base();
        model.apply(&tx(affinity)).expect("applies");
        let mut kernel = base();
        kernel
            .apply(&tx(&format!(
                "{affinity}add element ip kube-proxy affinity-A {{ 10.0.0.1 }}\n"
            )))
            .expect("applies");
        assert_eq!(model.canonical(), kernel.canonical());
        let canonical = kernel.canonical();
        assert_eq!(
            canonical.set("affinity-A").expect("set").flags,
            ["dynamic", "timeout"]
        );
    }

    #[test]
    fn the_dump_rebuilds_the_same_table() {
        let table = base();
        let mut again = Table::new(Family::Ip);
        again.apply(&tx(&table.dump())).expect("dump applies");
        assert_eq!(again, table);
    }
}
