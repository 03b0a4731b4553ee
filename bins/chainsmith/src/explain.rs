//! `chainsmith explain`: every entry point of one Service and what it does.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chainsmith_k8s::Manifests;
use chainsmith_layout::Layout;
use chainsmith_model::{
    Diagnostic, IpFamily, LocalTrafficDetector, NodeConfig, ObjectKey, ObjectKind, Protocol, Severity,
};
use chainsmith_naming::nft::NftObjectKind;
use chainsmith_nft_layout::{endpoint_chain_base, port_base};
use chainsmith_nft_tracer::{Node as NftNode, Origin as NftOrigin, Packet as NftPacket, Tracer};
use chainsmith_planner::{Plan, ServicePortPlan};
use chainsmith_tracer::{Node, Origin, Packet, Ruleset, trace};
use clap::Args;
use serde_json::{Value, json};

use crate::input::{self, Example, LayoutArg, ModeArg, ProxyMode};
use crate::trace::Output;
use crate::{narrate, narrate_nft, nft, trace as tracing};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Node and proxier settings.
    #[arg(long, value_name = "NODE.yaml")]
    node: Option<PathBuf>,
    /// Cluster manifests, then the Service as `namespace/name` (only the
    /// Service with --example).
    #[arg(value_name = "CLUSTER.yaml... NAMESPACE/NAME", required = true)]
    arguments: Vec<String>,
    /// Explain a Service of a bundled example cluster and node instead.
    #[arg(long, value_enum, value_name = "NAME", conflicts_with = "node")]
    example: Option<Example>,
    #[command(flatten)]
    mode: ModeArg,
    #[command(flatten)]
    layout: LayoutArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// The rules the sample packets go through, in the mode chosen.
enum Rules<'t> {
    Iptables(Layout, Ruleset, Node),
    Nftables(Tracer<'t>, NftNode),
}

/// Who sends a sample packet.
#[derive(Clone, Copy)]
enum Sender {
    /// A neighbour of the node (a pod on it, or another host).
    Outside,
    /// The node itself.
    Node,
}

/// What happens to one sample packet: a sentence, and each outcome (with
/// its probability) as the trace's JSON gives it, less the walk.
struct Sample {
    summary: String,
    outcomes: Vec<Value>,
}

/// An outcome as JSON without its `path` (every rule on the way).
fn without_path(outcome: serde_json::Result<Value>) -> Value {
    let mut value = outcome.unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.remove("path");
    }
    value
}

impl Rules<'_> {
    /// What happens to one sample packet.
    fn sample(&self, src: IpAddr, dst: IpAddr, protocol: Protocol, dport: u16, sender: Sender) -> Sample {
        match self {
            Rules::Iptables(_, ruleset, node) => {
                let origin = match sender {
                    Sender::Outside => Origin::FromOutside,
                    Sender::Node => Origin::FromNode,
                };
                let result = trace(ruleset, &Packet::new(src, dst, protocol, dport, origin), node);
                Sample {
                    summary: narrate::summary(&result.outcomes),
                    outcomes: result
                        .outcomes
                        .iter()
                        .map(|o| without_path(serde_json::to_value(o)))
                        .collect(),
                }
            }
            Rules::Nftables(tracer, node) => {
                let origin = match sender {
                    Sender::Outside => NftOrigin::FromOutside {
                        interface: "eth0".to_string(),
                    },
                    Sender::Node => NftOrigin::FromNode,
                };
                match tracer.trace(&NftPacket::new(src, dst, protocol, dport, origin), node) {
                    Ok(result) => Sample {
                        summary: narrate_nft::summary(&result.outcomes),
                        outcomes: result
                            .outcomes
                            .iter()
                            .map(|o| without_path(serde_json::to_value(o)))
                            .collect(),
                    },
                    Err(error) => Sample {
                        summary: format!("cannot be traced: {error}"),
                        outcomes: Vec::new(),
                    },
                }
            }
        }
    }
}

/// Who sends the sample packets: documentation addresses, never real hosts.
struct Senders {
    pod: Option<IpAddr>,
    outside: IpAddr,
    node: Option<IpAddr>,
}

