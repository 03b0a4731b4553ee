//! kube-proxy's iptables layout of the v1.33 line (`pkg/proxy/iptables/proxier.go`):
//! every rule in upstream's generation order and argument order, so the text
//! comes out byte-identical. Chains per service port: `KUBE-SVC-` (cluster
//! balancing), `KUBE-SVL-` (Local policy), `KUBE-EXT-` (external entry points),
//! `KUBE-FW-` (load-balancer source ranges), `KUBE-SEP-` per endpoint; rejects
//! and drops in the filter table, the firewall drop in `KUBE-PROXY-FIREWALL`.

use chainsmith_iptables::{Arg, RuleSink, Target, emit};
use chainsmith_model::Protocol;
use chainsmith_naming::{ChainName, fixed};
use chainsmith_planner::{
    EndpointInfo, LocalDetector, NodeContext, NodePortDestinations, ServicePortPlan, nfacct,
};

pub(crate) const NODEPORTS_JUMP_COMMENT: &str =
    "kubernetes service nodeports; NOTE: this must be the last rule in this chain";

/// The port's own nat chains, in upstream's declaration order (EXT, FW, SVC,
/// SVL, then the endpoint chains).
pub(crate) fn own_chains(port: &ServicePortPlan) -> crate::OwnChains<'_> {
    let info = port.info();
    let fixed = [
        port.routes_external().then(|| info.ext_chain()),
        port.filters_sources().then(|| info.fw_chain()),
        port.balances_cluster().then(|| info.svc_chain()),
        port.balances_local().then(|| info.svl_chain()),
    ];
    crate::OwnChains::new(fixed.into_iter().flatten().collect(), port.reachable_endpoints())
}

pub(crate) fn describe_port(port: &ServicePortPlan) -> crate::PortView<'_> {
    let endpoints = port
        .endpoints()
        .iter()
        .map(|ep| crate::EndpointView {
            info: ep,
            chain: ep.chain,
            cluster: port.cluster_endpoints().any(|c| c.endpoint() == ep.endpoint()),
            local: port.local_endpoints().any(|l| l.endpoint() == ep.endpoint()),
        })
        .collect();
    crate::PortView {
        name: port.info().name.to_string(),
        service_chain: port.info().svc_chain(),
        endpoints,
    }
}

pub(crate) fn chain_role(chain: &str) -> Option<&'static str> {
    Some(match chain {
        "KUBE-SERVICES" => "kube-proxy's entry chain for Service traffic",
        "KUBE-NODEPORTS" => "the NodePorts of this node",
        "KUBE-EXTERNAL-SERVICES" => {
            "drops or rejects external traffic for Services without (local) endpoints"
        }
        "KUBE-PROXY-FIREWALL" => "drops load-balancer traffic outside loadBalancerSourceRanges",
        "KUBE-FORWARD" => "lets marked and established traffic be forwarded",
        "KUBE-FIREWALL" => "blocks outside traffic to 127.0.0.0/8",
        "KUBE-POSTROUTING" => "masquerades packets marked for it",
        "KUBE-MARK-MASQ" => "marks the packet to be masqueraded on its way out",
        _ if chain.starts_with("KUBE-SVC-") => "load-balances over the Service's endpoints in the cluster",
        _ if chain.starts_with("KUBE-SVL-") => "load-balances over the Service's endpoints on this node only",
        _ if chain.starts_with("KUBE-EXT-") => {
            "the Service's external destinations (NodePort, load-balancer and external IPs)"
        }
        _ if chain.starts_with("KUBE-FW-") => "checks the source against loadBalancerSourceRanges",
        _ if chain.starts_with("KUBE-SEP-") => "one endpoint",
        _ => return None,
    })
}

