//! One spelling for what knftables and the kernel spell differently.
//!
//! A rule goes into the kernel in knftables' spelling and comes back from
//! `nft list` in the kernel's: `mark set mark or 0x4000` returns as
//! `meta mark set meta mark | 0x00004000`, `ip daddr { 172.30.0.0/16 }` as
//! `ip daddr 172.30.0.0/16`. [`canonical_rule`] maps both to the kernel's
//! form so a model and a listing can be compared as text. Each rewrite below
//! was checked against nft 1.0.6 on kernel 6.18; anything else is left as it
//! was written, because a guessed respelling could make two different rules
//! compare equal.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The kernel's spelling of `rule` for every form kube-proxy writes; any other
/// text is returned unchanged.
///
/// - marks: `[meta] mark set [meta] mark or|xor|and N`, `[meta] mark set N`,
///   `[meta] mark and M [==|!=] N`, `[meta] mark [==|!=] N`, printed with
///   `meta`, the operator symbol and 8-digit hexadecimal numbers;
/// - address matches `ip|ip6 saddr|daddr [==|!=] VALUE`: `==` dropped,
///   addresses in their shortest form, prefixes masked, a `/32` or `/128`
///   prefix as a plain address, a one-element set as a plain value, and a set
///   of several elements sorted and, when any element is a prefix or a range,
///   with overlapping and adjacent intervals merged (printed as an address, a
///   prefix where one fits, or a range), as the kernel stores it;
/// - interface matches `iifname|oifname [==|!=] NAME`: `==` dropped, the name
///   quoted;
/// - `vmap { K : V , K : V }` with numeric keys: sorted by key, `, ` between
///   elements;
/// - `dnat to ADDRESS[:PORT]`: the address in its shortest form.
pub fn canonical_rule(rule: &str) -> String {
    let Some(tokens) = tokens(rule) else {
        return rule.to_string();
    };
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let after_ct = i > 0 && tokens[i - 1] == "ct";
        let rewrite = (!after_ct)
            .then(|| mark(&tokens[i..]))
            .flatten()
            .or_else(|| address_match(&tokens[i..]))
            .or_else(|| interface_match(&tokens[i..]))
            .or_else(|| vmap(&tokens[i..]))
            .or_else(|| dnat(&tokens[i..]));
        match rewrite {
            Some((text, used)) => {
                out.push(text);
                i += used;
                changed = true;
            }
            None => {
                out.push(tokens[i].to_string());
                i += 1;
            }
        }
    }
    // Untouched rules keep their exact bytes (spacing included).
    if changed { out.join(" ") } else { rule.to_string() }
}