fn senders(node: &NodeConfig, plan: &ServicePortPlan) -> Senders {
    let family = node.ip_family;
    // A pod: an address inside the local-traffic detector's CIDR, else an endpoint.
    let pod = match &node.local_traffic_detector {
        LocalTrafficDetector::ClusterCidr(net) | LocalTrafficDetector::NodeCidr(net) => {
            net.hosts().nth(250).or_else(|| net.hosts().next())
        }
        _ => plan.endpoints().first().map(|e| e.ip),
    };
    let outside = match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x99)),
    };
    let node_ip = node.node_ip.filter(|ip| IpFamily::of(ip) == family);
    Senders {
        pod,
        outside,
        node: node_ip,
    }
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    args.mode.check_layout(&args.layout)?;
    let Some((service, clusters)) = args.arguments.split_last() else {
        bail!("name the Service as namespace/name");
    };
    if clusters.is_empty() && args.example.is_none() {
        bail!("give the cluster manifests (or --example NAME) before the Service");
    }
    let Some((namespace, name)) = service.split_once('/') else {
        bail!("name the Service as namespace/name, got {service:?}");
    };
    let key = ObjectKey::new(namespace, name);
    let (node, manifests) = input::load_input(args.example, args.node.as_deref(), clusters)?;
    input::report_diagnostics(&manifests.diagnostics);
    if let Some(why) = skipped(&key, &node, &manifests) {
        if why.is_empty() {
            bail!("no Service {key} in the manifests");
        }
        return answer(args, &key, &why, &[]);
    }
    let local = tracing::local_ips(&node);
    let (plan, table);
    let rules = match args.mode.mode {
        ProxyMode::Iptables => {
            plan = tracing::plan_for_node(&node, &manifests);
            Rules::Iptables(
                args.layout.layout,
                tracing::compiled_ruleset(&plan, args.layout.layout)?,
                Node::new(local),
            )
        }
        ProxyMode::Nftables => {
            // The sync engine reports the planner's diagnostics (and its
            // own): the plan for the endpoint listing is made quietly, or
            // each would be printed twice.
            plan = Plan::compile(&manifests.services, &manifests.endpoint_slices, &node);
            table = nft::first_sync(&node, &manifests)?.1;
            let tracer = Tracer::new(&table).context("the compiled table cannot be traced")?;
            Rules::Nftables(tracer, NftNode::new(local))
        }
    };
    let ports: Vec<&ServicePortPlan> = plan
        .ports
        .iter()
        .map(|p| &**p)
        .filter(|p| *p.info().service() == key)
        .collect();
    if ports.is_empty() {
        // Read, of this node's family, and still no port: every port was refused.
        let mut why = reasons(&key, &manifests.diagnostics);
        if why.is_empty() {
            why.push("it has no ports".to_string());
        }
        return answer(args, &key, &why, &[]);
    }
    let ports: Vec<PortExplanation> = ports
        .into_iter()
        .map(|port| explain_port(&node, port, &rules))
        .collect();
    answer(args, &key, &[], &ports)
}

