//! Chain names, byte-identical to upstream kube-proxy's: iptables mode here,
//! nftables mode's readable names in [`nft`].
//!
//! Per-service-port chains are `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` or `KUBE-FW-`
//! followed by the first 16 characters of `base32(sha256(NAME + protocol))`, where
//! `NAME` is `namespace/name:port` (`namespace/name` for an unnamed port) and the
//! protocol is lower case. Per-endpoint chains are `KUBE-SEP-` + the same over
//! `NAME + protocol + endpoint` (`ip:port`, `[ipv6]:port`). See [`ServicePortChains`]
//! and [`endpoint_chain`]; the fixed chains are constants in [`fixed`].
//!
//! Architecture invariant: this crate knows strings and hashes only. It does not
//! know Services, endpoints or rules, so a name can be checked against upstream's
//! golden values in isolation. [`ChainName`] is stored inline (no allocation):
//! kube-proxy names are at most 25 bytes and iptables allows 28.

use std::fmt;

pub mod nft;

use arrayvec::ArrayString;
use sha2::{Digest, Sha256};

/// Longest chain name iptables accepts.
pub const MAX_CHAIN_NAME_LEN: usize = 28;

/// An iptables chain name, stored inline.
/// The default is the empty name (a placeholder, never a valid chain).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainName(ArrayString<MAX_CHAIN_NAME_LEN>);

impl ChainName {
    /// Wraps a name; `None` if it is longer than iptables allows.
    pub fn new(name: &str) -> Option<ChainName> {
        ArrayString::from(name).ok().map(ChainName)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The kind of per-service chain this is, if it is one.
    pub fn service_chain_kind(&self) -> Option<ServiceChainKind> {
        ServiceChainKind::of(self.as_str())
    }

    fn with_hash(prefix: &str, hash: &[u8; HASH_LEN]) -> ChainName {
        let mut name = ArrayString::new();
        name.push_str(prefix);
        for &b in hash {
            name.push(char::from(b));
        }
        ChainName(name)
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for ChainName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Names of the fixed chains kube-proxy owns or jumps from.
pub mod fixed {
    /// Entry chain for service traffic (nat and filter).
    pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
    /// filter: drops/rejects for external destinations without endpoints.
    pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
    /// NodePort matches (nat); health-check node port accepts (filter).
    pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
    /// filter: forwarding of marked and established traffic.
    pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
    /// filter: drops of load-balancer traffic outside the source ranges.
    pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
    /// filter: the 127/8 anti-martian rule (IPv4 with localhost NodePorts).
    pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";
    /// nat: masquerades marked packets.
    pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
    /// nat: sets the masquerade mark.
    pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
    /// Marks packets for the kubelet's `KUBE-FIREWALL` to drop (v1.10 layout).
    pub const KUBE_MARK_DROP: &str = "KUBE-MARK-DROP";
    /// Empty chain whose disappearance tells that someone flushed the tables.
    pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";
}

/// The kinds of per-service-port and per-endpoint chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceChainKind {
    /// `KUBE-SVC-`: load-balances over cluster endpoints.
    Svc,
    /// `KUBE-SVL-`: load-balances over local endpoints.
    Svl,
    /// `KUBE-EXT-`: external destinations (NodePort, LB, external IPs).
    Ext,
    /// `KUBE-FW-`: load-balancer source ranges.
    Fw,
    /// `KUBE-SEP-`: one endpoint (hairpin masquerade + DNAT).
    Sep,
}

impl ServiceChainKind {
    /// Every kind, in the order of their prefixes' use.
    pub const ALL: [ServiceChainKind; 5] = [
        ServiceChainKind::Svc,
        ServiceChainKind::Svl,
        ServiceChainKind::Ext,
        ServiceChainKind::Fw,
        ServiceChainKind::Sep,
    ];

    /// The name prefix (`KUBE-SVC-`, ...).
    pub fn prefix(self) -> &'static str {
        match self {
            ServiceChainKind::Svc => "KUBE-SVC-",
            ServiceChainKind::Svl => "KUBE-SVL-",
            ServiceChainKind::Ext => "KUBE-EXT-",
            ServiceChainKind::Fw => "KUBE-FW-",
            ServiceChainKind::Sep => "KUBE-SEP-",
        }
    }

    /// A short lower-case label (`svc`, `sep`, ...), e.g. for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ServiceChainKind::Svc => "svc",
            ServiceChainKind::Svl => "svl",
            ServiceChainKind::Ext => "ext",
            ServiceChainKind::Fw => "fw",
            ServiceChainKind::Sep => "sep",
        }
    }

    /// The kind of a chain name, if it is a per-service chain (upstream's
    /// `isServiceChainName`, which decides what stale-chain cleanup may delete).
    pub fn of(name: &str) -> Option<ServiceChainKind> {
        ServiceChainKind::ALL
            .into_iter()
            .find(|kind| name.starts_with(kind.prefix()))
    }
}

const HASH_LEN: usize = 16;

fn hash16(parts: &[&str]) -> [u8; HASH_LEN] {
    // One contiguous input hashes faster than several updates; names are short.
    let mut buffer = [0u8; 192];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let digest = if total <= buffer.len() {
        let mut at = 0;
        for part in parts {
            buffer[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        Sha256::digest(&buffer[..total])
    } else {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part.as_bytes());
        }
        hasher.finalize()
    };
    // 10 bytes are exactly 16 base32 characters, so only those need encoding.
    let mut encoded = [0u8; HASH_LEN];
    data_encoding::BASE32_NOPAD.encode_mut(&digest[..10], &mut encoded);
    encoded
}

