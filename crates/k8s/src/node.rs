//! `node.yaml` (node and proxier settings, see the conformance README) ->
//! [`chainsmith_model::NodeConfig`].
//!
//! Unlike manifests, a bad node config fails as a whole: every key shapes
//! every rule, so there is nothing sensible to fall back to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chainsmith_model::{
    InterfaceAddress, IpFamily, IpNet, LocalTrafficDetector, NfacctCounters, NodeConfig,
    masquerade_mark_for_bit, parse_cidr_sloppy, parse_ip_sloppy,
};
use serde::Deserialize;

use crate::config_file::{
    ConfigFileError, Invalid, check_size_and_syntax, in_file, interface_name, invalid, read_document,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeFile {
    node_name: Option<String>,
    ip_family: Option<String>,
    #[serde(rename = "nodeIP")]
    node_ip: Option<String>,
    interface_addresses: Option<Vec<InterfaceFile>>,
    local_traffic_detector: Option<DetectorFile>,
    masquerade_mark: Option<String>,
    // Wide integer so that a negative or huge bit is a value error naming the value.
    masquerade_bit: Option<i64>,
    masquerade_all: Option<bool>,
    localhost_node_ports: Option<bool>,
    node_port_addresses: Option<Vec<String>>,
    #[serde(rename = "serviceCIDRs")]
    service_cidrs: Option<Vec<String>>,
    iptables_has_random_fully: Option<bool>,
    #[serde(rename = "conntrackTCPBeLiberal")]
    conntrack_tcp_be_liberal: Option<bool>,
    nfacct_counters: Option<NfacctFile>,
    node_labels: Option<BTreeMap<String, String>>,
    feature_gates: Option<GatesFile>,
    sync_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceFile {
    interface: String,
    cidr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DetectorFile {
    mode: String,
    cidr: Option<String>,
    interface: Option<String>,
    interface_prefix: Option<String>,
}

/// A counter missing from the map does not exist.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NfacctFile {
    #[serde(default)]
    ct_state_invalid_dropped_pkts: bool,
    #[serde(default)]
    localhost_nps_accepted_pkts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    #[serde(rename = "LoadBalancerIPMode")]
    load_balancer_ip_mode: Option<bool>,
    #[serde(rename = "PreferSameTrafficDistribution")]
    prefer_same_traffic_distribution: Option<bool>,
}

/// Reads a `node.yaml`. Absent keys keep [`NodeConfig::default()`]; unknown keys
/// and invalid values are errors naming the key.
pub fn parse_node_config(text: &str, source: &str) -> Result<NodeConfig, ConfigFileError> {
    check_size_and_syntax(text, source)?;
    let file: NodeFile = read_document(text).map_err(in_file(source))?.unwrap_or_default();
    file.validate().map_err(in_file(source))
}

impl NodeFile {
    fn validate(self) -> Result<NodeConfig, Invalid> {
        let mut cfg = NodeConfig::default();
        if let Some(name) = self.node_name {
            cfg.node_name = name;
        }
        if let Some(family) = self.ip_family {
            cfg.ip_family = match family.as_str() {
                "IPv4" => IpFamily::V4,
                "IPv6" => IpFamily::V6,
                _ => {
                    return Err(invalid(
                        "ipFamily",
                        format!("invalid IP family {family:?} (IPv4 or IPv6)"),
                    ));
                }
            };
        }
        if let Some(ip) = self.node_ip {
            cfg.node_ip = Some(ip_of("nodeIP", &ip)?);
        }
        for (i, entry) in self.interface_addresses.into_iter().flatten().enumerate() {
            let (address, prefix_len) =
                interface_cidr(&format!("interfaceAddresses[{i}].cidr"), &entry.cidr)?;
            cfg.interface_addresses.push(InterfaceAddress {
                interface: entry.interface,
                address,
                prefix_len,
            });
        }
        if let Some(detector) = self.local_traffic_detector {
            cfg.local_traffic_detector = detector.validate(cfg.ip_family)?;
        }
        cfg.masquerade_mark = match (self.masquerade_mark, self.masquerade_bit) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "masqueradeBit",
                    "give either masqueradeMark or masqueradeBit, not both",
                ));
            }
            (Some(mark), None) => mark_of(mark)?,
            (None, Some(bit)) => match u8::try_from(bit) {
                Ok(bit) if bit <= 31 => masquerade_mark_for_bit(bit),
                _ => return Err(invalid("masqueradeBit", format!("{bit} is not in 0..=31"))),
            },
            (None, None) => cfg.masquerade_mark,
        };
        set(&mut cfg.masquerade_all, self.masquerade_all);
        set(&mut cfg.localhost_node_ports, self.localhost_node_ports);
        if let Some(list) = self.node_port_addresses {
            cfg.node_port_addresses = node_port_addresses(&list, cfg.node_ip)?;
        }
        for (i, text) in self.service_cidrs.into_iter().flatten().enumerate() {
            cfg.service_cidrs
                .push(cidr_of(&format!("serviceCIDRs[{i}]"), &text)?);
        }
        set(&mut cfg.iptables_has_random_fully, self.iptables_has_random_fully);
        set(&mut cfg.conntrack_tcp_be_liberal, self.conntrack_tcp_be_liberal);
        if let Some(nfacct) = self.nfacct_counters {
            cfg.nfacct = NfacctCounters {
                ct_state_invalid_dropped_pkts: nfacct.ct_state_invalid_dropped_pkts,
                localhost_nps_accepted_pkts: nfacct.localhost_nps_accepted_pkts,
            };
        }
        if let Some(labels) = self.node_labels {
            cfg.node_labels = labels;
        }
        if let Some(gates) = self.feature_gates {
            set(
                &mut cfg.feature_gates.load_balancer_ip_mode,
                gates.load_balancer_ip_mode,
            );
            set(
                &mut cfg.feature_gates.prefer_same_traffic_distribution,
                gates.prefer_same_traffic_distribution,
            );
        }
        if let Some(period) = self.sync_period {
            cfg.sync_period_ms = match parse_go_duration_ms(&period) {
                Some(0) => return Err(invalid("syncPeriod", format!("{period:?} is shorter than 1ms"))),
                Some(ms) => ms,
                None => {
                    let message =
                        format!("invalid duration {period:?} (a Go duration such as 30s, 1m or 1h30m)");
                    return Err(invalid("syncPeriod", message));
                }
            };
        }
        Ok(cfg)
    }
}

