//! kube-proxy's iptables layout of early 2018 (v1.10), the layout of this
//! project's seed: `KUBE-SERVICES -d LB-IP -j KUBE-FW-…`, that chain marking
//! for masquerade, jumping to `KUBE-SVC-…` and marking what is left for the
//! kubelet's `KUBE-FIREWALL` to drop (`KUBE-MARK-DROP`); `KUBE-XLB-…` for
//! `externalTrafficPolicy: Local`; `/32` on every address; probabilities
//! printed `%0.5f`; the mark written `0x00004000/0x00004000`. Rule by rule as
//! `shared/spec/kube-proxy-v1.10.md` section 5 lists it.
//!
//! Where kube-proxy v1.10 decided differently from the planner, this module
//! follows v1.10, and only here:
//! - it read v1 Endpoints: only ready endpoints count (no serving/terminating
//!   fallback, no topology hints, no `internalTrafficPolicy`), ordered by IP
//!   text as the endpoints controller sorted them;
//! - Local applies only to NodePort and LoadBalancer Services;
//! - the service-port name always has its colon (`ns/svc:` for an unnamed
//!   port), which changes the chain hashes of unnamed ports;
//! - no reject for a load-balancer IP without endpoints, and no rule for the
//!   health-check node port.
//!
//! The kubelet's `KUBE-MARK-DROP` and `KUBE-FIREWALL` are written into the
//! payload so that a node or a namespace programmed by chainsmith alone holds
//! the whole picture.
//!
//! Known difference: source ranges are written as the planner parsed them
//! (canonical CIDR text, and a zero CIDR admitting everything with a bare
//! jump), where v1.10 copied the Service's strings verbatim; what they match
//! is the same.

use std::borrow::Cow;

use chainsmith_iptables::{Arg, RuleSink, Target, emit};
use chainsmith_model::{IpFamily, ServiceType};
use chainsmith_naming::{ChainName, ServiceChainKind, ServicePortChains, XLB_PREFIX, endpoint_chain, fixed};
use chainsmith_planner::{EndpointInfo, LocalDetector, NodeContext, NodePortDestinations, ServicePortPlan};

use crate::v1_33::{self, NODEPORTS_JUMP_COMMENT};

/// The kubelet's drop mark (bit 15), with itself as the mask.
const DROP_MARK: &str = "0x00008000/0x00008000";

pub(crate) fn filter_chains() -> &'static [&'static str] {
    &[
        fixed::KUBE_SERVICES,
        fixed::KUBE_EXTERNAL_SERVICES,
        fixed::KUBE_FORWARD,
        fixed::KUBE_FIREWALL,
    ]
}

pub(crate) fn nat_chains() -> &'static [&'static str] {
    &[
        fixed::KUBE_SERVICES,
        fixed::KUBE_NODEPORTS,
        fixed::KUBE_POSTROUTING,
        fixed::KUBE_MARK_MASQ,
        fixed::KUBE_MARK_DROP,
    ]
}

/// The per-service-port chains v1.10 deleted when stale.
pub(crate) fn owns_service_chain(chain: &str) -> bool {
    [ServiceChainKind::Svc, ServiceChainKind::Sep, ServiceChainKind::Fw]
        .iter()
        .any(|kind| chain.starts_with(kind.prefix()))
        || chain.starts_with(XLB_PREFIX)
}

/// The pod network CIDR (`--cluster-cidr`); v1.10 had no other detector.
fn cluster_cidr(ctx: &NodeContext) -> Option<&str> {
    match ctx.local_detector() {
        Some(LocalDetector::Source(cidr)) => Some(cidr),
        _ => None,
    }
}

pub(crate) fn emit_filter_tail(ctx: &NodeContext, sink: &mut impl RuleSink) {
    let mark = Arg::Mark {
        mark: ctx.mark_with_mask(),
        negated: false,
    };
    let accept = Target::Jump("ACCEPT");
    emit(
        sink,
        fixed::KUBE_FORWARD,
        &[Arg::Comment(["kubernetes forwarding rules", "", ""]), mark],
        accept,
    );
    if let Some(cidr) = cluster_cidr(ctx) {
        let established = Arg::ConntrackState {
            states: "RELATED,ESTABLISHED",
            negated: false,
        };
        let args = [
            Arg::Source {
                addr: cidr,
                negated: false,
            },
            Arg::Comment(["kubernetes forwarding conntrack pod source rule", "", ""]),
            established,
        ];
        emit(sink, fixed::KUBE_FORWARD, &args, accept);
        let args = [
            Arg::Comment(["kubernetes forwarding conntrack pod destination rule", "", ""]),
            Arg::Destination {
                addr: cidr,
                negated: false,
            },
            established,
        ];
        emit(sink, fixed::KUBE_FORWARD, &args, accept);
    }
    let args = [
        Arg::Comment(["kubernetes firewall for dropping marked packets", "", ""]),
        Arg::Mark {
            mark: DROP_MARK,
            negated: false,
        },
    ];
    emit(sink, fixed::KUBE_FIREWALL, &args, Target::Jump("DROP"));
}

