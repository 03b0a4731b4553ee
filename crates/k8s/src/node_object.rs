//! `v1/Node` (the proxier's own Node) -> [`chainsmith_model::NodeObject`].

use std::net::IpAddr;

use chainsmith_model::{
    Diagnostic, IpFamily, IpNet, NodeObject, ObjectKey, ObjectKind, parse_cidr_sloppy, parse_ip_sloppy,
};
use k8s_openapi::api::core::v1 as api;

use crate::report::Report;

/// The taint the cluster autoscaler puts on a node it is about to remove.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Translates the Node kube-proxy runs on the way it reads it: host IPs as
/// upstream's `GetNodeHostIPs` picks them, pod CIDRs, labels, and whether the
/// node is being deleted (by its deletion timestamp or the autoscaler's taint).
///
/// Returns `None` (with a warning) only when the Node has no name. Addresses and
/// CIDRs that do not parse are skipped with a warning naming the field.
pub fn node_from_k8s(node: &api::Node, diags: &mut Vec<Diagnostic>) -> Option<NodeObject> {
    let meta = &node.metadata;
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
        Report::new(ObjectKind::Node, None, diags).warn("metadata.name", "missing name (Node skipped)");
        return None;
    };
    // Nodes are cluster-scoped: the key's namespace is empty.
    let mut report = Report::new(ObjectKind::Node, Some(ObjectKey::new("", name)), diags);
    let spec = node.spec.as_ref();
    Some(NodeObject {
        name: name.to_owned(),
        labels: meta.labels.clone().unwrap_or_default(),
        addresses: host_ips(node, &mut report),
        pod_cidrs: pod_cidrs(node, &mut report),
        deleting: meta.deletion_timestamp.is_some(),
        to_be_deleted_by_autoscaler: spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT)),
    })
}

/// Upstream's `GetNodeHostIPs`: every InternalIP, then every ExternalIP; the
/// first is the primary address, and the first of the other family (if any)
/// the secondary one.
fn host_ips(node: &api::Node, report: &mut Report<'_>) -> Vec<IpAddr> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let mut parsed: Vec<(bool, IpAddr)> = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let internal = match address.type_.as_str() {
            "InternalIP" => true,
            "ExternalIP" => false,
            // Hostname, InternalDNS, ExternalDNS: names, not addresses.
            _ => continue,
        };
        match parse_ip_sloppy(&address.address) {
            Some(ip) => parsed.push((internal, ip)),
            None => report.warn(
                format!("status.addresses[{i}].address"),
                format!("invalid IP address {:?} (skipped)", address.address),
            ),
        }
    }
    // A stable sort keeps the order within InternalIPs and within ExternalIPs.
    parsed.sort_by_key(|&(internal, _)| !internal);
    let mut ips = parsed.into_iter().map(|(_, ip)| ip);
    let Some(primary) = ips.next() else {
        return Vec::new();
    };
    let primary_family = IpFamily::of(&primary);
    let secondary = ips.find(|ip| IpFamily::of(ip) != primary_family);
    std::iter::once(primary).chain(secondary).collect()
}