impl DetectorFile {
    fn validate(self, family: IpFamily) -> Result<LocalTrafficDetector, Invalid> {
        let mode = self.mode.as_str();
        let (needs, detector) = match mode {
            "ClusterCIDR" | "NodeCIDR" => {
                let Some(text) = self.cidr.as_deref() else {
                    return Err(invalid(
                        "localTrafficDetector.cidr",
                        format!("required by mode {mode}"),
                    ));
                };
                let net = cidr_of("localTrafficDetector.cidr", text)?;
                // kube-proxy's detectors are per family; a CIDR of the other family would emit broken rules.
                if IpFamily::of_net(&net) != family {
                    let message = format!("{text:?} is not an {family} CIDR (ipFamily is {family})");
                    return Err(invalid("localTrafficDetector.cidr", message));
                }
                let detector = if mode == "ClusterCIDR" {
                    LocalTrafficDetector::ClusterCidr(net)
                } else {
                    LocalTrafficDetector::NodeCidr(net)
                };
                ("cidr", detector)
            }
            "BridgeInterface" => {
                let name = interface_name(
                    "localTrafficDetector.interface",
                    self.interface.as_deref(),
                    &format!("mode {mode}"),
                )?;
                ("interface", LocalTrafficDetector::BridgeInterface(name))
            }
            "InterfaceNamePrefix" => {
                let name = interface_name(
                    "localTrafficDetector.interfacePrefix",
                    self.interface_prefix.as_deref(),
                    &format!("mode {mode}"),
                )?;
                ("interfacePrefix", LocalTrafficDetector::InterfaceNamePrefix(name))
            }
            "None" => ("", LocalTrafficDetector::None),
            _ => {
                let message = format!(
                    "invalid mode {mode:?} (ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix or None)"
                );
                return Err(invalid("localTrafficDetector.mode", message));
            }
        };
        // A key the mode ignores is most likely a mistake in the mode.
        let given = [
            ("cidr", self.cidr.is_some()),
            ("interface", self.interface.is_some()),
        ];
        let given = given
            .into_iter()
            .chain([("interfacePrefix", self.interface_prefix.is_some())]);
        for (key, present) in given {
            if present && key != needs {
                return Err(invalid(
                    format!("localTrafficDetector.{key}"),
                    format!("not used by mode {mode}"),
                ));
            }
        }
        Ok(detector)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn ip_of(field: &str, text: &str) -> Result<IpAddr, Invalid> {
    parse_ip_sloppy(text).ok_or_else(|| invalid(field, format!("invalid IP address {text:?}")))
}

fn cidr_of(field: &str, text: &str) -> Result<IpNet, Invalid> {
    parse_cidr_sloppy(text).ok_or_else(|| invalid(field, format!("invalid CIDR {text:?}")))
}

/// `address/prefix` of an interface: the address is kept as it is (no host bits cleared).
fn interface_cidr(field: &str, text: &str) -> Result<(IpAddr, u8), Invalid> {
    let bad = || invalid(field, format!("invalid CIDR {text:?}"));
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address = parse_ip_sloppy(addr).ok_or_else(bad)?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(bad());
    }
    Ok((address, prefix_len))
}

/// The mark is copied into rules as it is, so it must be a literal iptables accepts.
fn mark_of(mark: String) -> Result<String, Invalid> {
    let digits = mark.strip_prefix("0x").unwrap_or("");
    let valid = (1..=8).contains(&digits.len())
        && u32::from_str_radix(digits, 16).is_ok_and(|v| v != 0)
        && digits.bytes().all(|b| b.is_ascii_hexdigit());
    if valid {
        Ok(mark)
    } else {
        Err(invalid(
            "masqueradeMark",
            format!("invalid mark {mark:?} (a non-zero 32-bit hex number such as 0x4000)"),
        ))
    }
}

/// `--nodeport-addresses`: CIDRs, or the special value `primary` (the node IP only).
fn node_port_addresses(list: &[String], node_ip: Option<IpAddr>) -> Result<Vec<IpNet>, Invalid> {
    if list.iter().any(|entry| entry == "primary") {
        if list.len() != 1 {
            return Err(invalid("nodePortAddresses", "\"primary\" must be the only entry"));
        }
        let ip = node_ip.ok_or_else(|| invalid("nodePortAddresses", "\"primary\" needs nodeIP"))?;
        return Ok(vec![IpNet::from(ip)]);
    }
    list.iter()
        .enumerate()
        .map(|(i, text)| cidr_of(&format!("nodePortAddresses[{i}]"), text))
        .collect()
}

/// Go's `time.ParseDuration`, non-negative only, truncated to milliseconds.
pub fn parse_go_duration_ms(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let (int, after) = split_digits(rest);
        let (frac, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        total_ns = total_ns.checked_add(whole.checked_mul(unit_ns)?)?;
        // More fractional digits than this cannot change a nanosecond count.
        let frac = &frac[..frac.len().min(18)];
        if !frac.is_empty() {
            let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
            total_ns = total_ns.checked_add(frac.parse::<u128>().ok()? * unit_ns / scale)?;
        }
        // Go durations are int64 nanoseconds.
        if total_ns > u128::from(i64::MAX.unsigned_abs()) {
            return None;
        }
        rest = after;
    }
    u64::try_from(total_ns / 1_000_000).ok()
}

fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(text.bytes().take_while(u8::is_ascii_digit).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::conformance_files;

    fn parse(text: &str) -> NodeConfig {
        parse_node_config(text, "node.yaml").unwrap()
    }

    fn error(text: &str) -> String {
        parse_node_config(text, "node.yaml").unwrap_err().to_string()
    }

    fn conformance(prefix: &str) -> NodeConfig {
        let (label, text) = conformance_files("node.yaml")
            .into_iter()
            .find(|(label, _)| label.starts_with(prefix))
            .unwrap();
        parse_node_config(&text, &label).unwrap()
    }

    #[test]
    fn every_conformance_node_file_parses() {
        let files = conformance_files("node.yaml");
        assert!(files.len() > 30, "found only {} files", files.len());
        for (label, text) in files {
            let cfg = parse_node_config(&text, &label).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.node_name, "test-node", "{label}");
            assert_eq!(cfg.masquerade_mark, "0x4000", "{label}");
        }
    }