/// A set or map element's key with address parts (`10.0.0.1 . tcp . 80`) in
/// their shortest form; other parts unchanged.
pub fn canonical_key(key: &str) -> String {
    key.split(" . ")
        .map(|part| {
            if let Ok(v4) = part.parse::<Ipv4Addr>() {
                v4.to_string()
            } else if let Ok(v6) = part.parse::<Ipv6Addr>() {
                v6.to_string()
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

/// Splits on whitespace outside double quotes; `None` for an unterminated quote.
fn tokens(text: &str) -> Option<Vec<&str>> {
    let mut tokens = Vec::new();
    let mut start = None;
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                start.get_or_insert(at);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(from) = start.take() {
                    tokens.push(&text[from..at]);
                }
            }
            _ => {
                start.get_or_insert(at);
            }
        }
    }
    if quoted {
        return None;
    }
    if let Some(from) = start {
        tokens.push(&text[from..]);
    }
    Some(tokens)
}

/// `0x4000` or `16384` as a 32-bit value.
fn number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn hex(value: u32) -> String {
    format!("0x{value:08x}")
}

/// Rewrites of a `mark` expression at the start of `t`: (text, tokens used).
fn mark(t: &[&str]) -> Option<(String, usize)> {
    let head = if t.first() == Some(&"meta") { 1 } else { 0 };
    if t.get(head) != Some(&"mark") {
        return None;
    }
    let rest = &t[head + 1..];
    let used = |n: usize| head + 1 + n;
    match rest {
        ["set", "meta", "mark", op, value, ..] | ["set", "mark", op, value, ..] => {
            let skip = if rest[1] == "meta" { 2 } else { 1 };
            let op = bit_op(op)?;
            Some((
                format!("meta mark set meta mark {op} {}", hex(number(value)?)),
                used(skip + 3),
            ))
        }
        ["set", value, ..] => Some((format!("meta mark set {}", hex(number(value)?)), used(2))),
        [op, mask, rest @ ..] if bit_op(op) == Some("&") => {
            let mask = hex(number(mask)?);
            let (cmp, value, n) = match rest {
                [cmp @ ("==" | "!="), value, ..] => (*cmp, *value, 4),
                [value, ..] => ("==", *value, 3),
                [] => return None,
            };
            Some((
                format!("meta mark & {mask} {cmp} {}", hex(number(value)?)),
                used(n),
            ))
        }
        ["==", value, ..] => Some((format!("meta mark {}", hex(number(value)?)), used(2))),
        ["!=", value, ..] => Some((format!("meta mark != {}", hex(number(value)?)), used(2))),
        [value, ..] => Some((format!("meta mark {}", hex(number(value)?)), used(1))),
        [] => None,
    }
}

fn bit_op(op: &str) -> Option<&'static str> {
    match op {
        "or" | "|" => Some("|"),
        "xor" | "^" => Some("^"),
        "and" | "&" => Some("&"),
        _ => None,
    }
}

/// `ip saddr != { ... }` and friends at the start of `t`.
fn address_match(t: &[&str]) -> Option<(String, usize)> {
    let family = match t {
        ["ip", "saddr" | "daddr", ..] => AddrFamily::V4,
        ["ip6", "saddr" | "daddr", ..] => AddrFamily::V6,
        _ => return None,
    };
    let (negated, value_at) = match t.get(2) {
        Some(&"!=") => (true, 3),
        Some(&"==") => (false, 3),
        _ => (false, 2),
    };
    let (elements, used) = value_tokens(t, value_at)?;
    let value = family.canonical_value(&elements)?;
    let op = if negated { " !=" } else { "" };
    Some((format!("{} {}{op} {value}", t[0], t[1]), used))
}

/// `iifname cni0` / `oifname == eth0` at the start of `t`: the kernel drops
/// `==` and always quotes the name (`iifname "veth*"`).
fn interface_match(t: &[&str]) -> Option<(String, usize)> {
    let selector @ ("iifname" | "oifname") = *t.first()? else {
        return None;
    };
    let (op, name_at) = match t.get(1) {
        Some(&"!=") => (" !=", 2),
        Some(&"==") => ("", 2),
        _ => ("", 1),
    };
    let name = *t.get(name_at)?;
    let quoted = if name.starts_with('"') {
        name.to_string()
    } else if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*'))
    {
        format!("\"{name}\"")
    } else {
        return None;
    };
    Some((format!("{selector}{op} {quoted}"), name_at + 1))
}

/// The elements of the value at `at`: one token, or the elements of a
/// `{ a , b }` / `{ a, b }` / `{ a,b }` set. Also returns how many tokens
/// were read.
fn value_tokens<'t>(t: &[&'t str], at: usize) -> Option<(Vec<&'t str>, usize)> {
    if t.get(at) != Some(&"{") {
        return Some((vec![*t.get(at)?], at + 1));
    }
    let close = at + t[at..].iter().position(|&w| w == "}")?;
    let elements = t[at + 1..close]
        .iter()
        .flat_map(|w| w.split(','))
        .filter(|w| !w.is_empty())
        .collect();
    Some((elements, close + 1))
}