pub(crate) fn emit_nat_head(ctx: &NodeContext, sink: &mut impl RuleSink) {
    let mark = ctx.mark_with_mask();
    let args = [
        Arg::Comment(["kubernetes service traffic requiring SNAT", "", ""]),
        Arg::Mark { mark, negated: false },
    ];
    emit(
        sink,
        fixed::KUBE_POSTROUTING,
        &args,
        Target::Masquerade { random_fully: false },
    );
    emit(sink, fixed::KUBE_MARK_MASQ, &[], Target::MarkSet(mark));
    emit(sink, fixed::KUBE_MARK_DROP, &[], Target::MarkSet(DROP_MARK));
}

pub(crate) fn emit_nat_tail(ctx: &NodeContext, sink: &mut impl RuleSink) {
    let comment = Arg::Comment([NODEPORTS_JUMP_COMMENT, "", ""]);
    let target = Target::Jump(fixed::KUBE_NODEPORTS);
    match ctx.node_port_destinations() {
        NodePortDestinations::AllLocal { .. } => {
            emit(
                sink,
                fixed::KUBE_SERVICES,
                &[comment, Arg::DestinationTypeLocal],
                target,
            );
        }
        NodePortDestinations::NodeIps(ips) => v1_33::emit_node_ip_nodeport_jumps(ips, sink),
    }
}

/// One endpoint as v1.10 wrote it.
struct Endpoint<'p> {
    info: &'p EndpointInfo,
    chain: ChainName,
    /// `IP/32` (`IP/128`).
    host: String,
}

/// Everything one port's rules print, worked out once per emission.
struct PortText<'p> {
    /// `namespace/name:port`, colon included for an unnamed port.
    name: Cow<'p, str>,
    svc: ChainName,
    xlb: ChainName,
    fw: ChainName,
    /// Only-local: `externalTrafficPolicy: Local` on a NodePort or
    /// LoadBalancer Service.
    local: bool,
    /// Ready endpoints, ordered by IP text.
    endpoints: Vec<Endpoint<'p>>,
    cluster_ip: String,
    external_ips: Vec<String>,
    load_balancer_ips: Vec<String>,
    family: IpFamily,
    /// Lower-case protocol, a chain-hash input.
    protocol: &'static str,
    /// An unnamed port, whose v1.10 name (with its colon) hashes differently
    /// from the planner's.
    renamed: bool,
}

impl<'p> PortText<'p> {
    fn new(port: &'p ServicePortPlan) -> PortText<'p> {
        let info = &**port.info();
        let protocol = info.protocol.as_iptables();
        let renamed = info.port_name.is_empty();
        let name: Cow<'p, str> = if renamed {
            Cow::Owned(format!("{}:", info.name))
        } else {
            Cow::Borrowed(&info.name)
        };
        let hash = ServicePortChains::new(&name, protocol);
        let addresses = &info.addresses;
        let family = IpFamily::of(&addresses.cluster_ip.value);
        let host_suffix = match family {
            IpFamily::V4 => "/32",
            IpFamily::V6 => "/128",
        };
        let host = |text: &str| format!("{text}{host_suffix}");
        let mut ready: Vec<&EndpointInfo> = port.endpoints().iter().filter(|ep| ep.ready).collect();
        ready.sort_by(|a, b| a.ip_text().cmp(b.ip_text()));
        let mut text = PortText {
            svc: hash.svc(),
            xlb: hash.xlb(),
            fw: hash.fw(),
            local: info.external_policy_local
                && matches!(
                    addresses.service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                ),
            endpoints: Vec::with_capacity(ready.len()),
            cluster_ip: host(&addresses.cluster_ip.text),
            external_ips: addresses.external_ips.iter().map(|ip| host(&ip.text)).collect(),
            load_balancer_ips: addresses
                .load_balancer_vips
                .iter()
                .map(|ip| host(&ip.text))
                .collect(),
            family,
            protocol,
            renamed,
            name,
        };
        text.endpoints = ready
            .into_iter()
            .map(|ep| Endpoint {
                info: ep,
                chain: text.endpoint_chain(ep),
                host: format!("{}{host_suffix}", ep.ip_text()),
            })
            .collect();
        text
    }

    fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The endpoint chain of any endpoint of the port, ready or not.
    fn endpoint_chain(&self, ep: &EndpointInfo) -> ChainName {
        if self.renamed {
            endpoint_chain(&self.name, self.protocol, ep.endpoint())
        } else {
            ep.chain
        }
    }
}

pub(crate) fn describe_port(port: &ServicePortPlan) -> crate::PortView<'_> {
    let text = PortText::new(port);
    let endpoints = port
        .endpoints()
        .iter()
        .map(|info| {
            let ready = text.endpoints.iter().find(|ep| std::ptr::eq(ep.info, info));
            crate::EndpointView {
                info,
                chain: ready.map_or_else(|| text.endpoint_chain(info), |ep| ep.chain),
                cluster: ready.is_some(),
                local: ready.is_some() && text.local && info.local,
            }
        })
        .collect();
    crate::PortView {
        name: text.name.to_string(),
        service_chain: text.svc,
        endpoints,
    }
}

/// The roles of the chains this layout writes differently from v1.33.
pub(crate) fn chain_role(chain: &str) -> Option<&'static str> {
    Some(match chain {
        "KUBE-EXTERNAL-SERVICES" => "rejects external traffic for Services without endpoints",
        "KUBE-FIREWALL" => "the kubelet's chain: drops packets marked by KUBE-MARK-DROP",
        fixed::KUBE_MARK_DROP => "marks the packet for the kubelet's KUBE-FIREWALL to drop",
        _ if chain.starts_with("KUBE-FW-") => {
            "the load-balancer IP: marks for masquerade, sends on to the Service, and marks for drop \
             what no rule admitted"
        }
        _ if chain.starts_with(XLB_PREFIX) => {
            "externalTrafficPolicy Local: pods go to the whole Service, others only to this node's \
             endpoints (their address kept), or are marked for drop when there are none"
        }
        _ => return None,
    })
}

/// The seed's answer: what `KUBE-FW-` does with load-balancer traffic.
pub(crate) fn load_balancer_note(port: &ServicePortPlan) -> Option<String> {
    let addresses = &port.info().addresses;
    if addresses.load_balancer_vips.is_empty() {
        return None;
    }
    let text = PortText::new(port);
    if !text.has_endpoints() {
        return Some(
            "without ready endpoints the 2018 layout writes nothing for the load-balancer IP: it is not \
             captured"
                .to_string(),
        );
    }
    let fw = text.fw;
    let balance = if text.local {
        format!(
            "sends it to {} (this node's endpoints only, the client's address kept)",
            text.xlb
        )
    } else {
        format!(
            "marks it for masquerade (KUBE-MARK-MASQ), balances it over the Service ({})",
            text.svc
        )
    };
    let admitted = if addresses.source_ranges.is_empty() {
        "every source is admitted, so nothing is left for the last rule".to_string()
    } else {
        let ranges: Vec<&str> = addresses.source_ranges.iter().map(|r| &*r.text).collect();
        format!("only sources in {} are admitted", ranges.join(", "))
    };
    Some(format!(
        "KUBE-SERVICES -d <LB IP> -j {fw}: {fw} {balance}, and marks for drop (KUBE-MARK-DROP) what no \
         rule admitted ({admitted}); the kubelet's KUBE-FIREWALL drops marked packets in INPUT and \
         OUTPUT, so where the load-balancer IP is not an address of this node a marked packet is \
         forwarded instead"
    ))
}

pub(crate) fn own_chains(port: &ServicePortPlan) -> Vec<ChainName> {
    let text = PortText::new(port);
    let mut chains = Vec::with_capacity(2 + text.load_balancer_ips.len() + text.endpoints.len());
    if text.has_endpoints() {
        chains.push(text.svc);
    }
    if text.local {
        chains.push(text.xlb);
    }
    if text.has_endpoints() {
        // v1.10 declared the FW chain once per load-balancer IP.
        chains.extend(text.load_balancer_ips.iter().map(|_| text.fw));
        chains.extend(text.endpoints.iter().map(|ep| ep.chain));
    }
    chains
}

