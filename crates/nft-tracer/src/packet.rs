//! The packet to trace and the node it meets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chainsmith_model::Protocol;
use serde::{Serialize, Serializer};

/// Where the packet comes from, which decides the hooks it traverses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Arrives from a neighbour (another host, or a local pod through its
    /// veth) on this interface: prerouting, then input (local destination)
    /// or forward and postrouting. The name is what `iifname` matches.
    FromOutside {
        /// The interface it arrives on.
        interface: String,
    },
    /// Sent by a process of the node itself: output, postrouting, and, for a
    /// local destination, prerouting and input again as it comes back over `lo`.
    FromNode,
}

/// The packet's conntrack state (`ct state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// The first packet of a connection (the default). Only these meet nat
    /// chains.
    #[default]
    New,
    /// A packet of a connection already seen both ways. Its translation was
    /// decided by the first packet, which this trace does not know, so nat
    /// chains are skipped and the destination stays as given.
    Established,
    /// A packet related to a known connection (ICMP errors, FTP data, ...).
    Related,
    /// A packet conntrack could not place.
    Invalid,
}

impl CtState {
    /// The `ct state` keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
        }
    }

    pub(crate) fn from_keyword(word: &str) -> Option<CtState> {
        Some(match word {
            "new" => CtState::New,
            "established" => CtState::Established,
            "related" => CtState::Related,
            "invalid" => CtState::Invalid,
            _ => return None,
        })
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
    /// Destination port.
    pub dport: u16,
    /// Where it comes from.
    pub origin: Origin,
    /// Its conntrack state.
    pub conntrack: CtState,
    /// The packet mark when it enters the first hook.
    pub mark: u32,
    /// Session affinity left by earlier connections: for each set (kube-proxy
    /// names them `affinity-...`), the client addresses it already holds. A
    /// set's elements in the table count as well (a kernel listing shows the
    /// dynamic ones).
    pub affinity: BTreeMap<String, Vec<IpAddr>>,
}

fn protocol_name<S: Serializer>(protocol: &Protocol, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(protocol.as_iptables())
}

impl Packet {
    /// The first packet of a connection (state new, mark 0, no affinity).
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, dport: u16, origin: Origin) -> Packet {
        Packet {
            src,
            dst,
            protocol,
            dport,
            origin,
            conntrack: CtState::New,
            mark: 0,
            affinity: BTreeMap::new(),
        }
    }

    /// The IANA protocol number (`meta l4proto`).
    pub(crate) fn protocol_number(&self) -> u8 {
        match self.protocol {
            Protocol::Tcp => crate::rule::TCP,
            Protocol::Udp => crate::rule::UDP,
            Protocol::Sctp => crate::rule::SCTP,
        }
    }
}

/// What the tracer needs to know about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The node's own addresses: `fib saddr|daddr type local` is true for
    /// these and for every loopback address, and a destination among them
    /// is delivered locally.
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
