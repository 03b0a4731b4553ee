//! Address parsing the way kube-proxy does it.
//!
//! kube-proxy parses with Go's "sloppy" parser (`netutils.ParseIPSloppy`), which
//! accepts leading zeros in IPv4 octets and reads them as decimal, and it treats an
//! IPv4-mapped IPv6 address as IPv4. Rules must carry the canonical text, so every
//! address is parsed here and printed with [`format_ip`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An IP family; one proxier (and one compiler run) serves exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4, programmed with `iptables-restore`.
    V4,
    /// IPv6, programmed with `ip6tables-restore`.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }

    /// The other family (a dual-stack Service's second address is of it).
    pub fn other(self) -> IpFamily {
        match self {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        }
    }

    /// The Kubernetes spelling: `IPv4` or `IPv6` (also the `ip_family` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    /// The loopback network of the family.
    pub fn loopback_net(self) -> &'static str {
        match self {
            IpFamily::V4 => "127.0.0.0/8",
            IpFamily::V6 => "::1/128",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses an IP address as Go's `ParseIPSloppy` does: IPv4 octets may carry
/// leading zeros (read as decimal, so `010` is ten), and an IPv4-mapped IPv6
/// address comes back as IPv4. Returns `None` for anything else that is not an
/// address (zones, brackets, surrounding whitespace).
pub fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    if text.contains(':') {
        let v6: Ipv6Addr = match text.parse() {
            Ok(v6) => v6,
            Err(_) => parse_ipv6_with_sloppy_v4_tail(text)?,
        };
        return Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        });
    }
    parse_ipv4_sloppy(text).map(IpAddr::V4)
}

fn parse_ipv4_sloppy(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u32 = part.parse().ok()?;
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// IPv6 with an embedded dotted IPv4 tail whose octets have leading zeros.
fn parse_ipv6_with_sloppy_v4_tail(text: &str) -> Option<Ipv6Addr> {
    let (head, tail) = text.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_ipv4_sloppy(tail)?;
    format!("{head}:{v4}").parse().ok()
}

/// Parses a CIDR as Go's `ParseCIDRSloppy` does and returns the network with the
/// host bits cleared (`203.0.113.000/025` -> `203.0.113.0/25`). The prefix length
/// may carry leading zeros too.
pub fn parse_cidr_sloppy(text: &str) -> Option<IpNet> {
    let (addr, prefix) = text.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    // A mapped address keeps its IPv6 prefix length in Go; it is rare enough to refuse.
    if addr.contains(':') && parse_ip_sloppy(addr).is_some_and(|ip| ip.is_ipv4()) {
        return None;
    }
    let ip = parse_ip_sloppy(addr)?;
    IpNet::new(ip, prefix).ok().map(|net| net.trunc())
}

/// Prints an address the way Go's `net.IP.String()` does (dotted IPv4, RFC 5952
/// compressed lower-case IPv6).
pub fn format_ip(ip: &IpAddr) -> String {
    ip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ipv4_reads_leading_zeros_as_decimal() {
        assert_eq!(parse_ip_sloppy("172.30.0.041"), "172.30.0.41".parse().ok());
        assert_eq!(parse_ip_sloppy("010.000.000.001"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip_sloppy("1.2.3.256"), None);
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.4.5"), None);
        assert_eq!(parse_ip_sloppy(" 1.2.3.4"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.+4"), None);
        assert_eq!(parse_ip_sloppy(""), None);
    }

    #[test]
    fn ipv6_is_canonical_and_mapped_addresses_are_ipv4() {
        let ip = parse_ip_sloppy("FD00:0010:0180:0000:0000:0000:0000:0001");
        assert_eq!(ip.map(|ip| format_ip(&ip)).as_deref(), Some("fd00:10:180::1"));
        assert_eq!(parse_ip_sloppy("::ffff:10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip_sloppy("::ffff:10.0.0.01"), "10.0.0.1".parse().ok());
        assert_eq!(parse_ip_sloppy("fe80::1%eth0"), None);
        assert_eq!(parse_ip_sloppy("[::1]"), None);
    }

    #[test]
    fn sloppy_cidr_clears_host_bits() {
        let net = parse_cidr_sloppy("203.0.113.000/025");
        assert_eq!(net.map(|n| n.to_string()).as_deref(), Some("203.0.113.0/25"));
        let net = parse_cidr_sloppy("2001:db8::1/64");
        assert_eq!(net.map(|n| n.to_string()).as_deref(), Some("2001:db8::/64"));
        assert_eq!(parse_cidr_sloppy("10.0.0.0/33"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0/"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0/-1"), None);
    }
}
