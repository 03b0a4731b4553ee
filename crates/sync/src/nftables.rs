//! The sync engine of nftables mode: upstream's full and partial syncs, with
//! set and map elements diffed against what was written and stale chains
//! flushed now and deleted later.
//!
//! A full sync writes as upstream does: the fixed objects, every Service,
//! every element ensured against the kernel's. A partial sync does the same
//! for the changed Services only: it remembers each port's objects and which
//! ports want each element, so its work follows the size of the change
//! (upstream ensures every element of every Service on each sync; the
//! resulting table is the same, `tests/properties` checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chainsmith_model::{Diagnostic, EndpointSlice, NodeConfig, ObjectKey, Service};
use chainsmith_naming::nft::{NftObjectKind, is_service_chain};
use chainsmith_nft_layout::{ElementMap, NftContext, OwnChain, PortObjects, setup};
use chainsmith_nftables::{ApplyError, ChainSpec, Element, Op, SetKind, Table, Transaction, canonical_rule};
use chainsmith_planner::{NodeContext, ServicePortPlan};
use std::sync::Arc;

use crate::engine::{FULL_SYNC_PERIOD_MS, SyncKind};
use crate::state::{DesiredState, Replanned};

/// Upstream's delay between flushing a stale chain and deleting it: before
/// kernel 6.2 a chain that a just-deleted map element pointed at cannot be
/// deleted in the same transaction.
pub const STALE_CHAIN_DELAY_MS: u64 = 1000;

/// Failure counters over the engine's life, for the nftables metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftCounters {
    /// Main transactions applied.
    pub applied: u64,
    /// Main transactions refused (`sync_proxy_rules_nftables_sync_failures_total`).
    pub sync_failures: u64,
    /// Stale-chain deletions refused (`sync_proxy_rules_nftables_cleanup_failures_total`).
    pub cleanup_failures: u64,
}

/// What one sync decided, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftCounts {
    /// Service ports with endpoints but none local under `internalTrafficPolicy: Local`.
    pub no_local_internal: usize,
    /// Service ports with endpoints but none local under `externalTrafficPolicy: Local`.
    pub no_local_external: usize,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Services whose chains this sync rewrote.
    pub changed_services: usize,
    /// Per-service chains written.
    pub chains_written: usize,
    /// Elements added or deleted.
    pub element_changes: usize,
    /// Chains flushed as stale.
    pub stale_flushed: usize,
    /// Stale chains deleted by the cleanup transaction.
    pub stale_deleted: usize,
}

/// The transactions of one sync: a cleanup to run first (if any chains are
/// due for deletion), then the main one.
#[derive(Debug)]
pub struct NftSyncOutcome {
    /// Full or partial.
    pub kind: SyncKind,
    /// `delete chain` of stale chains, run before `main`.
    pub cleanup: Option<Transaction>,
    /// The main transaction (upstream's `LastTransaction`); may be empty.
    pub main: Transaction,
    /// What was decided.
    pub counts: NftCounts,
}

/// The kernel's table as far as the engine knows it.
#[derive(Debug, Clone, Default)]
struct KnownTable {
    /// Per-service chains and affinity sets that exist; `None` before the
    /// table was seen (a fresh host: upstream's listing fails, and neither
    /// stale chains nor kept endpoint chains are looked for).
    chains: Option<BTreeSet<String>>,
    /// The content of each per-service chain found at start-up (a digest of
    /// its rules in canonical spelling): the first full sync keeps a chain
    /// whose content is already what it would write. Empty after it.
    contents: HashMap<String, u64>,
    affinity_sets: BTreeSet<String>,
    /// Elements of the diffed maps: key -> value.
    elements: BTreeMap<ElementMap, BTreeMap<String, Option<String>>>,
}

#[derive(Debug)]
struct Pending {
    kind: SyncKind,
    now_ms: u64,
    deleted: Vec<String>,
    update: KnownUpdate,
    newly_stale: Vec<String>,
    reactivated: Vec<String>,
}

