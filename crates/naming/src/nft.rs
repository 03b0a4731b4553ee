//! Names of nftables mode's per-service chains and sets.
//!
//! Readable on purpose: `service-ULMVA6XW-ns1/svc1/tcp/p80`. The base is the
//! first 8 characters of `base32(sha256(S))` (upper case, RFC 4648), a hyphen,
//! and `S` itself, where `S` is `namespace/name/protocol/portName` (an unnamed
//! port leaves a trailing slash), plus `__IP/port` for an endpoint with every
//! `:` of the IP written as `.`. The hash keeps two names distinct when the
//! readable part is cut to fit nftables' name limit.

use sha2::{Digest, Sha256};

/// Longest base kept whole: nftables allows 256 bytes and kube-proxy leaves
/// room for the longest prefix.
pub const MAX_BASE_LEN: usize = 240;

/// What marks a cut base.
const ELLIPSIS: &str = "...";

/// The prefixes of nftables mode's per-service objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NftObjectKind {
    /// `service-`: balances over cluster endpoints.
    Service,
    /// `local-`: balances over local endpoints.
    Local,
    /// `external-`: traffic to NodePorts, external and load-balancer IPs.
    External,
    /// `firewall-`: load-balancer source ranges.
    Firewall,
    /// `endpoint-`: one endpoint (hairpin masquerade, affinity, DNAT).
    Endpoint,
    /// `affinity-`: the set of one endpoint's recent clients (ClientIP affinity).
    Affinity,
}

impl NftObjectKind {
    /// Every chain kind; [`NftObjectKind::Affinity`] names sets.
    pub const CHAINS: [NftObjectKind; 5] = [
        NftObjectKind::Service,
        NftObjectKind::Local,
        NftObjectKind::External,
        NftObjectKind::Firewall,
        NftObjectKind::Endpoint,
    ];

    /// The name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            NftObjectKind::Service => "service-",
            NftObjectKind::Local => "local-",
            NftObjectKind::External => "external-",
            NftObjectKind::Firewall => "firewall-",
            NftObjectKind::Endpoint => "endpoint-",
            NftObjectKind::Affinity => "affinity-",
        }
    }

    /// The kind of a chain name, if it is a per-service chain.
    pub fn of_chain(name: &str) -> Option<NftObjectKind> {
        NftObjectKind::CHAINS
            .into_iter()
            .find(|kind| name.starts_with(kind.prefix()))
    }

    /// The full name for a base.
    pub fn name(self, base: &str) -> String {
        let prefix = self.prefix();
        let mut name = String::with_capacity(prefix.len() + base.len());
        name.push_str(prefix);
        name.push_str(base);
        name
    }
}

/// Upstream's test for a per-service chain (what stale-chain cleanup may touch):
/// the fixed chains never contain a slash, per-service ones always do.
pub fn is_service_chain(name: &str) -> bool {
    name.contains('/')
}

/// The base of one service port's chains.
pub fn service_port_base(namespace: &str, name: &str, protocol: &str, port_name: &str) -> String {
    let mut readable = String::with_capacity(namespace.len() + name.len() + port_name.len() + 8);
    push_service_port(&mut readable, namespace, name, protocol, port_name);
    with_hash(&readable)
}

/// The base of one endpoint's chain and affinity set.
pub fn endpoint_base(
    namespace: &str,
    name: &str,
    protocol: &str,
    port_name: &str,
    endpoint_ip: &str,
    endpoint_port: u16,
) -> String {
    let mut readable = String::with_capacity(namespace.len() + name.len() + port_name.len() + 64);
    push_service_port(&mut readable, namespace, name, protocol, port_name);
    readable.push_str("__");
    readable.extend(endpoint_ip.chars().map(|c| if c == ':' { '.' } else { c }));
    readable.push('/');
    readable.push_str(itoa::Buffer::new().format(endpoint_port));
    with_hash(&readable)
}

fn push_service_port(out: &mut String, namespace: &str, name: &str, protocol: &str, port_name: &str) {
    for (i, part) in [namespace, name, protocol, port_name].into_iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(part);
    }
}

fn with_hash(readable: &str) -> String {
    let digest = Sha256::digest(readable.as_bytes());
    // 5 bytes are exactly 8 base32 characters.
    let hash = data_encoding::BASE32_NOPAD.encode(&digest[..5]);
    let mut base = String::with_capacity(hash.len() + 1 + readable.len());
    base.push_str(&hash);
    base.push('-');
    base.push_str(readable);
    if base.len() > MAX_BASE_LEN {
        let mut cut = MAX_BASE_LEN - ELLIPSIS.len();
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        base.truncate(cut);
        base.push_str(ELLIPSIS);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's worked example (hashes computed independently with Python).
    #[test]
    fn worked_example_names() {
        assert_eq!(
            service_port_base("ns1", "svc1", "tcp", "p80"),
            "ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            endpoint_base("ns1", "svc1", "tcp", "p80", "10.180.0.1", 80),
            "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        assert_eq!(
            NftObjectKind::Firewall.name(&service_port_base("ns5", "svc5", "tcp", "p80")),
            "firewall-HVFWP5L3-ns5/svc5/tcp/p80"
        );
    }

    #[test]
    fn kinds_are_recognised_by_prefix() {
        assert_eq!(
            NftObjectKind::of_chain("external-42NFTM6N-ns2/svc2/tcp/p80"),
            Some(NftObjectKind::External)
        );
        assert_eq!(NftObjectKind::of_chain("services"), None);
        assert!(is_service_chain(
            "endpoint-ILFRA5KT-ns2/svc2/tcp/p80__10.180.0.3/80"
        ));
        assert!(!is_service_chain("service-endpoints-check"));
    }
}
