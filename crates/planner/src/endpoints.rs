//! EndpointSlices -> endpoints per service port (upstream `endpointslicecache.go`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use chainsmith_model::{EndpointSlice, IpFamily, ObjectKey, Protocol};
use chainsmith_naming::{ChainName, endpoint_chain};

use crate::NodeContext;
use crate::service_port::{Addr, port_name_string};

/// One endpoint of one service port, with everything its rules print.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// The endpoint's IP.
    pub ip: Addr<IpAddr>,
    /// `ip:port` (`[ip]:port` for IPv6): comment, DNAT target and hash input.
    pub endpoint: Box<str>,
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
    /// Serving while terminating: usable only when nothing ready is left.
    pub fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The endpoints of one service port, sorted by endpoint text (plain byte
/// order, as upstream sorts them), shared between plans that did not change.
pub type PortEndpoints = Arc<[EndpointInfo]>;

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
    let mut by_port: BTreeMap<(String, Protocol), BTreeMap<Box<str>, EndpointInfo>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type.family() != Some(family) {
            continue;
        }
        for port in &slice.ports {
            let key = (port.name.clone(), port.protocol);
            let reuse = previous.and_then(|previous| previous.get(&key));
            let endpoints = by_port.entry(key).or_default();
            let mut name = None;
            for endpoint in &slice.endpoints {
                if IpFamily::of(&endpoint.address) != family {
                    continue;
                }
                let text = endpoint_text(&endpoint.address, port.port);
                if endpoints.contains_key(text.as_str()) && endpoint.terminating {
                    continue;
                }
                let chain = match reuse.and_then(|list| find(list, &text)) {
                    Some(known) => known.chain,
                    None => {
                        let name = name.get_or_insert_with(|| port_name_string(service, &port.name));
                        endpoint_chain(name, port.protocol.as_iptables(), &text)
                    }
                };
                let info = EndpointInfo {
                    ip: Addr { value: endpoint.address, text: endpoint.address.to_string().into_boxed_str() },
                    endpoint: text.clone().into_boxed_str(),
                    ready: endpoint.ready,
                    serving: endpoint.serving,
                    terminating: endpoint.terminating,
                    local: !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name),
                    zone_hints: endpoint.zone_hints.clone(),
                    node_hints: endpoint.node_hints.clone(),
                    chain,
                };
                endpoints.insert(text.into_boxed_str(), info);
            }
        }
    }
    by_port.into_iter().map(|(key, endpoints)| (key, endpoints.into_values().collect())).collect()
}

fn find<'l>(list: &'l [EndpointInfo], endpoint: &str) -> Option<&'l EndpointInfo> {
    list.binary_search_by(|info| info.endpoint.as_ref().cmp(endpoint)).ok().map(|i| &list[i])
}

/// `ip:port`, or `[ip]:port` for IPv6 (Go's `net.JoinHostPort`).
fn endpoint_text(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}