pub(crate) fn load_balancer_note(port: &ServicePortPlan) -> Option<String> {
    let addresses = &port.info().addresses;
    if addresses.source_ranges.is_empty() || addresses.load_balancer_vips.is_empty() {
        return None;
    }
    let ranges: Vec<&str> = addresses.source_ranges.iter().map(|r| &*r.text).collect();
    Some(format!(
        "loadBalancerSourceRanges {}: other sources fall off {} and are dropped by KUBE-PROXY-FIREWALL; \
         NodePorts are not restricted by them",
        ranges.join(", "),
        port.info().fw_chain()
    ))
}

fn internal_chain(port: &ServicePortPlan) -> ChainName {
    if port.info().internal_policy_local {
        port.info().svl_chain()
    } else {
        port.info().svc_chain()
    }
}

fn external_policy_chain(port: &ServicePortPlan) -> ChainName {
    if port.info().external_policy_local {
        port.info().svl_chain()
    } else {
        port.info().svc_chain()
    }
}

/// The detector's "is local" match, if a detector is configured.
fn local_match(ctx: &NodeContext) -> Option<Arg<'_>> {
    detector_arg(ctx, false)
}

/// The detector's "is not local" match, if a detector is configured.
fn not_local_match(ctx: &NodeContext) -> Option<Arg<'_>> {
    detector_arg(ctx, true)
}

fn detector_arg(ctx: &NodeContext, negated: bool) -> Option<Arg<'_>> {
    ctx.local_detector().map(|detector| match detector {
        LocalDetector::Source(cidr) => Arg::Source { addr: cidr, negated },
        LocalDetector::Interface(name) => Arg::InInterface { name, negated },
    })
}

fn dest(addr: &str) -> Arg<'_> {
    Arg::Destination { addr, negated: false }
}

/// The port's filter rules (rejects, drops, firewall drops, health-check
/// accepts), in upstream's order.
pub(crate) fn emit_filter(port: &ServicePortPlan, sink: &mut impl RuleSink) {
    let info = &**port.info();
    let name: &str = &info.name;
    let proto = Arg::Protocol(info.protocol);
    let dport = Arg::DestinationPort(info.port);
    let (no_endpoints, no_local) = (
        [name, " has no endpoints", ""],
        [name, " has no local endpoints", ""],
    );
    let (internal, external) = if !port.has_endpoints() {
        ((no_endpoints, "REJECT"), (no_endpoints, "REJECT"))
    } else {
        ((no_local, "DROP"), (no_local, "DROP"))
    };
    if !port.serves_internal() {
        let args = [
            Arg::Comment(internal.0),
            proto,
            dest(&info.addresses.cluster_ip.text),
            dport,
        ];
        emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(internal.1));
    }
    let reject_external = |sink: &mut _, addr: &str| {
        let args = [Arg::Comment(external.0), proto, dest(addr), dport];
        emit(
            sink,
            fixed::KUBE_EXTERNAL_SERVICES,
            &args,
            Target::Jump(external.1),
        );
    };
    for ip in &info.addresses.external_ips {
        if !port.serves_external() {
            reject_external(sink, &ip.text);
        }
    }
    if port.filters_sources() {
        let fw = info.fw_chain();
        for vip in &info.addresses.load_balancer_vips {
            let args = [
                Arg::Comment([name, " traffic not accepted by ", fw.as_str()]),
                proto,
                dest(&vip.text),
                dport,
            ];
            emit(sink, fixed::KUBE_PROXY_FIREWALL, &args, Target::Jump("DROP"));
        }
    }
    if !port.serves_external() {
        for vip in &info.addresses.load_balancer_vips {
            reject_external(sink, &vip.text);
        }
    }
    if info.node_port != 0 && !port.serves_external() {
        let args = [
            Arg::Comment(external.0),
            Arg::DestinationTypeLocal,
            proto,
            Arg::DestinationPort(info.node_port),
        ];
        emit(
            sink,
            fixed::KUBE_EXTERNAL_SERVICES,
            &args,
            Target::Jump(external.1),
        );
    }
    if info.health_check_node_port != 0 {
        let args = [
            Arg::Comment([name, " health check node port", ""]),
            Arg::Protocol(Protocol::Tcp),
            Arg::DestinationPort(info.health_check_node_port),
        ];
        emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump("ACCEPT"));
    }
}