/// Prints the answer: every port explained, or why nothing is programmed.
fn answer(args: &ExplainArgs, key: &ObjectKey, why_not: &[String], ports: &[PortExplanation]) -> Result<()> {
    let text = match args.output {
        Output::Text if !why_not.is_empty() => not_programmed(key, why_not),
        Output::Text => {
            let mut out = String::new();
            for port in ports {
                port_text(&mut out, port);
            }
            out
        }
        Output::Json => {
            let (mode, layout) = match args.mode.mode {
                ProxyMode::Iptables => ("iptables", Some(args.layout.layout.to_string())),
                ProxyMode::Nftables => ("nftables", None),
            };
            let answer = json!({
                "service": key.to_string(),
                "mode": mode,
                "layout": layout,
                "programmed": why_not.is_empty(),
                "why_not_programmed": why_not,
                "ports": ports.iter().map(port_json).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&answer)? + "\n"
        }
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}

/// Why a Service named on the command line gets no rules on this node
/// before anything is planned: the reader skipped it (headless,
/// ExternalName, another proxy's, refused), or it has no cluster IP of the
/// node's family. `None` when it is planned; an error when there is no such
/// Service at all.
fn skipped(key: &ObjectKey, node: &NodeConfig, manifests: &Manifests) -> Option<Vec<String>> {
    let Some(service) = manifests.services.iter().find(|s| s.key == *key) else {
        return Some(reasons(key, &manifests.diagnostics));
    };
    let family = node.ip_family;
    if service.cluster_ips.get(family).is_some() {
        return None;
    }
    let other = family.other();
    let ip = service
        .cluster_ips
        .get(other)
        .map(|ip| format!(" {ip}"))
        .unwrap_or_default();
    Some(vec![format!(
        "it has no {family} cluster IP (it is {other} only:{ip}): this {family} node writes no rules for \
         it, an {other} proxier does (explain it with a node of ipFamily: {other})"
    )])
}

/// The label that hands a Service to another proxy implementation.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// The diagnostics about one Service, as reasons it is not programmed (none
/// when the manifests never mention it).
fn reasons(key: &ObjectKey, diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .filter(|d| d.kind == ObjectKind::Service && d.object.as_ref() == Some(key))
        .map(|d| {
            let at = d.source.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
            let why = match (d.severity, d.field.as_str()) {
                (Severity::Info, "spec.clusterIP") => {
                    "it is headless (spec.clusterIP is None or empty): kube-proxy writes no rules for \
                     it; cluster DNS answers with its endpoints' own addresses, which clients reach \
                     directly"
                        .to_string()
                }
                (Severity::Info, "spec.type") => "it is an ExternalName Service: cluster DNS answers with a \
                                                  CNAME to its spec.externalName; there is no cluster IP \
                                                  to program"
                    .to_string(),
                (Severity::Info, field) if field.contains(SERVICE_PROXY_NAME_LABEL) => format!(
                    "it carries the label {SERVICE_PROXY_NAME_LABEL}: another proxy programs it, \
                     kube-proxy (and chainsmith) leave it alone"
                ),
                _ if d.field.is_empty() => d.message.clone(),
                _ => format!("{}: {}", d.field, d.message),
            };
            format!("{why}{at}")
        })
        .collect()
}

/// The answer for a Service that gets no rules.
fn not_programmed(key: &ObjectKey, why: &[String]) -> String {
    let mut out = format!("Service {key}: nothing is programmed for it on this node\n");
    for reason in why {
        out.push_str(&format!("  {reason}\n"));
    }
    out
}

/// `ip:port`, or `[ip]:port` for IPv6.
fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// One endpoint as the mode's rules use it.
struct EndpointRow<'p> {
    info: &'p chainsmith_planner::EndpointInfo,
    chain: String,
    cluster: bool,
    local: bool,
}

/// The port's balancing chain and its endpoints' chains, in the mode's names.
fn port_chains<'p>(rules: &Rules<'_>, port: &'p ServicePortPlan) -> (String, Vec<EndpointRow<'p>>) {
    match rules {
        Rules::Iptables(layout, ..) => {
            let view = layout.describe_port(port);
            let rows = view
                .endpoints
                .iter()
                .map(|e| EndpointRow {
                    info: e.info,
                    chain: e.chain.to_string(),
                    cluster: e.cluster,
                    local: e.local,
                })
                .collect();
            (view.service_chain.to_string(), rows)
        }
        Rules::Nftables(..) => {
            fn in_role<'p>(
                mut list: impl Iterator<Item = &'p chainsmith_planner::EndpointInfo>,
                ep: &chainsmith_planner::EndpointInfo,
            ) -> bool {
                list.any(|e| std::ptr::eq(e, ep))
            }
            let rows = port
                .endpoints()
                .iter()
                .map(|ep| EndpointRow {
                    info: ep,
                    chain: NftObjectKind::Endpoint.name(&endpoint_chain_base(port, ep)),
                    cluster: in_role(port.cluster_endpoints(), ep),
                    local: in_role(port.local_endpoints(), ep),
                })
                .collect();
            (NftObjectKind::Service.name(&port_base(port)), rows)
        }
    }
}

