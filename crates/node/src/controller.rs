//! The sync loop: a thread of its own that takes what the watchers recorded,
//! feeds one sync engine per IP family and applies their payloads. Running
//! iptables-restore here, off the async runtime, is what keeps the watchers
//! and the HTTP endpoints responsive while a large restore takes seconds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chainsmith_applier::{Applier, Runner};
use chainsmith_iptables::BuiltinJump;
use chainsmith_k8s::{KUBE_PROXY_MIN_SYNC_PERIOD_MS, ProxyMode};
use chainsmith_model::{
    Diagnostic, EndpointSlice, InterfaceAddress, IpFamily, NodeConfig, NodeObject, ObjectKey, Service,
};
use chainsmith_naming::ChainName;
use chainsmith_nft_netlink::{NetlinkApplier, NetlinkError};
use chainsmith_nftables::{DriftKind as NftDriftKind, Family, TABLE_NAME, Table, Transaction, read_listing};
use chainsmith_planner::ServicePortPlan;
use chainsmith_sync::{NftSyncEngine, SyncEngine, SyncKind};
use chainsmith_tracer::{DriftKind, Ruleset, drift};
use tokio::sync::watch;

use crate::conntrack::{self, UdpFrontends};
use crate::health::{ProxyHealth, ServiceHealth};
use crate::inbox::{ADAPTIVE_FACTOR, Changes, Inbox, LastSync, MinInterval, Pacing};
use crate::metrics::{FinishedSync, Metrics, NftFinishedSync};
use crate::settings::{HostFacts, ServiceCidrs, Settings, node_config};

/// How long kube-proxy waits for the nat and filter canaries to vanish too
/// once the mangle one is gone (a flush in progress), polling every 100 ms.
const CANARY_SETTLE: Duration = Duration::from_secs(5);
const CANARY_POLL: Duration = Duration::from_millis(100);

/// The nfacct counters kube-proxy's rules may name.
pub const NFACCT_COUNTERS: [&str; 2] = ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"];

/// One IP family's proxier: its mode's engine and applier ([`Rules`]), what
/// it found at start.
pub struct FamilyProxier {
    /// The family.
    pub family: IpFamily,
    /// How this family's rules are written and applied.
    pub rules: Rules,
    /// Host capabilities of this family.
    pub facts: HostFacts,
    /// UDP Services at the last successful sync (conntrack cleanup runs when
    /// they change).
    udp: Option<UdpFrontends>,
}

/// The mode-specific half of a family's proxier: everything else (pacing,
/// health, conntrack, Service health servers, metrics of the changes) is
/// shared by both modes.
pub enum Rules {
    /// kube-proxy's iptables mode: payloads piped to iptables-restore.
    Iptables(Box<IptablesRules>),
    /// kube-proxy's nftables mode: transactions sent over netlink.
    Nftables(Box<NftRules>),
}

/// iptables mode of one family.
pub struct IptablesRules {
    /// Remembers the desired state and writes payloads.
    pub engine: SyncEngine,
    /// Runs iptables for this family.
    pub applier: Applier,
    /// The canary vanished: the next full sync first reports how the kernel's
    /// rules differ from what it is about to write.
    audit_next_full: bool,
}

/// nftables mode of one family: table `kube-proxy` of family `ip` or `ip6`.
pub struct NftRules {
    /// Remembers the desired state and writes transactions.
    pub engine: NftSyncEngine,
    /// The netlink socket, opened in the node's namespace at start.
    pub netlink: NetlinkApplier,
    /// The kernel has no `kube-proxy` table (as last read): the next full
    /// sync goes in pieces.
    table_absent: bool,
}

impl FamilyProxier {
    /// A proxier whose first sync is full and removes the stale chains found
    /// in the kernel now (after a restart).
    pub fn new(
        family: IpFamily,
        mut engine: SyncEngine,
        applier: Applier,
        facts: HostFacts,
    ) -> FamilyProxier {
        match applier.existing_chains("nat") {
            Ok(chains) => engine.set_existing_nat_chains(chains.iter().filter_map(|c| ChainName::new(c))),
            Err(error) => {
                tracing::warn!(family = family.as_str(), %error, "could not list existing nat chains")
            }
        }
        FamilyProxier {
            family,
            rules: Rules::Iptables(Box::new(IptablesRules {
                engine,
                applier,
                audit_next_full: false,
            })),
            facts,
            udp: None,
        }
    }