/// The port's rules in the shared nat chains KUBE-SERVICES and
/// KUBE-NODEPORTS, in upstream's order.
pub(crate) fn emit_nat_shared(port: &ServicePortPlan, ctx: &NodeContext, sink: &mut impl RuleSink) {
    let info = &**port.info();
    let name: &str = &info.name;
    let proto = Arg::Protocol(info.protocol);
    let dport = Arg::DestinationPort(info.port);
    if port.serves_internal() {
        let internal = internal_chain(port);
        let args = [
            Arg::Comment([name, " cluster IP", ""]),
            proto,
            dest(&info.addresses.cluster_ip.text),
            dport,
        ];
        emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(internal.as_str()));
    }
    if !port.has_endpoints() {
        return;
    }
    let ext = info.ext_chain();
    for ip in &info.addresses.external_ips {
        let args = [
            Arg::Comment([name, " external IP", ""]),
            proto,
            dest(&ip.text),
            dport,
        ];
        emit(sink, fixed::KUBE_SERVICES, &args, Target::Jump(ext.as_str()));
    }
    let lb_target = if port.filters_sources() {
        info.fw_chain()
    } else {
        ext
    };
    for vip in &info.addresses.load_balancer_vips {
        let args = [
            Arg::Comment([name, " loadbalancer IP", ""]),
            proto,
            dest(&vip.text),
            dport,
        ];
        emit(
            sink,
            fixed::KUBE_SERVICES,
            &args,
            Target::Jump(lb_target.as_str()),
        );
    }
    if info.node_port != 0 {
        let node_port = Arg::DestinationPort(info.node_port);
        if ctx.localhost_node_ports_nfacct() {
            let args = [
                Arg::Comment([name, "", ""]),
                proto,
                dest("127.0.0.0/8"),
                node_port,
                Arg::Nfacct(nfacct::LOCALHOST_NODEPORTS_ACCEPTED),
            ];
            emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump(ext.as_str()));
        }
        let args = [Arg::Comment([name, "", ""]), proto, node_port];
        emit(sink, fixed::KUBE_NODEPORTS, &args, Target::Jump(ext.as_str()));
    }
}