/// How the kernel's table changes once the main transaction is applied.
#[derive(Debug)]
enum KnownUpdate {
    /// A full sync: every active chain and set, and every element.
    Replace {
        chains: BTreeSet<String>,
        affinity_sets: BTreeSet<String>,
        elements: BTreeMap<ElementMap, BTreeMap<String, Option<String>>>,
    },
    /// A partial sync: what the changed Services added and removed.
    Delta {
        chains: BTreeSet<String>,
        affinity_sets_added: BTreeSet<String>,
        affinity_sets_deleted: BTreeSet<String>,
        /// `(map, key, value)`; `None` deletes the element.
        elements: Vec<(ElementMap, String, Option<Option<String>>)>,
    },
}

/// The ports that want one element, with the element each wants, in port
/// order: the last one's value is the element's, as a full sync (which
/// writes ports in that order) leaves it.
type Owners = Vec<(Arc<ServicePortPlan>, Element)>;

/// The nftables-mode sync engine of one IP family. Like [`crate::SyncEngine`]
/// it is pure: time comes in, transactions go out, and the caller reports
/// whether the kernel took them ([`NftSyncEngine::commit`]).
#[derive(Debug)]
pub struct NftSyncEngine {
    state: DesiredState,
    nft: NftContext,
    known: KnownTable,
    /// Flushed stale chains and when they became stale.
    stale: BTreeMap<String, u64>,
    needs_full: bool,
    synced_once: bool,
    base_chains_recreated: bool,
    last_full_ms: Option<u64>,
    full_sync_period_ms: u64,
    counters: NftCounters,
    pending: Option<Pending>,
    /// Each port's objects without rules by the address of its plan, which
    /// the entry keeps alive (so the address cannot be reused while cached):
    /// hashing the names is much of a sync's work, and a partial sync needs
    /// every port's elements.
    objects: HashMap<usize, (Arc<ServicePortPlan>, Arc<PortObjects>)>,
    /// Which ports want each element of the diffed maps, so that a partial
    /// sync touches only the elements of the Services that changed.
    owners: HashMap<(ElementMap, String), Owners>,
    /// The first full sync keeps every chain found at start-up that holds
    /// what it would write (upstream: endpoint chains only).
    keep_unchanged_at_start: bool,
}

impl NftSyncEngine {
    /// An engine for one node and family that has written nothing yet.
    pub fn new(config: NodeConfig) -> NftSyncEngine {
        let ctx = Arc::new(NodeContext::new(config));
        NftSyncEngine {
            nft: NftContext::new(&ctx),
            state: DesiredState::new(ctx),
            known: KnownTable::default(),
            stale: BTreeMap::new(),
            needs_full: true,
            synced_once: false,
            base_chains_recreated: false,
            last_full_ms: None,
            full_sync_period_ms: FULL_SYNC_PERIOD_MS,
            counters: NftCounters::default(),
            pending: None,
            objects: HashMap::new(),
            owners: HashMap::new(),
            keep_unchanged_at_start: false,
        }
    }

    /// Makes the first full sync after start-up keep every per-service
    /// chain the kernel already holds with the content it would write, not
    /// only endpoint chains as upstream: a restart over a large table then
    /// sends what changed instead of every Service chain again.
    pub fn keep_unchanged_chains_at_start(&mut self) {
        self.keep_unchanged_at_start = true;
    }

    /// The node context the engine plans with.
    pub fn context(&self) -> &Arc<NodeContext> {
        self.state.context()
    }

    /// The node's settings in nftables terms (with their diagnostics).
    pub fn nft_context(&self) -> &NftContext {
        &self.nft
    }

    /// The desired state: Services, slices and their plans.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Records a Service (`None`: deleted); see [`DesiredState::set_service`].
    pub fn set_service(&mut self, key: &ObjectKey, service: Option<&Service>) -> bool {
        self.state.set_service(key, service)
    }

    /// Records an EndpointSlice; see [`DesiredState::set_endpoint_slice`].
    pub fn set_endpoint_slice(&mut self, key: &ObjectKey, slice: Option<&EndpointSlice>) -> bool {
        self.state.set_endpoint_slice(key, slice)
    }

    /// Makes the desired state equal to these objects.
    pub fn replace_state(&mut self, services: &[Service], slices: &[EndpointSlice]) -> usize {
        self.state.replace_state(services, slices)
    }

