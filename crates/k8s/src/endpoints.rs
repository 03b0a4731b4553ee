//! `discovery.k8s.io/v1/EndpointSlice` -> [`chainsmith_model::EndpointSlice`].

use std::collections::BTreeSet;

use chainsmith_model::{
    AddressType, Diagnostic, Endpoint, EndpointPort, EndpointSlice, IpFamily, ObjectKey, ObjectKind,
    Protocol, SERVICE_NAME_LABEL, parse_ip_sloppy,
};
use k8s_openapi::api::discovery::v1 as api;

use crate::report::{Report, port_number, start};

/// Translates an EndpointSlice the way kube-proxy's endpoint slice cache reads it.
///
/// Returns `None` for slices kube-proxy never sees or cannot attribute to a
/// Service (info diagnostic) and for unusable ones (warning). Ports and
/// endpoints kube-proxy would ignore are dropped with a warning.
pub fn endpoint_slice_from_k8s(
    slice: &api::EndpointSlice,
    diags: &mut Vec<Diagnostic>,
) -> Option<EndpointSlice> {
    let (key, mut report) = start(ObjectKind::EndpointSlice, &slice.metadata, diags)?;
    let meta = &slice.metadata;
    let labels = meta.labels.as_ref();
    let label_field = format!("metadata.labels[{SERVICE_NAME_LABEL:?}]");
    let Some(service_name) = labels
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|n| !n.is_empty())
    else {
        report.info(label_field, "no Service name label (EndpointSlice skipped)");
        return None;
    };
    if !report.check_name(&label_field, service_name) {
        return None;
    }

    let address_type = match slice.address_type.as_str() {
        "IPv4" => AddressType::Ipv4,
        "IPv6" => AddressType::Ipv6,
        "FQDN" => AddressType::Fqdn,
        // k8s-openapi reads a missing required field as "".
        "" => {
            report.warn("addressType", "missing address type (EndpointSlice skipped)");
            return None;
        }
        other => {
            report.warn(
                "addressType",
                format!("unknown address type {other:?} (EndpointSlice skipped)"),
            );
            return None;
        }
    };
    let ports = ports(slice, &mut report)?;
    let endpoints = match address_type.family() {
        Some(family) => endpoints(slice, family, &mut report),
        // FQDN addresses are host names; no proxier uses them.
        None => Vec::new(),
    };
    Some(EndpointSlice {
        service: ObjectKey::new(key.namespace.clone(), service_name.as_str()),
        key,
        address_type,
        ports,
        endpoints,
    })
}

/// `None` only when a port name is unsafe: then the whole slice is refused.
fn ports(slice: &api::EndpointSlice, report: &mut Report<'_>) -> Option<Vec<EndpointPort>> {
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let field = format!("ports[{i}]");
        let Some(name) = port.name.clone() else {
            report.warn(format!("{field}.name"), "port without a name is ignored");
            continue;
        };
        if !report.check_name(&format!("{field}.name"), &name) {
            return None;
        }
        let number = match port.port {
            None | Some(0) => {
                report.warn(format!("{field}.port"), "port without a number is ignored");
                continue;
            }
            Some(n) => match port_number(n) {
                Some(n) => n,
                None => {
                    report.warn(
                        format!("{field}.port"),
                        format!("port {n} is not in 1..=65535 (port skipped)"),
                    );
                    continue;
                }
            },
        };
        let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_api(protocol_text) else {
            report.warn(
                format!("{field}.protocol"),
                format!("unknown protocol {protocol_text:?} (port skipped)"),
            );
            continue;
        };
        if !seen.insert((name.clone(), protocol)) {
            report.warn(
                field,
                format!("duplicate port name {name:?} with protocol {protocol} (port skipped)"),
            );
            continue;
        }
        ports.push(EndpointPort {
            name,
            port: number,
            protocol,
        });
    }
    ports.sort();
    Some(ports)
}