    /// An nftables-mode proxier. The kernel's table is read once now (`nft
    /// list table` through `runner`), so that the first full sync keeps what
    /// is still wanted and removes stale chains, as upstream after a restart;
    /// unlike upstream it also keeps every chain that already holds what it
    /// would write, not only endpoint chains.
    pub fn nftables(
        family: IpFamily,
        mut engine: NftSyncEngine,
        mut netlink: NetlinkApplier,
        runner: &dyn Runner,
    ) -> FamilyProxier {
        // A restart over a large table sends only what changed.
        engine.keep_unchanged_chains_at_start();
        // The generation before the table is read: the first periodic check
        // lists the table again only if someone committed after this.
        if let Err(error) = netlink.others_committed() {
            tracing::warn!(family = family.as_str(), %error, "could not read the ruleset generation");
        }
        let table_absent = match list_table(runner, nft_family(family)) {
            Ok(table) => {
                if table.exists() {
                    tracing::info!(
                        family = family.as_str(),
                        chains = table.chain_names().count(),
                        "found an existing kube-proxy table; the first sync keeps what is still wanted"
                    );
                }
                engine.set_existing(&table);
                !table.exists()
            }
            Err(error) => {
                tracing::warn!(family = family.as_str(), %error, "could not read the existing kube-proxy table; stale chains of an earlier proxier stay");
                false
            }
        };
        FamilyProxier {
            family,
            rules: Rules::Nftables(Box::new(NftRules {
                engine,
                netlink,
                table_absent,
            })),
            facts: HostFacts::default(),
            udp: None,
        }
    }

    fn set_service(&mut self, key: &ObjectKey, service: Option<&Service>) {
        match &mut self.rules {
            Rules::Iptables(r) => r.engine.set_service(key, service),
            Rules::Nftables(r) => r.engine.set_service(key, service),
        };
    }

    fn set_endpoint_slice(&mut self, key: &ObjectKey, slice: Option<&EndpointSlice>) {
        match &mut self.rules {
            Rules::Iptables(r) => r.engine.set_endpoint_slice(key, slice),
            Rules::Nftables(r) => r.engine.set_endpoint_slice(key, slice),
        };
    }

    fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        match &mut self.rules {
            Rules::Iptables(r) => r.engine.take_diagnostics(),
            Rules::Nftables(r) => r.engine.take_diagnostics(),
        }
    }

    fn set_config(&mut self, config: NodeConfig) {
        match &mut self.rules {
            Rules::Iptables(r) => r.engine.set_config(config),
            Rules::Nftables(r) => r.engine.set_config(config),
        }
    }

    /// Every programmed Service port's plan.
    pub fn plans(&self) -> Box<dyn Iterator<Item = &Arc<ServicePortPlan>> + '_> {
        match &self.rules {
            Rules::Iptables(r) => Box::new(r.engine.plans()),
            Rules::Nftables(r) => Box::new(r.engine.state().plans()),
        }
    }
}

impl NftRules {
    /// Sends a sync's main transaction, in pieces into a kernel without the
    /// table.
    fn send_main(&mut self, main: &Transaction) -> Result<usize, NetlinkError> {
        let sent = self.netlink.apply_main(main, self.table_absent);
        // Even a refused piece leaves the ones before it: the table exists.
        self.table_absent = false;
        Ok(sent?.0)
    }
}

/// The nftables family of an IP family.
pub fn nft_family(family: IpFamily) -> Family {
    match family {
        IpFamily::V4 => Family::Ip,
        IpFamily::V6 => Family::Ip6,
    }
}

/// The kernel's `kube-proxy` table of `family` (`nft list table`, read with
/// `read_listing`); a table that does not exist is an empty [`Table`].
pub fn list_table(runner: &dyn Runner, family: Family) -> Result<Table, String> {
    let output = runner
        .run("nft", &["list", "table", family.as_str(), TABLE_NAME], None)
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if !output.success() {
        if output.stderr.contains("No such file or directory") {
            return Ok(Table::new(family));
        }
        return Err(format!(
            "nft list table {family} {TABLE_NAME} failed: {}",
            output.stderr.trim()
        ));
    }
    let listing = read_listing(&output.stdout).map_err(|e| format!("cannot read nft's listing: {e}"))?;
    Ok(listing
        .table(family)
        .cloned()
        .unwrap_or_else(|| Table::new(family)))
}

