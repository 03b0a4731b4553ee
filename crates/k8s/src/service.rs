//! `v1/Service` -> [`chainsmith_model::Service`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use chainsmith_model::{
    ClusterIps, Diagnostic, IpFamily, LoadBalancerIngress, LoadBalancerIpMode, ObjectKind, Protocol, Service,
    ServicePort, ServiceType, SessionAffinity, TrafficPolicy, parse_cidr_sloppy, parse_ip_sloppy,
};
use k8s_openapi::api::core::v1 as api;

use crate::report::{Report, port_number, start};

/// API default of `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_STICKY_SECONDS: u32 = 10_800;
/// API maximum of the same (one day).
const MAX_STICKY_SECONDS: u32 = 86_400;

/// Translates a Service the way kube-proxy's service change tracker reads it.
///
/// Returns `None` for Services kube-proxy never proxies (headless, ExternalName,
/// handed to another proxy by label; an info diagnostic says which) and for
/// Services that cannot be used safely (a warning says why). Bad fields that
/// kube-proxy would ignore are dropped with a warning; the rest is kept.
pub fn service_from_k8s(svc: &api::Service, diags: &mut Vec<Diagnostic>) -> Option<Service> {
    let (key, mut report) = start(ObjectKind::Service, &svc.metadata, diags)?;

    let default_spec = api::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    // Before the cluster IP: an ExternalName Service has none, and the note
    // should say what it is rather than call it headless.
    if spec.type_.as_deref() == Some("ExternalName") {
        report.info(
            "spec.type",
            "ExternalName Services are not proxied (Service skipped)",
        );
        return None;
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    if cluster_ip.is_empty() || cluster_ip == "None" {
        report.info("spec.clusterIP", "headless or no cluster IP (Service skipped)");
        return None;
    }
    let service_type = match spec.type_.as_deref() {
        None | Some("") => ServiceType::Unset,
        Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some(other) => {
            report.warn("spec.type", format!("unknown type {other:?} (treated as unset)"));
            ServiceType::Unset
        }
    };

    let cluster_ips = cluster_ips(spec, &mut report);
    if cluster_ips.v4.is_none() && cluster_ips.v6.is_none() {
        report.warn("spec.clusterIP", "no usable cluster IP (Service skipped)");
        return None;
    }
    let ports = ports(spec, &mut report)?;

    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, text)| ip_or_warn(&mut report, &format!("spec.externalIPs[{i}]"), text))
        .collect();

    let session_affinity = session_affinity(spec, &mut report);
    Some(Service {
        key,
        service_type,
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ingress: load_balancer_ingress(svc, &mut report),
        load_balancer_source_ranges: source_ranges(spec, &mut report),
        external_traffic_policy: traffic_policy(
            spec.external_traffic_policy.as_deref(),
            "spec.externalTrafficPolicy",
            &mut report,
        ),
        internal_traffic_policy: traffic_policy(
            spec.internal_traffic_policy.as_deref(),
            "spec.internalTrafficPolicy",
            &mut report,
        ),
        health_check_node_port: optional_port(
            spec.health_check_node_port,
            "spec.healthCheckNodePort",
            &mut report,
        ),
        session_affinity,
    })
}

/// upstream `GetClusterIPByFamily`, for both families at once.
fn cluster_ips(spec: &api::ServiceSpec, report: &mut Report<'_>) -> ClusterIps {
    let mut ips = ClusterIps::default();
    let families = spec.ip_families.as_deref().unwrap_or_default();
    if families.is_empty() {
        if let Some(ip) = ip_or_warn(report, "spec.clusterIP", spec.cluster_ip.as_deref().unwrap_or("")) {
            set_family(&mut ips, ip);
        }
        return ips;
    }
    // The API server defaults clusterIPs from clusterIP; hand-written manifests may omit it.
    let fallback;
    let cluster_ips = match spec.cluster_ips.as_deref() {
        Some(list) if !list.is_empty() => list,
        _ => {
            fallback = spec.cluster_ip.iter().cloned().collect::<Vec<_>>();
            &fallback[..]
        }
    };
    for (i, family) in families.iter().enumerate() {
        let field = format!("spec.ipFamilies[{i}]");
        let family = match family.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            other => {
                report.warn(field, format!("unknown IP family {other:?} (ignored)"));
                continue;
            }
        };
        if ips.get(family).is_some() {
            report.warn(
                field,
                format!("duplicate IP family {:?} (ignored)", family.as_str()),
            );
            continue;
        }
        let Some(text) = cluster_ips.get(i) else { continue };
        let field = format!("spec.clusterIPs[{i}]");
        let Some(ip) = ip_or_warn(report, &field, text) else {
            continue;
        };
        if IpFamily::of(&ip) != family {
            report.warn(
                field,
                format!("{text:?} is not an {family} address as ipFamilies[{i}] says (ignored)"),
            );
            continue;
        }
        set_family(&mut ips, ip);
    }
    ips
}