fn endpoints(slice: &api::EndpointSlice, family: IpFamily, report: &mut Report<'_>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (i, endpoint) in slice.endpoints.iter().flatten().enumerate() {
        // kube-proxy uses only the first address.
        let Some(text) = endpoint.addresses.first() else {
            report.warn(
                format!("endpoints[{i}].addresses"),
                "no addresses (endpoint skipped)",
            );
            continue;
        };
        let field = format!("endpoints[{i}].addresses[0]");
        let Some(address) = parse_ip_sloppy(text) else {
            report.warn(field, format!("invalid IP address {text:?} (endpoint skipped)"));
            continue;
        };
        // The API rejects this; a wrong-family DNAT target would make the restore fail.
        if IpFamily::of(&address) != family {
            report.warn(
                field,
                format!("{text:?} is not an {family} address (endpoint skipped)"),
            );
            continue;
        }
        let conditions = endpoint.conditions.as_ref();
        let hints = endpoint.hints.as_ref();
        out.push(Endpoint {
            address,
            ready: conditions.and_then(|c| c.ready).unwrap_or(true),
            serving: conditions.and_then(|c| c.serving).unwrap_or(true),
            terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            node_name: endpoint.node_name.clone(),
            zone: endpoint.zone.clone(),
            zone_hints: sorted_unique(
                hints
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| &z.name),
            ),
            node_hints: sorted_unique(
                hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| &n.name),
            ),
        });
    }
    out
}

