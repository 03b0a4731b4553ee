//! What a change of cluster state does to the rules, Service by Service: the
//! rules two plans differ by, with every rule attributed to the service port
//! that writes it (for `chainsmith diff --from OLD --to NEW`, to review a
//! manifest change before it reaches a node), in any proxy mode.
//!
//! Attribution follows who writes a rule, never its comment: a mode says,
//! through [`RulesOf`], which rules one port's plan writes into shared places
//! (iptables' KUBE-SERVICES, nftables' `service-ips` map) and into its own
//! chains and sets, which it also declares; the node's settings write the
//! rest. Within one owner and one place, rules are compared as text, in order
//! (a balancing chain's probabilities depend on the order), so a rule that
//! only moved shows as removed and added.
//!
//! Architecture invariant: this crate compares texts a mode hands it; it
//! spells no rule and knows no mode's vocabulary, and it decides nothing
//! (plans come from the planner).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chainsmith_model::{ObjectKey, Protocol};
use chainsmith_planner::{Plan, PortKey, ServicePortPlan};
use serde::{Serialize, Serializer};
use similar::{Algorithm, DiffOp, capture_diff_slices};

/// What a proxy mode writes for a plan, as text per place, for comparison.
pub trait RulesOf {
    /// The rules one port's plan writes under `plan`'s node context, its own
    /// chains and sets declared.
    fn port(&self, port: &ServicePortPlan, plan: &Plan) -> OwnedRules;
    /// The rules and places of no Service: the node's.
    fn node(&self, plan: &Plan) -> OwnedRules;
}

/// Whether a Service, port or chain is new, gone, or there in both states with
/// different rules. A Service or port counts as present when it has rules:
/// a headless Service turned into a ClusterIP one is `Added`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the new state (for a chain: created).
    Added,
    /// Only in the old state (for a chain: deleted).
    Removed,
    /// In both, with different rules.
    Changed,
}

/// How one chain's rules differ for one owner. For a shared chain only the
/// owner's own rules in it are compared, and its `change` is `Changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDiff {
    /// Where the chain lives: an iptables table (`filter`, `nat`), or for
    /// nftables the kind of object (`chain`, `set`, `map`).
    pub table: &'static str,
    /// The chain.
    pub chain: String,
    /// Created, deleted, or rules changed.
    pub change: Change,
    /// Rules only the old state writes (`-A CHAIN ...`, as rendered).
    pub removed: Vec<String>,
    /// Rules only the new state writes.
    pub added: Vec<String>,
}

/// How one service port's rules differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortDiff {
    /// The port's name (empty for an unnamed port).
    pub port_name: String,
    /// The protocol.
    #[serde(serialize_with = "display")]
    pub protocol: Protocol,
    /// The port number before, if the port had rules then.
    pub old_port: Option<u16>,
    /// The port number after, if the port has rules then.
    pub new_port: Option<u16>,
    /// New, gone or changed.
    pub change: Change,
    /// The chains that differ, grouped by table in the order the mode writes
    /// them (filter before nat), each table in the order the new state writes
    /// its chains, then the chains only the old state wrote.
    pub chains: Vec<ChainDiff>,
}

/// How one Service's rules differ, with its summary counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDiff {
    /// `namespace/name`.
    #[serde(serialize_with = "display")]
    pub service: ObjectKey,
    /// New, gone or changed.
    pub change: Change,
    /// Rules added over all its ports and chains.
    pub rules_added: usize,
    /// Rules removed over all its ports and chains.
    pub rules_removed: usize,
    /// Chains created.
    pub chains_added: Vec<String>,
    /// Chains deleted.
    pub chains_removed: Vec<String>,
    /// The ports whose rules differ, in [`PortKey`] order.
    pub ports: Vec<PortDiff>,
}