/// `spec.podCIDRs`, or the older single `spec.podCIDR` when the list is empty.
fn pod_cidrs(node: &api::Node, report: &mut Report<'_>) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let list = spec.pod_cidrs.as_deref().unwrap_or_default();
    let entries: Vec<(String, &str)> = if list.is_empty() {
        spec.pod_cidr
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| ("spec.podCIDR".to_owned(), c))
            .into_iter()
            .collect()
    } else {
        list.iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.podCIDRs[{i}]"), c.as_str()))
            .collect()
    };
    entries
        .into_iter()
        .filter_map(|(field, text)| {
            let net = parse_cidr_sloppy(text);
            if net.is_none() {
                report.warn(field, format!("invalid CIDR {text:?} (skipped)"));
            }
            net
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chainsmith_model::Severity;
    use serde_json::{Value, json};

    use super::*;

    fn translate(object: Value) -> (Option<NodeObject>, Vec<Diagnostic>) {
        let node: api::Node = serde_json::from_value(object).unwrap();
        let mut diags = Vec::new();
        (node_from_k8s(&node, &mut diags), diags)
    }

    fn warnings(diags: &[Diagnostic]) -> Vec<String> {
        assert!(diags.iter().all(|d| d.severity == Severity::Warning));
        diags.iter().map(ToString::to_string).collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    #[test]
    fn dual_stack_node_translates_as_upstream_reads_it() {
        let (node, diags) = translate(json!({
            "metadata": {
                "name": "worker-1",
                "labels": {"topology.kubernetes.io/zone": "z1", "kubernetes.io/os": "linux"},
                "deletionTimestamp": "2025-01-01T00:00:00Z",
            },
            "spec": {
                "podCIDR": "10.244.9.0/24",
                "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"],
                "taints": [
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                    {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"},
                ],
            },
            "status": {"addresses": [
                {"type": "Hostname", "address": "worker-1"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "ExternalIP", "address": "2001:db8::7"},
                {"type": "InternalIP", "address": "192.168.0.11"},
                {"type": "InternalIP", "address": "192.168.0.12"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "InternalDNS", "address": "worker-1.internal"},
            ]},
        }));
        let node = node.unwrap();
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(node.name, "worker-1");
        assert_eq!(node.zone(), Some("z1"));
        assert_eq!(node.addresses, ips(&["192.168.0.11", "fd00::11"]));
        let cidrs: Vec<String> = node.pod_cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.244.1.0/24", "fd00:10:244:1::/64"]);
        assert!(node.deleting && node.to_be_deleted_by_autoscaler);
    }

    #[test]
    fn host_ips_follow_get_node_host_ips() {
        // (addresses as (type, address), expected host IPs)
        type Case = (&'static [(&'static str, &'static str)], &'static [&'static str]);
        let cases: [Case; 5] = [
            // No InternalIP: the first ExternalIP of each family.
            (
                &[("ExternalIP", "2001:db8::1"), ("ExternalIP", "203.0.113.1")],
                &["2001:db8::1", "203.0.113.1"],
            ),
            // The other family may come from an ExternalIP.
            (
                &[("ExternalIP", "2001:db8::1"), ("InternalIP", "10.0.0.1")],
                &["10.0.0.1", "2001:db8::1"],
            ),
            // Sloppy parsing, as upstream.
            (&[("InternalIP", "010.000.000.001")], &["10.0.0.1"]),
            (&[("Hostname", "n1")], &[]),
            (&[], &[]),
        ];
        for (addresses, expected) in cases {
            let addresses: Vec<Value> = addresses
                .iter()
                .map(|(t, a)| json!({"type": t, "address": a}))
                .collect();
            let (node, diags) = translate(json!({
                "metadata": {"name": "n1"},
                "status": {"addresses": addresses},
            }));
            assert!(diags.is_empty());
            assert_eq!(node.unwrap().addresses, ips(expected), "{addresses:?}");
        }
    }

    #[test]
    fn bad_fields_are_skipped_with_warnings() {
        let (node, diags) = translate(json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["10.244.1.0/24", "10.244.2.0/33"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "not an IP, not checked"},
                {"type": "InternalIP", "address": "192.168.0.1"},
                {"type": "InternalIP", "address": "192.168.0.300"},
            ]},
        }));
        let node = node.unwrap();
        assert_eq!(node.addresses, ips(&["192.168.0.1"]));
        assert_eq!(node.pod_cidrs.len(), 1);
        assert!(!node.deleting && !node.to_be_deleted_by_autoscaler);
        assert_eq!(
            warnings(&diags),
            [
                "Node n1: status.addresses[2].address: invalid IP address \"192.168.0.300\" (skipped)",
                "Node n1: spec.podCIDRs[1]: invalid CIDR \"10.244.2.0/33\" (skipped)",
            ]
        );

        // The single podCIDR is read only when podCIDRs is empty.
        let (node, diags) = translate(json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "x"}}));
        assert!(node.unwrap().pod_cidrs.is_empty());
        assert_eq!(
            warnings(&diags),
            ["Node n1: spec.podCIDR: invalid CIDR \"x\" (skipped)"]
        );

        let (node, diags) = translate(json!({"metadata": {}}));
        assert!(node.is_none());
        assert_eq!(
            warnings(&diags),
            ["Node: metadata.name: missing name (Node skipped)"]
        );
    }
}