    #[test]
    fn conformance_spot_checks() {
        let cfg = conformance("01-");
        assert_eq!(cfg.ip_family, IpFamily::V4);
        assert_eq!(cfg.node_ip, "192.168.0.2".parse().ok());
        assert_eq!(cfg.interface_addresses.len(), 7);
        let lo = &cfg.interface_addresses[0];
        assert_eq!(
            (lo.interface.as_str(), lo.address.to_string(), lo.prefix_len),
            ("lo", "127.0.0.1".into(), 8)
        );
        assert_eq!(cfg.interface_addresses[5].address.to_string(), "2001:db8::1");
        assert_eq!(
            cfg.local_traffic_detector,
            LocalTrafficDetector::ClusterCidr("10.0.0.0/8".parse().unwrap())
        );
        assert!(!cfg.iptables_has_random_fully);
        assert_eq!(
            cfg.nfacct,
            NfacctCounters {
                ct_state_invalid_dropped_pkts: true,
                localhost_nps_accepted_pkts: true
            }
        );
        assert!(cfg.feature_gates.load_balancer_ip_mode);

        let v6 = conformance("11-");
        assert_eq!(v6.ip_family, IpFamily::V6);
        assert_eq!(
            v6.local_traffic_detector,
            LocalTrafficDetector::ClusterCidr("fd00:10::/64".parse().unwrap())
        );

        assert_eq!(conformance("15-").nfacct, NfacctCounters::default());
        assert_eq!(
            conformance("35-").local_traffic_detector,
            LocalTrafficDetector::None
        );
    }