/// The four chains of one service port, which share one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServicePortChains {
    hash: [u8; HASH_LEN],
}

impl ServicePortChains {
    /// Hashes `service_port_name` (`namespace/name:port`) and the lower-case protocol.
    pub fn new(service_port_name: &str, protocol: &str) -> ServicePortChains {
        ServicePortChains {
            hash: hash16(&[service_port_name, protocol]),
        }
    }

    /// The chain of one kind (`Sep` is per endpoint: use [`endpoint_chain`]).
    pub fn chain(&self, kind: ServiceChainKind) -> ChainName {
        ChainName::with_hash(kind.prefix(), &self.hash)
    }

    /// `KUBE-SVC-<h>`.
    pub fn svc(&self) -> ChainName {
        self.chain(ServiceChainKind::Svc)
    }

    /// `KUBE-SVL-<h>`.
    pub fn svl(&self) -> ChainName {
        self.chain(ServiceChainKind::Svl)
    }

    /// `KUBE-EXT-<h>`.
    pub fn ext(&self) -> ChainName {
        self.chain(ServiceChainKind::Ext)
    }

    /// `KUBE-FW-<h>`.
    pub fn fw(&self) -> ChainName {
        self.chain(ServiceChainKind::Fw)
    }

    /// `KUBE-XLB-<h>`: the Local-policy chain of kube-proxy's 2018 layout
    /// (v1.10), which later became `KUBE-SVL-` and `KUBE-EXT-`.
    pub fn xlb(&self) -> ChainName {
        ChainName::with_hash(XLB_PREFIX, &self.hash)
    }
}

/// The prefix of [`ServicePortChains::xlb`].
pub const XLB_PREFIX: &str = "KUBE-XLB-";

/// `KUBE-SEP-<e>` for one endpoint (`ip:port` or `[ipv6]:port`) of a service port.
pub fn endpoint_chain(service_port_name: &str, protocol: &str, endpoint: &str) -> ChainName {
    ChainName::with_hash(
        ServiceChainKind::Sep.prefix(),
        &hash16(&[service_port_name, protocol, endpoint]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values computed independently (Python hashlib + base64.b32encode).
    #[test]
    fn names_match_upstream_golden_values() {
        let svc1 = ServicePortChains::new("ns1/svc1:p80", "tcp");
        assert_eq!(svc1.svc().as_str(), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(svc1.svl().as_str(), "KUBE-SVL-XPGD46QRK7WJZT7O");
        assert_eq!(svc1.ext().as_str(), "KUBE-EXT-XPGD46QRK7WJZT7O");
        assert_eq!(svc1.fw().as_str(), "KUBE-FW-XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80").as_str(),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            ServicePortChains::new("ns1/svc1", "tcp").svc().as_str(),
            "KUBE-SVC-AQI2S6QIMU7PVVRP"
        );
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "[fd00:10:180::1]:80").as_str(),
            "KUBE-SEP-OGYCNMB4EMRUSJ6N"
        );
        assert_eq!(
            ServicePortChains::new("ns5/svc5:p80", "tcp").fw().as_str(),
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
        // The 2018-era reference node (spec section 11).
        let sleep = ServicePortChains::new("default/sleep:tcp-80-80-8r4el", "tcp");
        assert_eq!(sleep.svc().as_str(), "KUBE-SVC-KHFRG3HD2BG7I4YD");
        assert_eq!(
            endpoint_chain("default/sleep:tcp-80-80-8r4el", "tcp", "10.123.32.5:80").as_str(),
            "KUBE-SEP-GZIIAEF444AZU3YY"
        );
    }

    #[test]
    fn long_inputs_hash_the_same_as_short_ones_would() {
        let long_name = format!("ns/{}:p", "x".repeat(250));
        let joined = format!("{long_name}tcp");
        let expected = {
            let digest = Sha256::digest(joined.as_bytes());
            data_encoding::BASE32_NOPAD.encode(&digest[..10])
        };
        assert_eq!(
            ServicePortChains::new(&long_name, "tcp").svc().as_str(),
            format!("KUBE-SVC-{expected}")
        );
    }

    #[test]
    fn protocol_is_part_of_the_hash() {
        let tcp = ServicePortChains::new("ns1/svc1:p80", "tcp").svc();
        let udp = ServicePortChains::new("ns1/svc1:p80", "udp").svc();
        assert_ne!(tcp, udp);
    }

    #[test]
    fn service_chain_kinds_are_recognised_by_prefix() {
        assert_eq!(
            ServiceChainKind::of("KUBE-SEP-SXIVWICOYRO3J4NJ"),
            Some(ServiceChainKind::Sep)
        );
        assert_eq!(
            ServiceChainKind::of("KUBE-FW-NUKIZ6OKUXPJNT4C"),
            Some(ServiceChainKind::Fw)
        );
        assert_eq!(ServiceChainKind::of("KUBE-SERVICES"), None);
        assert_eq!(ServiceChainKind::of("KUBE-MARK-MASQ"), None);
        assert_eq!(ServiceChainKind::of("KUBE-XLB-ABC"), None);
    }

    #[test]
    fn overlong_names_are_refused() {
        assert!(ChainName::new("KUBE-SVC-XPGD46QRK7WJZT7O").is_some());
        assert!(ChainName::new("A-CHAIN-NAME-THAT-IS-FAR-TOO-LONG").is_none());
    }
}
