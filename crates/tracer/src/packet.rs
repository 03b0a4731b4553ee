//! The packet to trace and the node it meets.

use std::net::IpAddr;

use chainsmith_model::Protocol;
use serde::{Serialize, Serializer};

/// Where the packet comes from, which decides the hooks it traverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Arrives on an interface (from another host or a local pod): nat
    /// PREROUTING, then filter INPUT (local destination) or FORWARD.
    FromOutside,
    /// Sent by a process of the node itself: nat OUTPUT, then filter OUTPUT.
    FromNode,
}

/// The packet's conntrack state (`-m conntrack --ctstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// The first packet of a connection (the default). Only these traverse the
    /// nat table.
    #[default]
    New,
    /// A packet of a connection already seen both ways.
    Established,
    /// A packet related to a known connection (ICMP errors, FTP data, ...).
    Related,
    /// A packet conntrack could not place.
    Invalid,
}

impl CtState {
    /// The `--ctstate` spelling.
    pub fn as_iptables(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::Invalid => "INVALID",
        }
    }
}

/// The packet to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (before any DNAT).
    pub dst: IpAddr,
    /// Transport protocol.
    #[serde(serialize_with = "protocol_name")]
    pub protocol: Protocol,
    /// Source port, if known (only `--sport` matches need it).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: u16,
    /// Where it comes from.
    pub origin: Origin,
    /// The interface it arrived on (`-i`), if it comes from outside and it is
    /// known. Unknown means no `-i NAME` matches (and every `! -i NAME` does).
    pub in_interface: Option<String>,
    /// Its conntrack state.
    pub conntrack: CtState,
    /// The `-m recent` lists that already hold the source address: session
    /// affinity from earlier connections (kube-proxy names them after the
    /// `KUBE-SEP-` chain).
    pub recent: Vec<String>,
    /// The packet mark on arrival.
    pub mark: u32,
    /// It came in through a bridge port and the node runs `br_netfilter`
    /// (`-m physdev --physdev-is-in`): a pod on a bridge CNI talking to a
    /// pod or Service on the same node.
    pub bridged_in: bool,
}

fn protocol_name<S: Serializer>(protocol: &Protocol, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(protocol.as_iptables())
}

impl Packet {
    /// A first packet (state NEW, no affinity, mark 0, interface unknown).
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, dport: u16, origin: Origin) -> Packet {
        Packet {
            src,
            dst,
            protocol,
            sport: None,
            dport,
            origin,
            in_interface: None,
            conntrack: CtState::New,
            recent: Vec::new(),
            mark: 0,
            bridged_in: false,
        }
    }
}

/// What the tracer needs to know about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The node's own addresses: `-m addrtype --src-type/--dst-type LOCAL`
    /// is true for these and for every loopback address.
    pub local_ips: Vec<IpAddr>,
}

impl Node {
    /// A node with these local addresses.
    pub fn new(local_ips: Vec<IpAddr>) -> Node {
        Node { local_ips }
    }

    /// Whether `ip` is a local address of the node.
    pub fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.local_ips.contains(ip)
    }
}