/// Sums over the whole difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotal {
    /// Services whose rules differ.
    pub services: usize,
    /// Rules added (Services' and the node's).
    pub rules_added: usize,
    /// Rules removed.
    pub rules_removed: usize,
    /// Chains created.
    pub chains_added: usize,
    /// Chains deleted.
    pub chains_removed: usize,
}

/// Every difference between two plans' rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanDiff {
    /// Services whose rules differ, in [`ObjectKey`] order.
    pub services: Vec<ServiceDiff>,
    /// Rules and chains of no Service (the node's fixed rules); differ only
    /// when the node settings or their effect differ.
    pub node: Vec<ChainDiff>,
    /// Sums.
    pub total: DiffTotal,
}

impl PlanDiff {
    /// The two plans write the same rules.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.node.is_empty()
    }
}

/// Compares the rules of two plans, Service by Service, as `mode` writes them.
/// Meant for one node and family; plans for different node settings also
/// compare, and then the node's own rules show in [`PlanDiff::node`]. Ports
/// whose plans are equal under the same node context are not rendered at
/// all, so a small change to a large cluster costs little.
pub fn diff_plans(old: &Plan, new: &Plan, mode: &dyn RulesOf) -> PlanDiff {
    let same_context = old.ctx == new.ctx && old.large_cluster == new.large_cluster;
    let mut pairs: BTreeMap<PortKey, (Option<&ServicePortPlan>, Option<&ServicePortPlan>)> = BTreeMap::new();
    for port in &old.ports {
        pairs.entry(port.key()).or_default().0 = Some(port);
    }
    for port in &new.ports {
        pairs.entry(port.key()).or_default().1 = Some(port);
    }
    let services_in = |plan: &Plan| -> BTreeSet<ObjectKey> {
        plan.ports.iter().map(|p| p.info().service().clone()).collect()
    };
    let (old_services, new_services) = (services_in(old), services_in(new));

    let mut by_service: BTreeMap<ObjectKey, Vec<PortDiff>> = BTreeMap::new();
    for (key, (before, after)) in pairs {
        if let (true, Some(a), Some(b)) = (same_context, before, after)
            && a == b
        {
            continue;
        }
        let rules_of = |port: Option<&ServicePortPlan>, plan: &Plan| {
            port.map(|p| mode.port(p, plan)).unwrap_or_default()
        };
        let chains = compare(&rules_of(before, old), &rules_of(after, new));
        if chains.is_empty() {
            continue;
        }
        let number = |port: Option<&ServicePortPlan>| port.map(|p| p.info().port);
        by_service.entry(key.service).or_default().push(PortDiff {
            port_name: key.port_name,
            protocol: key.protocol,
            old_port: number(before),
            new_port: number(after),
            change: change_of(before.is_some(), after.is_some()),
            chains,
        });
    }

    let mut total = DiffTotal::default();
    let mut services = Vec::with_capacity(by_service.len());
    for (service, ports) in by_service {
        let mut diff = ServiceDiff {
            change: change_of(old_services.contains(&service), new_services.contains(&service)),
            service,
            rules_added: 0,
            rules_removed: 0,
            chains_added: Vec::new(),
            chains_removed: Vec::new(),
            ports,
        };
        for chain in diff.ports.iter().flat_map(|p| &p.chains) {
            diff.rules_added += chain.added.len();
            diff.rules_removed += chain.removed.len();
            match chain.change {
                Change::Added => diff.chains_added.push(chain.chain.clone()),
                Change::Removed => diff.chains_removed.push(chain.chain.clone()),
                Change::Changed => {}
            }
        }
        total.services += 1;
        total.rules_added += diff.rules_added;
        total.rules_removed += diff.rules_removed;
        total.chains_added += diff.chains_added.len();
        total.chains_removed += diff.chains_removed.len();
        services.push(diff);
    }

    let node = compare(&mode.node(old), &mode.node(new));
    for chain in &node {
        total.rules_added += chain.added.len();
        total.rules_removed += chain.removed.len();
        total.chains_added += usize::from(chain.change == Change::Added);
        total.chains_removed += usize::from(chain.change == Change::Removed);
    }
    PlanDiff {
        services,
        node,
        total,
    }
}

