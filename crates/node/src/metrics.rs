//! The node's Prometheus metrics: upstream kube-proxy's names, types and
//! labels (so existing dashboards keep working) plus chainsmith's own.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use chainsmith_k8s::ProxyMode;
use chainsmith_model::IpFamily;
use chainsmith_naming::ServiceChainKind;
use chainsmith_sync::{NftCounts, RuleCounts, SyncKind};

/// Upstream's sync-duration buckets: 1 ms doubling up to 16.384 s.
fn sync_buckets() -> Vec<f64> {
    (0..15).map(|k| 0.001 * f64::from(1u32 << k)).collect()
}

/// Upstream's network-programming buckets: 0.25, 0.5, 1..59 s, 60..115 s by
/// 5, 120..300 s by 30.
fn programming_buckets() -> Vec<f64> {
    let mut buckets = vec![0.25, 0.5];
    buckets.extend((1..60).map(f64::from));
    buckets.extend((60..120).step_by(5).map(f64::from));
    buckets.extend((120..=300).step_by(30).map(f64::from));
    buckets
}

/// chainsmith's finer buckets: 0.1 ms doubling up to about 52 s.
fn fine_buckets() -> Vec<f64> {
    (0..20).map(|k| 0.0001 * f64::from(1u32 << k)).collect()
}

/// Network programming latency around a one-second objective: 10 ms to
/// 5 min, tenths of a second up to 2 s (upstream's buckets jump from 1 s to
/// 2 s, where a p99 against a 1 s target lives).
fn fine_programming_buckets() -> Vec<f64> {
    let mut buckets = vec![0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25];
    buckets.extend((3..=20).map(|tenths| f64::from(tenths) / 10.0));
    buckets.extend([2.5, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]);
    buckets
}

/// Payload sizes: 256 B quadrupling up to 64 MiB.
fn payload_buckets() -> Vec<f64> {
    (0..10).map(|k| 256.0 * f64::from(1u32 << (2 * k))).collect()
}

/// What one sync did, for [`Metrics::sync_done`].
#[derive(Debug, Clone)]
pub struct FinishedSync {
    /// Full or partial.
    pub kind: SyncKind,
    /// From planning to the end of the restore.
    pub seconds: f64,
    /// The engine's rule counts.
    pub counts: RuleCounts,
    /// Bytes fed to iptables-restore.
    pub payload_bytes: usize,
    /// Whether the payload was applied.
    pub applied: bool,
    /// When it ended, in Unix seconds.
    pub now_unix: f64,
}

/// What one nftables-mode sync did, for [`Metrics::nft_sync_done`].
#[derive(Debug, Clone)]
pub struct NftFinishedSync {
    /// Full or partial.
    pub kind: SyncKind,
    /// From planning to the kernel's answer.
    pub seconds: f64,
    /// What the engine decided.
    pub counts: NftCounts,
    /// Bytes of the netlink batches sent and taken.
    pub batch_bytes: usize,
    /// Whether the main transaction was applied.
    pub applied: bool,
    /// Whether the stale-chain cleanup transaction was refused.
    pub cleanup_failed: bool,
    /// When it ended, in Unix seconds.
    pub now_unix: f64,
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    sync_duration: HistogramVec,
    sync_full_duration: HistogramVec,
    sync_partial_duration: HistogramVec,
    last_sync: prometheus::GaugeVec,
    last_queued: prometheus::GaugeVec,
    network_programming: HistogramVec,
    endpoint_changes_pending: IntGauge,
    endpoint_changes_total: IntCounter,
    service_changes_pending: IntGauge,
    service_changes_total: IntCounter,
    iptables_total: IntGaugeVec,
    iptables_last: IntGaugeVec,
    restore_failures: IntCounterVec,
    partial_restore_failures: IntCounterVec,
    no_local_endpoints: IntGaugeVec,
    nft_sync_failures: IntCounterVec,
    nft_cleanup_failures: IntCounterVec,
    ct_state_invalid_dropped: IntCounter,
    localhost_nodeports_accepted: IntCounter,
    healthz: IntCounterVec,
    livez: IntCounterVec,
    // chainsmith's own
    sync_seconds: HistogramVec,
    programming_seconds: HistogramVec,
    payload_bytes: HistogramVec,
    rules_by_chain_kind: IntGaugeVec,
    min_interval: prometheus::Gauge,
    service_ports: IntGaugeVec,
    endpoints: IntGaugeVec,
    drift: IntCounterVec,
    conntrack_deleted: IntCounterVec,
    watch_errors: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Registers a metric only when the mode exports it (an unregistered one
/// still counts, unseen).
fn register_if<C: Collector + Clone + 'static>(
    on: bool,
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    if on {
        registry.register(Box::new(collector.clone()))?;
    }
    Ok(collector)
}

impl Metrics {
    /// Creates and registers every metric of iptables mode, and the process
    /// collector.
    pub fn new() -> prometheus::Result<Metrics> {
        Metrics::for_mode(ProxyMode::Iptables)
    }