/// Everything the sync loop owns.
pub struct SyncLoop {
    /// The settings.
    pub settings: Arc<Settings>,
    /// This node's name.
    pub node_name: String,
    /// One proxier per family, the primary first.
    pub families: Vec<FamilyProxier>,
    /// Where the watchers put changes.
    pub inbox: Arc<Inbox>,
    /// Where the syncs are reported.
    pub metrics: Arc<Metrics>,
    /// `/healthz` state.
    pub health: Arc<ProxyHealth>,
    /// The wanted service health servers, published after every sync.
    pub service_health: watch::Sender<BTreeMap<u16, ServiceHealth>>,
    /// Runs `conntrack` and `nfacct`.
    pub runner: Box<dyn Runner>,
    /// The node's interface addresses, refreshed every `syncPeriod`.
    pub interfaces: Vec<InterfaceAddress>,
    /// The Node object, once seen.
    pub node: Option<NodeObject>,
    /// The ServiceCIDR objects seen (nftables mode).
    pub service_cidrs: ServiceCidrs,
    /// When the proxy started: older trigger times are not its latency.
    pub started: SystemTime,
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl SyncLoop {
    /// Syncs until the inbox shuts down.
    pub fn run(mut self) {
        let pacing = self.pacing();
        let clock = Instant::now();
        let mut last: Option<LastSync> = None;
        while let Some(wakeup) = self.inbox.next(pacing, last) {
            let first = last.is_none();
            let start = Instant::now();
            if wakeup.periodic && !first {
                self.refresh_interfaces();
                self.check_canaries();
                self.check_tables();
                if self.settings.proxy.mode == ProxyMode::Iptables {
                    self.read_nfacct();
                }
            }
            let changed = !wakeup.changes.is_empty();
            let trigger_times = self.absorb(wakeup.changes);
            self.metrics.changes_synced();
            let now_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            let mut failed = false;
            for index in 0..self.families.len() {
                let applied = self.sync_family(index, now_ms);
                failed |= !applied;
                let family = self.families[index].family;
                if applied {
                    let now = SystemTime::now();
                    // As upstream: a slice changed before this proxy started
                    // (the initial list) would report the downtime, not the
                    // programming latency.
                    for trigger in trigger_times.iter().filter(|t| **t >= self.started) {
                        let seconds = now.duration_since(*trigger).unwrap_or_default().as_secs_f64();
                        self.metrics.network_programming(family, seconds);
                    }
                    if changed {
                        self.clean_conntrack(index);
                    }
                }
            }
            self.publish_service_health();
            let sync = LastSync {
                start,
                duration: start.elapsed(),
                failed,
            };
            self.metrics
                .min_interval(pacing.interval_after(sync).as_secs_f64());
            last = Some(sync);
        }
        tracing::info!("sync loop stopped; rules stay in place");
    }

    /// `minSyncPeriod` as set, or adaptive up to kube-proxy's default.
    fn pacing(&self) -> Pacing {
        let proxy = &self.settings.proxy;
        let min_interval = match proxy.min_sync_period_ms {
            Some(ms) => {
                tracing::info!(
                    min_sync_period_ms = ms,
                    "syncs paced by the configured minSyncPeriod"
                );
                MinInterval::Fixed(Duration::from_millis(ms))
            }
            None => {
                tracing::info!(
                    factor = ADAPTIVE_FACTOR,
                    ceiling_ms = KUBE_PROXY_MIN_SYNC_PERIOD_MS,
                    "minSyncPeriod not set: syncs paced by their own cost (the factor times the last sync's duration, at most the ceiling)"
                );
                MinInterval::Adaptive {
                    ceiling: Duration::from_millis(KUBE_PROXY_MIN_SYNC_PERIOD_MS),
                }
            }
        };
        Pacing {
            min_interval,
            max_interval: Duration::from_millis(proxy.sync_period_ms),
        }
    }

    /// Feeds the changes to every engine; returns the slices' trigger times.
    fn absorb(&mut self, changes: Changes) -> Vec<SystemTime> {
        let mut reconfigure = false;
        if let Some(node) = changes.node {
            let eligible = node
                .as_ref()
                .is_some_and(|n| !n.deleting && !n.to_be_deleted_by_autoscaler);
            self.health.set_node_eligible(eligible);
            self.node = node;
            reconfigure = true;
        }
        if self.service_cidrs.update(changes.service_cidrs) {
            let union: Vec<String> = self
                .service_cidrs
                .union()
                .iter()
                .map(ToString::to_string)
                .collect();
            tracing::info!(
                service_cidrs = union.join(","),
                "Service CIDRs changed; the next sync is full"
            );
            reconfigure = true;
        }
        if reconfigure {
            self.reconfigure();
        }
        let single_family = self.families.len() == 1;
        for proxier in &mut self.families {
            for (key, service) in &changes.services {
                proxier.set_service(key, service.as_ref());
            }
            for (key, slice) in &changes.slices {
                proxier.set_endpoint_slice(key, slice.as_ref());
            }
            // A port listed twice: both families see it, one warning is enough.
            let diagnostics = proxier.take_diagnostics();
            if proxier.family == IpFamily::V4 || single_family {
                for diagnostic in diagnostics {
                    tracing::warn!(%diagnostic, "object partly ignored");
                }
            }
        }
        changes.trigger_times
    }

    /// Derives each family's node settings again (the engines re-plan only
    /// when they differ).
    fn reconfigure(&mut self) {
        for proxier in &mut self.families {
            let config = node_config(
                &self.settings,
                proxier.family,
                &self.node_name,
                self.node.as_ref(),
                &self.interfaces,
                self.service_cidrs.union(),
                proxier.facts,
            );
            proxier.set_config(config);
        }
    }

    fn refresh_interfaces(&mut self) {
        match crate::host::interface_addresses() {
            Ok(interfaces) if interfaces != self.interfaces => {
                self.interfaces = interfaces;
                self.reconfigure();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not read interface addresses"),
        }
    }

    /// Syncs one family in its mode; returns whether its rules were applied.
    fn sync_family(&mut self, index: usize, now_ms: u64) -> bool {
        match self.families[index].rules {
            Rules::Iptables(_) => self.sync_iptables(index, now_ms),
            Rules::Nftables(_) => self.sync_nftables(index, now_ms),
        }
    }

    /// Syncs one family in iptables mode; returns whether its payload was applied.
    fn sync_iptables(&mut self, index: usize, now_ms: u64) -> bool {
        let family = self.families[index].family;
        let Rules::Iptables(proxier) = &mut self.families[index].rules else {
            return false;
        };
        let jumps = proxier.engine.layout().builtin_jumps();
        let started = Instant::now();
        let outcome = proxier.engine.sync(now_ms, false);
        let (kind, counts, bytes) = (outcome.kind, outcome.counts, outcome.payload.len());
        if kind == SyncKind::Full && std::mem::take(&mut proxier.audit_next_full) {
            report_drift(&proxier.applier, family, jumps, outcome.payload);
        }
        let result = match kind {
            // A full sync also restores what an outside flush may have removed.
            SyncKind::Full => proxier
                .applier
                .ensure_canaries()
                .and_then(|()| proxier.applier.ensure_jumps(jumps))
                .and_then(|_| proxier.applier.apply_full(outcome.payload)),
            SyncKind::Partial => proxier.applier.apply(outcome.payload),
        };
        proxier.engine.commit(result.is_ok());
        if kind == SyncKind::Full {
            // Partial syncs need a fraction of a full sync's buffer; an
            // hourly reallocation costs less than holding it.
            proxier.engine.release_payload_buffer();
        }
        let seconds = started.elapsed().as_secs_f64();
        let now = SystemTime::now();
        self.metrics.sync_done(
            family,
            &FinishedSync {
                kind,
                seconds,
                counts,
                payload_bytes: bytes,
                applied: result.is_ok(),
                now_unix: unix_seconds(now),
            },
        );
        let kind = match kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        match result {
            Ok(report) => {
                self.health.updated(family, now);
                tracing::info!(
                    family = family.as_str(),
                    kind,
                    duration_ms = seconds * 1000.0,
                    payload_bytes = bytes,
                    restores = report.restores,
                    rules_written = counts.filter_last + counts.nat_last,
                    chains_deleted = counts.nat_deleted_chains,
                    services_changed = counts.changed_services,
                    service_ports = counts.service_ports,
                    endpoints = counts.endpoints,
                    "synced"
                );
                true
            }
            Err(error) => {
                tracing::error!(
                    family = family.as_str(),
                    kind,
                    duration_ms = seconds * 1000.0,
                    payload_bytes = bytes,
                    %error,
                    "sync failed; the previous rules stay and the next sync is full"
                );
                false
            }
        }
    }

    /// Syncs one family in nftables mode: the cleanup transaction (stale
    /// chains due for deletion) if any, then the main one; returns whether
    /// the main transaction was applied.
    fn sync_nftables(&mut self, index: usize, now_ms: u64) -> bool {
        let family = self.families[index].family;
        let Rules::Nftables(proxier) = &mut self.families[index].rules else {
            return false;
        };
        let started = Instant::now();
        let outcome = proxier.engine.sync(now_ms, false);
        let (kind, counts) = (outcome.kind, outcome.counts);
        let mut bytes = 0;
        let cleanup_applied = match &outcome.cleanup {
            None => true,
            Some(cleanup) => match proxier.netlink.apply(cleanup) {
                Ok(report) => {
                    bytes += report.bytes;
                    true
                }
                Err(error) => {
                    tracing::warn!(
                        family = family.as_str(),
                        chains = cleanup.len(),
                        %error,
                        "could not delete stale chains; the next sync is full"
                    );
                    false
                }
            },
        };
        // Upstream runs even an empty transaction; over netlink it would be
        // an empty batch, which changes nothing.
        let result = if outcome.main.is_empty() {
            Ok(0)
        } else {
            proxier.send_main(&outcome.main)
        };
        proxier.engine.commit(cleanup_applied, result.is_ok());
        if let Ok(main_bytes) = result {
            bytes += main_bytes;
        }
        let seconds = started.elapsed().as_secs_f64();
        let now = SystemTime::now();
        self.metrics.nft_sync_done(
            family,
            &NftFinishedSync {
                kind,
                seconds,
                counts,
                batch_bytes: bytes,
                applied: result.is_ok(),
                cleanup_failed: !cleanup_applied,
                now_unix: unix_seconds(now),
            },
        );
        let kind = match kind {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
        };
        match result {
            Ok(_) => {
                self.health.updated(family, now);
                tracing::info!(
                    family = family.as_str(),
                    kind,
                    duration_ms = seconds * 1000.0,
                    batch_bytes = bytes,
                    operations = outcome.main.len(),
                    chains_written = counts.chains_written,
                    element_changes = counts.element_changes,
                    chains_flushed_stale = counts.stale_flushed,
                    chains_deleted = counts.stale_deleted,
                    services_changed = counts.changed_services,
                    service_ports = counts.service_ports,
                    "synced"
                );
                true
            }
            Err(error) => {
                tracing::error!(
                    family = family.as_str(),
                    kind,
                    duration_ms = seconds * 1000.0,
                    operations = outcome.main.len(),
                    %error,
                    "sync failed; the previous rules stay and the next sync is full"
                );
                false
            }
        }
    }

    /// kube-proxy's canary check: the mangle canary gone means someone
    /// flushed the tables; once the nat and filter ones are gone too (or 5 s
    /// passed), the next sync is full and recreates everything.
    fn check_canaries(&mut self) {
        for family_proxier in &mut self.families {
            let ip_family = family_proxier.family;
            let Rules::Iptables(proxier) = &mut family_proxier.rules else {
                continue;
            };
            let family = ip_family.as_str();
            match proxier.applier.canary_present("mangle") {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(family, %error, "could not check the canary");
                    continue;
                }
            }
            let deadline = Instant::now() + CANARY_SETTLE;
            while Instant::now() < deadline && canaries_left(&proxier.applier) {
                std::thread::sleep(CANARY_POLL);
            }
            tracing::warn!(
                family,
                "KUBE-PROXY-CANARY is gone: the tables were flushed from outside; full resync"
            );
            self.metrics.drift_detected(ip_family);
            proxier.engine.force_full_sync();
            proxier.audit_next_full = true;
        }
    }

    /// nftables mode's check every `syncPeriod` (upstream has none: a deleted
    /// table waits for the hourly full sync there). One netlink round trip
    /// tells whether anyone else committed nf_tables changes in this
    /// namespace since the last check; only then is the kernel's table listed
    /// and compared with what the engine wrote. On any difference the drift
    /// is logged, the engine learns what the kernel holds and the next sync
    /// is full.
    fn check_tables(&mut self) {
        for proxier in &mut self.families {
            let ip_family = proxier.family;
            let Rules::Nftables(rules) = &mut proxier.rules else {
                continue;
            };
            let family = ip_family.as_str();
            match rules.netlink.others_committed() {
                Ok(false) => continue,
                Ok(true) => {}
                Err(error) => {
                    tracing::warn!(family, %error, "could not read the ruleset generation; listing the table")
                }
            }
            let actual = match list_table(&*self.runner, nft_family(ip_family)) {
                Ok(table) => table,
                Err(error) => {
                    tracing::warn!(family, %error, "could not check the kube-proxy table");
                    continue;
                }
            };
            rules.table_absent = !actual.exists();
            if rules.engine.full_sync_pending() {
                // The next sync rewrites everything anyway; it only needs to
                // know what the kernel holds now.
                rules.engine.set_existing(&actual);
                continue;
            }
            let expected = match rules.engine.expected_table() {
                Ok(expected) => expected,
                Err(error) => {
                    tracing::warn!(family, %error, "could not build the expected kube-proxy table; full resync");
                    rules.engine.set_existing(&actual);
                    rules.engine.force_full_sync();
                    continue;
                }
            };
            let found = chainsmith_nftables::drift(&expected, &actual);
            drop(expected);
            if found.is_empty() {
                continue;
            }
            let count = |kind: NftDriftKind| found.objects.iter().filter(|o| o.drift == kind).count();
            let examples: Vec<String> = found
                .objects
                .iter()
                .take(5)
                .map(|o| format!("{} {}", o.kind, o.name))
                .collect();
            let table = match found.table {
                Some(NftDriftKind::Missing) => "missing",
                Some(_) => "unexpected",
                None => "present",
            };
            tracing::warn!(
                family,
                table,
                missing = count(NftDriftKind::Missing),
                extra = count(NftDriftKind::Extra),
                changed = count(NftDriftKind::Changed),
                examples = examples.join(", "),
                "the kube-proxy table drifted from what was applied; full resync"
            );
            self.metrics.drift_detected(ip_family);
            rules.engine.set_existing(&actual);
            rules.engine.force_full_sync();
        }
    }

    fn read_nfacct(&self) {
        let read = |name: &str| -> Option<u64> {
            let output = self
                .runner
                .run("nfacct", &["get", name], None)
                .ok()
                .filter(|o| o.success())?;
            nfacct_packets(&output.stdout)
        };
        self.metrics
            .nfacct(read(NFACCT_COUNTERS[0]), read(NFACCT_COUNTERS[1]));
    }

    fn clean_conntrack(&mut self, index: usize) {
        let proxier = &mut self.families[index];
        let frontends = UdpFrontends::of(proxier.plans().map(|plan| &**plan));
        if proxier.udp.as_ref() == Some(&frontends) {
            return;
        }
        let local: BTreeSet<IpAddr> = self.interfaces.iter().map(|a| a.address).collect();
        match conntrack::clean(&*self.runner, proxier.family, &frontends, &local) {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(
                    family = proxier.family.as_str(),
                    deleted,
                    "deleted stale UDP conntrack entries"
                );
                self.metrics.conntrack_deleted(proxier.family, deleted);
            }
            Err(error) => {
                tracing::warn!(family = proxier.family.as_str(), %error, "conntrack cleanup failed (is conntrack installed?)");
            }
        }
        proxier.udp = Some(frontends);
    }