fn sorted_unique<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    names.cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use chainsmith_model::Severity;
    use serde_json::{Value, json};

    use super::*;

    /// Translates slice `ns1/svc1-1` of Service `svc1` with the given fields.
    fn translate(fields: Value) -> (Option<EndpointSlice>, Vec<Diagnostic>) {
        let mut object = json!({
            "metadata": {"name": "svc1-1", "namespace": "ns1", "labels": {"kubernetes.io/service-name": "svc1"}},
            "addressType": "IPv4",
        });
        for (k, v) in fields.as_object().unwrap() {
            object[k] = v.clone();
        }
        let slice: api::EndpointSlice = serde_json::from_value(object).unwrap();
        let mut diags = Vec::new();
        (endpoint_slice_from_k8s(&slice, &mut diags), diags)
    }

    fn summary(diags: &[Diagnostic]) -> Vec<(Severity, &str, &str)> {
        diags
            .iter()
            .map(|d| (d.severity, d.field.as_str(), d.message.as_str()))
            .collect()
    }

    fn port(name: &str, port: u16, protocol: Protocol) -> EndpointPort {
        EndpointPort {
            name: name.to_owned(),
            port,
            protocol,
        }
    }

    #[test]
    fn a_slice_translates_with_api_defaults() {
        let (slice, diags) = translate(json!({
            "ports": [{"name": "p80", "port": 80}, {"name": "", "port": 53, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.180.0.01", "10.180.0.9"]},
                {"addresses": ["10.180.0.2"], "conditions": {"ready": false, "terminating": true},
                 "nodeName": "test-node", "zone": "z1",
                 "hints": {"forZones": [{"name": "z2"}, {"name": "z1"}, {"name": "z2"}],
                           "forNodes": [{"name": "b"}, {"name": "a"}]}},
            ],
        }));
        assert_eq!(diags, []);
        let slice = slice.unwrap();
        assert_eq!(slice.key, ObjectKey::new("ns1", "svc1-1"));
        assert_eq!(slice.service, ObjectKey::new("ns1", "svc1"));
        assert_eq!(slice.address_type, AddressType::Ipv4);
        assert_eq!(
            slice.ports,
            [port("", 53, Protocol::Udp), port("p80", 80, Protocol::Tcp)]
        );
        let first = Endpoint::ready("10.180.0.1".parse().unwrap());
        assert_eq!(slice.endpoints[0], first);
        let second = Endpoint {
            address: "10.180.0.2".parse().unwrap(),
            ready: false,
            serving: true,
            terminating: true,
            node_name: Some("test-node".to_owned()),
            zone: Some("z1".to_owned()),
            zone_hints: vec!["z1".to_owned(), "z2".to_owned()],
            node_hints: vec!["a".to_owned(), "b".to_owned()],
        };
        assert_eq!(slice.endpoints[1], second);
    }

    #[test]
    fn unusable_ports_and_endpoints_are_dropped_with_a_warning() {
        let (slice, diags) = translate(json!({
            "ports": [
                {"port": 80},
                {"name": "zero", "port": 0},
                {"name": "none"},
                {"name": "big", "port": 70000},
                {"name": "foo", "port": 80, "protocol": "FOO"},
                {"name": "ok", "port": 81},
                {"name": "ok", "port": 82},
            ],
            "endpoints": [
                {"addresses": []},
                {"addresses": ["10.0.0.256"]},
                {"addresses": ["fd00::1"]},
                {"addresses": ["10.0.0.1"]},
            ],
        }));
        use Severity::Warning;
        assert_eq!(
            summary(&diags),
            [
                (Warning, "ports[0].name", "port without a name is ignored"),
                (Warning, "ports[1].port", "port without a number is ignored"),
                (Warning, "ports[2].port", "port without a number is ignored"),
                (
                    Warning,
                    "ports[3].port",
                    "port 70000 is not in 1..=65535 (port skipped)"
                ),
                (
                    Warning,
                    "ports[4].protocol",
                    "unknown protocol \"FOO\" (port skipped)"
                ),
                (
                    Warning,
                    "ports[6]",
                    "duplicate port name \"ok\" with protocol TCP (port skipped)"
                ),
                (
                    Warning,
                    "endpoints[0].addresses",
                    "no addresses (endpoint skipped)"
                ),
                (
                    Warning,
                    "endpoints[1].addresses[0]",
                    "invalid IP address \"10.0.0.256\" (endpoint skipped)"
                ),
                (
                    Warning,
                    "endpoints[2].addresses[0]",
                    "\"fd00::1\" is not an IPv4 address (endpoint skipped)"
                ),
            ]
        );
        let slice = slice.unwrap();
        assert_eq!(slice.ports, [port("ok", 81, Protocol::Tcp)]);
        assert_eq!(slice.endpoints.len(), 1);
    }

    #[test]
    fn slices_that_are_not_used_are_skipped() {
        use Severity::{Info, Warning};
        let cases = [
            (
                json!({"metadata": {"name": "s", "namespace": "ns1"}}),
                Info,
                "metadata.labels[\"kubernetes.io/service-name\"]",
            ),
            (
                json!({"metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "a", "service.kubernetes.io/headless": ""}}}),
                Info,
                "metadata.labels[\"service.kubernetes.io/headless\"]",
            ),
            (
                json!({"metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "a", "service.kubernetes.io/service-proxy-name": "x"}}}),
                Info,
                "metadata.labels[\"service.kubernetes.io/service-proxy-name\"]",
            ),
            (
                json!({"metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "a b"}}}),
                Warning,
                "metadata.labels[\"kubernetes.io/service-name\"]",
            ),
            (
                json!({"metadata": {"labels": {"kubernetes.io/service-name": "a"}}}),
                Warning,
                "metadata.name",
            ),
            (json!({"addressType": "IPv5"}), Warning, "addressType"),
            (
                json!({"ports": [{"name": "p'80", "port": 80}]}),
                Warning,
                "ports[0].name",
            ),
        ];
        for (fields, severity, field) in cases {
            let (slice, diags) = translate(fields.clone());
            assert_eq!(slice, None, "{fields}");
            assert_eq!(
                summary(&diags).iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
                [(severity, field)],
                "{fields}"
            );
        }
    }

    #[test]
    fn fqdn_slices_keep_ports_but_no_endpoints() {
        let (slice, diags) = translate(json!({
            "addressType": "FQDN",
            "ports": [{"name": "p80", "port": 80}],
            "endpoints": [{"addresses": ["example.com"]}],
        }));
        assert_eq!(diags, []);
        let slice = slice.unwrap();
        assert_eq!(
            (slice.address_type, slice.ports.len(), slice.endpoints.len()),
            (AddressType::Fqdn, 1, 0)
        );
    }

    #[test]
    fn ipv6_slices_keep_ipv6_endpoints() {
        let (slice, diags) = translate(json!({
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["FD00:10:180::1"]}, {"addresses": ["10.0.0.1"]}],
        }));
        assert_eq!(diags.len(), 1);
        let addresses: Vec<String> = slice
            .unwrap()
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addresses, ["fd00:10:180::1"]);
    }
}
