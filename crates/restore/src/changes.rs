//! `chainsmith diff --from/--to` for iptables mode: what one port's plan and
//! the node write, per table and chain, in a [`Layout`], for
//! [`chainsmith_changes::diff_plans`].

use chainsmith_changes::{OwnedRules, PlanDiff, RulesOf};
use chainsmith_iptables::{Rule, Table};
use chainsmith_layout::Layout;
use chainsmith_planner::{Plan, ServicePortPlan};

use crate::write_rule;

/// The rules of an iptables layout, as [`RulesOf`] hands them to the diff.
struct LayoutRules(Layout);

/// Records rules into `owned` as the renderer spells them.
fn sink<'o>(owned: &'o mut OwnedRules, table: Table) -> impl FnMut(&Rule<'_>) + 'o {
    let mut line = Vec::with_capacity(160);
    move |rule: &Rule<'_>| {
        line.clear();
        write_rule(&mut line, rule);
        line.pop(); // the newline
        // Every piece of a rendered rule is a `&str`, so nothing is lost here.
        owned.push(
            table.as_str(),
            rule.chain,
            String::from_utf8_lossy(&line).into_owned(),
        );
    }
}

impl RulesOf for LayoutRules {
    fn port(&self, port: &ServicePortPlan, plan: &Plan) -> OwnedRules {
        let (layout, ctx) = (self.0, &plan.ctx);
        let mut owned = OwnedRules::default();
        layout.emit_filter(port, &mut sink(&mut owned, Table::Filter));
        layout.emit_nat(
            port,
            ctx,
            plan.large_cluster,
            false,
            &mut sink(&mut owned, Table::Nat),
        );
        for chain in layout.own_chains(port) {
            owned.declare(Table::Nat.as_str(), chain.as_str());
        }
        {
            let mut own = sink(&mut owned, Table::Nat);
            layout.emit_nat(port, ctx, plan.large_cluster, true, &mut |rule: &Rule<'_>| {
                if layout.owns_service_chain(rule.chain) {
                    own(rule);
                }
            });
        }
        owned
    }

    fn node(&self, plan: &Plan) -> OwnedRules {
        let (layout, ctx) = (self.0, &plan.ctx);
        let mut owned = OwnedRules::default();
        for chain in layout.filter_chains(ctx) {
            owned.declare(Table::Filter.as_str(), chain);
        }
        layout.emit_filter_head(ctx, &mut sink(&mut owned, Table::Filter));
        layout.emit_filter_tail(ctx, &mut sink(&mut owned, Table::Filter));
        for chain in layout.nat_chains() {
            owned.declare(Table::Nat.as_str(), chain);
        }
        layout.emit_nat_head(ctx, &mut sink(&mut owned, Table::Nat));
        layout.emit_nat_tail(ctx, &mut sink(&mut owned, Table::Nat));
        owned
    }
}

