//! What one service port wants in table `kube-proxy`.

use std::fmt::Write;

use chainsmith_naming::nft::{NftObjectKind, endpoint_base, service_port_base};
use chainsmith_nftables::{Element, SetKind, SetSpec};
use chainsmith_planner::{EndpointInfo, ServicePortPlan};

use crate::context::NftContext;
use crate::fixed::ElementMap;
use crate::fixed::chains::{MARK_FOR_MASQUERADE, REJECT_CHAIN};

/// One of a port's own chains with its rules (`(rule, comment)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnChain {
    /// The name (`service-…`, `endpoint-…`).
    pub name: String,
    /// Which kind of chain it is.
    pub kind: NftObjectKind,
    /// Its rules, in order.
    pub rules: Vec<(String, Option<String>)>,
    /// An endpoint chain of a port with ClientIP affinity, whose content
    /// therefore depends on its affinity set: with its name, this decides
    /// whether an existing chain can be kept as it is.
    pub uses_affinity: bool,
}

/// Everything one service port wants: its chains (endpoint chains first, so
/// that every chain exists before a rule or element points at it), its
/// affinity sets, and its elements in the shared sets and maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortObjects {
    /// Own chains, in creation order.
    pub chains: Vec<OwnChain>,
    /// ClientIP-affinity sets, one per reachable endpoint.
    pub affinity_sets: Vec<SetSpec>,
    /// Elements, in upstream's order.
    pub elements: Vec<(ElementMap, Element)>,
}

struct Endpoint<'p> {
    info: &'p EndpointInfo,
    chain: String,
    affinity: String,
}

/// The base of one port's chain names (`HASH-ns/svc/tcp/port`).
pub fn port_base(plan: &ServicePortPlan) -> String {
    let info = plan.info();
    let service = info.service();
    service_port_base(
        &service.namespace,
        &service.name,
        info.protocol.as_iptables(),
        &info.port_name,
    )
}

/// The base of one endpoint's chain and affinity set names
/// (`HASH-ns/svc/tcp/port__IP/targetPort`).
pub fn endpoint_chain_base(plan: &ServicePortPlan, endpoint: &EndpointInfo) -> String {
    let info = plan.info();
    let service = info.service();
    // The target port is what follows the last colon of `ip:port` / `[ip]:port`.
    let target = endpoint
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    endpoint_base(
        &service.namespace,
        &service.name,
        info.protocol.as_iptables(),
        &info.port_name,
        endpoint.ip_text(),
        target,
    )
}

impl PortObjects {
    /// Spells the planner's decisions for one port.
    pub fn of(plan: &ServicePortPlan, ctx: &NftContext) -> PortObjects {
        Self::spell(plan, ctx, true)
    }

    /// [`PortObjects::of`] without the chains' rules (each chain's `rules`
    /// is empty): its names, sets and elements are what a sync engine keeps
    /// between syncs; the rules, most of the text, are spelled again when a
    /// chain is written.
    pub fn without_rules(plan: &ServicePortPlan, ctx: &NftContext) -> PortObjects {
        Self::spell(plan, ctx, false)
    }