fn set_family(ips: &mut ClusterIps, ip: IpAddr) {
    match IpFamily::of(&ip) {
        IpFamily::V4 => ips.v4 = Some(ip),
        IpFamily::V6 => ips.v6 = Some(ip),
    }
}

/// `None` only when a port name is unsafe: then the whole Service is refused.
fn ports(spec: &api::ServiceSpec, report: &mut Report<'_>) -> Option<Vec<ServicePort>> {
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let name = port.name.clone().unwrap_or_default();
        if !report.check_name(&format!("{field}.name"), &name) {
            return None;
        }
        let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_api(protocol_text) else {
            report.warn(
                format!("{field}.protocol"),
                format!("unknown protocol {protocol_text:?} (port skipped)"),
            );
            continue;
        };
        let Some(number) = port_number(port.port) else {
            report.warn(
                format!("{field}.port"),
                format!("port {} is not in 1..=65535 (port skipped)", port.port),
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
        let node_port = optional_port(port.node_port, &format!("{field}.nodePort"), report);
        ports.push(ServicePort {
            name,
            protocol,
            port: number,
            node_port,
        });
    }
    Some(ports)
}

/// `nodePort` / `healthCheckNodePort`: 0 = none; out of range is treated as none.
fn optional_port(value: Option<i32>, field: &str, report: &mut Report<'_>) -> u16 {
    let value = value.unwrap_or(0);
    u16::try_from(value).unwrap_or_else(|_| {
        report.warn(field, format!("{value} is not in 0..=65535 (treated as 0)"));
        0
    })
}

fn ip_or_warn(report: &mut Report<'_>, field: &str, text: &str) -> Option<IpAddr> {
    let ip = parse_ip_sloppy(text);
    if ip.is_none() {
        report.warn(field, format!("invalid IP address {text:?} (skipped)"));
    }
    ip
}

fn load_balancer_ingress(svc: &api::Service, report: &mut Report<'_>) -> Vec<LoadBalancerIngress> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut out = Vec::new();
    for (i, entry) in ingress.into_iter().flatten().enumerate() {
        // Hostname-only ingress carries nothing a proxier can match on.
        let Some(text) = entry.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let Some(ip) = ip_or_warn(report, &format!("status.loadBalancer.ingress[{i}].ip"), text) else {
            continue;
        };
        let ip_mode = match entry.ip_mode.as_deref() {
            None => None,
            Some("VIP") => Some(LoadBalancerIpMode::Vip),
            Some("Proxy") => Some(LoadBalancerIpMode::Proxy),
            Some(other) => {
                report.warn(
                    format!("status.loadBalancer.ingress[{i}].ipMode"),
                    format!(
                        "unknown ipMode {other:?} (treated as Proxy, as kube-proxy treats any non-VIP mode)"
                    ),
                );
                Some(LoadBalancerIpMode::Proxy)
            }
        };
        out.push(LoadBalancerIngress { ip, ip_mode });
    }
    out
}

fn source_ranges(spec: &api::ServiceSpec, report: &mut Report<'_>) -> Vec<chainsmith_model::IpNet> {
    let mut out = Vec::new();
    for (i, text) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        match parse_cidr_sloppy(trimmed) {
            Some(net) => out.push(net),
            None => report.warn(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("invalid CIDR {text:?} (skipped)"),
            ),
        }
    }
    out
}

fn traffic_policy(value: Option<&str>, field: &str, report: &mut Report<'_>) -> TrafficPolicy {
    match value {
        None | Some("" | "Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            report.warn(
                field,
                format!("unknown traffic policy {other:?} (treated as Cluster)"),
            );
            TrafficPolicy::Cluster
        }
    }
}

fn session_affinity(spec: &api::ServiceSpec, report: &mut Report<'_>) -> SessionAffinity {
    match spec.session_affinity.as_deref() {
        None | Some("" | "None") => SessionAffinity::None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_STICKY_SECONDS,
                Some(t) => match u32::try_from(t) {
                    Ok(t) if (1..=MAX_STICKY_SECONDS).contains(&t) => t,
                    _ => {
                        report.warn(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                            format!(
                                "{t} is not in 1..={MAX_STICKY_SECONDS} (using {DEFAULT_STICKY_SECONDS})"
                            ),
                        );
                        DEFAULT_STICKY_SECONDS
                    }
                },
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        Some(other) => {
            report.warn(
                "spec.sessionAffinity",
                format!("unknown session affinity {other:?} (treated as None)"),
            );
            SessionAffinity::None
        }
    }
}