pub(crate) fn emit_filter(port: &ServicePortPlan, sink: &mut impl RuleSink) {
    let text = PortText::new(port);
    if text.has_endpoints() {
        return;
    }
    let info = &**port.info();
    let name: &str = &text.name;
    let comment = Arg::Comment([name, " has no endpoints", ""]);
    let proto = Arg::Protocol(info.protocol);
    let dport = Arg::DestinationPort(info.port);
    let reject = Target::Jump("REJECT");
    let args = [comment, proto, dest(&text.cluster_ip), dport];
    emit(sink, fixed::KUBE_SERVICES, &args, reject);
    for ip in &text.external_ips {
        let args = [comment, proto, dest(ip), dport];
        emit(sink, fixed::KUBE_EXTERNAL_SERVICES, &args, reject);
    }
    if info.node_port != 0 {
        let args = [
            comment,
            Arg::DestinationTypeLocal,
            proto,
            Arg::DestinationPort(info.node_port),
        ];
        emit(sink, fixed::KUBE_EXTERNAL_SERVICES, &args, reject);
    }
}

pub(crate) fn emit_nat(port: &ServicePortPlan, ctx: &NodeContext, sink: &mut impl RuleSink) {
    let text = PortText::new(port);
    if !text.has_endpoints() {
        return;
    }
    let info = &**port.info();
    let config = ctx.config();
    let name: &str = &text.name;
    let proto = Arg::Protocol(info.protocol);
    let dport = Arg::DestinationPort(info.port);
    let mark_masq = Target::Jump(fixed::KUBE_MARK_MASQ);
    let svc = Target::Jump(text.svc.as_str());
    let cidr = cluster_cidr(ctx);

    let cluster_ip = [
        Arg::Comment([name, " cluster IP", ""]),
        proto,
        dest(&text.cluster_ip),
        dport,
    ];
    if config.masquerade_all {
        emit(sink, fixed::KUBE_SERVICES, &cluster_ip, mark_masq);
    } else if let Some(cidr) = cidr {
        let [comment, proto, dest, dport] = cluster_ip;
        let args = [
            comment,
            proto,
            dest,
            dport,
            Arg::Source {
                addr: cidr,
                negated: true,
            },
        ];
        emit(sink, fixed::KUBE_SERVICES, &args, mark_masq);
    }
    emit(sink, fixed::KUBE_SERVICES, &cluster_ip, svc);

    for ip in &text.external_ips {
        let [comment, proto, dest, dport] =
            [Arg::Comment([name, " external IP", ""]), proto, dest(ip), dport];
        emit(
            sink,
            fixed::KUBE_SERVICES,
            &[comment, proto, dest, dport],
            mark_masq,
        );
        // Not from a local bridge port and not from this host: traffic from
        // outside, which may be DNATed straight away.
        let args = [
            comment,
            proto,
            dest,
            dport,
            Arg::NotBridgedIn,
            Arg::SourceTypeNotLocal,
        ];
        emit(sink, fixed::KUBE_SERVICES, &args, svc);
        let args = [comment, proto, dest, dport, Arg::DestinationTypeLocal];
        emit(sink, fixed::KUBE_SERVICES, &args, svc);
    }

    let policy = if text.local {
        Target::Jump(text.xlb.as_str())
    } else {
        svc
    };
    let fw = text.fw.as_str();
    for vip in &text.load_balancer_ips {
        let comment = Arg::Comment([name, " loadbalancer IP", ""]);
        emit(
            sink,
            fixed::KUBE_SERVICES,
            &[comment, proto, dest(vip), dport],
            Target::Jump(fw),
        );
        if !text.local {
            emit(sink, fw, &[comment], mark_masq);
        }
        if info.addresses.source_ranges.is_empty() {
            emit(sink, fw, &[comment], policy);
        } else {
            for range in &info.addresses.source_ranges {
                emit(sink, fw, &[comment, source(&range.text)], policy);
            }
            if port.firewall_admits_node() {
                emit(sink, fw, &[comment, source(vip)], policy);
            }
        }
        emit(sink, fw, &[comment], Target::Jump(fixed::KUBE_MARK_DROP));
    }

    if info.node_port != 0 {
        let args = [
            Arg::Comment([name, "", ""]),
            proto,
            Arg::DestinationPort(info.node_port),
        ];
        if text.local {
            let loopback = match text.family {
                IpFamily::V4 => "127.0.0.0/8",
                IpFamily::V6 => "::1/128",
            };
            let [comment, proto, port] = args;
            emit(
                sink,
                fixed::KUBE_NODEPORTS,
                &[comment, proto, port, source(loopback)],
                mark_masq,
            );
        } else {
            emit(sink, fixed::KUBE_NODEPORTS, &args, mark_masq);
        }
        emit(sink, fixed::KUBE_NODEPORTS, &args, policy);
    }

    let comment = Arg::Comment([name, "", ""]);
    emit_affinity(
        &text,
        info.affinity_seconds,
        text.svc,
        text.endpoints.iter(),
        sink,
    );
    let n = text.endpoints.len();
    for (position, ep) in text.endpoints.iter().enumerate() {
        let chain = ep.chain.as_str();
        let choose = [
            comment,
            Arg::RandomProbabilityFiveDecimals { one_in: n - position },
        ];
        let args = if position + 1 < n {
            &choose[..]
        } else {
            &choose[..1]
        };
        emit(sink, text.svc.as_str(), args, Target::Jump(chain));
        emit(sink, chain, &[comment, source(&ep.host)], mark_masq);
        let dnat = Target::Dnat(ep.info.endpoint());
        if info.affinity_seconds.is_some() {
            emit(
                sink,
                chain,
                &[comment, Arg::RecentSet { name: chain }, proto],
                dnat,
            );
        } else {
            emit(sink, chain, &[comment, proto], dnat);
        }
    }

    if text.local {
        emit_local_balancing(&text, info.affinity_seconds, cidr, sink);
    }
}