/// Compares the rules two plans write in `layout`, Service by Service.
pub fn diff_plans(old: &Plan, new: &Plan, layout: Layout) -> PlanDiff {
    chainsmith_changes::diff_plans(old, new, &LayoutRules(layout))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use chainsmith_model::{
        AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpNet, LoadBalancerIngress,
        LocalTrafficDetector, NodeConfig, Service, ServicePort, ServiceType, TrafficPolicy,
    };

    use chainsmith_changes::{ChainDiff, DiffTotal};
    use chainsmith_model::{ObjectKey, Protocol};

    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            node_name: "node-a".into(),
            node_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
            local_traffic_detector: LocalTrafficDetector::ClusterCidr(
                "10.244.0.0/16".parse::<IpNet>().expect("cidr"),
            ),
            ..NodeConfig::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// `default/web`, ClusterIP 10.96.0.10, ports `(name, port)` over TCP.
    fn web(ports: &[(&str, u16)]) -> Service {
        let mut service = Service::new(ObjectKey::new("default", "web"));
        service.cluster_ips = ClusterIps {
            v4: Some(ip("10.96.0.10")),
            v6: None,
        };
        for &(name, port) in ports {
            service.ports.push(ServicePort {
                name: name.into(),
                protocol: Protocol::Tcp,
                port,
                node_port: 0,
            });
        }
        service
    }

    /// A slice of `default/web` with endpoints `(address, node)` serving the
    /// named ports on 8000 + the Service port's index.
    fn slice(ports: &[&str], endpoints: &[(&str, &str)]) -> EndpointSlice {
        EndpointSlice {
            key: ObjectKey::new("default", "web-abc"),
            service: ObjectKey::new("default", "web"),
            address_type: AddressType::Ipv4,
            ports: ports
                .iter()
                .zip(8000..)
                .map(|(name, port)| EndpointPort {
                    name: (*name).into(),
                    port,
                    protocol: Protocol::Tcp,
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|&(address, node)| Endpoint {
                    node_name: Some(node.into()),
                    ..Endpoint::ready(ip(address))
                })
                .collect(),
        }
    }

    fn diff(old: (&[Service], &[EndpointSlice]), new: (&[Service], &[EndpointSlice])) -> PlanDiff {
        diff_with(&node(), old, &node(), new)
    }

    fn diff_with(
        old_node: &NodeConfig,
        old: (&[Service], &[EndpointSlice]),
        new_node: &NodeConfig,
        new: (&[Service], &[EndpointSlice]),
    ) -> PlanDiff {
        diff_plans(
            &Plan::compile(old.0, old.1, old_node),
            &Plan::compile(new.0, new.1, new_node),
            Layout::V1_33,
        )
    }

    /// The shape of a diff, one line per Service, port and chain, with the
    /// hash of per-service chain names left out (`KUBE-SEP-*`).
    fn outline(diff: &PlanDiff) -> Vec<String> {
        let chain_line = |c: &ChainDiff| {
            let name = match chainsmith_naming::ServiceChainKind::of(&c.chain) {
                Some(kind) => format!("{}*", kind.prefix()),
                None => c.chain.clone(),
            };
            format!(
                "    {} {name} {:?} -{} +{}",
                c.table,
                c.change,
                c.removed.len(),
                c.added.len()
            )
        };
        let mut lines = Vec::new();
        for service in &diff.services {
            lines.push(format!(
                "{} {:?} -{} +{}",
                service.service, service.change, service.rules_removed, service.rules_added
            ));
            for port in &service.ports {
                lines.push(format!(
                    "  {}/{} {:?}",
                    port.port_name, port.protocol, port.change
                ));
                lines.extend(port.chains.iter().map(chain_line));
            }
        }
        if !diff.node.is_empty() {
            lines.push("node".into());
            lines.extend(diff.node.iter().map(chain_line));
        }
        lines
    }

    fn chain<'d>(diff: &'d PlanDiff, name_prefix: &str) -> Vec<&'d ChainDiff> {
        diff.services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.chains)
            .filter(|c| c.chain.starts_with(name_prefix))
            .collect()
    }

    const A: (&str, &str) = ("10.244.1.5", "node-a");
    const B: (&str, &str) = ("10.244.2.7", "node-b");

    #[test]
    fn unchanged_input_gives_an_empty_diff() {
        let state: (&[Service], &[EndpointSlice]) = (&[web(&[("http", 80)])], &[slice(&["http"], &[A, B])]);
        let found = diff(state, state);
        assert!(found.is_empty(), "{found:#?}");
        assert_eq!(found.total, DiffTotal::default());
    }

    #[test]
    fn a_new_endpoint_rebalances_the_service_chain_and_gets_its_own_chain() {
        let services = [web(&[("http", 80)])];
        let found = diff(
            (&services, &[slice(&["http"], &[A])]),
            (&services, &[slice(&["http"], &[A, B])]),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -1 +4",
                "  http/TCP Changed",
                "    nat KUBE-SVC-* Changed -1 +2",
                "    nat KUBE-SEP-* Added -0 +2",
            ]
        );
        let svc = chain(&found, "KUBE-SVC-")[0];
        assert!(svc.removed[0].ends_with(&format!("-j {}", chain_of_endpoint(&found, A.0))));
        assert!(svc.added[0].contains("--probability 0.5000000000"), "{svc:#?}");
        let sep = chain(&found, "KUBE-SEP-")[0];
        assert!(
            sep.added[1].ends_with("-j DNAT --to-destination 10.244.2.7:8000"),
            "{sep:#?}"
        );
        assert_eq!(found.services[0].chains_added, std::slice::from_ref(&sep.chain));
        assert_eq!(
            found.total,
            DiffTotal {
                services: 1,
                rules_added: 4,
                rules_removed: 1,
                chains_added: 1,
                chains_removed: 0
            }
        );
    }

    /// The endpoint chain an unchanged endpoint keeps (named in both states).
    fn chain_of_endpoint(diff: &PlanDiff, address: &str) -> String {
        let svc = chain(diff, "KUBE-SVC-")[0];
        let line = svc
            .added
            .iter()
            .find(|rule| rule.contains(&format!("-> {address}:")))
            .expect("a jump to the endpoint");
        line.rsplit(' ').next().expect("target").to_string()
    }

    #[test]
    fn a_new_port_brings_its_cluster_ip_rule_and_chains() {
        let found = diff(
            (&[web(&[("http", 80)])], &[slice(&["http"], &[A])]),
            (
                &[web(&[("http", 80), ("metrics", 9090)])],
                &[slice(&["http", "metrics"], &[A])],
            ),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -0 +5",
                "  metrics/TCP Added",
                "    nat KUBE-SERVICES Changed -0 +1",
                "    nat KUBE-SVC-* Added -0 +2",
                "    nat KUBE-SEP-* Added -0 +2",
            ]
        );
        let port = &found.services[0].ports[0];
        assert_eq!((port.old_port, port.new_port), (None, Some(9090)));
        let services = chain(&found, "KUBE-SERVICES")[0];
        assert_eq!(
            services.added[0],
            format!(
                "-A KUBE-SERVICES -m comment --comment \"default/web:metrics cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 9090 -j {}",
                chain(&found, "KUBE-SVC-")[0].chain
            )
        );
    }

    #[test]
    fn cluster_ip_to_load_balancer_with_source_ranges() {
        let mut lb = web(&[("http", 80)]);
        lb.service_type = ServiceType::LoadBalancer;
        lb.ports[0].node_port = 30080;
        lb.load_balancer_ingress.push(LoadBalancerIngress {
            ip: ip("203.0.113.20"),
            ip_mode: None,
        });
        lb.load_balancer_source_ranges
            .push("198.51.100.0/24".parse().expect("cidr"));
        let slices = [slice(&["http"], &[A])];
        let found = diff((&[web(&[("http", 80)])], &slices), (&[lb], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -0 +8",
                "  http/TCP Changed",
                "    filter KUBE-PROXY-FIREWALL Changed -0 +1",
                "    nat KUBE-SERVICES Changed -0 +1",
                "    nat KUBE-NODEPORTS Changed -0 +2",
                "    nat KUBE-EXT-* Added -0 +2",
                "    nat KUBE-FW-* Added -0 +2",
            ]
        );
        let fw = chain(&found, "KUBE-FW-")[0];
        let ext = chain(&found, "KUBE-EXT-")[0];
        assert_eq!(
            fw.added,
            [
                format!(
                    "-A {} -m comment --comment \"default/web:http loadbalancer IP\" -s 198.51.100.0/24 -j {}",
                    fw.chain, ext.chain
                ),
                format!(
                    "-A {} -m comment --comment \"other traffic to default/web:http will be dropped by KUBE-PROXY-FIREWALL\"",
                    fw.chain
                ),
            ]
        );
        let services = chain(&found, "KUBE-SERVICES")[0];
        assert!(
            services.added[0].contains("-d 203.0.113.20 --dport 80 -j KUBE-FW-"),
            "{services:#?}"
        );
        let firewall = chain(&found, "KUBE-PROXY-FIREWALL")[0];
        assert!(firewall.added[0].ends_with("-d 203.0.113.20 --dport 80 -j DROP"));
        assert_eq!(
            found.services[0].chains_added,
            [ext.chain.clone(), fw.chain.clone()]
        );
    }

    #[test]
    fn a_deleted_service_removes_every_rule_and_chain() {
        let other = Service {
            key: ObjectKey::new("default", "api"),
            ..web(&[("", 443)])
        };
        let found = diff(
            (
                &[web(&[("http", 80)]), other.clone()],
                &[slice(&["http"], &[A, B])],
            ),
            (&[other], &[]),
        );
        assert_eq!(
            outline(&found),
            [
                "default/web Removed -8 +0",
                "  http/TCP Removed",
                "    nat KUBE-SERVICES Changed -1 +0",
                "    nat KUBE-SVC-* Removed -3 +0",
                "    nat KUBE-SEP-* Removed -2 +0",
                "    nat KUBE-SEP-* Removed -2 +0",
            ]
        );
        assert_eq!(found.services[0].chains_removed.len(), 3);
        assert_eq!(found.total.chains_removed, 3);
    }

    #[test]
    fn external_traffic_policy_local_adds_the_local_chain_and_rewrites_ext() {
        let mut cluster = web(&[("http", 80)]);
        cluster.service_type = ServiceType::NodePort;
        cluster.ports[0].node_port = 30080;
        let local = Service {
            external_traffic_policy: TrafficPolicy::Local,
            ..cluster.clone()
        };
        let slices = [slice(&["http"], &[A, B])];
        let found = diff((&[cluster], &slices), (&[local], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -2 +5",
                "  http/TCP Changed",
                "    nat KUBE-EXT-* Changed -2 +4",
                "    nat KUBE-SVL-* Added -0 +1",
            ]
        );
        let ext = chain(&found, "KUBE-EXT-")[0];
        let svl = chain(&found, "KUBE-SVL-")[0];
        assert!(ext.removed[0].contains("masquerade traffic for default/web:http external destinations"));
        assert!(ext.added[0].contains("pod traffic for default/web:http external destinations"));
        assert_eq!(ext.added[3], format!("-A {} -j {}", ext.chain, svl.chain));
        // Only the local endpoint is balanced over.
        assert_eq!(svl.added.len(), 1);
        assert!(
            svl.added[0].contains("default/web:http -> 10.244.1.5:8000"),
            "{svl:#?}"
        );

        // With no local endpoint, outside traffic is dropped instead.
        let remote_only = [slice(&["http"], &[B])];
        let mut cluster = web(&[("http", 80)]);
        cluster.service_type = ServiceType::NodePort;
        cluster.ports[0].node_port = 30080;
        let local = Service {
            external_traffic_policy: TrafficPolicy::Local,
            ..cluster.clone()
        };
        let found = diff((&[cluster], &remote_only), (&[local], &remote_only));
        let drop = chain(&found, "KUBE-EXTERNAL-SERVICES")[0];
        assert_eq!(
            drop.added,
            [
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP"
            ]
        );
    }

    #[test]
    fn session_affinity_changes_the_rules_inside_existing_endpoint_chains() {
        let plain = web(&[("http", 80)]);
        let sticky = Service {
            session_affinity: chainsmith_model::SessionAffinity::ClientIp {
                timeout_seconds: 10800,
            },
            ..plain.clone()
        };
        let slices = [slice(&["http"], &[A, B])];
        let found = diff((&[plain], &slices), (&[sticky], &slices));
        assert_eq!(
            outline(&found),
            [
                "default/web Changed -2 +4",
                "  http/TCP Changed",
                "    nat KUBE-SVC-* Changed -0 +2",
                "    nat KUBE-SEP-* Changed -1 +1",
                "    nat KUBE-SEP-* Changed -1 +1",
            ]
        );
        let sep = chain(&found, "KUBE-SEP-")[0];
        assert_eq!(
            sep.added,
            [format!(
                "-A {0} -m comment --comment default/web:http -m recent --name {0} --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8000",
                sep.chain
            )]
        );
        assert!(found.services[0].chains_added.is_empty());
    }

    #[test]
    fn node_settings_change_the_rules_of_no_service() {
        let state: (&[Service], &[EndpointSlice]) = (&[web(&[("http", 80)])], &[slice(&["http"], &[A])]);
        let liberal = NodeConfig {
            conntrack_tcp_be_liberal: true,
            ..node()
        };
        let found = diff_with(&node(), state, &liberal, state);
        assert_eq!(outline(&found), ["node", "    filter KUBE-FORWARD Changed -1 +0"]);
        assert_eq!(found.total.services, 0);
        assert_eq!(found.total.rules_removed, 1);
    }

    #[test]
    fn json_names_tables_protocols_and_services_as_text() {
        let services = [web(&[("http", 80)])];
        let found = diff((&[], &[]), (&services, &[]));
        let json = serde_json::to_value(&found).expect("json");
        let service = &json["services"][0];
        assert_eq!(service["service"], "default/web");
        assert_eq!(service["change"], "added");
        assert_eq!(service["ports"][0]["protocol"], "TCP");
        assert_eq!(service["ports"][0]["chains"][0]["table"], "filter");
        assert_eq!(service["ports"][0]["chains"][0]["chain"], "KUBE-SERVICES");
    }
}
