//! The sync engine proper.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chainsmith_iptables::{Rule, RuleSink, Table};
use chainsmith_layout::Layout;
use chainsmith_model::{Diagnostic, EndpointSlice, NodeConfig, ObjectKey, Service};
use chainsmith_naming::ChainName;
use chainsmith_planner::{LARGE_CLUSTER_ENDPOINTS_THRESHOLD, NodeContext, PortKey, ServicePortPlan};
use chainsmith_restore::PayloadWriter;
use chainsmith_restore::render::{ChainRequest, PayloadCounts, write_rule};

use crate::state::{DesiredState, Replanned};

/// Upstream's `FullSyncPeriod`: a full resync at least this often (the
/// default of [`SyncEngine::set_full_sync_period`]).
pub const FULL_SYNC_PERIOD_MS: u64 = 60 * 60 * 1000;

/// Counters over the engine's life, for the failure metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Syncs whose payload was applied.
    pub applied: u64,
    /// Syncs whose payload the kernel refused
    /// (`sync_proxy_rules_iptables_restore_failures_total`).
    pub restore_failures: u64,
    /// Of those, partial syncs
    /// (`sync_proxy_rules_iptables_partial_restore_failures_total`).
    pub partial_restore_failures: u64,
}

/// What a partial sync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialSyncMode {
    /// Only chains whose content changed, and deletions of chains that went away.
    #[default]
    Minimal,
    /// Exactly upstream kube-proxy's partial payload.
    Compat,
}

/// Whether a sync rewrote everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// Every chain written (first sync, after a failure, forced, or periodic).
    Full,
    /// Only what the mode requires.
    Partial,
}

/// Rule counts of one sync, with upstream's metric semantics: `*_total` is the
/// number of rules in the desired table, `*_last` the number written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Rules in the desired filter table.
    pub filter_total: usize,
    /// Filter rules written by this sync.
    pub filter_last: usize,
    /// Rules in the desired nat table.
    pub nat_total: usize,
    /// Nat rules written by this sync (`-X` lines excluded).
    pub nat_last: usize,
    /// Chains deleted by this sync.
    pub nat_deleted_chains: usize,
    /// Service ports with endpoints but none local under `internalTrafficPolicy: Local`.
    pub no_local_internal: usize,
    /// Service ports with endpoints but none local under `externalTrafficPolicy: Local`.
    pub no_local_external: usize,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Endpoints over all service ports (what decides large-cluster mode).
    pub endpoints: usize,
    /// Services whose chains this sync had to consider.
    pub changed_services: usize,
    /// Large-cluster mode was in effect.
    pub large_cluster: bool,
    /// Rules in the desired per-service nat chains, by kind
    /// (`chainsmith_naming::ServiceChainKind::ALL` order: svc, svl, ext, fw, sep).
    pub nat_by_kind: [usize; 5],
}

/// The result of [`SyncEngine::sync`]: a payload for `iptables-restore --noflush`.
#[derive(Debug)]
pub struct SyncOutcome<'e> {
    /// Full or partial.
    pub kind: SyncKind,
    /// The payload; empty when nothing needs to change (minimal mode).
    pub payload: &'e [u8],
    /// Rule counts.
    pub counts: RuleCounts,
}

#[derive(Debug, Clone, Copy, Default)]
struct PortCounts {
    filter: usize,
    nat_shared: usize,
    nat_own: usize,
    nat_own_by_kind: [usize; 5],
    endpoints: usize,
    lacks_local_internal: bool,
    lacks_local_external: bool,
}

