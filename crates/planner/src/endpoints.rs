//! EndpointSlices -> endpoints per service port (upstream `endpointslicecache.go`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;

use arrayvec::ArrayString;
use chainsmith_model::{EndpointSlice, IpFamily, ObjectKey, Protocol};
use chainsmith_naming::{ChainName, endpoint_chain};

use crate::NodeContext;
use crate::service_port::port_name_string;

/// `[` + the longest IPv6 text + `]:65535`.
const ENDPOINT_TEXT_CAPACITY: usize = 48;

/// One endpoint of one service port, with everything its rules print. The
/// texts live inline, so a cluster's worth of endpoints costs no allocation
/// beyond the list that holds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// The endpoint's IP.
    pub ip: IpAddr,
    text: ArrayString<ENDPOINT_TEXT_CAPACITY>,
    ip_start: u8,
    ip_end: u8,
    /// Ready condition.
    pub ready: bool,
    /// Serving condition.
    pub serving: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Runs on this node.
    pub local: bool,
    /// Zones this endpoint is hinted for.
    pub zone_hints: Vec<String>,
    /// Nodes this endpoint is hinted for.
    pub node_hints: Vec<String>,
    /// Its `KUBE-SEP-` chain.
    pub chain: ChainName,
}

impl EndpointInfo {
    /// `ip:port` (`[ip]:port` for IPv6): comment, DNAT target and hash input.
    pub fn endpoint(&self) -> &str {
        &self.text
    }

    /// The IP's canonical text.
    pub fn ip_text(&self) -> &str {
        &self.text[usize::from(self.ip_start)..usize::from(self.ip_end)]
    }

    /// Serving while terminating: usable only when nothing ready is left.
    pub fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The endpoints of one service port, sorted by endpoint text (plain byte
/// order, as upstream sorts them), shared between plans that did not change.
pub type PortEndpoints = Arc<Vec<EndpointInfo>>;

/// Groups the endpoints of one Service's EndpointSlices by port `(name,
/// protocol)`. Only slices and addresses of the context's family count; an
/// endpoint listed twice (e.g. in two slices while it moves) keeps the later
/// entry unless that one is terminating. Slices are read in the order given;
/// pass them sorted by name for a deterministic choice.
///
/// `previous` lets a caller that keeps the last result reuse its endpoint chain
/// names instead of hashing again.
pub fn endpoints_by_port<'a>(
    service: &ObjectKey,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ctx: &NodeContext,
    previous: Option<&BTreeMap<(String, Protocol), PortEndpoints>>,
) -> BTreeMap<(String, Protocol), PortEndpoints> {
    let family = ctx.family();
    let node_name = ctx.config().node_name.as_str();
    // Services have a handful of ports: a list beats a map here.
    let mut by_port: Vec<((&str, Protocol), Vec<EndpointInfo>)> = Vec::new();
    for slice in slices {
        if slice.address_type.family() != Some(family) {
            continue;
        }
        for port in &slice.ports {
            let key = (port.name.as_str(), port.protocol);
            let at = match by_port.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    by_port.push((key, Vec::with_capacity(slice.endpoints.len())));
                    by_port.len() - 1
                }
            };
            let endpoints = &mut by_port[at].1;
            for endpoint in slice
                .endpoints
                .iter()
                .filter(|e| IpFamily::of(&e.address) == family)
            {
                let (text, ip_start, ip_end) = endpoint_text(&endpoint.address, port.port);
                endpoints.push(EndpointInfo {
                    ip: endpoint.address,
                    text,
                    ip_start,
                    ip_end,
                    ready: endpoint.ready,
                    serving: endpoint.serving,
                    terminating: endpoint.terminating,
                    local: !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name),
                    zone_hints: endpoint.zone_hints.clone(),
                    node_hints: endpoint.node_hints.clone(),
                    // Named below, once duplicates are gone.
                    chain: ChainName::default(),
                });
            }
        }
    }
    by_port
        .into_iter()
        .map(|((port_name, protocol), mut endpoints)| {
            dedup_later_wins_unless_terminating(&mut endpoints);
            let key = (port_name.to_string(), protocol);
            let known = previous.and_then(|previous| previous.get(&key));
            let name = port_name_string(service, port_name);
            for info in &mut endpoints {
                info.chain = match known.and_then(|list| find(list, info.endpoint())) {
                    Some(known) => known.chain,
                    None => endpoint_chain(&name, protocol.as_iptables(), info.endpoint()),
                };
            }
            (key, Arc::new(endpoints))
        })
        .collect()
}