    fn spell(plan: &ServicePortPlan, ctx: &NftContext, with_rules: bool) -> PortObjects {
        let info = plan.info();
        let protocol = info.protocol.as_iptables();
        let f = ctx.family().as_str();
        let base = port_base(plan);
        let service_chain = NftObjectKind::Service.name(&base);
        let local_chain = NftObjectKind::Local.name(&base);
        let external_chain = NftObjectKind::External.name(&base);
        let firewall_chain = NftObjectKind::Firewall.name(&base);

        let endpoints: Vec<Endpoint<'_>> = plan
            .reachable_endpoints()
            .map(|ep| {
                let base = endpoint_chain_base(plan, ep);
                Endpoint {
                    info: ep,
                    chain: NftObjectKind::Endpoint.name(&base),
                    affinity: NftObjectKind::Affinity.name(&base),
                }
            })
            .collect();
        let endpoint_of = |ep: &EndpointInfo| endpoints.iter().find(|e| std::ptr::eq(e.info, ep));
        let affinity = info.affinity_seconds;

        let internal_chain = if info.internal_policy_local {
            &local_chain
        } else {
            &service_chain
        };
        let external_policy_chain = if info.external_policy_local {
            &local_chain
        } else {
            &service_chain
        };
        let (internal_verdict, external_verdict) = if !plan.has_endpoints() {
            let reject = format!("goto {REJECT_CHAIN}");
            (reject.clone(), reject)
        } else {
            (
                if plan.serves_internal() {
                    String::new()
                } else {
                    "drop".into()
                },
                if plan.serves_external() {
                    String::new()
                } else {
                    "drop".into()
                },
            )
        };

        // Chains and their rules.
        let mut chains: Vec<OwnChain> = endpoints
            .iter()
            .map(|ep| {
                let mut rules = Vec::new();
                if with_rules {
                    rules.push((
                        format!("{f} saddr {} jump {MARK_FOR_MASQUERADE}", ep.info.ip_text()),
                        None,
                    ));
                    if affinity.is_some() {
                        rules.push((format!("update @{} {{ {f} saddr }}", ep.affinity), None));
                    }
                    rules.push((
                        format!("meta l4proto {protocol} dnat to {}", ep.info.endpoint()),
                        None,
                    ));
                }
                OwnChain {
                    name: ep.chain.clone(),
                    kind: NftObjectKind::Endpoint,
                    rules,
                    uses_affinity: affinity.is_some(),
                }
            })
            .collect();
        let masquerade_internal = if !plan.serves_internal() {
            None
        } else if ctx.masquerade_all() {
            Some(format!(
                "{f} daddr {} jump {MARK_FOR_MASQUERADE}",
                info.addresses.cluster_ip.text
            ))
        } else {
            ctx.not_pod_source().map(|not_pods| {
                format!(
                    "{f} daddr {} {not_pods} jump {MARK_FOR_MASQUERADE}",
                    info.addresses.cluster_ip.text
                )
            })
        };
        let balance = |name: &String, members: &mut dyn Iterator<Item = &EndpointInfo>| {
            let mut rules = Vec::new();
            if !with_rules {
                return rules;
            }
            let members: Vec<&Endpoint<'_>> = members.filter_map(endpoint_of).collect();
            if Some(name) == Some(internal_chain)
                && let Some(rule) = &masquerade_internal
            {
                rules.push((rule.clone(), None));
            }
            if affinity.is_some() {
                for ep in &members {
                    rules.push((format!("{f} saddr @{} goto {}", ep.affinity, ep.chain), None));
                }
            }
            let mut vmap = format!("numgen random mod {} vmap {{ ", members.len());
            for (i, ep) in members.iter().enumerate() {
                if i > 0 {
                    vmap.push_str(" , ");
                }
                let _ = write!(vmap, "{i} : goto {}", ep.chain);
            }
            vmap.push_str(" }");
            rules.push((vmap, None));
            rules
        };
        if plan.balances_cluster() {
            chains.push(OwnChain {
                name: service_chain.clone(),
                kind: NftObjectKind::Service,
                rules: balance(&service_chain, &mut plan.cluster_endpoints()),
                uses_affinity: false,
            });
        }
        if plan.balances_local() {
            chains.push(OwnChain {
                name: local_chain.clone(),
                kind: NftObjectKind::Local,
                rules: balance(&local_chain, &mut plan.local_endpoints()),
                uses_affinity: false,
            });
        }
        if plan.routes_external() {
            let mut rules = Vec::new();
            if with_rules {
                if info.external_policy_local {
                    if let Some(pods) = ctx.pod_source() {
                        rules.push((
                            format!("{pods} goto {service_chain}"),
                            Some("short-circuit pod traffic".to_string()),
                        ));
                    }
                    rules.push((
                        format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"),
                        Some("masquerade local traffic".to_string()),
                    ));
                    rules.push((
                        format!("fib saddr type local goto {service_chain}"),
                        Some("short-circuit local traffic".to_string()),
                    ));
                } else {
                    rules.push((format!("jump {MARK_FOR_MASQUERADE}"), None));
                }
                if plan.serves_external() {
                    rules.push((format!("goto {external_policy_chain}"), None));
                }
            }
            chains.push(OwnChain {
                name: external_chain.clone(),
                kind: NftObjectKind::External,
                rules,
                uses_affinity: false,
            });
        }
        let firewall = plan.restricts_load_balancer_sources();
        if firewall {
            let addresses = &info.addresses;
            let mut sources: Vec<&str> = addresses.source_ranges.iter().map(|r| &*r.text).collect();
            if plan.firewall_admits_node() {
                sources.extend(addresses.load_balancer_vips.iter().map(|v| &*v.text));
            }
            chains.push(OwnChain {
                name: firewall_chain.clone(),
                kind: NftObjectKind::Firewall,
                rules: if with_rules {
                    vec![(format!("{f} saddr != {{ {} }} drop", sources.join(" , ")), None)]
                } else {
                    Vec::new()
                },
                uses_affinity: false,
            });
        }

        let affinity_sets = match affinity {
            None => Vec::new(),
            Some(seconds) => endpoints
                .iter()
                .map(|ep| SetSpec {
                    kind: SetKind::Set,
                    name: ep.affinity.clone(),
                    type_text: ctx.family().addr_type().to_string(),
                    flags: vec!["dynamic".into(), "timeout".into()],
                    timeout_seconds: Some(seconds),
                    comment: None,
                })
                .collect(),
        };

        // Elements.
        let mut elements = Vec::new();
        let key = |ip: &str| format!("{ip} . {protocol} . {}", info.port);
        let goto = |chain: &str| Some(format!("goto {chain}"));
        let no_endpoints = |key: String, verdict: &str| Element {
            key,
            value: Some(verdict.to_string()),
            comment: Some(info.name.to_string()),
        };
        let cluster_ip = &*info.addresses.cluster_ip.text;
        elements.push((
            ElementMap::ClusterIps,
            Element {
                key: cluster_ip.to_string(),
                value: None,
                comment: None,
            },
        ));
        if plan.serves_internal() {
            elements.push((
                ElementMap::ServiceIps,
                Element {
                    key: key(cluster_ip),
                    value: goto(internal_chain),
                    comment: None,
                },
            ));
        } else {
            elements.push((
                ElementMap::NoEndpointServices,
                no_endpoints(key(cluster_ip), &internal_verdict),
            ));
        }
        let external_entries = |ips: &mut dyn Iterator<Item = &str>,
                                elements: &mut Vec<(ElementMap, Element)>| {
            for ip in ips {
                if plan.has_endpoints() {
                    elements.push((
                        ElementMap::ServiceIps,
                        Element {
                            key: key(ip),
                            value: goto(&external_chain),
                            comment: None,
                        },
                    ));
                }
                if !plan.serves_external() {
                    elements.push((
                        ElementMap::NoEndpointServices,
                        no_endpoints(key(ip), &external_verdict),
                    ));
                }
            }
        };
        external_entries(
            &mut info.addresses.external_ips.iter().map(|a| &*a.text),
            &mut elements,
        );
        for vip in &info.addresses.load_balancer_vips {
            if plan.has_endpoints() {
                elements.push((
                    ElementMap::ServiceIps,
                    Element {
                        key: key(&vip.text),
                        value: goto(&external_chain),
                        comment: None,
                    },
                ));
            }
            if firewall {
                elements.push((
                    ElementMap::FirewallIps,
                    Element {
                        key: key(&vip.text),
                        value: goto(&firewall_chain),
                        comment: None,
                    },
                ));
            }
        }
        if !plan.serves_external() {
            for vip in &info.addresses.load_balancer_vips {
                elements.push((
                    ElementMap::NoEndpointServices,
                    no_endpoints(key(&vip.text), &external_verdict),
                ));
            }
        }
        if info.node_port != 0 {
            let node_port_key = format!("{protocol} . {}", info.node_port);
            if plan.has_endpoints() {
                elements.push((
                    ElementMap::ServiceNodeports,
                    Element {
                        key: node_port_key.clone(),
                        value: goto(&external_chain),
                        comment: None,
                    },
                ));
            }
            if !plan.serves_external() {
                elements.push((
                    ElementMap::NoEndpointNodeports,
                    no_endpoints(node_port_key, &external_verdict),
                ));
            }
        }

        PortObjects {
            chains,
            affinity_sets,
            elements,
        }
    }
}