    /// The local ready endpoints of every Service with a health check node
    /// port, counted as distinct IPs across ports and families.
    fn publish_service_health(&self) {
        let mut local: BTreeMap<u16, (ObjectKey, HashSet<IpAddr>)> = BTreeMap::new();
        for proxier in &self.families {
            for plan in proxier.plans() {
                let info = plan.info();
                if info.health_check_node_port == 0 {
                    continue;
                }
                let (_, ips) = local
                    .entry(info.health_check_node_port)
                    .or_insert_with(|| (info.service().clone(), HashSet::new()));
                ips.extend(
                    plan.endpoints()
                        .iter()
                        .filter(|ep| ep.local && ep.ready)
                        .map(|ep| ep.ip),
                );
            }
        }
        let wanted = local
            .into_iter()
            .map(|(port, (service, ips))| {
                (
                    port,
                    ServiceHealth {
                        service,
                        local_endpoints: ips.len(),
                    },
                )
            })
            .collect();
        self.service_health.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
    }
}

/// Logs how the kernel's filter and nat rules differ from the full payload
/// about to be applied (`chainsmith diff --live`'s comparison). Runs only after
/// the canary vanished, never on the hot path.
fn report_drift(applier: &Applier, ip_family: IpFamily, jumps: &[BuiltinJump], payload: &[u8]) {
    let family = ip_family.as_str();
    let actual = applier
        .save_table("filter")
        .and_then(|filter| Ok(filter + &applier.save_table("nat")?))
        .map_err(|e| e.to_string())
        .and_then(|dump| Ruleset::from_dump(&dump).map_err(|e| e.to_string()));
    let desired = std::str::from_utf8(payload)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            let mut desired = Ruleset::new();
            desired.apply(text).map_err(|e| e.to_string())?;
            Ok(desired.with_builtin_jumps(ip_family, jumps))
        });
    match (desired, actual) {
        (Ok(desired), Ok(actual)) => {
            let found = drift(&desired, &actual);
            let count = |kind: DriftKind| found.chains.iter().filter(|c| c.kind == kind).count();
            let examples: Vec<String> = found
                .chains
                .iter()
                .take(5)
                .map(|c| format!("{} {}", c.table, c.chain))
                .collect();
            tracing::warn!(
                family,
                missing_chains = count(DriftKind::MissingChain),
                extra_chains = count(DriftKind::ExtraChain),
                changed_chains = count(DriftKind::ChangedRules),
                examples = examples.join(", "),
                "rules drifted from what was applied; the full sync restores them"
            );
        }
        (Err(error), _) | (_, Err(error)) => tracing::warn!(family, %error, "could not compare the rules"),
    }
}