/// What one Service port does, as both outputs tell it.
struct PortExplanation {
    /// `ns/svc:port`.
    name: String,
    port_name: String,
    port: u16,
    protocol: Protocol,
    external_policy_local: bool,
    internal_policy_local: bool,
    /// The chain whose hash the port's chains share.
    service_chain: String,
    endpoints: Vec<EndpointLine>,
    entries: Vec<Entry>,
    /// Why the rules are as they are (load-balancer IPs, source ranges).
    notes: Vec<String>,
}

struct EndpointLine {
    /// `ip:port`.
    endpoint: String,
    condition: &'static str,
    on_this_node: bool,
    chain: String,
    /// `cluster`, `local`: the policies whose endpoint lists hold it.
    used_for: Vec<&'static str>,
}

/// One entry point (cluster IP, NodePort, load-balancer or external IP).
struct Entry {
    /// `cluster IP 10.96.0.10:53` as the text says it.
    title: String,
    kind: &'static str,
    address: IpAddr,
    port: u16,
    cases: Vec<Case>,
}

/// One sample packet to an entry point.
struct Case {
    /// Who sends it (`a pod`, `this node`, `outside the cluster`, ...).
    from: &'static str,
    src: IpAddr,
    sample: Sample,
}

fn policy(local: bool) -> &'static str {
    if local { "Local" } else { "Cluster" }
}

