//! The node's settings as nftables mode uses them.

use chainsmith_model::{Diagnostic, IpFamily, ObjectKind};
use chainsmith_nftables::Family;
use chainsmith_planner::{LocalDetector, NodeContext, NodePortDestinations};

/// Where NodePorts are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortMatch {
    /// Every local address but loopback (`fib daddr type local`).
    AllLocal,
    /// The addresses of the `nodeport-ips` set (possibly none).
    Ips(Vec<String>),
}

/// One family's node settings in nftables terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftContext {
    family: Family,
    mark: String,
    masquerade_all: bool,
    pod_source: Option<String>,
    not_pod_source: Option<String>,
    node_ports: NodePortMatch,
    service_cidrs: Option<String>,
    diagnostics: Vec<Diagnostic>,
}

impl NftContext {
    /// Reads the planner's resolved context. Localhost NodePorts do not exist
    /// in this mode: loopback addresses are left out of `nodeport-ips`, with a
    /// diagnostic, as upstream logs an error for them.
    pub fn new(ctx: &NodeContext) -> NftContext {
        let family = match ctx.family() {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        };
        let config = ctx.config();
        let mut diagnostics = Vec::new();
        let f = family.as_str();
        let (pod_source, not_pod_source) = match ctx.local_detector() {
            None => (None, None),
            Some(LocalDetector::Source(cidr)) => (
                Some(format!("{f} saddr {cidr}")),
                Some(format!("{f} saddr != {cidr}")),
            ),
            // nftables matches interface names with `iifname`, a prefix with
            // `*` (`iif` would need the interface to exist when the rule
            // loads); the name is quoted, as the kernel prints it.
            Some(LocalDetector::Interface(name)) => {
                let name = match name.strip_suffix('+') {
                    Some(prefix) => format!("\"{prefix}*\""),
                    None => format!("\"{name}\""),
                };
                (
                    Some(format!("iifname {name}")),
                    Some(format!("iifname != {name}")),
                )
            }
        };
        let node_ports = match ctx.node_port_destinations() {
            NodePortDestinations::AllLocal { .. } => NodePortMatch::AllLocal,
            NodePortDestinations::NodeIps(ips) => {
                let (loopback, kept): (Vec<&String>, Vec<&String>) = ips
                    .iter()
                    .partition(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()));
                for ip in loopback {
                    diagnostics.push(Diagnostic::warning(
                        ObjectKind::NodeConfig,
                        None,
                        "nodePortAddresses",
                        format!(
                            "includes localhost address {ip} but localhost NodePorts are not supported in nftables mode; skipped"
                        ),
                    ));
                }
                NodePortMatch::Ips(kept.into_iter().cloned().collect())
            }
        };
        let cidrs: Vec<String> = config
            .service_cidrs
            .iter()
            .filter(|cidr| IpFamily::of_net(cidr) == ctx.family())
            .map(|cidr| cidr.trunc().to_string())
            .collect();
        NftContext {
            family,
            mark: config.masquerade_mark.clone(),
            masquerade_all: config.masquerade_all,
            pod_source,
            not_pod_source,
            node_ports,
            // Upstream's spelling: the CIDRs joined by commas, no spaces.
            service_cidrs: (!cidrs.is_empty()).then(|| cidrs.join(",")),
            diagnostics,
        }
    }

    /// The table's family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Where NodePorts are open.
    pub fn node_ports(&self) -> &NodePortMatch {
        &self.node_ports
    }

    /// Problems found while reading the settings.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub(crate) fn mark(&self) -> &str {
        &self.mark
    }

    pub(crate) fn masquerade_all(&self) -> bool {
        self.masquerade_all
    }

    /// The match for traffic from this node's pods, if they can be told apart.
    pub(crate) fn pod_source(&self) -> Option<&str> {
        self.pod_source.as_deref()
    }

    /// The match for traffic not from this node's pods.
    pub(crate) fn not_pod_source(&self) -> Option<&str> {
        self.not_pod_source.as_deref()
    }

    /// The Service CIDRs of the family, as the elements of an anonymous set.
    pub(crate) fn service_cidrs(&self) -> Option<&str> {
        self.service_cidrs.as_deref()
    }

    /// The family's loopback network, which NodePorts never answer on.
    pub(crate) fn loopback(&self) -> &'static str {
        match self.family {
            Family::Ip => "127.0.0.0/8",
            Family::Ip6 => "::1",
        }
    }
}

#[cfg(test)]
mod tests {
    use chainsmith_model::{IpNet, NodeConfig};
    use chainsmith_nftables::{Transaction, canonical_rule};

    use super::*;
    use crate::setup;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    fn drop_rule(family: IpFamily, cidrs: &[&str]) -> Option<String> {
        let config = NodeConfig {
            ip_family: family,
            service_cidrs: nets(cidrs),
            ..NodeConfig::default()
        };
        let ctx = NftContext::new(&NodeContext::new(config));
        let mut tx = Transaction::new(ctx.family());
        setup(&ctx, true, &mut tx);
        tx.to_string()
            .lines()
            .find(|line| line.contains("Drop traffic to unallocated ClusterIPs"))
            .map(str::to_owned)
    }

    #[test]
    fn the_drop_rule_holds_the_family_s_service_cidrs() {
        let cidrs = ["10.96.0.0/16", "10.100.0.0/16", "fd00:10:96::/112"];
        assert_eq!(
            drop_rule(IpFamily::V4, &cidrs).as_deref(),
            Some(
                "add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/16,10.100.0.0/16 } drop comment \"Drop traffic to unallocated ClusterIPs\""
            )
        );
        assert_eq!(
            drop_rule(IpFamily::V6, &cidrs).as_deref(),
            Some(
                "add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:10:96::/112 } drop comment \"Drop traffic to unallocated ClusterIPs\""
            )
        );
        assert_eq!(drop_rule(IpFamily::V6, &cidrs[..2]), None);
        assert_eq!(drop_rule(IpFamily::V4, &[]), None);
    }

    #[test]
    fn several_cidrs_read_as_the_kernel_lists_them() {
        // What `nft list table` shows for the rule (nft 1.0.6): the set's
        // elements merged and in address order.
        let written = "ip daddr { 10.96.0.0/16,10.100.0.0/16,10.97.0.0/16 } drop";
        let listed = "ip daddr { 10.96.0.0/15, 10.100.0.0/16 } drop";
        assert_eq!(canonical_rule(written), canonical_rule(listed));
    }
}
