//! Per-node, per-family facts that every rule generation reads, computed once.

use std::net::IpAddr;

use chainsmith_model::{Diagnostic, IpFamily, IpNet, LocalTrafficDetector, NodeConfig, ObjectKind};
use chainsmith_naming::fixed;

use crate::rules::{Arg, RuleSink, Target, emit};

/// Above this many endpoints (over all service ports) kube-proxy enters
/// large-cluster mode and drops the per-endpoint comments.
pub const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// Names of the nfacct counters kube-proxy's rules may reference.
pub mod nfacct {
    /// Counts packets dropped by the conntrack INVALID rule.
    pub const CT_STATE_INVALID_DROPPED: &str = "ct_state_invalid_dropped_pkts";
    /// Counts packets accepted on localhost NodePorts.
    pub const LOCALHOST_NODEPORTS_ACCEPTED: &str = "localhost_nps_accepted_pkts";
}

const NODEPORTS_JUMP_COMMENT: &str =
    "kubernetes service nodeports; NOTE: this must be the last rule in this chain";

/// How the local traffic detector matches, as iptables arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DetectorMatch {
    /// `-s CIDR` / `! -s CIDR`.
    Source(String),
    /// `-i NAME` / `! -i NAME` (prefix modes carry the trailing `+`).
    Interface(String),
}

/// Where the NodePort catch-all jump applies.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodePortDestinations {
    /// Every local address, optionally excluding loopback (`! -d NET`).
    AllLocal { excluded_loopback: Option<&'static str> },
    /// One jump per matching node IP.
    NodeIps(Vec<String>),
}

/// The node's settings for one IP family, resolved into what the rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    config: NodeConfig,
    mark_with_mask: String,
    detector: Option<DetectorMatch>,
    localhost_node_ports: bool,
    node_port_destinations: NodePortDestinations,
    diagnostics: Vec<Diagnostic>,
}

impl NodeContext {
    /// Resolves a node configuration. Settings that cannot apply to the family
    /// (a detector CIDR of the other family, loopback NodePort addresses where
    /// they cannot work) are dropped with a diagnostic, as upstream logs them.
    pub fn new(config: NodeConfig) -> NodeContext {
        let family = config.ip_family;
        let mut diagnostics = Vec::new();
        let detector = resolve_detector(&config, &mut diagnostics);
        let localhost_node_ports = family == IpFamily::V4 && config.localhost_node_ports;
        let node_port_destinations =
            resolve_node_port_destinations(&config, localhost_node_ports, &mut diagnostics);
        let mark_with_mask = format!("{0}/{0}", config.masquerade_mark);
        NodeContext {
            config,
            mark_with_mask,
            detector,
            localhost_node_ports,
            node_port_destinations,
            diagnostics,
        }
    }

    /// The configuration this context was built from.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The IP family programmed.
    pub fn family(&self) -> IpFamily {
        self.config.ip_family
    }

    /// Problems found while resolving the configuration.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Localhost NodePorts are in effect (IPv4 only).
    pub fn localhost_node_ports(&self) -> bool {
        self.localhost_node_ports
    }

    /// NodePort rules also count localhost traffic in an nfacct counter.
    pub(crate) fn localhost_node_ports_nfacct(&self) -> bool {
        self.localhost_node_ports && self.config.nfacct.localhost_nps_accepted_pkts
    }