#[cfg(test)]
mod tests {
    use chainsmith_model::Severity;
    use serde_json::{Value, json};

    use super::*;

    /// Translates `ns1/svc1` with the given spec (and optional status / labels merged in).
    fn translate(object: Value) -> (Option<Service>, Vec<Diagnostic>) {
        let mut full = json!({"metadata": {"name": "svc1", "namespace": "ns1"}});
        merge(&mut full, object);
        let svc: api::Service = serde_json::from_value(full).unwrap();
        let mut diags = Vec::new();
        (service_from_k8s(&svc, &mut diags), diags)
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (k, v) in from {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
            (into, from) => *into = from,
        }
    }

    fn spec(spec: Value) -> Value {
        let mut full = json!({"spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}});
        merge(&mut full, json!({ "spec": spec }));
        full
    }

    /// `(severity, field, message)` of each diagnostic.
    fn summary(diags: &[Diagnostic]) -> Vec<(Severity, &str, &str)> {
        diags
            .iter()
            .map(|d| (d.severity, d.field.as_str(), d.message.as_str()))
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn services_kube_proxy_never_proxies_are_skipped() {
        use Severity::{Info, Warning};
        let cases = [
            (spec(json!({"clusterIP": "None"})), Info, "spec.clusterIP"),
            (spec(json!({"clusterIP": ""})), Info, "spec.clusterIP"),
            (json!({"spec": {"ports": []}}), Info, "spec.clusterIP"),
            (spec(json!({"type": "ExternalName"})), Info, "spec.type"),
            // As the API server stores one: no cluster IP at all.
            (
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                Info,
                "spec.type",
            ),
            (
                json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
                Info,
                "metadata.labels[\"service.kubernetes.io/service-proxy-name\"]",
            ),
            (
                json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}}),
                Info,
                "metadata.labels[\"service.kubernetes.io/headless\"]",
            ),
            (json!({"metadata": {"name": null}}), Warning, "metadata.name"),
            (json!({"metadata": {"name": "svc 1"}}), Warning, "metadata.name"),
            (
                json!({"metadata": {"namespace": "ns\"1"}}),
                Warning,
                "metadata.namespace",
            ),
            (
                spec(json!({"ports": [{"name": "p\\80", "port": 80}]})),
                Warning,
                "spec.ports[0].name",
            ),
            (spec(json!({"clusterIP": "1.2.3"})), Warning, "spec.clusterIP"),
        ];
        for (object, severity, field) in cases {
            let (svc, diags) = translate(object.clone());
            assert_eq!(svc, None, "{object}");
            let last = diags.last().unwrap();
            assert_eq!(
                (last.severity, last.field.as_str()),
                (severity, field),
                "{object}: {diags:?}"
            );
        }
    }

    /// What would end a bare word in an `nft -f` line (a chain name is
    /// `service-HASH-ns/svc/tcp/port`) is refused in every name that reaches one.
    #[test]
    fn names_that_would_break_an_nft_line_are_refused() {
        for bad in [
            "a{b", "a}b", "a;b", "a#b", "a:b", "a@b", "a$b", "a\"b", "a\nb", "a b",
        ] {
            for (object, field) in [
                (json!({"metadata": {"name": bad}}), "metadata.name"),
                (json!({"metadata": {"namespace": bad}}), "metadata.namespace"),
                (
                    json!({"metadata": {"name": bad}, "spec": {"clusterIP": "172.30.0.41"}}),
                    "metadata.name",
                ),
                (
                    spec(json!({"ports": [{"name": bad, "port": 80}]})),
                    "spec.ports[0].name",
                ),
            ] {
                let (svc, diags) = translate(object);
                assert_eq!(svc, None, "{bad:?} in {field}");
                let last = diags.last().unwrap();
                assert_eq!(
                    (last.severity, last.field.as_str()),
                    (Severity::Warning, field),
                    "{bad:?}"
                );
            }
        }
        let mut fine = spec(json!({"ports": [{"name": "http_2-x", "port": 80}]}));
        merge(&mut fine, json!({"metadata": {"name": "web-1.v2_x"}}));
        let (svc, diags) = translate(fine);
        assert!(
            svc.is_some(),
            "letters, digits, '-', '.' and '_' are fine: {diags:?}"
        );
    }