/// The rules of the port's own nat chains, in upstream's order. In
/// large-cluster mode the endpoint-related comments are left out.
pub(crate) fn emit_nat_own(
    port: &ServicePortPlan,
    ctx: &NodeContext,
    large_cluster: bool,
    sink: &mut impl RuleSink,
) {
    let info = &**port.info();
    let name: &str = &info.name;
    let config = ctx.config();
    let mark_masq = Target::Jump(fixed::KUBE_MARK_MASQ);

    if port.serves_internal() {
        let internal = internal_chain(port);
        let base = [
            Arg::Comment([name, " cluster IP", ""]),
            Arg::Protocol(info.protocol),
            dest(&info.addresses.cluster_ip.text),
            Arg::DestinationPort(info.port),
        ];
        if config.masquerade_all {
            emit(sink, internal.as_str(), &base, mark_masq);
        } else if let Some(not_local) = not_local_match(ctx) {
            let args = [base[0], base[1], base[2], base[3], not_local];
            emit(sink, internal.as_str(), &args, mark_masq);
        }
    }

    if port.routes_external() {
        let ext = info.ext_chain();
        let ext = ext.as_str();
        let svc = info.svc_chain();
        if !info.external_policy_local {
            let args = [Arg::Comment([
                "masquerade traffic for ",
                name,
                " external destinations",
            ])];
            emit(sink, ext, &args, mark_masq);
        } else {
            if let Some(local) = local_match(ctx) {
                let args = [
                    Arg::Comment(["pod traffic for ", name, " external destinations"]),
                    local,
                ];
                emit(sink, ext, &args, Target::Jump(svc.as_str()));
            }
            let args = [
                Arg::Comment(["masquerade LOCAL traffic for ", name, " external destinations"]),
                Arg::SourceTypeLocal,
            ];
            emit(sink, ext, &args, mark_masq);
            let args = [
                Arg::Comment(["route LOCAL traffic for ", name, " external destinations"]),
                Arg::SourceTypeLocal,
            ];
            emit(sink, ext, &args, Target::Jump(svc.as_str()));
        }
        if port.serves_external() {
            let policy = external_policy_chain(port);
            emit(sink, ext, &[], Target::Jump(policy.as_str()));
        }
    }

    if port.filters_sources() {
        let fw = info.fw_chain();
        let ext = info.ext_chain();
        let comment = Arg::Comment([name, " loadbalancer IP", ""]);
        for range in &info.addresses.source_ranges {
            let args = [
                comment,
                Arg::Source {
                    addr: &range.text,
                    negated: false,
                },
            ];
            emit(sink, fw.as_str(), &args, Target::Jump(ext.as_str()));
        }
        if port.firewall_admits_node() {
            for vip in &info.addresses.load_balancer_vips {
                let args = [
                    comment,
                    Arg::Source {
                        addr: &vip.text,
                        negated: false,
                    },
                ];
                emit(sink, fw.as_str(), &args, Target::Jump(ext.as_str()));
            }
        }
        let args = [Arg::Comment([
            "other traffic to ",
            name,
            " will be dropped by KUBE-PROXY-FIREWALL",
        ])];
        emit(sink, fw.as_str(), &args, Target::None);
    }

    if port.balances_cluster() {
        emit_balancing(
            port,
            info.svc_chain(),
            port.cluster_endpoints(),
            port.cluster_count(),
            large_cluster,
            sink,
        );
    }
    if port.balances_local() {
        emit_balancing(
            port,
            info.svl_chain(),
            port.local_endpoints(),
            port.local_count(),
            large_cluster,
            sink,
        );
    }

    for ep in port.reachable_endpoints() {
        let chain = ep.chain.as_str();
        let comment = Arg::Comment([name, "", ""]);
        let hairpin = Arg::Source {
            addr: ep.ip_text(),
            negated: false,
        };
        let all = [comment, hairpin];
        let args = if large_cluster { &all[1..] } else { &all[..] };
        emit(sink, chain, args, mark_masq);
        let all = [
            comment,
            Arg::RecentSet { name: chain },
            Arg::Protocol(info.protocol),
        ];
        let args = match (large_cluster, info.affinity_seconds.is_some()) {
            (false, true) => &all[..],
            (true, true) => &all[1..],
            (false, false) => &[all[0], all[2]][..],
            (true, false) => &all[2..],
        };
        emit(sink, chain, args, Target::Dnat(ep.endpoint()));
    }
}

fn emit_balancing<'p>(
    port: &'p ServicePortPlan,
    chain: ChainName,
    members: impl Iterator<Item = &'p EndpointInfo> + Clone,
    n: usize,
    large_cluster: bool,
    sink: &mut impl RuleSink,
) {
    let info = &**port.info();
    let name: &str = &info.name;
    let chain = chain.as_str();
    if let Some(seconds) = info.affinity_seconds {
        for ep in members.clone() {
            let all = [
                Arg::Comment([name, " -> ", ep.endpoint()]),
                Arg::RecentCheck {
                    name: ep.chain.as_str(),
                    seconds,
                },
            ];
            let args = if large_cluster { &all[1..] } else { &all[..] };
            emit(sink, chain, args, Target::Jump(ep.chain.as_str()));
        }
    }
    for (position, ep) in members.enumerate() {
        let all = [
            Arg::Comment([name, " -> ", ep.endpoint()]),
            Arg::RandomProbability { one_in: n - position },
        ];
        let with_comment = usize::from(large_cluster);
        let without_probability = if position + 1 < n { 2 } else { 1 };
        let args = &all[with_comment..without_probability];
        emit(sink, chain, args, Target::Jump(ep.chain.as_str()));
    }
}