    /// The detector's "is local" match, if a detector is configured.
    pub(crate) fn local_match(&self) -> Option<Arg<'_>> {
        self.detector_arg(false)
    }

    /// The detector's "is not local" match, if a detector is configured.
    pub(crate) fn not_local_match(&self) -> Option<Arg<'_>> {
        self.detector_arg(true)
    }

    fn detector_arg(&self, negated: bool) -> Option<Arg<'_>> {
        self.detector.as_ref().map(|detector| match detector {
            DetectorMatch::Source(cidr) => Arg::Source { addr: cidr, negated },
            DetectorMatch::Interface(name) => Arg::InInterface { name, negated },
        })
    }

    /// Fixed filter chains, in upstream's declaration order.
    pub fn filter_chains(&self) -> &'static [&'static str] {
        const WITH_FIREWALL: [&str; 6] = [
            fixed::KUBE_SERVICES,
            fixed::KUBE_EXTERNAL_SERVICES,
            fixed::KUBE_FORWARD,
            fixed::KUBE_NODEPORTS,
            fixed::KUBE_PROXY_FIREWALL,
            fixed::KUBE_FIREWALL,
        ];
        if self.localhost_node_ports {
            &WITH_FIREWALL
        } else {
            &WITH_FIREWALL[..5]
        }
    }

    /// Fixed nat chains, in upstream's declaration order.
    pub fn nat_chains(&self) -> &'static [&'static str] {
        &[
            fixed::KUBE_SERVICES,
            fixed::KUBE_NODEPORTS,
            fixed::KUBE_POSTROUTING,
            fixed::KUBE_MARK_MASQ,
        ]
    }

    /// filter rules written before any service's (the localhost anti-martian rule).
    pub fn emit_filter_head(&self, sink: &mut impl RuleSink) {
        if self.localhost_node_ports {
            let args = [
                Arg::Comment(["block incoming localnet connections", "", ""]),
                Arg::Destination {
                    addr: "127.0.0.0/8",
                    negated: false,
                },
                Arg::Source {
                    addr: "127.0.0.0/8",
                    negated: true,
                },
                Arg::ConntrackState {
                    states: "RELATED,ESTABLISHED,DNAT",
                    negated: true,
                },
            ];
            emit(sink, fixed::KUBE_FIREWALL, &args, Target::Jump("DROP"));
        }
    }

    /// filter rules written after every service's (KUBE-FORWARD).
    pub fn emit_filter_tail(&self, sink: &mut impl RuleSink) {
        if !self.config.conntrack_tcp_be_liberal {
            let invalid = Arg::ConntrackState {
                states: "INVALID",
                negated: false,
            };
            let counted = [invalid, Arg::Nfacct(nfacct::CT_STATE_INVALID_DROPPED)];
            let args = if self.config.nfacct.ct_state_invalid_dropped_pkts {
                &counted[..]
            } else {
                &counted[..1]
            };
            emit(sink, fixed::KUBE_FORWARD, args, Target::Jump("DROP"));
        }
        let args = [
            Arg::Comment(["kubernetes forwarding rules", "", ""]),
            Arg::Mark {
                mark: &self.mark_with_mask,
                negated: false,
            },
        ];
        emit(sink, fixed::KUBE_FORWARD, &args, Target::Jump("ACCEPT"));
        let args = [
            Arg::Comment(["kubernetes forwarding conntrack rule", "", ""]),
            Arg::ConntrackState {
                states: "RELATED,ESTABLISHED",
                negated: false,
            },
        ];
        emit(sink, fixed::KUBE_FORWARD, &args, Target::Jump("ACCEPT"));
    }

    /// nat rules written before any service's (KUBE-POSTROUTING, KUBE-MARK-MASQ).
    pub fn emit_nat_head(&self, sink: &mut impl RuleSink) {
        let mark = self.config.masquerade_mark.as_str();
        let args = [Arg::Mark {
            mark: &self.mark_with_mask,
            negated: true,
        }];
        emit(sink, fixed::KUBE_POSTROUTING, &args, Target::Jump("RETURN"));
        emit(sink, fixed::KUBE_POSTROUTING, &[], Target::MarkXor(mark));
        let args = [Arg::Comment([
            "kubernetes service traffic requiring SNAT",
            "",
            "",
        ])];
        let random_fully = self.config.iptables_has_random_fully;
        emit(
            sink,
            fixed::KUBE_POSTROUTING,
            &args,
            Target::Masquerade { random_fully },
        );
        emit(sink, fixed::KUBE_MARK_MASQ, &[], Target::MarkOr(mark));
    }

    /// nat rules written last: the jump(s) to KUBE-NODEPORTS, which must stay
    /// at the end of KUBE-SERVICES.
    pub fn emit_nat_tail(&self, sink: &mut impl RuleSink) {
        let comment = Arg::Comment([NODEPORTS_JUMP_COMMENT, "", ""]);
        let target = Target::Jump(fixed::KUBE_NODEPORTS);
        match &self.node_port_destinations {
            NodePortDestinations::AllLocal { excluded_loopback } => {
                let all = [
                    comment,
                    Arg::DestinationTypeLocal,
                    Arg::Destination {
                        addr: excluded_loopback.unwrap_or_default(),
                        negated: true,
                    },
                ];
                let args = if excluded_loopback.is_some() {
                    &all[..]
                } else {
                    &all[..2]
                };
                emit(sink, fixed::KUBE_SERVICES, args, target);
            }
            NodePortDestinations::NodeIps(ips) => {
                for ip in ips {
                    let args = [
                        comment,
                        Arg::Destination {
                            addr: ip,
                            negated: false,
                        },
                    ];
                    emit(sink, fixed::KUBE_SERVICES, &args, target);
                }
            }
        }
    }
}