    /// Problems found in the objects recorded since the last call.
    pub fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        self.state.take_diagnostics()
    }

    /// Applied and failed transactions so far.
    pub fn counters(&self) -> NftCounters {
        self.counters
    }

    /// Replaces the node configuration (a changed zone label, pod CIDR, ...):
    /// every Service is planned again and the next sync is a full one.
    pub fn set_config(&mut self, config: NodeConfig) {
        if *self.state.context().config() == config {
            return;
        }
        let ctx = Arc::new(NodeContext::new(config));
        self.nft = NftContext::new(&ctx);
        self.state.set_context(ctx);
        // Cached objects were spelled for the old settings.
        self.objects.clear();
        self.needs_full = true;
    }

    /// How often a full resync runs at the latest (default one hour).
    pub fn set_full_sync_period(&mut self, period_ms: u64) {
        self.full_sync_period_ms = period_ms;
    }

    /// Requests a full sync next time.
    pub fn force_full_sync(&mut self) {
        self.needs_full = true;
    }

    /// Whether the next sync is full whatever changed (at start, after a
    /// refused transaction or a changed node configuration).
    pub fn full_sync_pending(&self) -> bool {
        self.needs_full || !self.synced_once
    }

    /// The table the kernel holds once every transaction this engine wrote
    /// was applied: the fixed objects, every port's chains, affinity sets
    /// and elements, and the flushed stale chains that wait for deletion.
    /// Meaningful when no full sync is pending. Built on demand (as a full
    /// sync into an empty table, from the spelled objects the engine keeps
    /// anyway) so that a drift check needs no second copy of the table
    /// between checks.
    pub fn expected_table(&mut self) -> Result<Table, ApplyError> {
        let family = self.nft.family();
        // A full sync into an empty kernel writes everything; the engine's
        // own view of the kernel is put back untouched.
        let known = std::mem::take(&mut self.known);
        let owners = std::mem::take(&mut self.owners);
        let synced_once = std::mem::replace(&mut self.synced_once, true);
        let base_chains_recreated = std::mem::replace(&mut self.base_chains_recreated, true);
        let mut everything = Transaction::new(family);
        let _ = self.write_full(&[], &mut everything, &mut NftCounts::default());
        self.known = known;
        self.owners = owners;
        self.synced_once = synced_once;
        self.base_chains_recreated = base_chains_recreated;
        for name in self.stale.keys() {
            everything.push(Op::AddChain(ChainSpec::regular(name.clone())));
        }
        let mut table = Table::new(family);
        table.apply_in_place(&everything)?;
        Ok(table)
    }

    /// Chains recorded as stale, with the time they became stale.
    pub fn stale_chains(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stale.iter().map(|(name, at)| (name.as_str(), *at))
    }

    /// Tells the engine what the kernel's table holds (read before the first
    /// sync after a restart): its per-service chains, affinity sets and the
    /// elements of the diffed maps, which a full sync then keeps instead of
    /// sending again.
    pub fn set_existing(&mut self, table: &Table) {
        if !table.exists() {
            self.known = KnownTable::default();
            return;
        }
        let chains = table
            .chain_names()
            .filter(|name| is_service_chain(name))
            .map(str::to_string)
            .collect();
        let contents = table
            .chain_names()
            .filter(|name| self.keep_unchanged_at_start && is_service_chain(name))
            .map(|name| {
                let digest = content_digest(
                    table
                        .rules(name)
                        .map(|(rule, comment)| (canonical_rule(rule), comment)),
                );
                (name.to_string(), digest)
            })
            .collect();
        let affinity_sets = table
            .sets()
            .filter(|set| set.name.starts_with(NftObjectKind::Affinity.prefix()))
            .map(|set| set.name.clone())
            .collect();
        let elements = ElementMap::ALL
            .into_iter()
            .map(|map| {
                let elements = table
                    .elements(map.name())
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                (map, elements)
            })
            .collect();
        self.known = KnownTable {
            chains: Some(chains),
            contents,
            affinity_sets,
            elements,
        };
    }

    /// Plans what changed and writes the next transactions. Call
    /// [`NftSyncEngine::commit`] with what the kernel said before syncing again.
    pub fn sync(&mut self, now_ms: u64, force_full: bool) -> NftSyncOutcome {
        let family = self.nft.family();
        // Stale chains old enough go first, in their own transaction.
        let due: Vec<String> = self
            .stale
            .iter()
            .filter(|(_, at)| now_ms.saturating_sub(**at) > STALE_CHAIN_DELAY_MS)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &due {
            self.stale.remove(name);
        }
        let cleanup = (!due.is_empty()).then(|| Transaction {
            family,
            ops: due.iter().map(|name| Op::DeleteChain(name.clone())).collect(),
        });

        let replanned = self.state.replan_changed();
        let periodic = self
            .last_full_ms
            .is_none_or(|last| now_ms.saturating_sub(last) > self.full_sync_period_ms);
        let kind = if force_full || self.needs_full || periodic {
            SyncKind::Full
        } else {
            SyncKind::Partial
        };
        let mut counts = NftCounts::default();
        for plan in self.state.plans() {
            counts.service_ports += 1;
            counts.no_local_internal += usize::from(plan.lacks_local_internal());
            counts.no_local_external += usize::from(plan.lacks_local_external());
        }
        let mut main = Transaction::new(family);
        let (update, newly_stale, reactivated) = match kind {
            SyncKind::Full => {
                for old in replanned.iter().flat_map(|r| &r.old) {
                    self.objects.remove(&(Arc::as_ptr(old) as usize));
                }
                self.write_full(&due, &mut main, &mut counts)
            }
            SyncKind::Partial => self.write_partial(&replanned, &due, &mut main, &mut counts),
        };
        counts.stale_flushed = newly_stale.len();
        counts.stale_deleted = due.len();
        self.pending = Some(Pending {
            kind,
            now_ms,
            deleted: due,
            update,
            newly_stale,
            reactivated,
        });
        NftSyncOutcome {
            kind,
            cleanup,
            main,
            counts,
        }
    }

    /// A port's objects without their rules, spelled once per plan and
    /// kept: names and elements are what a partial sync needs of every port;
    /// the rules, most of the text, are spelled again when a chain is
    /// written ([`PortObjects::of`]), which keeps the engine's memory at
    /// 10k Services x 10 endpoints about 40 MiB smaller.
    fn objects_of(&mut self, plan: &Arc<ServicePortPlan>) -> Arc<PortObjects> {
        let nft = &self.nft;
        Arc::clone(
            &self
                .objects
                .entry(Arc::as_ptr(plan) as usize)
                .or_insert_with(|| (Arc::clone(plan), Arc::new(PortObjects::without_rules(plan, nft))))
                .1,
        )
    }

    /// Queues a chain's declaration, flush and rules (the rules after every
    /// chain of the port exists).
    fn write_chain(main: &mut Transaction, rules: &mut Vec<Op>, chain: &OwnChain) {
        main.push(Op::AddChain(ChainSpec::regular(chain.name.clone())));
        main.push(Op::FlushChain(chain.name.clone()));
        rules.extend(chain.rules.iter().map(|(rule, comment)| Op::AddRule {
            chain: chain.name.clone(),
            rule: rule.clone(),
            comment: comment.clone(),
        }));
    }

    /// Upstream's full sync: the fixed objects, every Service's chains, every
    /// element ensured against what the kernel holds, and every chain and
    /// affinity set the kernel holds but nothing wants found stale.
    fn write_full(
        &mut self,
        due: &[String],
        main: &mut Transaction,
        counts: &mut NftCounts,
    ) -> (KnownUpdate, Vec<String>, Vec<String>) {
        setup(&self.nft, !self.base_chains_recreated, main);
        let plans: Vec<Arc<ServicePortPlan>> = self.state.plans().cloned().collect();
        counts.changed_services = plans
            .iter()
            .map(|p| p.info().service())
            .collect::<BTreeSet<_>>()
            .len();
        // What outlives the sync is built first, the transaction after it:
        // kept apart, the transaction's short-lived strings fill pages of
        // their own, which the allocator can hand back once it is sent
        // (interleaved, they pinned most of a first sync's peak).
        let mut active_chains = BTreeSet::new();
        let mut active_sets = BTreeSet::new();
        let mut elements: BTreeMap<ElementMap, BTreeMap<String, Option<String>>> = ElementMap::ALL
            .into_iter()
            .map(|map| (map, BTreeMap::new()))
            .collect();
        let mut owners: HashMap<(ElementMap, String), Owners> = HashMap::new();
        for plan in &plans {
            let objects = self.objects_of(plan);
            active_chains.extend(objects.chains.iter().map(|chain| chain.name.clone()));
            active_sets.extend(objects.affinity_sets.iter().map(|set| set.name.clone()));
            for (map, element) in &objects.elements {
                // The last port wanting an element decides its value.
                elements
                    .entry(*map)
                    .or_default()
                    .insert(element.key.clone(), element.value.clone());
                owners
                    .entry((*map, element.key.clone()))
                    .or_default()
                    .push((Arc::clone(plan), element.clone()));
            }
        }
        self.owners = owners;

        let mut desired: BTreeMap<ElementMap, BTreeMap<String, Option<String>>> = BTreeMap::new();
        let mut rules = Vec::new();
        let known = &self.known;
        // Chains the cleanup transaction deletes are gone for the main one.
        let exists =
            |chain: &String| known.chains.as_ref().is_some_and(|c| c.contains(chain)) && !due.contains(chain);
        for plan in &plans {
            let objects = PortObjects::of(plan, &self.nft);
            for chain in &objects.chains {
                // Upstream keeps an endpoint chain found at start-up, whose
                // content follows from its name and whether affinity is on.
                // With `keep_unchanged_at_start`, any chain found holding
                // what would be written stays: the kernel keeps its rules and
                // anonymous verdict maps, whose creation costs it a scan of
                // every set in the table.
                let kept = !self.synced_once
                    && exists(&chain.name)
                    && if self.keep_unchanged_at_start {
                        known.contents.get(&chain.name).is_some_and(|digest| {
                            *digest
                                == content_digest(
                                    chain
                                        .rules
                                        .iter()
                                        .map(|(rule, comment)| (canonical_rule(rule), comment.as_deref())),
                                )
                        })
                    } else {
                        chain.kind == NftObjectKind::Endpoint
                            && known.affinity_sets.contains(&affinity_set_of(&chain.name))
                                == chain.uses_affinity
                    };
                if !kept {
                    counts.chains_written += 1;
                    Self::write_chain(main, &mut rules, chain);
                }
            }
            for set in &objects.affinity_sets {
                main.push(Op::AddSet(set.clone()));
            }
            for (map, element) in &objects.elements {
                counts.element_changes += ensure(main, known, &mut desired, *map, element);
            }
            main.ops.append(&mut rules);
        }
        drop(desired);

        let mut newly_stale = Vec::new();
        for name in known.chains.iter().flatten() {
            if !active_chains.contains(name) && !self.stale.contains_key(name) && !due.contains(name) {
                main.push(Op::FlushChain(name.clone()));
                newly_stale.push(name.clone());
            }
        }
        for name in &known.affinity_sets {
            if !active_sets.contains(name) {
                main.push(Op::DeleteSet(SetKind::Set, name.clone()));
            }
        }
        for map in ElementMap::ALL {
            let wanted = elements.get(&map);
            for key in known.elements.get(&map).into_iter().flat_map(BTreeMap::keys) {
                if !wanted.is_some_and(|w| w.contains_key(key)) {
                    counts.element_changes += 1;
                    main.push(Op::DeleteElement {
                        set: map.name().to_string(),
                        key: key.clone(),
                    });
                }
            }
        }
        let reactivated = self
            .stale
            .keys()
            .filter(|name| active_chains.contains(*name))
            .cloned()
            .collect();
        let update = KnownUpdate::Replace {
            chains: active_chains,
            affinity_sets: active_sets,
            elements,
        };
        (update, newly_stale, reactivated)
    }

    /// A partial sync: only the changed Services' chains, affinity sets and
    /// elements, so its work follows the size of the change. Ports whose plan
    /// did not change want what they wanted, which the kernel already holds.
    fn write_partial(
        &mut self,
        replanned: &[Replanned],
        due: &[String],
        main: &mut Transaction,
        counts: &mut NftCounts,
    ) -> (KnownUpdate, Vec<String>, Vec<String>) {
        counts.changed_services = replanned.len();
        let (mut old_chains, mut new_chains) = (BTreeSet::new(), BTreeSet::new());
        let (mut old_sets, mut new_sets) = (BTreeSet::new(), BTreeSet::new());
        let mut touched: BTreeSet<(ElementMap, String)> = BTreeSet::new();
        let mut rules = Vec::new();
        let mut sets = Vec::new();
        for changed in replanned {
            for old in &changed.old {
                let objects = match self.objects.remove(&(Arc::as_ptr(old) as usize)) {
                    Some((_, objects)) => objects,
                    None => Arc::new(PortObjects::without_rules(old, &self.nft)),
                };
                old_chains.extend(objects.chains.iter().map(|c| c.name.clone()));
                old_sets.extend(objects.affinity_sets.iter().map(|s| s.name.clone()));
                for (map, element) in &objects.elements {
                    let key = (*map, element.key.clone());
                    if let Some(owners) = self.owners.get_mut(&key) {
                        owners.retain(|(plan, _)| !Arc::ptr_eq(plan, old));
                        if owners.is_empty() {
                            self.owners.remove(&key);
                        }
                    }
                    touched.insert(key);
                }
            }
            let plans: Vec<Arc<ServicePortPlan>> = self
                .state
                .ports_of(&changed.service)
                .iter()
                .filter_map(|key| self.state.plan(key).cloned())
                .collect();
            for plan in &plans {
                let objects = self.objects_of(plan);
                for chain in &PortObjects::of(plan, &self.nft).chains {
                    new_chains.insert(chain.name.clone());
                    counts.chains_written += 1;
                    Self::write_chain(main, &mut rules, chain);
                }
                for set in &objects.affinity_sets {
                    new_sets.insert(set.name.clone());
                    sets.push(Op::AddSet(set.clone()));
                }
                for (map, element) in &objects.elements {
                    let key = (*map, element.key.clone());
                    let owners = self.owners.entry(key.clone()).or_default();
                    let at = owners.partition_point(|(other, _)| other.key_cmp(plan).is_lt());
                    owners.insert(at, (Arc::clone(plan), element.clone()));
                    touched.insert(key);
                }
            }
        }
        main.ops.append(&mut sets);
        // Elements added or changed go before the rules; elements only
        // removed go last, as upstream's cleanup of leftovers does.
        let mut elements = Vec::new();
        let mut removals = Vec::new();
        for (map, key) in touched {
            let before = self.known.elements.get(&map).and_then(|m| m.get(&key));
            let after = self
                .owners
                .get(&(map, key.clone()))
                .and_then(|o| o.last())
                .map(|(_, e)| e);
            let set = map.name().to_string();
            match (before, after) {
                (Some(value), Some(element)) if *value == element.value => {}
                (None, None) => {}
                (Some(_), None) => {
                    counts.element_changes += 1;
                    removals.push(Op::DeleteElement {
                        set,
                        key: key.clone(),
                    });
                    elements.push((map, key, None));
                }
                (before, Some(element)) => {
                    if before.is_some() {
                        counts.element_changes += 1;
                        main.push(Op::DeleteElement {
                            set: set.clone(),
                            key: key.clone(),
                        });
                    }
                    counts.element_changes += 1;
                    elements.push((map, key, Some(element.value.clone())));
                    main.push(Op::AddElement {
                        set,
                        element: element.clone(),
                    });
                }
            }
        }
        main.ops.append(&mut rules);

        let known = &self.known;
        let mut newly_stale = Vec::new();
        for name in old_chains.difference(&new_chains) {
            let exists = known.chains.as_ref().is_some_and(|c| c.contains(name)) && !due.contains(name);
            if exists && !self.stale.contains_key(name) {
                main.push(Op::FlushChain(name.clone()));
                newly_stale.push(name.clone());
            }
        }
        let affinity_sets_deleted: BTreeSet<String> = old_sets
            .difference(&new_sets)
            .filter(|name| known.affinity_sets.contains(*name))
            .cloned()
            .collect();
        for name in &affinity_sets_deleted {
            main.push(Op::DeleteSet(SetKind::Set, name.clone()));
        }
        main.ops.append(&mut removals);
        let reactivated = self
            .stale
            .keys()
            .filter(|name| new_chains.contains(*name))
            .cloned()
            .collect();
        let update = KnownUpdate::Delta {
            chains: new_chains,
            affinity_sets_added: new_sets,
            affinity_sets_deleted,
            elements,
        };
        (update, newly_stale, reactivated)
    }

    /// Records what the kernel said: whether the cleanup transaction (if
    /// there was one) and the main transaction were applied. A refused main
    /// transaction leaves the kernel as it was and makes the next sync full;
    /// a refused cleanup leaves its chains to be found stale again.
    pub fn commit(&mut self, cleanup_applied: bool, main_applied: bool) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if !cleanup_applied {
            self.counters.cleanup_failures += 1;
        }
        if !main_applied {
            self.counters.sync_failures += 1;
            self.needs_full = true;
            if cleanup_applied && let Some(chains) = &mut self.known.chains {
                for name in &pending.deleted {
                    chains.remove(name);
                }
            }
            // Recomputed from the kernel's chains at the next sync.
            self.stale.clear();
            return;
        }
        self.counters.applied += 1;
        // Stale chains stay (flushed) until their cleanup deletes them.
        let chains = self.known.chains.get_or_insert_with(BTreeSet::new);
        if cleanup_applied {
            for name in &pending.deleted {
                chains.remove(name);
            }
        }
        match pending.update {
            KnownUpdate::Replace {
                chains: active,
                affinity_sets,
                elements,
            } => {
                chains.extend(active);
                self.known.affinity_sets = affinity_sets;
                self.known.elements = elements;
            }
            KnownUpdate::Delta {
                chains: added,
                affinity_sets_added,
                affinity_sets_deleted,
                elements,
            } => {
                chains.extend(added);
                self.known.affinity_sets.extend(affinity_sets_added);
                for name in &affinity_sets_deleted {
                    self.known.affinity_sets.remove(name);
                }
                for (map, key, value) in elements {
                    let stored = self.known.elements.entry(map).or_default();
                    match value {
                        Some(value) => stored.insert(key, value),
                        None => stored.remove(&key),
                    };
                }
            }
        }
        for name in &pending.reactivated {
            self.stale.remove(name);
        }
        for name in pending.newly_stale {
            self.stale.insert(name, pending.now_ms);
        }
        if pending.kind == SyncKind::Full {
            self.last_full_ms = Some(pending.now_ms);
            self.base_chains_recreated = true;
        }
        // A refused cleanup makes the next sync full, as upstream does.
        self.needs_full = !cleanup_applied;
        self.synced_once = true;
        // Only the first full sync after start-up keeps chains by content.
        self.known.contents = HashMap::new();
        self.state.clear_changed();
    }
}

