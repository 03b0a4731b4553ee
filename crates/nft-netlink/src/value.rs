//! Values as nftables spells them (addresses, prefixes, protocols, ports,
//! verdicts, set types) and as the kernel stores them.

use std::net::IpAddr;

use crate::uapi::{NF_ACCEPT, NF_DROP, NFT_GOTO, NFT_JUMP, NFT_RETURN};

/// A verdict with its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub code: i32,
    pub chain: Option<String>,
}

/// `drop`, `accept`, `return`, `jump X`, `goto X` from words.
pub fn verdict(words: &[&str]) -> Option<Verdict> {
    let simple = |code| Some(Verdict { code, chain: None });
    match words {
        ["drop"] => simple(NF_DROP),
        ["accept"] => simple(NF_ACCEPT),
        ["return"] => simple(NFT_RETURN),
        ["jump", chain] => Some(Verdict {
            code: NFT_JUMP,
            chain: Some((*chain).to_string()),
        }),
        ["goto", chain] => Some(Verdict {
            code: NFT_GOTO,
            chain: Some((*chain).to_string()),
        }),
        _ => None,
    }
}

/// An IP protocol by name.
pub fn proto(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        _ => None,
    }
}

/// An address in network order.
pub fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `ADDR` or `ADDR/LEN`: the address bytes and the prefix length (the full
/// length for a plain address).
pub fn prefix(text: &str) -> Option<(Vec<u8>, usize)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<usize>().ok()?)),
        None => (text, None),
    };
    let bytes = addr_bytes(addr.parse::<IpAddr>().ok()?);
    let full = bytes.len() * 8;
    let len = len.unwrap_or(full);
    (len <= full).then_some((bytes, len))
}

/// One part of an element key of a named set, inferred from its spelling:
/// an address (network order), a protocol name (one byte) or a port (two
/// bytes, big-endian).
pub fn key_part(text: &str) -> Option<Vec<u8>> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr_bytes(addr));
    }
    if let Some(p) = proto(text) {
        return Some(vec![p]);
    }
    text.parse::<u16>().ok().map(|port| port.to_be_bytes().to_vec())
}

/// A whole key (`a . b . c`): parts padded to 4 bytes each when there are
/// several, as the kernel lays out concatenations.
pub fn key(text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    let mut out = Vec::new();
    for part in &parts {
        let mut bytes = key_part(part)?;
        if parts.len() > 1 {
            bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        }
        out.extend_from_slice(&bytes);
    }
    Some(out)
}

/// A set type: nft's type number and length in bytes.
pub fn data_type(name: &str) -> Option<(u32, u32)> {
    match name {
        "ipv4_addr" => Some((7, 4)),
        "ipv6_addr" => Some((8, 16)),
        "inet_proto" => Some((12, 1)),
        "inet_service" => Some((13, 2)),
        "mark" => Some((19, 4)),
        _ => None,
    }
}

/// A set's key type text (`ipv4_addr . inet_proto . inet_service`): the
/// concatenated type number (6 bits a part), the key length (parts padded to
/// 4 bytes when concatenated), and whether it is a concatenation.
pub fn key_type(text: &str) -> Option<(u32, u32, bool)> {
    let parts: Vec<&str> = text.split(" . ").map(str::trim).collect();
    let (mut ty, mut len) = (0u32, 0u32);
    for part in &parts {
        let (t, l) = data_type(part)?;
        ty = (ty << 6) | t;
        len += if parts.len() > 1 { l.div_ceil(4) * 4 } else { l };
    }
    Some((ty, len, parts.len() > 1))
}

/// The bytes of a mask of `len` leading ones over `total` bytes.
pub fn prefix_mask(len: usize, total: usize) -> Vec<u8> {
    (0..total)
        .map(|i| {
            let bits = len.saturating_sub(i * 8).min(8);
            if bits == 0 { 0 } else { 0xffu8 << (8 - bits) }
        })
        .collect()
}

/// The first address after the prefix `bytes/len`, or `None` past the end of
/// the address space.
pub fn after_prefix(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let mask = prefix_mask(len, bytes.len());
    let mut out: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b | !m).collect();
    for byte in out.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_concatenations_are_padded_network_order() {
        assert_eq!(
            key("10.0.0.1 . tcp . 80"),
            Some(vec![10, 0, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0])
        );
        assert_eq!(key("udp . 30000"), Some(vec![17, 0, 0, 0, 0x75, 0x30, 0, 0]));
        assert_eq!(key("10.0.0.1"), Some(vec![10, 0, 0, 1]));
        assert_eq!(key("10.0.0.0/8"), None);
    }

    #[test]
    fn set_types_concatenate_six_bits_a_part() {
        assert_eq!(
            key_type("ipv4_addr . inet_proto . inet_service"),
            Some((0x730d, 12, true))
        );
        assert_eq!(key_type("inet_proto . inet_service"), Some((0x30d, 8, true)));
        assert_eq!(
            key_type("ipv6_addr . inet_proto . inet_service"),
            Some((0x830d, 24, true))
        );
        assert_eq!(key_type("ipv4_addr"), Some((7, 4, false)));
    }

    #[test]
    fn prefixes_masks_and_ends() {
        assert_eq!(prefix_mask(25, 4), vec![255, 255, 255, 128]);
        assert_eq!(after_prefix(&[10, 0, 0, 0], 8), Some(vec![11, 0, 0, 0]));
        assert_eq!(after_prefix(&[1, 2, 3, 4], 32), Some(vec![1, 2, 3, 5]));
        assert_eq!(after_prefix(&[255, 255, 255, 0], 24), None);
    }
}