/// The `KUBE-XLB-` chain: pods reaching the external entry points go to the
/// cluster-wide chain, everyone else only to this node's endpoints (their
/// source address kept), or is dropped when there are none.
fn emit_local_balancing(
    text: &PortText<'_>,
    affinity_seconds: Option<u32>,
    cidr: Option<&str>,
    sink: &mut impl RuleSink,
) {
    let xlb = text.xlb.as_str();
    let name: &str = &text.name;
    if let Some(cidr) = cidr {
        let args = [
            Arg::Comment([
                "Redirect pods trying to reach external loadbalancer VIP to clusterIP",
                "",
                "",
            ]),
            source(cidr),
        ];
        emit(sink, xlb, &args, Target::Jump(text.svc.as_str()));
    }
    let local: Vec<&Endpoint<'_>> = text.endpoints.iter().filter(|ep| ep.info.local).collect();
    if local.is_empty() {
        let args = [Arg::Comment([name, " has no local endpoints", ""])];
        emit(sink, xlb, &args, Target::Jump(fixed::KUBE_MARK_DROP));
        return;
    }
    emit_affinity(text, affinity_seconds, text.xlb, local.iter().copied(), sink);
    let n = local.len();
    for (position, ep) in local.iter().enumerate() {
        let comment = format!("Balancing rule {position} for {name}");
        let choose = [
            Arg::Comment([&comment, "", ""]),
            Arg::RandomProbabilityFiveDecimals { one_in: n - position },
        ];
        let args = if position + 1 < n {
            &choose[..]
        } else {
            &choose[..1]
        };
        emit(sink, xlb, args, Target::Jump(ep.chain.as_str()));
    }
}

/// Session affinity: a client seen recently goes back to its endpoint.
fn emit_affinity<'e>(
    text: &PortText<'_>,
    affinity_seconds: Option<u32>,
    chain: ChainName,
    endpoints: impl Iterator<Item = &'e Endpoint<'e>>,
    sink: &mut impl RuleSink,
) {
    let Some(seconds) = affinity_seconds else {
        return;
    };
    let name: &str = &text.name;
    for ep in endpoints {
        let args = [
            Arg::Comment([name, "", ""]),
            Arg::RecentCheck {
                name: ep.chain.as_str(),
                seconds,
            },
        ];
        emit(sink, chain.as_str(), &args, Target::Jump(ep.chain.as_str()));
    }
}

fn dest(addr: &str) -> Arg<'_> {
    Arg::Destination { addr, negated: false }
}

fn source(addr: &str) -> Arg<'_> {
    Arg::Source { addr, negated: false }
}