/// Fixed filter chains, in upstream's declaration order.
pub(crate) fn filter_chains(ctx: &NodeContext) -> &'static [&'static str] {
    const WITH_FIREWALL: [&str; 6] = [
        fixed::KUBE_SERVICES,
        fixed::KUBE_EXTERNAL_SERVICES,
        fixed::KUBE_FORWARD,
        fixed::KUBE_NODEPORTS,
        fixed::KUBE_PROXY_FIREWALL,
        fixed::KUBE_FIREWALL,
    ];
    if ctx.localhost_node_ports() {
        &WITH_FIREWALL
    } else {
        &WITH_FIREWALL[..5]
    }
}

/// Fixed nat chains, in upstream's declaration order.
pub(crate) fn nat_chains() -> &'static [&'static str] {
    &[
        fixed::KUBE_SERVICES,
        fixed::KUBE_NODEPORTS,
        fixed::KUBE_POSTROUTING,
        fixed::KUBE_MARK_MASQ,
    ]
}

/// filter rules written before any service's (the localhost anti-martian rule).
pub(crate) fn emit_filter_head(ctx: &NodeContext, sink: &mut impl RuleSink) {
    if ctx.localhost_node_ports() {
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
pub(crate) fn emit_filter_tail(ctx: &NodeContext, sink: &mut impl RuleSink) {
    if !ctx.config().conntrack_tcp_be_liberal {
        let invalid = Arg::ConntrackState {
            states: "INVALID",
            negated: false,
        };
        let counted = [invalid, Arg::Nfacct(nfacct::CT_STATE_INVALID_DROPPED)];
        let args = if ctx.config().nfacct.ct_state_invalid_dropped_pkts {
            &counted[..]
        } else {
            &counted[..1]
        };
        emit(sink, fixed::KUBE_FORWARD, args, Target::Jump("DROP"));
    }
    let args = [
        Arg::Comment(["kubernetes forwarding rules", "", ""]),
        Arg::Mark {
            mark: ctx.mark_with_mask(),
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
pub(crate) fn emit_nat_head(ctx: &NodeContext, sink: &mut impl RuleSink) {
    let mark = ctx.config().masquerade_mark.as_str();
    let args = [Arg::Mark {
        mark: ctx.mark_with_mask(),
        negated: true,
    }];
    emit(sink, fixed::KUBE_POSTROUTING, &args, Target::Jump("RETURN"));
    emit(sink, fixed::KUBE_POSTROUTING, &[], Target::MarkXor(mark));
    let args = [Arg::Comment([
        "kubernetes service traffic requiring SNAT",
        "",
        "",
    ])];
    let random_fully = ctx.config().iptables_has_random_fully;
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
pub(crate) fn emit_nat_tail(ctx: &NodeContext, sink: &mut impl RuleSink) {
    let comment = Arg::Comment([NODEPORTS_JUMP_COMMENT, "", ""]);
    let target = Target::Jump(fixed::KUBE_NODEPORTS);
    match ctx.node_port_destinations() {
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
        NodePortDestinations::NodeIps(ips) => emit_node_ip_nodeport_jumps(ips, sink),
    }
}

/// One jump to KUBE-NODEPORTS per node IP (`--nodeport-addresses`), in both
/// layouts.
pub(crate) fn emit_node_ip_nodeport_jumps(ips: &[String], sink: &mut impl RuleSink) {
    for ip in ips {
        let args = [Arg::Comment([NODEPORTS_JUMP_COMMENT, "", ""]), dest(ip)];
        emit(
            sink,
            fixed::KUBE_SERVICES,
            &args,
            Target::Jump(fixed::KUBE_NODEPORTS),
        );
    }
}
