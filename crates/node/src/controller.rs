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
use chainsmith_k8s::KUBE_PROXY_MIN_SYNC_PERIOD_MS;
use chainsmith_model::{InterfaceAddress, IpFamily, NodeObject, ObjectKey};
use chainsmith_naming::ChainName;
use chainsmith_sync::{SyncEngine, SyncKind};
use chainsmith_tracer::{DriftKind, Ruleset, drift};
use tokio::sync::watch;

use crate::conntrack::{self, UdpFrontends};
use crate::health::{ProxyHealth, ServiceHealth};
use crate::inbox::{ADAPTIVE_FACTOR, Changes, Inbox, LastSync, MinInterval, Pacing};
use crate::metrics::{FinishedSync, Metrics};
use crate::settings::{HostFacts, Settings, node_config};

/// How long kube-proxy waits for the nat and filter canaries to vanish too
/// once the mangle one is gone (a flush in progress), polling every 100 ms.
const CANARY_SETTLE: Duration = Duration::from_secs(5);
const CANARY_POLL: Duration = Duration::from_millis(100);

/// The nfacct counters kube-proxy's rules may name.
pub const NFACCT_COUNTERS: [&str; 2] = ["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"];

/// One IP family's proxier: its engine, its tools, what it found at start.
pub struct FamilyProxier {
    /// The family.
    pub family: IpFamily,
    /// Remembers the desired state and writes payloads.
    pub engine: SyncEngine,
    /// Runs iptables for this family.
    pub applier: Applier,
    /// Host capabilities of this family.
    pub facts: HostFacts,
    /// UDP Services at the last successful sync (conntrack cleanup runs when
    /// they change).
    udp: Option<UdpFrontends>,
    /// The canary vanished: the next full sync first reports how the kernel's
    /// rules differ from what it is about to write.
    audit_next_full: bool,
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
            engine,
            applier,
            facts,
            udp: None,
            audit_next_full: false,
        }
    }
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
                self.read_nfacct();
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
        if let Some(node) = changes.node {
            let eligible = node
                .as_ref()
                .is_some_and(|n| !n.deleting && !n.to_be_deleted_by_autoscaler);
            self.health.set_node_eligible(eligible);
            self.node = node;
            self.reconfigure();
        }
        let single_family = self.families.len() == 1;
        for proxier in &mut self.families {
            for (key, service) in &changes.services {
                proxier.engine.set_service(key, service.as_ref());
            }
            for (key, slice) in &changes.slices {
                proxier.engine.set_endpoint_slice(key, slice.as_ref());
            }
            // A port listed twice: both families see it, one warning is enough.
            let diagnostics = proxier.engine.take_diagnostics();
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
                proxier.facts,
            );
            proxier.engine.set_config(config);
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

    /// Syncs one family; returns whether its payload was applied.
    fn sync_family(&mut self, index: usize, now_ms: u64) -> bool {
        let proxier = &mut self.families[index];
        let family = proxier.family;
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

    /// kube-proxy's canary check: the mangle canary gone means someone
    /// flushed the tables; once the nat and filter ones are gone too (or 5 s
    /// passed), the next sync is full and recreates everything.
    fn check_canaries(&mut self) {
        for proxier in &mut self.families {
            let family = proxier.family.as_str();
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
            self.metrics.drift_detected(proxier.family);
            proxier.engine.force_full_sync();
            proxier.audit_next_full = true;
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
        let frontends = UdpFrontends::of(proxier.engine.plans().map(|plan| &**plan));
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
            for plan in proxier.engine.plans() {
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
}
