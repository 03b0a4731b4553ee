//! The rule metrics of a sync, under upstream kube-proxy's metric names.

use anyhow::Result;
use chainsmith_model::IpFamily;
use chainsmith_sync::RuleCounts;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

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
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec> {
            let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
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
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "Number of services with a Local traffic policy and no endpoints",
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
        let set = |gauge: &IntGaugeVec, label: &str, value: usize| {
            gauge
                .with_label_values(&[label, family])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.iptables_total, "filter", counts.filter_total);
        set(&self.iptables_total, "nat", counts.nat_total);
        set(&self.iptables_last, "filter", counts.filter_last);
        set(&self.iptables_last, "nat", counts.nat_last);
        set(&self.no_local_endpoints, "internal", counts.no_local_internal);
        set(&self.no_local_endpoints, "external", counts.no_local_external);
        self.payload_bytes
            .with_label_values(&[family])
            .set(i64::try_from(payload_bytes).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every gauge.
    pub fn encode(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }
}