/// The affinity set that belongs to an endpoint chain (both share the base).
fn affinity_set_of(endpoint_chain: &str) -> String {
    let base = endpoint_chain
        .strip_prefix(NftObjectKind::Endpoint.prefix())
        .unwrap_or(endpoint_chain);
    NftObjectKind::Affinity.name(base)
}

/// A digest of a chain's rules (canonical spelling, with their comments),
/// to tell whether a chain found in the kernel holds what would be written.
fn content_digest<'c>(rules: impl Iterator<Item = (String, Option<&'c str>)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for rule in rules {
        rule.hash(&mut hasher);
    }
    hasher.finish()
}

/// Upstream's `ensureElem`: sends an element unless the kernel (or this
/// transaction) already has it with the same value; a different value is
/// deleted first. Returns the number of operations queued.
fn ensure(
    tx: &mut Transaction,
    known: &KnownTable,
    desired: &mut BTreeMap<ElementMap, BTreeMap<String, Option<String>>>,
    map: ElementMap,
    element: &Element,
) -> usize {
    let wanted = desired.entry(map).or_default();
    let current = match wanted.get(&element.key) {
        Some(value) => Some(value),
        None => known.elements.get(&map).and_then(|m| m.get(&element.key)),
    };
    let ops = match current {
        Some(value) if *value == element.value => 0,
        Some(_) => {
            tx.push(Op::DeleteElement {
                set: map.name().to_string(),
                key: element.key.clone(),
            });
            2
        }
        None => 1,
    };
    wanted.insert(element.key.clone(), element.value.clone());
    if ops > 0 {
        tx.push(Op::AddElement {
            set: map.name().to_string(),
            element: element.clone(),
        });
    }
    ops
}