    #[test]
    fn unsafe_names_are_quoted_in_the_warning() {
        let (_, diags) = translate(json!({"metadata": {"name": "a\nb"}}));
        assert_eq!(
            summary(&diags),
            [(
                Severity::Warning,
                "metadata.name",
                "\"a\\nb\" contains '\\n', which is not allowed in a Kubernetes name and would corrupt the rules (Service skipped)"
            )]
        );
    }

    #[test]
    fn cluster_ips_follow_get_cluster_ip_by_family() {
        let v4 = Some(ip("10.0.0.1"));
        let v6 = Some(ip("fd00::1"));
        // (spec patch, expected v4, expected v6, warned fields)
        type Case = (Value, Option<IpAddr>, Option<IpAddr>, &'static [&'static str]);
        let cases: [Case; 7] = [
            (
                json!({"clusterIP": "172.30.0.041"}),
                Some(ip("172.30.0.41")),
                None,
                &[],
            ),
            (json!({"clusterIP": "FD00:0::1"}), None, v6, &[]),
            (
                json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv6", "IPv4"], "clusterIPs": ["fd00::1", "10.0.0.1"]}),
                v4,
                v6,
                &[],
            ),
            // clusterIPs defaulted from clusterIP, as the API server does.
            (
                json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4"]}),
                v4,
                None,
                &[],
            ),
            (
                json!({"clusterIP": "fd00::2", "ipFamilies": ["IPv4", "IPv6"], "clusterIPs": ["fd00::2", "fd00::1"]}),
                None,
                v6,
                &["spec.clusterIPs[0]"],
            ),
            (
                json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv4", "IPv6"], "clusterIPs": ["10.0.0.1", "x"]}),
                v4,
                None,
                &["spec.clusterIPs[1]"],
            ),
            (
                json!({"clusterIP": "10.0.0.1", "ipFamilies": ["IPv5", "IPv4"], "clusterIPs": ["fd00::1", "10.0.0.1"]}),
                v4,
                None,
                &["spec.ipFamilies[0]"],
            ),
        ];
        for (patch, v4, v6, fields) in cases {
            let (svc, diags) = translate(spec(patch.clone()));
            assert_eq!(svc.map(|s| s.cluster_ips), Some(ClusterIps { v4, v6 }), "{patch}");
            let warned: Vec<_> = diags.iter().map(|d| d.field.as_str()).collect();
            assert_eq!(warned, fields, "{patch}");
        }
    }

    #[test]
    fn a_full_service_translates_field_by_field() {
        let (svc, diags) = translate(json!({
            "spec": {
                "clusterIP": "172.30.0.42",
                "ports": [
                    {"port": 80},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                    {"name": "s", "port": 9, "protocol": "SCTP"}
                ],
                "externalIPs": ["192.168.99.22", "2001:db8::5"],
                "loadBalancerSourceRanges": [" 203.0.113.000/025", "", "0.0.0.0/0", "2001:db8::1/64"],
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local",
                "healthCheckNodePort": 30000,
                "sessionAffinity": "ClientIP"
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "1.2.3.4"}, {"hostname": "lb.example"}, {"ip": "5.6.7.8", "ipMode": "VIP"},
                {"ip": "9.9.9.9", "ipMode": "Proxy"}
            ]}}
        }));
        assert_eq!(diags, []);
        let svc = svc.unwrap();
        assert_eq!(svc.service_type, ServiceType::Unset);
        let ports: Vec<_> = svc
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol, p.port, p.node_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("", Protocol::Tcp, 80, 0),
                ("dns", Protocol::Udp, 53, 30053),
                ("s", Protocol::Sctp, 9, 0)
            ]
        );
        assert_eq!(svc.external_ips, [ip("192.168.99.22"), ip("2001:db8::5")]);
        let ranges: Vec<String> = svc
            .load_balancer_source_ranges
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, ["203.0.113.0/25", "0.0.0.0/0", "2001:db8::/64"]);
        let ingress: Vec<_> = svc
            .load_balancer_ingress
            .iter()
            .map(|i| (i.ip, i.ip_mode))
            .collect();
        assert_eq!(
            ingress,
            [
                (ip("1.2.3.4"), None),
                (ip("5.6.7.8"), Some(LoadBalancerIpMode::Vip)),
                (ip("9.9.9.9"), Some(LoadBalancerIpMode::Proxy))
            ]
        );
        assert_eq!(svc.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc.health_check_node_port, 30000);
        assert_eq!(
            svc.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10800
            }
        );
    }

    #[test]
    fn bad_fields_are_dropped_or_defaulted_with_a_warning() {
        // (spec patch, field, message, check on the translated Service)
        type Check = fn(&Service) -> bool;
        let cases: [(Value, &str, &str, Check); 14] = [
            (
                json!({"type": "Weird"}),
                "spec.type",
                "unknown type \"Weird\" (treated as unset)",
                |s| s.service_type == ServiceType::Unset,
            ),
            (
                json!({"ports": [{"name": "a", "port": 80, "protocol": "FOO"}]}),
                "spec.ports[0].protocol",
                "unknown protocol \"FOO\" (port skipped)",
                |s| s.ports.is_empty(),
            ),
            (
                json!({"ports": [{"name": "a", "port": 0}]}),
                "spec.ports[0].port",
                "port 0 is not in 1..=65535 (port skipped)",
                |s| s.ports.is_empty(),
            ),
            (
                json!({"ports": [{"name": "a", "port": 65536}]}),
                "spec.ports[0].port",
                "port 65536 is not in 1..=65535 (port skipped)",
                |s| s.ports.is_empty(),
            ),
            (
                json!({"ports": [{"name": "a", "port": 80, "nodePort": -1}]}),
                "spec.ports[0].nodePort",
                "-1 is not in 0..=65535 (treated as 0)",
                |s| s.ports[0].node_port == 0,
            ),
            (
                json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81, "protocol": "TCP"}]}),
                "spec.ports[1]",
                "duplicate port name \"a\" with protocol TCP (port skipped)",
                |s| s.ports.len() == 1 && s.ports[0].port == 80,
            ),
            (
                json!({"externalIPs": ["1.2.3.4", "1.2.3"]}),
                "spec.externalIPs[1]",
                "invalid IP address \"1.2.3\" (skipped)",
                |s| s.external_ips.len() == 1,
            ),
            (
                json!({"loadBalancerSourceRanges": ["10.0.0.0/33"]}),
                "spec.loadBalancerSourceRanges[0]",
                "invalid CIDR \"10.0.0.0/33\" (skipped)",
                |s| s.load_balancer_source_ranges.is_empty(),
            ),
            (
                json!({"externalTrafficPolicy": "Global"}),
                "spec.externalTrafficPolicy",
                "unknown traffic policy \"Global\" (treated as Cluster)",
                |s| s.external_traffic_policy == TrafficPolicy::Cluster,
            ),
            (
                json!({"healthCheckNodePort": 70000}),
                "spec.healthCheckNodePort",
                "70000 is not in 0..=65535 (treated as 0)",
                |s| s.health_check_node_port == 0,
            ),
            (
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "0 is not in 1..=86400 (using 10800)",
                |s| {
                    s.session_affinity
                        == SessionAffinity::ClientIp {
                            timeout_seconds: 10800,
                        }
                },
            ),
            (
                json!({"sessionAffinity": "Cookie"}),
                "spec.sessionAffinity",
                "unknown session affinity \"Cookie\" (treated as None)",
                |s| s.session_affinity == SessionAffinity::None,
            ),
            (
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
                "",
                "",
                |s| s.session_affinity == SessionAffinity::ClientIp { timeout_seconds: 60 },
            ),
            (
                json!({"ipFamilies": ["IPv4", "IPv4"], "clusterIPs": ["10.0.0.1", "10.0.0.2"]}),
                "spec.ipFamilies[1]",
                "duplicate IP family \"IPv4\" (ignored)",
                |s| s.cluster_ips.v4 == Some(ip("10.0.0.1")),
            ),
        ];
        for (patch, field, message, check) in cases {
            let (svc, diags) = translate(spec(patch.clone()));
            let expected: Vec<_> = if field.is_empty() {
                vec![]
            } else {
                vec![(Severity::Warning, field, message)]
            };
            assert_eq!(summary(&diags), expected, "{patch}");
            assert!(check(&svc.unwrap()), "{patch}");
        }
    }

    #[test]
    fn unknown_ingress_ip_mode_counts_as_proxy() {
        let mut object = spec(json!({}));
        let ingress = json!([{"ip": "1.2.3.4", "ipMode": "Bogus"}, {"ip": "x"}]);
        merge(
            &mut object,
            json!({"status": {"loadBalancer": {"ingress": ingress}}}),
        );
        let (svc, diags) = translate(object);
        assert_eq!(
            svc.unwrap().load_balancer_ingress[0].ip_mode,
            Some(LoadBalancerIpMode::Proxy)
        );
        let fields: Vec<_> = diags.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "status.loadBalancer.ingress[0].ipMode",
                "status.loadBalancer.ingress[1].ip"
            ]
        );
    }
}