fn change_of(before: bool, after: bool) -> Change {
    match (before, after) {
        (false, _) => Change::Added,
        (true, false) => Change::Removed,
        (true, true) => Change::Changed,
    }
}

/// One chain as one owner writes it.
#[derive(Debug)]
struct ChainRules {
    table: &'static str,
    name: String,
    /// The owner creates the chain (as opposed to writing into a shared one).
    declared: bool,
    rules: Vec<String>,
}

/// One owner's rules: per place (table and chain), in the order it first
/// names them, the rules it writes there and whether it creates the place.
#[derive(Debug, Default)]
pub struct OwnedRules {
    chains: Vec<ChainRules>,
    index: HashMap<(&'static str, String), usize>,
}

impl OwnedRules {
    fn get(&self, table: &'static str, name: &str) -> Option<&ChainRules> {
        self.index
            .get(&(table, name.to_string()))
            .map(|&i| &self.chains[i])
    }

    fn slot(&mut self, table: &'static str, name: &str) -> &mut ChainRules {
        let next = self.chains.len();
        let i = *self.index.entry((table, name.to_string())).or_insert(next);
        if i == next {
            self.chains.push(ChainRules {
                table,
                name: name.to_string(),
                declared: false,
                rules: Vec::new(),
            });
        }
        &mut self.chains[i]
    }

    /// The owner creates this chain (or set).
    pub fn declare(&mut self, table: &'static str, name: &str) {
        self.slot(table, name).declared = true;
    }

    /// The owner writes this rule (or element) into the chain, after its others.
    pub fn push(&mut self, table: &'static str, chain: &str, rule: String) {
        self.slot(table, chain).rules.push(rule);
    }
}

/// The chains in which one owner's rules differ between two states.
fn compare(old: &OwnedRules, new: &OwnedRules) -> Vec<ChainDiff> {
    let mut out = Vec::new();
    let mut push =
        |table: &'static str, name: &str, before: Option<&ChainRules>, after: Option<&ChainRules>| {
            let declared = |chain: Option<&ChainRules>| chain.is_some_and(|c| c.declared);
            let change = match (declared(before), declared(after)) {
                (false, true) => Change::Added,
                (true, false) => Change::Removed,
                _ => Change::Changed,
            };
            let (removed, added) = ordered_difference(rules_of(before), rules_of(after));
            if change != Change::Changed || !removed.is_empty() || !added.is_empty() {
                out.push(ChainDiff {
                    table,
                    chain: name.to_string(),
                    change,
                    removed,
                    added,
                });
            }
        };
    for chain in &new.chains {
        push(
            chain.table,
            &chain.name,
            old.get(chain.table, &chain.name),
            Some(chain),
        );
    }
    for chain in &old.chains {
        if new.get(chain.table, &chain.name).is_none() {
            push(chain.table, &chain.name, Some(chain), None);
        }
    }
    // Tables in the order the owner first writes to them (new state first);
    // stable, so within a table the order above stays.
    let mut tables: Vec<&'static str> = Vec::new();
    for chain in new.chains.iter().chain(&old.chains) {
        if !tables.contains(&chain.table) {
            tables.push(chain.table);
        }
    }
    out.sort_by_key(|c| tables.iter().position(|t| *t == c.table));
    out
}

fn rules_of(chain: Option<&ChainRules>) -> &[String] {
    chain.map_or(&[], |c| &c.rules)
}

/// Order-sensitive difference: (only in `old`, only in `new`).
fn ordered_difference(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for op in capture_diff_slices(Algorithm::Myers, old, new) {
        let (old_range, new_range) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (0..0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index..old_index + old_len, new_index..new_index + new_len),
        };
        removed.extend_from_slice(&old[old_range]);
        added.extend_from_slice(&new[new_range]);
    }
    (removed, added)
}

fn display<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