/// `vmap { 0 : goto A , 1 : goto B }` at the start of `t`, when every key is a number.
fn vmap(t: &[&str]) -> Option<(String, usize)> {
    if t.first() != Some(&"vmap") || t.get(1) != Some(&"{") {
        return None;
    }
    let close = 1 + t[1..].iter().position(|&w| w == "}")?;
    let inside = t[2..close].join(" ");
    let mut entries = inside
        .split(',')
        .map(|entry| {
            let mut words = entry.split_whitespace();
            let key: u32 = words.next()?.parse().ok()?;
            if words.next() != Some(":") {
                return None;
            }
            let value = words.collect::<Vec<_>>().join(" ");
            (!value.is_empty()).then_some((key, value))
        })
        .collect::<Option<Vec<_>>>()?;
    // Anonymous maps are listed in key order whatever order they were written in.
    entries.sort_by_key(|(key, _)| *key);
    let entries: Vec<String> = entries.iter().map(|(k, v)| format!("{k} : {v}")).collect();
    Some((format!("vmap {{ {} }}", entries.join(", ")), close + 1))
}

/// `dnat to 10.0.0.1:80` / `dnat to [fd00::1]:80` at the start of `t`.
fn dnat(t: &[&str]) -> Option<(String, usize)> {
    let ["dnat", "to", target, ..] = t else {
        return None;
    };
    let target = if let Some(bracketed) = target.strip_prefix('[') {
        let (address, port) = bracketed.split_once("]:")?;
        format!(
            "[{}]:{}",
            address.parse::<Ipv6Addr>().ok()?,
            port.parse::<u16>().ok()?
        )
    } else if let Ok(v6) = target.parse::<Ipv6Addr>() {
        v6.to_string()
    } else if let Some((address, port)) = target.split_once(':') {
        format!(
            "{}:{}",
            address.parse::<Ipv4Addr>().ok()?,
            port.parse::<u16>().ok()?
        )
    } else {
        target.parse::<Ipv4Addr>().ok()?.to_string()
    };
    Some((format!("dnat to {target}"), 3))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrFamily {
    V4,
    V6,
}

/// One element of an address value, as an interval of the address space
/// (IPv4 addresses in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrValue {
    Address(u128),
    Prefix { low: u128, len: u32 },
    Range { low: u128, high: u128 },
}

impl AddrFamily {
    fn bits(self) -> u32 {
        match self {
            AddrFamily::V4 => 32,
            AddrFamily::V6 => 128,
        }
    }

    fn all_ones(self) -> u128 {
        match self {
            AddrFamily::V4 => u128::from(u32::MAX),
            AddrFamily::V6 => u128::MAX,
        }
    }

    fn address(self, text: &str) -> Option<u128> {
        match self {
            AddrFamily::V4 => text.parse::<Ipv4Addr>().ok().map(|a| u128::from(u32::from(a))),
            AddrFamily::V6 => text.parse::<Ipv6Addr>().ok().map(u128::from),
        }
    }