fn canaries_left(applier: &Applier) -> bool {
    ["nat", "filter"]
        .iter()
        .any(|table| applier.canary_present(table).unwrap_or(false))
}

/// The packet count of `nfacct get` output
/// (`{ pkts = 00000000000000000012, bytes = ... } = name;`).
fn nfacct_packets(text: &str) -> Option<u64> {
    let rest = text.split("pkts =").nth(1)?;
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nfacct_packet_counts() {
        let text = "{ pkts = 00000000000000000012, bytes = 00000000000000000840 } = ct_state_invalid_dropped_pkts;\n";
        assert_eq!(nfacct_packets(text), Some(12));
        assert_eq!(nfacct_packets("nfacct: No such file or directory"), None);
    }

    /// Answers `nft` with a fixed exit code and output.
    struct Nft {
        code: i32,
        stdout: &'static str,
        stderr: &'static str,
    }

    impl Runner for Nft {
        fn run(
            &self,
            program: &str,
            args: &[&str],
            _stdin: Option<&[u8]>,
        ) -> std::io::Result<chainsmith_applier::CommandOutput> {
            assert_eq!(
                (program, args),
                ("nft", &["list", "table", "ip", "kube-proxy"][..])
            );
            Ok(chainsmith_applier::CommandOutput {
                code: Some(self.code),
                stdout: self.stdout.into(),
                stderr: self.stderr.into(),
            })
        }
    }

    #[test]
    fn a_missing_table_lists_as_empty_and_a_listing_is_read() {
        let missing = Nft {
            code: 1,
            stdout: "",
            stderr: "Error: No such file or directory\nlist table ip kube-proxy\n",
        };
        let table = list_table(&missing, Family::Ip).expect("missing is an answer");
        assert!(!table.exists());
        let listed = Nft {
            code: 0,
            stdout: "table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n\tchain service-X-ns/svc/tcp/p {\n\t}\n}\n",
            stderr: "",
        };
        let table = list_table(&listed, Family::Ip).expect("listing");
        assert!(table.exists());
        assert_eq!(
            table.chain_names().collect::<Vec<_>>(),
            ["service-X-ns/svc/tcp/p"]
        );
        let refused = Nft {
            code: 1,
            stdout: "",
            stderr: "Error: Operation not permitted\n",
        };
        let error = list_table(&refused, Family::Ip).expect_err("not permitted");
        assert!(error.contains("Operation not permitted"), "{error}");
    }
}
