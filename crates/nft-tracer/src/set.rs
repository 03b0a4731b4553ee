//! Sets and verdict maps read into lookup tables.
//!
//! Keys are compared as values, not as text: an element the kernel lists
//! (`fd00::1 . tcp . 80`) and the key a packet makes are equal however the
//! address or protocol happened to be spelled.

use std::collections::HashMap;

use chainsmith_nftables::{Element, Family, SetKind, SetSpec};
use ipnet::IpNet;

use crate::rule::{
    Pattern, Selector, Value, VerdictStmt, family_of, parse_verdict, port_number, proto_number,
};

/// The type of one part of a key (`ipv4_addr . inet_proto . inet_service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Addr,
    Proto,
    Port,
    Mark,
    Iface,
}

impl KeyType {
    /// The key type a selector makes, if sets of it are understood.
    pub(crate) fn of(selector: Selector) -> Option<KeyType> {
        Some(match selector {
            Selector::Saddr | Selector::Daddr => KeyType::Addr,
            Selector::L4Proto => KeyType::Proto,
            Selector::Dport { .. } => KeyType::Port,
            Selector::Mark { .. } => KeyType::Mark,
            Selector::IifName => KeyType::Iface,
            Selector::CtState => return None,
        })
    }
}

/// One set or map, its elements indexed.
#[derive(Debug, Clone)]
pub(crate) struct CompiledSet {
    pub(crate) kind: SetKind,
    pub(crate) types: Vec<KeyType>,
    /// Elements whose key parts are single values.
    exact: HashMap<Vec<Value>, Option<VerdictStmt>>,
    /// Elements with a network or range in their key (interval sets), in
    /// order.
    ranged: Vec<(Vec<Pattern>, Option<VerdictStmt>)>,
}

impl CompiledSet {
    pub(crate) fn new<'e>(
        spec: &SetSpec,
        elements: impl Iterator<Item = &'e Element>,
        family: Family,
    ) -> Result<CompiledSet, String> {
        let (key_text, value_text) = match spec.type_text.split_once(':') {
            Some((key, value)) => (key, Some(value.trim())),
            None => (spec.type_text.as_str(), None),
        };
        match (spec.kind, value_text) {
            (SetKind::Set, None) | (SetKind::Map, Some("verdict")) => {}
            (_, value) => {
                return Err(format!(
                    "a {} of type {:?} (value {value:?}) is not understood",
                    spec.kind.as_str(),
                    spec.type_text
                ));
            }
        }
        let types = key_text
            .split('.')
            .map(|t| {
                Ok(match t.trim() {
                    "ipv4_addr" if family == Family::Ip => KeyType::Addr,
                    "ipv6_addr" if family == Family::Ip6 => KeyType::Addr,
                    "inet_proto" => KeyType::Proto,
                    "inet_service" => KeyType::Port,
                    "mark" => KeyType::Mark,
                    "ifname" => KeyType::Iface,
                    other => return Err(format!("key type {other:?} is not understood in family {family}")),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut set = CompiledSet {
            kind: spec.kind,
            types,
            exact: HashMap::new(),
            ranged: Vec::new(),
        };
        for element in elements {
            let key = set
                .key(&element.key, family)
                .map_err(|e| format!("element {:?}: {e}", element.key))?;
            let value = match (&element.value, spec.kind) {
                (Some(text), SetKind::Map) => Some(
                    parse_verdict(text)
                        .map_err(|e| format!("element {:?}: value {text:?}: {e}", element.key))?,
                ),
                (None, SetKind::Set) => None,
                _ => {
                    return Err(format!(
                        "element {:?}: a value that does not fit the kind",
                        element.key
                    ));
                }
            };
            let exact: Option<Vec<Value>> = key
                .iter()
                .map(|p| match p {
                    Pattern::Exact(v) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            match exact {
                Some(exact) => {
                    set.exact.insert(exact, value);
                }
                None => set.ranged.push((key, value)),
            }
        }
        Ok(set)
    }

    /// An element key: parts joined by ` . `; what a kernel listing adds to
    /// a dynamic set's element (`timeout 3h expires 2h59m`) is not key.
    fn key(&self, text: &str, family: Family) -> Result<Vec<Pattern>, String> {
        let words: Vec<&str> = text
            .split_whitespace()
            .take_while(|w| !matches!(*w, "timeout" | "expires" | "comment"))
            .collect();
        let parts: Vec<&[&str]> = words.split(|w| *w == ".").collect();
        if parts.len() != self.types.len() {
            return Err(format!("{} parts for a key of {}", parts.len(), self.types.len()));
        }
        parts
            .iter()
            .zip(&self.types)
            .map(|(part, ty)| match part {
                [word] => key_part(word, *ty, family),
                _ => Err(format!("{:?} is not one value", part.join(" "))),
            })
            .collect()
    }

    /// The element for `key`, if there is one: `Some(None)` for a set's
    /// element, `Some(Some(verdict))` for a map's.
    pub(crate) fn lookup(&self, key: &[Value]) -> Option<Option<&VerdictStmt>> {
        if let Some(value) = self.exact.get(key) {
            return Some(value.as_ref());
        }
        self.ranged
            .iter()
            .find(|(patterns, _)| {
                patterns.len() == key.len() && patterns.iter().zip(key).all(|(p, v)| p.matches(v))
            })
            .map(|(_, value)| value.as_ref())
    }

    /// Every verdict the map may give (to check the chains they name).
    pub(crate) fn verdicts(&self) -> impl Iterator<Item = &VerdictStmt> {
        self.exact
            .values()
            .chain(self.ranged.iter().map(|(_, v)| v))
            .filter_map(Option::as_ref)
    }
}

fn key_part(word: &str, ty: KeyType, family: Family) -> Result<Pattern, String> {
    let bad = || format!("{word:?} is not a {ty:?}");
    Ok(match ty {
        KeyType::Addr => {
            let (pattern, ip) = if word.contains('/') {
                let net: IpNet = word.parse().map_err(|_| bad())?;
                (Pattern::Net(net), net.addr())
            } else {
                let ip = word.parse().map_err(|_| bad())?;
                (Pattern::Exact(Value::Addr(ip)), ip)
            };
            if family_of(&ip) != family {
                return Err(bad());
            }
            pattern
        }
        KeyType::Proto => Pattern::Exact(Value::Proto(proto_number(word).ok_or_else(bad)?)),
        KeyType::Port => match word.split_once('-') {
            Some((first, last)) => Pattern::Ports(
                port_number(first).ok_or_else(bad)?,
                port_number(last).ok_or_else(bad)?,
            ),
            None => Pattern::Exact(Value::Port(port_number(word).ok_or_else(bad)?)),
        },
        KeyType::Mark => {
            let value = match word.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => word.parse().ok(),
            };
            Pattern::Exact(Value::Mark(value.ok_or_else(bad)?))
        }
        KeyType::Iface => {
            let name = word.trim_matches('"');
            match name.strip_suffix('*') {
                Some(prefix) => Pattern::IfPrefix(prefix.to_string()),
                None => Pattern::Exact(Value::Iface(name.to_string())),
            }
        }
    })
}