impl PortCounts {
    fn of(layout: Layout, plan: &ServicePortPlan, ctx: &NodeContext) -> PortCounts {
        let rules = layout.rule_counts(plan, ctx);
        PortCounts {
            filter: rules.filter,
            nat_shared: rules.nat_shared,
            nat_own: rules.nat_own,
            nat_own_by_kind: rules.nat_own_by_kind,
            endpoints: plan.endpoints().len(),
            lacks_local_internal: plan.lacks_local_internal(),
            lacks_local_external: plan.lacks_local_external(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    filter: usize,
    nat_shared: usize,
    nat_own: usize,
    nat_own_by_kind: [usize; 5],
    endpoints: usize,
    lacks_local_internal: usize,
    lacks_local_external: usize,
    ports: usize,
}

impl Totals {
    fn add(&mut self, counts: &PortCounts, sign: bool) {
        let apply = |total: &mut usize, value: usize| {
            *total = if sign {
                *total + value
            } else {
                total.saturating_sub(value)
            };
        };
        apply(&mut self.filter, counts.filter);
        apply(&mut self.nat_shared, counts.nat_shared);
        apply(&mut self.nat_own, counts.nat_own);
        for (total, value) in self.nat_own_by_kind.iter_mut().zip(counts.nat_own_by_kind) {
            apply(total, value);
        }
        apply(&mut self.endpoints, counts.endpoints);
        apply(
            &mut self.lacks_local_internal,
            usize::from(counts.lacks_local_internal),
        );
        apply(
            &mut self.lacks_local_external,
            usize::from(counts.lacks_local_external),
        );
        apply(&mut self.ports, 1);
    }
}

/// What a sync produced, remembered until [`SyncEngine::commit`].
#[derive(Debug)]
struct Pending {
    kind: SyncKind,
    now_ms: u64,
    large_cluster: bool,
    deleted: Vec<ChainName>,
    scanned: bool,
}

/// The sync engine of one IP family. See the crate documentation.
#[derive(Debug)]
pub struct SyncEngine {
    state: DesiredState,
    layout: Layout,
    mode: PartialSyncMode,
    fixed_filter_rules: usize,
    fixed_nat_rules: usize,
    /// The rule counts of every planned port, so that a sync's totals are
    /// updated from the changed Services alone.
    counts: HashMap<PortKey, PortCounts>,
    totals: Totals,
    /// Per-service chains that may exist in the kernel but are no longer wanted.
    stale: BTreeSet<ChainName>,
    needs_full: bool,
    last_full_ms: Option<u64>,
    last_stale_scan_ms: Option<u64>,
    applied_large_cluster: Option<bool>,
    pending: Option<Pending>,
    writer: PayloadWriter,
    full_sync_period_ms: u64,
    counters: SyncCounters,
}

impl SyncEngine {
    /// An engine for one node and family in the v1.33 layout, with nothing
    /// applied yet.
    pub fn new(config: NodeConfig, mode: PartialSyncMode) -> SyncEngine {
        SyncEngine::with_layout(config, mode, Layout::default())
    }

    /// An engine writing `layout`. A layout without partial syncs makes every
    /// sync a full one, whatever `mode` says.
    pub fn with_layout(config: NodeConfig, mode: PartialSyncMode, layout: Layout) -> SyncEngine {
        let ctx = Arc::new(NodeContext::new(config));
        let (fixed_filter_rules, fixed_nat_rules) = layout.fixed_rule_counts(&ctx);
        SyncEngine {
            state: DesiredState::new(ctx),
            layout,
            mode,
            fixed_filter_rules,
            fixed_nat_rules,
            counts: HashMap::new(),
            totals: Totals::default(),
            stale: BTreeSet::new(),
            needs_full: true,
            last_full_ms: None,
            last_stale_scan_ms: None,
            applied_large_cluster: None,
            pending: None,
            writer: PayloadWriter::new(),
            full_sync_period_ms: FULL_SYNC_PERIOD_MS,
            counters: SyncCounters::default(),
        }
    }

    /// Replaces the node configuration (a changed zone label, pod CIDR, ...):
    /// every Service is planned again and the next sync is a full one.
    pub fn set_config(&mut self, config: NodeConfig) {
        if *self.state.context().config() == config {
            return;
        }
        let ctx = NodeContext::new(config);
        (self.fixed_filter_rules, self.fixed_nat_rules) = self.layout.fixed_rule_counts(&ctx);
        self.state.set_context(Arc::new(ctx));
        self.needs_full = true;
    }

    /// The Services the engine holds (those with ports of its family).
    pub fn service_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.state.service_keys()
    }

    /// The EndpointSlices the engine holds (those of its family).
    pub fn endpoint_slice_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.state.endpoint_slice_keys()
    }

    /// How often a full resync runs at the latest (default one hour).
    pub fn set_full_sync_period(&mut self, period_ms: u64) {
        self.full_sync_period_ms = period_ms;
    }

    /// Applied and failed syncs so far.
    pub fn counters(&self) -> SyncCounters {
        self.counters
    }

    /// The layout the engine writes.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Problems found in the objects recorded since the last call (a port
    /// listed twice), each naming the object and field.
    pub fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        self.state.take_diagnostics()
    }