fn explain_port(node: &NodeConfig, port: &ServicePortPlan, rules: &Rules<'_>) -> PortExplanation {
    let info = port.info();
    let addresses = &info.addresses;
    let (service_chain, rows) = port_chains(rules, port);
    let endpoints = rows
        .iter()
        .map(|row| {
            let ep = row.info;
            let mut used_for = Vec::new();
            if row.cluster {
                used_for.push("cluster");
            }
            if row.local {
                used_for.push("local");
            }
            let condition = match (ep.ready, ep.serving, ep.terminating) {
                (true, _, _) => "ready",
                (false, true, true) => "terminating, still serving",
                (false, _, true) => "terminating",
                _ => "not ready",
            };
            EndpointLine {
                endpoint: ep.endpoint().to_string(),
                condition,
                on_this_node: ep.local,
                chain: row.chain.clone(),
                used_for,
            }
        })
        .collect();
    let who = senders(node, port);
    let mut entries = Vec::new();
    let mut entry = |title: String,
                     kind: &'static str,
                     dst: IpAddr,
                     dport: u16,
                     cases: &[(&'static str, Option<IpAddr>, Sender)]| {
        let cases = cases
            .iter()
            .filter_map(|(from, src, sender)| {
                let src = (*src)?;
                Some(Case {
                    from,
                    src,
                    sample: rules.sample(src, dst, info.protocol, dport, *sender),
                })
            })
            .collect();
        entries.push(Entry {
            title,
            kind,
            address: dst,
            port: dport,
            cases,
        });
    };
    let pod_label = "a pod";
    entry(
        format!("cluster IP {}", host_port(&addresses.cluster_ip.text, info.port)),
        "cluster IP",
        addresses.cluster_ip.value,
        info.port,
        &[
            (pod_label, who.pod, Sender::Outside),
            ("this node", who.node, Sender::Node),
            ("outside the pod network", Some(who.outside), Sender::Outside),
        ],
    );
    if let Some(node_ip) = who.node.filter(|_| info.node_port != 0) {
        entry(
            format!(
                "NodePort {} (every node address)",
                host_port(&node_ip.to_string(), info.node_port)
            ),
            "NodePort",
            node_ip,
            info.node_port,
            &[
                ("outside the cluster", Some(who.outside), Sender::Outside),
                (pod_label, who.pod, Sender::Outside),
            ],
        );
    }
    // A sender inside the first source range shows what an allowed client gets.
    let allowed = addresses
        .source_ranges
        .first()
        .and_then(|r| r.value.hosts().nth(4));
    for vip in &addresses.load_balancer_vips {
        entry(
            format!("load-balancer IP {}", host_port(&vip.text, info.port)),
            "load-balancer IP",
            vip.value,
            info.port,
            &[
                ("outside the cluster", Some(who.outside), Sender::Outside),
                ("an allowed source range", allowed, Sender::Outside),
                (pod_label, who.pod, Sender::Outside),
            ],
        );
    }
    for ip in &addresses.external_ips {
        entry(
            format!("external IP {}", host_port(&ip.text, info.port)),
            "external IP",
            ip.value,
            info.port,
            &[
                ("outside the cluster", Some(who.outside), Sender::Outside),
                (pod_label, who.pod, Sender::Outside),
            ],
        );
    }
    let mut notes = Vec::new();
    if !addresses.load_balancer_vips.is_empty() {
        notes.push(
            "why the load-balancer IP has rules here: every node captures it, so a pod or a node that \
             connects to it is served inside the cluster and never goes out to the load balancer; traffic \
             that does come through the load balancer lands on the same rules"
                .to_string(),
        );
    }
    let note = match rules {
        Rules::Iptables(layout, ..) => layout.load_balancer_note(port),
        Rules::Nftables(..) => port.restricts_load_balancer_sources().then(|| {
            "loadBalancerSourceRanges are checked before DNAT (firewall-check looks the load-balancer IP up in \
             firewall-ips): a source outside them is dropped, pods and the node included unless a range \
             holds them; the NodePort is not subject to the ranges"
                .to_string()
        }),
    };
    notes.extend(note);
    PortExplanation {
        name: info.name.to_string(),
        port_name: info.port_name.clone(),
        port: info.port,
        protocol: info.protocol,
        external_policy_local: info.external_policy_local,
        internal_policy_local: info.internal_policy_local,
        service_chain,
        endpoints,
        entries,
        notes,
    }
}

/// The plain-words answer for one port.
fn port_text(out: &mut String, port: &PortExplanation) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "Service port {} ({} {})",
        port.name, port.port, port.protocol
    );
    let _ = writeln!(
        out,
        "  externalTrafficPolicy {}, internalTrafficPolicy {}; chains share the hash of {}",
        policy(port.external_policy_local),
        policy(port.internal_policy_local),
        port.service_chain
    );
    let _ = writeln!(out, "  endpoints ({}):", port.endpoints.len());
    for ep in &port.endpoints {
        let place = if ep.on_this_node {
            "on this node"
        } else {
            "elsewhere"
        };
        let used = if ep.used_for.is_empty() {
            "not used".to_string()
        } else {
            format!("used for {}", ep.used_for.join(" and "))
        };
        let _ = writeln!(
            out,
            "    {} {}, {place}: {used} ({})",
            ep.endpoint, ep.condition, ep.chain
        );
    }
    for entry in &port.entries {
        let _ = writeln!(out, "  {}", entry.title);
        for case in &entry.cases {
            let _ = writeln!(
                out,
                "    from {} ({}): {}",
                case.from, case.src, case.sample.summary
            );
        }
    }
    for note in &port.notes {
        let _ = writeln!(out, "  {note}");
    }
    let _ = writeln!(out);
}

/// The same answer for tools: every sample packet's outcomes, without the
/// walk (`chainsmith trace --output json` gives that for one packet).
fn port_json(port: &PortExplanation) -> Value {
    json!({
        "name": port.name,
        "port_name": port.port_name,
        "port": port.port,
        "protocol": port.protocol.to_string(),
        "external_traffic_policy": policy(port.external_policy_local),
        "internal_traffic_policy": policy(port.internal_policy_local),
        "service_chain": port.service_chain,
        "endpoints": port.endpoints.iter().map(|ep| json!({
            "endpoint": ep.endpoint,
            "condition": ep.condition,
            "on_this_node": ep.on_this_node,
            "chain": ep.chain,
            "used_for": ep.used_for,
        })).collect::<Vec<_>>(),
        "entry_points": port.entries.iter().map(|entry| json!({
            "kind": entry.kind,
            "address": entry.address.to_string(),
            "port": entry.port,
            "from": entry.cases.iter().map(|case| json!({
                "sender": case.from,
                "src": case.src.to_string(),
                "summary": case.sample.summary,
                "outcomes": case.sample.outcomes,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "notes": port.notes,
    })
}