fn resolve_detector(config: &NodeConfig, diagnostics: &mut Vec<Diagnostic>) -> Option<DetectorMatch> {
    let family = config.ip_family;
    let mut cidr_of_family = |cidr: &IpNet, mode: &str| {
        if IpFamily::of_net(cidr) == family {
            Some(DetectorMatch::Source(cidr.to_string()))
        } else {
            diagnostics.push(Diagnostic::warning(
                ObjectKind::NodeConfig,
                None,
                "localTrafficDetector.cidr",
                format!("{mode} CIDR {cidr} is not {family}; no local traffic detector for {family}"),
            ));
            None
        }
    };
    match &config.local_traffic_detector {
        LocalTrafficDetector::None => None,
        LocalTrafficDetector::ClusterCidr(cidr) => cidr_of_family(cidr, "ClusterCIDR"),
        LocalTrafficDetector::NodeCidr(cidr) => cidr_of_family(cidr, "NodeCIDR"),
        LocalTrafficDetector::BridgeInterface(name) => Some(DetectorMatch::Interface(name.clone())),
        LocalTrafficDetector::InterfaceNamePrefix(prefix) => {
            Some(DetectorMatch::Interface(format!("{prefix}+")))
        }
    }
}

fn resolve_node_port_destinations(
    config: &NodeConfig,
    localhost_node_ports: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> NodePortDestinations {
    let family = config.ip_family;
    let cidrs: Vec<&IpNet> = config
        .node_port_addresses
        .iter()
        .filter(|cidr| IpFamily::of_net(cidr) == family)
        .collect();
    // No CIDR of this family, or a zero CIDR among them, means "every local address".
    if cidrs.is_empty() || cidrs.iter().any(|cidr| cidr.prefix_len() == 0) {
        let excluded_loopback = match family {
            IpFamily::V6 => Some("::1/128"),
            IpFamily::V4 if !localhost_node_ports => Some("127.0.0.0/8"),
            IpFamily::V4 => None,
        };
        return NodePortDestinations::AllLocal { excluded_loopback };
    }
    let mut ips: Vec<IpAddr> = config
        .interface_addresses
        .iter()
        .map(|a| a.address)
        .filter(|ip| cidrs.iter().any(|cidr| cidr.contains(ip)))
        .collect();
    ips.sort();
    ips.dedup();
    let mut texts = Vec::with_capacity(ips.len());
    for ip in ips {
        if ip.is_loopback() && (family == IpFamily::V6 || !localhost_node_ports) {
            let why = match family {
                IpFamily::V6 => "localhost NodePorts are not supported on IPv6",
                IpFamily::V4 => "localhost NodePorts are disabled",
            };
            diagnostics.push(Diagnostic::warning(
                ObjectKind::NodeConfig,
                None,
                "nodePortAddresses",
                format!("includes localhost address {ip} but {why}; skipped"),
            ));
            continue;
        }
        texts.push(ip.to_string());
    }
    NodePortDestinations::NodeIps(texts)
}