    #[test]
    fn absent_keys_keep_the_defaults() {
        assert_eq!(parse(""), NodeConfig::default());
        assert_eq!(parse("# nothing\n"), NodeConfig::default());
        let cfg = parse("nodeName: n\n");
        assert_eq!(
            cfg,
            NodeConfig {
                node_name: "n".to_owned(),
                ..NodeConfig::default()
            }
        );
    }

    #[test]
    fn optional_settings_translate() {
        let cfg = parse(
            "\
masqueradeBit: 12
nodePortAddresses: [127.0.0.0/8, '010.0.0.1/24', 'fd00::/64']
nfacctCounters: {localhost_nps_accepted_pkts: true}
nodeLabels: {topology.kubernetes.io/zone: z1}
featureGates: {PreferSameTrafficDistribution: true}
localTrafficDetector: {mode: InterfaceNamePrefix, interfacePrefix: veth}
conntrackTCPBeLiberal: true
masqueradeAll: true
localhostNodePorts: false
",
        );
        assert_eq!(cfg.masquerade_mark, "0x00001000");
        let nets: Vec<String> = cfg.node_port_addresses.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["127.0.0.0/8", "10.0.0.0/24", "fd00::/64"]);
        assert_eq!(
            cfg.nfacct,
            NfacctCounters {
                ct_state_invalid_dropped_pkts: false,
                localhost_nps_accepted_pkts: true
            }
        );
        assert_eq!(cfg.zone(), Some("z1"));
        assert!(
            cfg.feature_gates.load_balancer_ip_mode && cfg.feature_gates.prefer_same_traffic_distribution
        );
        assert_eq!(
            cfg.local_traffic_detector,
            LocalTrafficDetector::InterfaceNamePrefix("veth".to_owned())
        );
        assert!(cfg.conntrack_tcp_be_liberal && cfg.masquerade_all && !cfg.localhost_node_ports);