/// Sorts by endpoint text and keeps one entry per text: of the entries in
/// arrival order, each later one replaces the kept one unless it is
/// terminating (upstream's map insertion rule).
fn dedup_later_wins_unless_terminating(endpoints: &mut Vec<EndpointInfo>) {
    // A stable sort keeps arrival order within equal texts.
    endpoints.sort_by_key(|info| info.text);
    endpoints.dedup_by(|later, kept| {
        if later.text != kept.text {
            return false;
        }
        if !later.terminating {
            std::mem::swap(later, kept);
        }
        true
    });
}

fn find<'l>(list: &'l [EndpointInfo], endpoint: &str) -> Option<&'l EndpointInfo> {
    list.binary_search_by(|info| info.endpoint().cmp(endpoint))
        .ok()
        .map(|i| &list[i])
}

/// `ip:port`, or `[ip]:port` for IPv6 (Go's `net.JoinHostPort`), with the span
/// of the IP inside it.
fn endpoint_text(ip: &IpAddr, port: u16) -> (ArrayString<ENDPOINT_TEXT_CAPACITY>, u8, u8) {
    let mut text = ArrayString::new();
    // The capacity covers the longest possible text, so writing cannot fail.
    let (start, end) = match ip {
        IpAddr::V4(v4) => {
            push_ipv4(&mut text, v4);
            (0, text.len())
        }
        IpAddr::V6(v6) => {
            let _ = write!(text, "[{v6}");
            let end = text.len();
            text.push(']');
            (1, end)
        }
    };
    text.push(':');
    text.push_str(itoa::Buffer::new().format(port));
    (text, start as u8, end as u8)
}

/// Dotted-quad text; the formatter machinery is slow for four small numbers.
pub(crate) fn push_ipv4<const N: usize>(text: &mut ArrayString<N>, v4: &std::net::Ipv4Addr) {
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(itoa::Buffer::new().format(octet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainsmith_model::{AddressType, Endpoint, EndpointPort, NodeConfig};

    fn slice(name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            key: ObjectKey::new("ns", name),
            service: ObjectKey::new("ns", "svc"),
            address_type: AddressType::Ipv4,
            ports: vec![EndpointPort {
                name: "p".into(),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            endpoints,
        }
    }

    fn endpoint(ip: &str, terminating: bool, node: &str) -> Endpoint {
        let mut e = Endpoint::ready(ip.parse().expect("ip"));
        e.terminating = terminating;
        e.ready = !terminating;
        e.node_name = Some(node.to_string());
        e
    }

    #[test]
    fn duplicates_keep_the_later_entry_unless_it_is_terminating() {
        let ctx = NodeContext::new(NodeConfig {
            node_name: "a".into(),
            ..NodeConfig::default()
        });
        let first = slice(
            "s1",
            vec![endpoint("10.0.0.1", false, "a"), endpoint("10.0.0.2", false, "a")],
        );
        let second = slice(
            "s2",
            vec![endpoint("10.0.0.1", false, "b"), endpoint("10.0.0.2", true, "b")],
        );
        let key = ObjectKey::new("ns", "svc");
        let by_port = endpoints_by_port(&key, [&first, &second], &ctx, None);
        let list = &by_port[&("p".to_string(), Protocol::Tcp)];
        assert_eq!(list.len(), 2);
        assert!(
            !list[0].local,
            "10.0.0.1: the later, non-terminating entry (node b) wins"
        );
        assert!(
            list[1].local && !list[1].terminating,
            "10.0.0.2: the later entry is terminating and loses"
        );
    }

    #[test]
    fn texts_follow_go_join_host_port_and_sort_bytewise() {
        let ctx = NodeContext::new(NodeConfig::default());
        let s = slice(
            "s",
            vec![
                endpoint("10.1.1.1", false, "x"),
                endpoint("10.1.1.11", false, "x"),
            ],
        );
        let mut s = s;
        s.ports[0].port = 11;
        let by_port = endpoints_by_port(&ObjectKey::new("ns", "svc"), [&s], &ctx, None);
        let texts: Vec<&str> = by_port
            .values()
            .next()
            .expect("port")
            .iter()
            .map(EndpointInfo::endpoint)
            .collect();
        assert_eq!(texts, ["10.1.1.11:11", "10.1.1.1:11"]);
        let (text, start, end) = endpoint_text(&"fd00::1".parse().expect("ip"), 80);
        assert_eq!(
            (text.as_str(), &text[start as usize..end as usize]),
            ("[fd00::1]:80", "fd00::1")
        );
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().expect("ip");
        assert_eq!(endpoint_text(&longest, 65535).0.len(), 47);
    }
}