    /// The node context the engine plans with.
    pub fn context(&self) -> &Arc<NodeContext> {
        self.state.context()
    }

    /// The current plans of every service port, in key order.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<ServicePortPlan>> {
        self.state.plans()
    }

    /// Services changed since the last successful sync.
    pub fn pending_services(&self) -> usize {
        self.state.changed().len()
    }

    /// Records the Service `key` as it is now (`None`: deleted). Returns whether
    /// this changes what the proxier derives from it.
    pub fn set_service(&mut self, key: &ObjectKey, service: Option<&Service>) -> bool {
        self.state.set_service(key, service)
    }

    /// Records the EndpointSlice `key` as it is now (`None`: deleted). Slices of
    /// the other family are ignored. Returns whether this changes anything.
    pub fn set_endpoint_slice(&mut self, key: &ObjectKey, slice: Option<&EndpointSlice>) -> bool {
        self.state.set_endpoint_slice(key, slice)
    }

    /// Makes the desired state equal to these objects: everything not listed is
    /// deleted. Returns the number of Services whose state changed.
    pub fn replace_state(&mut self, services: &[Service], slices: &[EndpointSlice]) -> usize {
        self.state.replace_state(services, slices)
    }

    /// Tells the engine which nat chains exist in the kernel (e.g. read with
    /// `iptables-save -t nat` before a full sync); per-service chains among
    /// them that are not wanted are deleted by the next scan.
    pub fn set_existing_nat_chains(&mut self, chains: impl IntoIterator<Item = ChainName>) {
        let layout = self.layout;
        let wanted: HashSet<ChainName> = self
            .state
            .plans()
            .flat_map(|plan| layout.own_chains(plan))
            .collect();
        self.stale = chains
            .into_iter()
            .filter(|c| layout.owns_service_chain(c.as_str()) && !wanted.contains(c))
            .collect();
    }

    /// Frees the payload buffer, which a full sync grows to the size of the
    /// whole ruleset (tens of MiB at 10k Services); the next sync allocates
    /// what it needs. For a long-running proxier after a full sync.
    pub fn release_payload_buffer(&mut self) {
        drop(self.writer.take());
    }

    /// Requests a full sync next time (after an outside change such as a flush).
    pub fn force_full_sync(&mut self) {
        self.needs_full = true;
    }

    /// Plans what changed and writes the next payload. `now_ms` is the current
    /// time on any monotonic millisecond scale. Call [`SyncEngine::commit`]
    /// with the result of applying it before syncing again.
    pub fn sync(&mut self, now_ms: u64, force_full: bool) -> SyncOutcome<'_> {
        let replanned = self.replan();
        let large_cluster = self.totals.endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
        let periodic = self
            .last_full_ms
            .is_none_or(|last| now_ms.saturating_sub(last) > self.full_sync_period_ms);
        // A minimal partial sync keeps unchanged chains, which is only right while
        // their comments follow the same large-cluster mode.
        let mode_flip =
            self.mode == PartialSyncMode::Minimal && self.applied_large_cluster != Some(large_cluster);
        let kind =
            if force_full || self.needs_full || periodic || mode_flip || !self.layout.has_partial_syncs() {
                SyncKind::Full
            } else {
                SyncKind::Partial
            };
        let changed_services = self.state.changed().len();

        let (payload_counts, deleted, scanned) = match (kind, self.mode) {
            (SyncKind::Partial, PartialSyncMode::Minimal) => {
                let (counts, deleted) = self.write_minimal(&replanned, large_cluster);
                (counts, deleted, false)
            }
            _ => self.write_upstream(kind, now_ms, large_cluster),
        };
        self.pending = Some(Pending {
            kind,
            now_ms,
            large_cluster,
            deleted,
            scanned,
        });
        let totals = self.totals;
        let counts = RuleCounts {
            filter_total: self.fixed_filter_rules + totals.filter,
            filter_last: payload_counts.filter_rules,
            nat_total: self.fixed_nat_rules + totals.nat_shared + totals.nat_own,
            nat_last: payload_counts.nat_rules,
            nat_deleted_chains: payload_counts.nat_deleted_chains,
            no_local_internal: totals.lacks_local_internal,
            no_local_external: totals.lacks_local_external,
            service_ports: totals.ports,
            endpoints: totals.endpoints,
            changed_services,
            large_cluster,
            nat_by_kind: totals.nat_own_by_kind,
        };
        SyncOutcome {
            kind,
            payload: self.writer.payload(),
            counts,
        }
    }

    /// Records whether the last payload was applied. A failure makes the next
    /// sync a full one; the kernel is assumed unchanged.
    pub fn commit(&mut self, applied: bool) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if !applied {
            self.counters.restore_failures += 1;
            if pending.kind == SyncKind::Partial {
                self.counters.partial_restore_failures += 1;
            }
            self.needs_full = true;
            return;
        }
        self.counters.applied += 1;
        self.needs_full = false;
        self.state.clear_changed();
        if pending.kind == SyncKind::Full {
            self.last_full_ms = Some(pending.now_ms);
        }
        if pending.scanned {
            self.last_stale_scan_ms = Some(pending.now_ms);
        }
        self.applied_large_cluster = Some(pending.large_cluster);
        for chain in &pending.deleted {
            self.stale.remove(chain);
        }
    }

    /// Plans the changed Services again and keeps the rule totals and the
    /// stale chains in step, so neither needs a pass over the whole cluster.
    fn replan(&mut self) -> Vec<Replanned> {
        // The old counts go first, while the state still lists the old ports.
        for service in self.state.changed() {
            for key in self.state.ports_of(service) {
                if let Some(counts) = self.counts.remove(key) {
                    self.totals.add(&counts, false);
                }
            }
        }
        let replanned = self.state.replan_changed();
        let layout = self.layout;
        let ctx = self.state.context();
        for Replanned { service, old } in &replanned {
            let mut wanted = HashSet::new();
            for key in self.state.ports_of(service) {
                let Some(plan) = self.state.plan(key) else {
                    continue;
                };
                let counts = PortCounts::of(layout, plan, ctx);
                self.totals.add(&counts, true);
                self.counts.insert(key.clone(), counts);
                wanted.extend(layout.own_chains(plan));
            }
            for chain in old.iter().flat_map(|plan| layout.own_chains(plan)) {
                if !wanted.contains(&chain) {
                    self.stale.insert(chain);
                }
            }
            for chain in &wanted {
                self.stale.remove(chain);
            }
        }
        replanned
    }

    /// Upstream's payload (full, or compat partial).
    fn write_upstream(
        &mut self,
        kind: SyncKind,
        now_ms: u64,
        large_cluster: bool,
    ) -> (PayloadCounts, Vec<ChainName>, bool) {
        let full = kind == SyncKind::Full;
        // Before partial syncs (v1.10), every sync deleted every stale chain.
        let scan_due = match self.mode {
            _ if !self.layout.has_partial_syncs() => true,
            PartialSyncMode::Minimal => full,
            PartialSyncMode::Compat => {
                !large_cluster
                    || self.last_stale_scan_ms.is_none_or(|last| {
                        now_ms.saturating_sub(last) > self.state.context().config().sync_period_ms
                    })
            }
        };
        let state = &self.state;
        let writes_own = |plan: &ServicePortPlan| full || state.is_changed(plan.info().service());
        let stale: Vec<ChainName> = if scan_due {
            self.stale.iter().copied().collect()
        } else {
            Vec::new()
        };
        let counts = self.writer.write_upstream(
            self.layout,
            state.context(),
            large_cluster,
            || state.plans().map(|plan| (&**plan, writes_own(plan))),
            &stale,
        );
        (counts, stale, scan_due)
    }

    /// The minimal payload: only chains whose content changed.
    fn write_minimal(
        &mut self,
        replanned: &[Replanned],
        large_cluster: bool,
    ) -> (PayloadCounts, Vec<ChainName>) {
        let state = &self.state;
        let ctx = &**state.context();
        let layout = self.layout;
        let mut filter_chains = BTreeSet::new();
        let mut nat_fixed_chains = BTreeSet::new();
        let mut own: Vec<(&ServicePortPlan, Vec<ChainName>)> = Vec::new();
        for Replanned { service, old } in replanned {
            let new: Vec<&ServicePortPlan> = state
                .ports_of(service)
                .iter()
                .filter_map(|key| state.plan(key))
                .map(|plan| &**plan)
                .collect();
            let old_shared = shared_texts(layout, old.iter().map(|p| &**p), ctx);
            let new_shared = shared_texts(layout, new.iter().copied(), ctx);
            for (table, chain) in fixed_chains(layout, ctx) {
                if old_shared.get(&(table, chain)) != new_shared.get(&(table, chain)) {
                    match table {
                        Table::Filter => filter_chains.insert(chain),
                        Table::Nat => nat_fixed_chains.insert(chain),
                    };
                }
            }
            let old_own = own_texts(layout, old.iter().map(|p| &**p), ctx, large_cluster);
            let new_own = own_texts(layout, new.iter().copied(), ctx, large_cluster);
            for plan in &new {
                let changed: Vec<ChainName> = layout
                    .own_chains(plan)
                    .filter(|chain| old_own.get(chain) != new_own.get(chain))
                    .collect();
                if !changed.is_empty() {
                    own.push((plan, changed));
                }
            }
        }
        // Chains that went away were moved to `stale` when their Service was
        // planned again; a minimal sync deletes them at once.
        let deleted: Vec<ChainName> = self.stale.iter().copied().collect();
        let request = ChainRequest {
            all_ports: state.plans().map(|plan| &**plan),
            filter_chains: ordered(layout.filter_chains(ctx), &filter_chains),
            nat_fixed_chains: ordered(layout.nat_chains(), &nat_fixed_chains),
            nat_own_chains: own,
            nat_deleted: deleted.clone(),
        };
        let counts = self.writer.write_chains(layout, ctx, large_cluster, &request);
        (counts, deleted)
    }
}