    fn show(self, value: u128) -> String {
        match self {
            AddrFamily::V4 => Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX)).to_string(),
            AddrFamily::V6 => Ipv6Addr::from(value).to_string(),
        }
    }

    /// The host bits of a prefix of length `len`.
    fn host_mask(self, len: u32) -> u128 {
        match self.bits() - len {
            128 => u128::MAX,
            host => ((1u128 << host) - 1) & self.all_ones(),
        }
    }

    fn parse(self, text: &str) -> Option<AddrValue> {
        if let Some((address, len)) = text.split_once('/') {
            let len: u32 = len.parse().ok()?;
            if len > self.bits() {
                return None;
            }
            let low = self.address(address)? & !self.host_mask(len);
            return Some(AddrValue::Prefix { low, len });
        }
        if let Some((low, high)) = text.split_once('-') {
            let (low, high) = (self.address(low)?, self.address(high)?);
            return (low <= high).then_some(AddrValue::Range { low, high });
        }
        self.address(text).map(AddrValue::Address)
    }

    fn interval(self, value: AddrValue) -> (u128, u128) {
        match value {
            AddrValue::Address(a) => (a, a),
            AddrValue::Prefix { low, len } => (low, low | self.host_mask(len)),
            AddrValue::Range { low, high } => (low, high),
        }
    }

    /// A value as written on its own (not merged with others).
    fn show_value(self, value: AddrValue) -> String {
        match value {
            AddrValue::Address(a) => self.show(a),
            AddrValue::Prefix { low, len } if len == self.bits() => self.show(low),
            AddrValue::Prefix { low, len } => format!("{}/{len}", self.show(low)),
            AddrValue::Range { low, high } => format!("{}-{}", self.show(low), self.show(high)),
        }
    }

    /// A merged interval as the kernel prints it: an address, a prefix when
    /// the interval is one, otherwise a range.
    fn show_interval(self, low: u128, high: u128) -> String {
        let span = high - low;
        if span == 0 {
            self.show(low)
        } else if span & span.wrapping_add(1) == 0 && low & span == 0 {
            format!("{}/{}", self.show(low), self.bits() - span.count_ones())
        } else {
            format!("{}-{}", self.show(low), self.show(high))
        }
    }

    fn canonical_value(self, elements: &[&str]) -> Option<String> {
        let values = elements
            .iter()
            .map(|e| self.parse(e))
            .collect::<Option<Vec<_>>>()?;
        let printed = match values[..] {
            [] => return None,
            // nft turns a one-element set into a plain comparison.
            [one] => return Some(self.show_value(one)),
            // A prefix or range makes the anonymous set an interval set,
            // whose elements the kernel merges where they overlap or touch.
            _ if values.iter().any(|v| !matches!(v, AddrValue::Address(_))) => {
                let mut intervals: Vec<(u128, u128)> = values.iter().map(|&v| self.interval(v)).collect();
                intervals.sort_unstable();
                let mut merged: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
                for (low, high) in intervals {
                    match merged.last_mut() {
                        Some((_, last_high)) if last_high.checked_add(1).is_none_or(|next| low <= next) => {
                            *last_high = (*last_high).max(high);
                        }
                        _ => merged.push((low, high)),
                    }
                }
                merged
                    .into_iter()
                    .map(|(low, high)| self.show_interval(low, high))
                    .collect::<Vec<_>>()
            }
            // Plain addresses make a hash set: duplicates collapse, nothing merges.
            _ => {
                let mut addresses: Vec<u128> = values.iter().map(|&v| self.interval(v).0).collect();
                addresses.sort_unstable();
                addresses.dedup();
                addresses.into_iter().map(|a| self.show(a)).collect()
            }
        };
        match &printed[..] {
            [one] => Some(one.clone()),
            _ => Some(format!("{{ {} }}", printed.join(", "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (knftables' spelling, the kernel's), each pair seen with nft 1.0.6.
    const RESPELLED: &[(&str, &str)] = &[
        ("mark set mark or 0x4000", "meta mark set meta mark | 0x00004000"),
        (
            "mark set mark or 0x00004000",
            "meta mark set meta mark | 0x00004000",
        ),
        (
            "mark and 0x4000 == 0 return",
            "meta mark & 0x00004000 == 0x00000000 return",
        ),
        ("mark set mark xor 0x4000", "meta mark set meta mark ^ 0x00004000"),
        (
            "mark set mark and 0xffffbfff",
            "meta mark set meta mark & 0xffffbfff",
        ),
        (
            "meta mark set meta mark or 16384",
            "meta mark set meta mark | 0x00004000",
        ),
        ("mark set 0x4000", "meta mark set 0x00004000"),
        ("mark 0x4000 drop", "meta mark 0x00004000 drop"),
        ("mark == 0x4000 return", "meta mark 0x00004000 return"),
        ("mark != 0x4000 return", "meta mark != 0x00004000 return"),
        (
            "mark and 0x4000 != 0 return",
            "meta mark & 0x00004000 != 0x00000000 return",
        ),
        (
            "mark and 0x4000 0x4000 return",
            "meta mark & 0x00004000 == 0x00004000 return",
        ),
        ("ip daddr { 172.30.0.0/16 } drop", "ip daddr 172.30.0.0/16 drop"),
        (
            "ip daddr { 172.30.0.0/16,10.96.0.0/12 } drop",
            "ip daddr { 10.96.0.0/12, 172.30.0.0/16 } drop",
        ),
        (
            "ip saddr != { 203.0.113.0/25 } drop",
            "ip saddr != 203.0.113.0/25 drop",
        ),
        ("ip daddr { 10.1.2.3/32 } drop", "ip daddr 10.1.2.3 drop"),
        ("ip daddr 10.0.0.0/32 drop", "ip daddr 10.0.0.0 drop"),
        ("ip daddr 10.0.0.1/24 drop", "ip daddr 10.0.0.0/24 drop"),
        ("ip daddr == 10.0.0.1 drop", "ip daddr 10.0.0.1 drop"),
        (
            "ip daddr == { 10.0.0.1 , 10.0.0.2 } drop",
            "ip daddr { 10.0.0.1, 10.0.0.2 } drop",
        ),
        ("ip daddr { 0.0.0.0/0 } drop", "ip daddr 0.0.0.0/0 drop"),
        (
            "ip saddr { 10.0.0.0-10.0.0.5 } drop",
            "ip saddr 10.0.0.0-10.0.0.5 drop",
        ),
        (
            "ip saddr != { 198.51.100.0/24 , 192.0.2.0/26 , 203.0.113.30 } drop",
            "ip saddr != { 192.0.2.0/26, 198.51.100.0/24, 203.0.113.30 } drop",
        ),
        (
            "ip saddr { 10.0.0.5 , 10.0.0.1 , 10.0.0.3 } drop",
            "ip saddr { 10.0.0.1, 10.0.0.3, 10.0.0.5 } drop",
        ),
        (
            "ip saddr != { 10.0.0.1 , 10.0.0.2 } drop",
            "ip saddr != { 10.0.0.1, 10.0.0.2 } drop",
        ),
        (
            "ip saddr != { 10.0.0.1 , 10.0.0.1 } drop",
            "ip saddr != 10.0.0.1 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/25 , 10.0.0.128/25 } drop",
            "ip saddr != 10.0.0.0/24 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/24 , 10.0.0.0/25 , 10.0.0.7 } drop",
            "ip saddr != 10.0.0.0/24 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/30 , 10.0.0.4/31 } drop",
            "ip saddr != 10.0.0.0-10.0.0.5 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/31 , 10.0.0.2 } drop",
            "ip saddr != 10.0.0.0-10.0.0.2 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/32 , 10.0.0.1/32 } drop",
            "ip saddr != 10.0.0.0/31 drop",
        ),
        (
            "ip saddr != { 10.0.0.0/31 , 10.0.0.3/32 } drop",
            "ip saddr != { 10.0.0.0/31, 10.0.0.3 } drop",
        ),
        (
            "ip saddr != { 10.0.0.3-10.0.0.3 , 10.0.0.9 } drop",
            "ip saddr != { 10.0.0.3, 10.0.0.9 } drop",
        ),
        (
            "ip saddr != { 0.0.0.0/1 , 128.0.0.0/1 } drop",
            "ip saddr != 0.0.0.0/0 drop",
        ),
        (
            "ip saddr != { 255.255.255.255 , 255.255.255.254/31 } drop",
            "ip saddr != 255.255.255.254/31 drop",
        ),
        (
            "ip6 saddr != { 2001:db8:100::/64 , 2001:db8:ff::/48 , 2001:db8:60::1 } drop",
            "ip6 saddr != { 2001:db8:60::1, 2001:db8:ff::-2001:db8:100:0:ffff:ffff:ffff:ffff } drop",
        ),
        (
            "ip6 saddr != { 2001:db8::/64 , 2001:db8:0:1::/64 } drop",
            "ip6 saddr != 2001:db8::/63 drop",
        ),
        ("ip6 saddr { 2001:DB8:0:0::1 } drop", "ip6 saddr 2001:db8::1 drop"),
        ("ip6 saddr ::1/128 drop", "ip6 saddr ::1 drop"),
        (
            "ip6 daddr { fd00:10:96::/112 } drop",
            "ip6 daddr fd00:10:96::/112 drop",
        ),
        (
            "numgen random mod 2 vmap { 0 : goto A , 1 : goto B }",
            "numgen random mod 2 vmap { 0 : goto A, 1 : goto B }",
        ),
        (
            "numgen random mod 3 vmap { 2 : goto a , 0 : goto b , 1 : jump b }",
            "numgen random mod 3 vmap { 0 : goto b, 1 : jump b, 2 : goto a }",
        ),
        (
            "meta l4proto tcp dnat to [2001:DB8:0:0::1]:80",
            "meta l4proto tcp dnat to [2001:db8::1]:80",
        ),
        ("iifname cni0 goto service-X", "iifname \"cni0\" goto service-X"),
        (
            "ip daddr 10.96.0.1 iifname != cni0 jump m",
            "ip daddr 10.96.0.1 iifname != \"cni0\" jump m",
        ),
        ("iifname == \"cni0\" accept", "iifname \"cni0\" accept"),
        ("oifname != eth0.1 accept", "oifname != \"eth0.1\" accept"),
        ("iifname veth* accept", "iifname \"veth*\" accept"),
        (
            "ip daddr 172.30.0.41 ip saddr != { 10.0.0.0/8 } jump mark-for-masquerade",
            "ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        ),
    ];

    /// Already the kernel's spelling, or forms this module does not know.
    const UNCHANGED: &[&str] = &[
        "ct state new jump firewall-check",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        "ip6 daddr != ::1 meta l4proto . th dport vmap @no-endpoint-nodeports",
        "iifname \"veth*\" goto service-X",
        "iifname != \"cni0\" jump mark-for-masquerade",
        "iifname \"veth\\*\" accept",
        "update @affinity-X { ip saddr }",
        "meta l4proto tcp dnat to 10.180.0.1:80",
        "meta l4proto tcp dnat to [fd00::1]:80",
        "numgen random mod 1 vmap { 0 : goto endpoint-A }",
        "masquerade fully-random",
        "reject",
        "ip daddr { 10.0.0.1, 10.0.0.2 } drop",
        "ip saddr != { 2001:db8:60::1, 2001:db8:ff::-2001:db8:100:0:ffff:ffff:ffff:ffff } drop",
        // Not kube-proxy's: never guessed at.
        "ct mark set mark or 0x4000",
        "meta l4proto tcp tcp dport 80 drop",
        "ip saddr 010.0.0.1 drop",
        "ip daddr vmap { 10.0.0.1 : drop , 10.0.0.2 : accept }",
        "tcp dport { 80 } drop",
        "mark   and 0x4000 junk",
        "comment \"unterminated",
    ];

    #[test]
    fn both_spellings_meet_in_the_kernels() {
        for (knftables, kernel) in RESPELLED {
            assert_eq!(canonical_rule(knftables), *kernel, "{knftables}");
            assert_eq!(canonical_rule(kernel), *kernel, "not stable: {kernel}");
        }
    }

    #[test]
    fn other_forms_pass_through_unchanged() {
        for rule in UNCHANGED {
            assert_eq!(canonical_rule(rule), *rule);
        }
    }

    #[test]
    fn quoted_text_is_one_token() {
        assert_eq!(
            tokens(r#"jump b comment "a { b } , mark 1""#),
            Some(vec!["jump", "b", "comment", r#""a { b } , mark 1""#])
        );
        assert_eq!(
            canonical_rule(r#"ip saddr { 10.0.0.1 } jump b comment "mark 1 ip saddr { 10.0.0.1 }""#),
            r#"ip saddr 10.0.0.1 jump b comment "mark 1 ip saddr { 10.0.0.1 }""#
        );
    }

    #[test]
    fn element_keys_use_the_shortest_address() {
        assert_eq!(
            canonical_key("FD00:10:96:0::1E . tcp . 80"),
            "fd00:10:96::1e . tcp . 80"
        );
        assert_eq!(canonical_key("172.30.0.41 . tcp . 80"), "172.30.0.41 . tcp . 80");
        assert_eq!(canonical_key("tcp . 3001"), "tcp . 3001");
    }
}
