//! The rule metrics of a sync, under upstream kube-proxy's metric names for
//! each mode.

use anyhow::Result;
use chainsmith_model::IpFamily;
use chainsmith_sync::{NftCounters, NftCounts, RuleCounts};
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn set(gauge: &IntGaugeVec, labels: &[&str], value: u64) {
    gauge
        .with_label_values(labels)
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

fn encode(registry: &Registry) -> Result<String> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out)?)
}

const NO_LOCAL_ENDPOINTS: (&str, &str) = (
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    "Number of services with a Local traffic policy and no endpoints",
);

/// Gauges describing the rules of the last sync.
pub struct RuleMetrics {
    registry: Registry,
    iptables_total: IntGaugeVec,
    iptables_last: IntGaugeVec,
    no_local_endpoints: IntGaugeVec,
    payload_bytes: IntGaugeVec,
}

impl RuleMetrics {
    pub fn new() -> Result<RuleMetrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| gauge(&registry, name, help, labels);
        Ok(RuleMetrics {
            iptables_total: gauge(
                "kubeproxy_sync_proxy_rules_iptables_total",
                "Total number of iptables rules owned by kube-proxy",
                &["table", "ip_family"],
            )?,
            iptables_last: gauge(
                "kubeproxy_sync_proxy_rules_iptables_last",
                "Number of iptables rules written by kube-proxy in last sync",
                &["table", "ip_family"],
            )?,
            no_local_endpoints: gauge(
                NO_LOCAL_ENDPOINTS.0,
                NO_LOCAL_ENDPOINTS.1,
                &["traffic_policy", "ip_family"],
            )?,
            payload_bytes: gauge(
                "chainsmith_sync_payload_bytes",
                "Size of the iptables-restore payload of the last sync",
                &["ip_family"],
            )?,
            registry,
        })
    }

    /// Records one sync.
    pub fn record(&self, family: IpFamily, counts: &RuleCounts, payload_bytes: usize) {
        let family = family.as_str();
        let n = |value: usize| value as u64;
        set(&self.iptables_total, &["filter", family], n(counts.filter_total));
        set(&self.iptables_total, &["nat", family], n(counts.nat_total));
        set(&self.iptables_last, &["filter", family], n(counts.filter_last));
        set(&self.iptables_last, &["nat", family], n(counts.nat_last));
        set(
            &self.no_local_endpoints,
            &["internal", family],
            n(counts.no_local_internal),
        );
        set(
            &self.no_local_endpoints,
            &["external", family],
            n(counts.no_local_external),
        );
        set(&self.payload_bytes, &[family], n(payload_bytes));
    }

    /// The Prometheus text exposition of every gauge.
    pub fn encode(&self) -> Result<String> {
        encode(&self.registry)
    }
}

/// The metrics of an nftables-mode sync: kube-proxy registers no iptables
/// rule counts in this mode, but failure counters of its own.
pub struct NftMetrics {
    registry: Registry,
    no_local_endpoints: IntGaugeVec,
    sync_failures: IntGaugeVec,
    cleanup_failures: IntGaugeVec,
    payload_bytes: IntGaugeVec,
}

impl NftMetrics {
    pub fn new() -> Result<NftMetrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| gauge(&registry, name, help, labels);
        Ok(NftMetrics {
            no_local_endpoints: gauge(
                NO_LOCAL_ENDPOINTS.0,
                NO_LOCAL_ENDPOINTS.1,
                &["traffic_policy", "ip_family"],
            )?,
            sync_failures: gauge(
                "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                "Cumulative proxy nftables sync failures",
                &["ip_family"],
            )?,
            cleanup_failures: gauge(
                "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
                "Cumulative proxy nftables cleanup failures",
                &["ip_family"],
            )?,
            payload_bytes: gauge(
                "chainsmith_sync_payload_bytes",
                "Size of the nft -f input of the last sync",
                &["ip_family"],
            )?,
            registry,
        })
    }

    /// Records one sync.
    pub fn record(&self, family: IpFamily, counts: &NftCounts, counters: &NftCounters, payload_bytes: usize) {
        let family = family.as_str();
        let n = |value: usize| value as u64;
        set(
            &self.no_local_endpoints,
            &["internal", family],
            n(counts.no_local_internal),
        );
        set(
            &self.no_local_endpoints,
            &["external", family],
            n(counts.no_local_external),
        );
        set(&self.sync_failures, &[family], counters.sync_failures);
        set(&self.cleanup_failures, &[family], counters.cleanup_failures);
        set(&self.payload_bytes, &[family], n(payload_bytes));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String> {
        encode(&self.registry)
    }
}