        let cfg = parse("localTrafficDetector: {mode: BridgeInterface, interface: br0}\n");
        assert_eq!(
            cfg.local_traffic_detector,
            LocalTrafficDetector::BridgeInterface("br0".to_owned())
        );
        let cfg = parse("localTrafficDetector: {mode: NodeCIDR, cidr: 10.244.1.7/24}\n");
        assert_eq!(
            cfg.local_traffic_detector,
            LocalTrafficDetector::NodeCidr("10.244.1.0/24".parse().unwrap())
        );
        let cfg = parse("nodeIP: 192.168.0.2\nnodePortAddresses: [primary]\n");
        assert_eq!(
            cfg.node_port_addresses,
            ["192.168.0.2/32".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn sync_period_reads_go_durations() {
        let cases = [
            ("30s", 30_000),
            ("1m", 60_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("2500us", 2),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse(&format!("syncPeriod: {text}\n")).sync_period_ms,
                ms,
                "{text}"
            );
        }
        for bad in ["30", "", "s", "-1s", "1d", "1.s.", "0", "999us", "99999999999h"] {
            let err = error(&format!("syncPeriod: '{bad}'\n"));
            assert!(err.starts_with("node.yaml: syncPeriod: "), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_settings_are_errors_naming_the_key() {
        let cases = [
            ("foo: 1\n", "node.yaml: foo: unknown field `foo`"),
            (
                "featureGates: {Bogus: true}\n",
                "node.yaml: featureGates.Bogus: unknown field `Bogus`",
            ),
            (
                "nfacctCounters: {other: true}\n",
                "node.yaml: nfacctCounters.other: unknown field `other`",
            ),
            (
                "ipFamily: IPv5\n",
                "node.yaml: ipFamily: invalid IP family \"IPv5\" (IPv4 or IPv6)",
            ),
            (
                "nodeIP: 1.2.3\n",
                "node.yaml: nodeIP: invalid IP address \"1.2.3\"",
            ),
            (
                "interfaceAddresses: [{interface: lo, cidr: 127.0.0.1/33}]\n",
                "node.yaml: interfaceAddresses[0].cidr: invalid CIDR \"127.0.0.1/33\"",
            ),
            (
                "interfaceAddresses: [{interface: lo}]\n",
                "node.yaml: interfaceAddresses[0]: missing field `cidr`",
            ),
            (
                "localTrafficDetector: {mode: ClusterCIDR, cidr: 10.0.0.0/33}\n",
                "node.yaml: localTrafficDetector.cidr: invalid CIDR \"10.0.0.0/33\"",
            ),
            (
                "localTrafficDetector: {mode: ClusterCIDR}\n",
                "node.yaml: localTrafficDetector.cidr: required by mode ClusterCIDR",
            ),
            (
                "ipFamily: IPv6\nlocalTrafficDetector: {mode: ClusterCIDR, cidr: 10.0.0.0/8}\n",
                "node.yaml: localTrafficDetector.cidr: \"10.0.0.0/8\" is not an IPv6 CIDR (ipFamily is IPv6)",
            ),
            (
                "localTrafficDetector: {mode: BridgeInterface}\n",
                "node.yaml: localTrafficDetector.interface: required by mode BridgeInterface",
            ),
            (
                "localTrafficDetector: {mode: InterfaceNamePrefix, interfacePrefix: 'a b'}\n",
                "node.yaml: localTrafficDetector.interfacePrefix: invalid interface name \"a b\"",
            ),
            (
                "localTrafficDetector: {mode: BridgeInterface, interface: 'br\\0'}\n",
                "node.yaml: localTrafficDetector.interface: invalid interface name \"br\\\\0\"",
            ),
            (
                "localTrafficDetector: {mode: BridgeInterface, interface: a-bridge-named-too-long}\n",
                "node.yaml: localTrafficDetector.interface: invalid interface name \"a-bridge-named-too-long\"",
            ),
            (
                "localTrafficDetector: {mode: None, cidr: 10.0.0.0/8}\n",
                "node.yaml: localTrafficDetector.cidr: not used by mode None",
            ),
            (
                "localTrafficDetector: {mode: Magic}\n",
                "node.yaml: localTrafficDetector.mode: invalid mode \"Magic\"",
            ),
            (
                "masqueradeMark: '4000'\n",
                "node.yaml: masqueradeMark: invalid mark \"4000\"",
            ),
            (
                "masqueradeMark: '0x0'\n",
                "node.yaml: masqueradeMark: invalid mark \"0x0\"",
            ),
            (
                "masqueradeMark: '0x100000000'\n",
                "node.yaml: masqueradeMark: invalid mark \"0x100000000\"",
            ),
            (
                "masqueradeBit: 32\n",
                "node.yaml: masqueradeBit: 32 is not in 0..=31",
            ),
            (
                "masqueradeBit: -1\n",
                "node.yaml: masqueradeBit: -1 is not in 0..=31",
            ),
            (
                "masqueradeBit: 1\nmasqueradeMark: '0x2'\n",
                "node.yaml: masqueradeBit: give either",
            ),
            (
                "masqueradeAll: yes\n",
                "node.yaml: masqueradeAll: invalid boolean",
            ),
            (
                "nodePortAddresses: [10.0.0.0/8, x]\n",
                "node.yaml: nodePortAddresses[1]: invalid CIDR \"x\"",
            ),
            (
                "nodePortAddresses: [primary]\n",
                "node.yaml: nodePortAddresses: \"primary\" needs nodeIP",
            ),
            ("- a\n", "node.yaml: expected mapping"),
        ];
        for (text, expected) in cases {
            let err = error(text);
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(
            error("nodeName: a\n  b: c\n"),
            "node.yaml:2:4: mapping values are not allowed in this context"
        );
        assert_eq!(
            error("nodeName: a\n---\nnodeName: b\n"),
            "node.yaml:3:1: more than one YAML document"
        );
    }
}