    /// Creates and registers the metrics kube-proxy exports in `mode` (its
    /// iptables rule counts, restore failures and nfacct counters only in
    /// iptables mode, its nftables failure counters only in nftables mode),
    /// chainsmith's own, and the process collector.
    pub fn for_mode(mode: ProxyMode) -> prometheus::Result<Metrics> {
        let iptables = mode == ProxyMode::Iptables;
        let nftables = mode == ProxyMode::Nftables;
        let registry = Registry::new();
        let r = &registry;
        let family = &["ip_family"];
        let histogram = |name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]| {
            register(
                r,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
            )
        };
        let metrics = Metrics {
            sync_duration: histogram(
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
                sync_buckets(),
                family,
            )?,
            sync_full_duration: histogram(
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for full resyncs",
                sync_buckets(),
                family,
            )?,
            sync_partial_duration: histogram(
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
                sync_buckets(),
                family,
            )?,
            last_sync: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                        "The last time proxy rules were successfully synced",
                    ),
                    family,
                )?,
            )?,
            last_queued: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                        "The last time a sync of proxy rules was queued",
                    ),
                    family,
                )?,
            )?,
            network_programming: histogram(
                "kubeproxy_network_programming_duration_seconds",
                "In Cluster Network Programming Latency in seconds",
                programming_buckets(),
                family,
            )?,
            endpoint_changes_pending: register(
                r,
                IntGauge::new(
                    "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                    "Pending proxy rules Endpoint changes",
                )?,
            )?,
            endpoint_changes_total: register(
                r,
                IntCounter::new(
                    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                    "Cumulative proxy rules Endpoint changes",
                )?,
            )?,
            service_changes_pending: register(
                r,
                IntGauge::new(
                    "kubeproxy_sync_proxy_rules_service_changes_pending",
                    "Pending proxy rules Service changes",
                )?,
            )?,
            service_changes_total: register(
                r,
                IntCounter::new(
                    "kubeproxy_sync_proxy_rules_service_changes_total",
                    "Cumulative proxy rules Service changes",
                )?,
            )?,
            iptables_total: register_if(
                iptables,
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_iptables_total",
                        "Total number of iptables rules owned by kube-proxy",
                    ),
                    &["table", "ip_family"],
                )?,
            )?,
            iptables_last: register_if(
                iptables,
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_iptables_last",
                        "Number of iptables rules written by kube-proxy in last sync",
                    ),
                    &["table", "ip_family"],
                )?,
            )?,
            restore_failures: register_if(
                iptables,
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                        "Cumulative proxy iptables restore failures",
                    ),
                    family,
                )?,
            )?,
            partial_restore_failures: register_if(
                iptables,
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
                        "Cumulative proxy iptables partial restore failures",
                    ),
                    family,
                )?,
            )?,
            no_local_endpoints: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                        "Number of services with a Local traffic policy and no endpoints",
                    ),
                    &["traffic_policy", "ip_family"],
                )?,
            )?,
            nft_sync_failures: register_if(
                nftables,
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                        "Cumulative proxy nftables sync failures",
                    ),
                    family,
                )?,
            )?,
            nft_cleanup_failures: register_if(
                nftables,
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
                        "Cumulative proxy nftables cleanup failures",
                    ),
                    family,
                )?,
            )?,
            ct_state_invalid_dropped: register_if(
                iptables,
                r,
                IntCounter::new(
                    "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
                    "packets dropped by iptables to work around conntrack problems",
                )?,
            )?,
            localhost_nodeports_accepted: register_if(
                iptables,
                r,
                IntCounter::new(
                    "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
                    "Number of packets accepted on nodeports of loopback interface",
                )?,
            )?,
            healthz: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_proxy_healthz_total",
                        "Cumulative proxy healthz HTTP status",
                    ),
                    &["code"],
                )?,
            )?,
            livez: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubeproxy_proxy_livez_total",
                        "Cumulative proxy livez HTTP status",
                    ),
                    &["code"],
                )?,
            )?,
            sync_seconds: histogram(
                "chainsmith_sync_duration_seconds",
                "Time of one sync (plan, payload, iptables-restore), finer buckets than kube-proxy's",
                fine_buckets(),
                &["ip_family", "kind"],
            )?,
            programming_seconds: histogram(
                "chainsmith_network_programming_duration_seconds",
                "From an EndpointSlice's last-change-trigger-time to its rules applied, finer buckets than kube-proxy's",
                fine_programming_buckets(),
                family,
            )?,
            payload_bytes: histogram(
                "chainsmith_sync_payload_bytes",
                "Size of the iptables-restore payload (nftables mode: of the netlink batches) of one sync",
                payload_buckets(),
                &["ip_family", "kind"],
            )?,
            min_interval: register(
                r,
                prometheus::Gauge::new(
                    "chainsmith_sync_min_interval_seconds",
                    "Least time from the last sync's start to the next one's: minSyncPeriod, or when unset twice the last sync's duration (at most 1 s)",
                )?,
            )?,
            rules_by_chain_kind: register_if(
                iptables,
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "chainsmith_rules",
                        "Rules in the desired nat table per kind of per-service chain (svc, svl, ext, fw, sep)",
                    ),
                    &["ip_family", "chain_kind"],
                )?,
            )?,
            service_ports: register(
                r,
                IntGaugeVec::new(
                    Opts::new("chainsmith_service_ports", "Service ports programmed"),
                    family,
                )?,
            )?,
            endpoints: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "chainsmith_endpoints",
                        "Endpoints over all programmed service ports",
                    ),
                    family,
                )?,
            )?,
            drift: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "chainsmith_drift_detected_total",
                        "Times the kernel's rules were found changed by someone else (iptables: canary gone; nftables: the table differs from what was applied)",
                    ),
                    family,
                )?,
            )?,
            conntrack_deleted: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "chainsmith_conntrack_entries_deleted_total",
                        "Stale UDP conntrack entries deleted",
                    ),
                    family,
                )?,
            )?,
            watch_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "chainsmith_watch_errors_total",
                        "Errors from the API server watches",
                    ),
                    &["resource"],
                )?,
            )?,
            registry,
        };
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// The duration histograms both modes share; returns the kind's label.
    fn observe_duration(&self, f: &str, kind: SyncKind, seconds: f64) -> &'static str {
        self.sync_duration.with_label_values(&[f]).observe(seconds);
        let (histogram, label) = match kind {
            SyncKind::Full => (&self.sync_full_duration, "full"),
            SyncKind::Partial => (&self.sync_partial_duration, "partial"),
        };
        histogram.with_label_values(&[f]).observe(seconds);
        self.sync_seconds.with_label_values(&[f, label]).observe(seconds);
        label
    }

    /// Records one finished sync.
    pub fn sync_done(&self, family: IpFamily, sync: &FinishedSync) {
        let FinishedSync {
            kind,
            seconds,
            ref counts,
            payload_bytes,
            applied,
            now_unix,
        } = *sync;
        let f = family.as_str();
        let kind_label = self.observe_duration(f, kind, seconds);
        self.payload_bytes
            .with_label_values(&[f, kind_label])
            .observe(payload_bytes as f64);
        if !applied {
            self.restore_failures.with_label_values(&[f]).inc();
            if kind == SyncKind::Partial {
                self.partial_restore_failures.with_label_values(&[f]).inc();
            }
            return;
        }
        let set = |gauge: &IntGaugeVec, labels: &[&str], value: usize| {
            gauge
                .with_label_values(labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.iptables_total, &["filter", f], counts.filter_total);
        set(&self.iptables_total, &["nat", f], counts.nat_total);
        set(&self.iptables_last, &["filter", f], counts.filter_last);
        set(&self.iptables_last, &["nat", f], counts.nat_last);
        set(
            &self.no_local_endpoints,
            &["internal", f],
            counts.no_local_internal,
        );
        set(
            &self.no_local_endpoints,
            &["external", f],
            counts.no_local_external,
        );
        for (kind, rules) in ServiceChainKind::ALL.iter().zip(counts.nat_by_kind) {
            set(&self.rules_by_chain_kind, &[f, kind.label()], rules);
        }
        set(&self.service_ports, &[f], counts.service_ports);
        set(&self.endpoints, &[f], counts.endpoints);
        self.last_sync.with_label_values(&[f]).set(now_unix);
    }

    /// Records one finished nftables-mode sync.
    pub fn nft_sync_done(&self, family: IpFamily, sync: &NftFinishedSync) {
        let NftFinishedSync {
            kind,
            seconds,
            ref counts,
            batch_bytes,
            applied,
            cleanup_failed,
            now_unix,
        } = *sync;
        let f = family.as_str();
        let kind_label = self.observe_duration(f, kind, seconds);
        if cleanup_failed {
            self.nft_cleanup_failures.with_label_values(&[f]).inc();
        }
        if !applied {
            self.nft_sync_failures.with_label_values(&[f]).inc();
            return;
        }
        self.payload_bytes
            .with_label_values(&[f, kind_label])
            .observe(batch_bytes as f64);
        let set = |gauge: &IntGaugeVec, labels: &[&str], value: usize| {
            gauge
                .with_label_values(labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(
            &self.no_local_endpoints,
            &["internal", f],
            counts.no_local_internal,
        );
        set(
            &self.no_local_endpoints,
            &["external", f],
            counts.no_local_external,
        );
        set(&self.service_ports, &[f], counts.service_ports);
        self.last_sync.with_label_values(&[f]).set(now_unix);
    }

    /// A sync was requested (something changed).
    pub fn queued(&self, family: IpFamily, now_unix: f64) {
        self.last_queued
            .with_label_values(&[family.as_str()])
            .set(now_unix);
    }

    /// A Service or EndpointSlice change arrived; `pending` counts those not
    /// yet synced.
    pub fn change(&self, endpoints: bool, pending: usize) {
        let pending = i64::try_from(pending).unwrap_or(i64::MAX);
        if endpoints {
            self.endpoint_changes_total.inc();
            self.endpoint_changes_pending.set(pending);
        } else {
            self.service_changes_total.inc();
            self.service_changes_pending.set(pending);
        }
    }

    /// Pending change counts after a sync took them.
    pub fn changes_synced(&self) {
        self.endpoint_changes_pending.set(0);
        self.service_changes_pending.set(0);
    }

    /// EndpointSlice trigger time to rules in the kernel.
    pub fn network_programming(&self, family: IpFamily, seconds: f64) {
        self.network_programming
            .with_label_values(&[family.as_str()])
            .observe(seconds);
        self.programming_seconds
            .with_label_values(&[family.as_str()])
            .observe(seconds);
    }

    /// How long the next sync waits at least after the last one started.
    pub fn min_interval(&self, seconds: f64) {
        self.min_interval.set(seconds);
    }

    /// The canary was gone: someone changed the tables.
    pub fn drift_detected(&self, family: IpFamily) {
        self.drift.with_label_values(&[family.as_str()]).inc();
    }

    /// Stale conntrack entries deleted.
    pub fn conntrack_deleted(&self, family: IpFamily, entries: usize) {
        self.conntrack_deleted
            .with_label_values(&[family.as_str()])
            .inc_by(entries as u64);
    }

    /// Creates each proxied family's failure and drift counters at 0: rate
    /// functions only see a counter's steps after its first sample, so a
    /// series born at 1 would never make `increase()` (and an alert) move.
    pub fn start_families(&self, families: &[IpFamily]) {
        for family in families {
            let label = [family.as_str()];
            for counter in [
                &self.restore_failures,
                &self.partial_restore_failures,
                &self.nft_sync_failures,
                &self.nft_cleanup_failures,
                &self.drift,
                &self.conntrack_deleted,
            ] {
                counter.with_label_values(&label);
            }
        }
    }

    /// A watch started: its error counter exists from 0 on (see
    /// [`Metrics::start_families`]).
    pub fn watch_started(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]);
    }

    /// A watch failed (it retries by itself).
    pub fn watch_error(&self, resource: &str) {
        self.watch_errors.with_label_values(&[resource]).inc();
    }

    /// nfacct counter readings (monotonic in the kernel): the counters follow.
    pub fn nfacct(&self, invalid_dropped: Option<u64>, localhost_accepted: Option<u64>) {
        let follow = |counter: &IntCounter, value: Option<u64>| {
            if let Some(value) = value {
                counter.inc_by(value.saturating_sub(counter.get()));
            }
        };
        follow(&self.ct_state_invalid_dropped, invalid_dropped);
        follow(&self.localhost_nodeports_accepted, localhost_accepted);
    }

    /// A /healthz or /livez answer.
    pub fn health_answer(&self, livez: bool, code: u16) {
        let counter = if livez { &self.livez } else { &self.healthz };
        counter.with_label_values(&[&code.to_string()]).inc();
    }

    /// The registry [`Metrics::encode`] reads, so tests can check dashboards
    /// and alerts against the names and labels actually exported.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_upstream() {
        let sync = sync_buckets();
        assert_eq!(sync.len(), 15);
        assert!((sync[14] - 16.384).abs() < 1e-9);
        let programming = programming_buckets();
        assert_eq!(programming[..3], [0.25, 0.5, 1.0]);
        assert!(programming.contains(&59.0) && programming.contains(&115.0) && programming.contains(&300.0));
        assert!(!programming.contains(&61.0));
    }

    #[test]
    fn programming_latency_is_in_upstream_and_fine_buckets() {
        let metrics = Metrics::new().expect("metrics");
        metrics.network_programming(IpFamily::V4, 0.93);
        let text = metrics.encode();
        for needle in [
            "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.5\"} 0",
            "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"1\"} 1",
            "chainsmith_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.9\"} 0",
            "chainsmith_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"1\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        let fine = fine_programming_buckets();
        assert!(fine.windows(2).all(|pair| pair[0] < pair[1]), "{fine:?}");
    }

    #[test]
    fn failure_counters_exist_at_zero_before_the_first_failure() {
        let metrics = Metrics::new().expect("metrics");
        metrics.start_families(&[IpFamily::V4, IpFamily::V6]);
        metrics.watch_started("services");
        let text = metrics.encode();
        for needle in [
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 0",
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv6\"} 0",
            "chainsmith_drift_detected_total{ip_family=\"IPv4\"} 0",
            "chainsmith_watch_errors_total{resource=\"services\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn nftables_mode_exports_its_own_failure_counters_and_no_iptables_ones() {
        let metrics = Metrics::for_mode(ProxyMode::Nftables).expect("metrics");
        metrics.start_families(&[IpFamily::V4]);
        let sync = NftFinishedSync {
            kind: SyncKind::Full,
            seconds: 0.004,
            counts: NftCounts {
                no_local_external: 2,
                service_ports: 3,
                ..NftCounts::default()
            },
            batch_bytes: 2048,
            applied: true,
            cleanup_failed: false,
            now_unix: 1_700_000_000.0,
        };
        metrics.nft_sync_done(IpFamily::V4, &sync);
        let failed = NftFinishedSync {
            kind: SyncKind::Partial,
            applied: false,
            cleanup_failed: true,
            ..sync
        };
        metrics.nft_sync_done(IpFamily::V4, &failed);
        let text = metrics.encode();
        for needle in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 2",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"} 2",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1700000000",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        for absent in [
            "kubeproxy_sync_proxy_rules_iptables",
            "kubeproxy_iptables_",
            "chainsmith_rules",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        let iptables = Metrics::new().expect("metrics").encode();
        assert!(!iptables.contains("_nftables_"), "{iptables}");
    }

    #[test]
    fn a_sync_shows_in_the_exposition_with_upstream_names() {
        let metrics = Metrics::new().expect("metrics");
        let counts = RuleCounts {
            filter_total: 4,
            nat_total: 22,
            nat_by_kind: [2, 0, 1, 0, 6],
            ..RuleCounts::default()
        };
        let full = FinishedSync {
            kind: SyncKind::Full,
            seconds: 0.012,
            counts,
            payload_bytes: 3540,
            applied: true,
            now_unix: 1_700_000_000.0,
        };
        metrics.sync_done(IpFamily::V4, &full);
        let failed = FinishedSync {
            kind: SyncKind::Partial,
            seconds: 0.002,
            payload_bytes: 900,
            applied: false,
            ..full
        };
        metrics.sync_done(IpFamily::V4, &failed);
        let text = metrics.encode();
        for needle in [
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 2",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv4\",table=\"nat\"} 22",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"} 1",
            "chainsmith_rules{chain_kind=\"sep\",ip_family=\"IPv4\"} 6",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        let histogram = metrics.sync_duration.with_label_values(&["IPv4"]);
        assert_eq!(histogram.get_sample_count(), 2);
    }
}