/// The layout's fixed chains, which service ports add rules to.
fn fixed_chains(layout: Layout, ctx: &NodeContext) -> impl Iterator<Item = (Table, &'static str)> {
    let filter = layout
        .filter_chains(ctx)
        .iter()
        .map(|chain| (Table::Filter, *chain));
    filter.chain(layout.nat_chains().iter().map(|chain| (Table::Nat, *chain)))
}

fn ordered(order: &[&'static str], wanted: &BTreeSet<&'static str>) -> Vec<&'static str> {
    order
        .iter()
        .copied()
        .filter(|chain| wanted.contains(chain))
        .collect()
}

/// Renders rules into one text per chain.
struct PerChain<K, F> {
    texts: HashMap<K, Vec<u8>>,
    key: F,
}

impl<K: std::hash::Hash + Eq, F: Fn(&str) -> Option<K>> RuleSink for PerChain<K, F> {
    fn rule(&mut self, rule: &Rule<'_>) {
        if let Some(key) = (self.key)(rule.chain) {
            write_rule(self.texts.entry(key).or_default(), rule);
        }
    }
}

fn shared_texts<'p>(
    layout: Layout,
    plans: impl Iterator<Item = &'p ServicePortPlan>,
    ctx: &NodeContext,
) -> HashMap<(Table, &'static str), Vec<u8>> {
    fn fixed_key(
        layout: Layout,
        ctx: &NodeContext,
        table: Table,
    ) -> impl Fn(&str) -> Option<(Table, &'static str)> {
        let chains: Vec<(Table, &'static str)> =
            fixed_chains(layout, ctx).filter(|(t, _)| *t == table).collect();
        move |chain| chains.iter().find(|(_, c)| *c == chain).copied()
    }
    let mut filter = PerChain {
        texts: HashMap::new(),
        key: fixed_key(layout, ctx, Table::Filter),
    };
    let mut nat = PerChain {
        texts: HashMap::new(),
        key: fixed_key(layout, ctx, Table::Nat),
    };
    for plan in plans {
        layout.emit_filter(plan, &mut filter);
        layout.emit_nat(plan, ctx, false, false, &mut nat);
    }
    filter.texts.extend(nat.texts);
    filter.texts
}

fn own_texts<'p>(
    layout: Layout,
    plans: impl Iterator<Item = &'p ServicePortPlan>,
    ctx: &NodeContext,
    large_cluster: bool,
) -> HashMap<ChainName, Vec<u8>> {
    let mut sink = PerChain {
        texts: HashMap::new(),
        key: |c: &str| ChainName::new(c).filter(|_| layout.owns_service_chain(c)),
    };
    for plan in plans {
        // Declared chains exist even without rules.
        for chain in layout.own_chains(plan) {
            sink.texts.entry(chain).or_default();
        }
        layout.emit_nat(plan, ctx, large_cluster, true, &mut sink);
    }
    sink.texts
}
