//! Operations and their text, exactly as knftables prints them.

use std::fmt::{self, Write};

/// The one table kube-proxy's nftables mode owns in each family.
pub const TABLE_NAME: &str = "kube-proxy";

/// An nftables address family (kube-proxy uses one table per family, never `inet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    Ip,
    /// IPv6.
    Ip6,
}

impl Family {
    /// `ip` or `ip6`: the family keyword, which is also the prefix of address
    /// matches (`ip daddr`, `ip6 saddr`).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }

    /// The address type of sets (`ipv4_addr`, `ipv6_addr`).
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::Ip => "ipv4_addr",
            Family::Ip6 => "ipv6_addr",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A netfilter hook a base chain attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Before routing.
    Prerouting,
    /// To a local socket.
    Input,
    /// Routed through.
    Forward,
    /// Sent by the host.
    Output,
    /// After routing.
    Postrouting,
}

impl Hook {
    /// Every hook, in the order a packet meets them.
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// What makes a chain a base chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// `filter` or `nat`.
    pub chain_type: &'static str,
    /// The hook.
    pub hook: Hook,
    /// The priority, numeric (knftables prints `dstnat-10` as `-110`).
    pub priority: i32,
}

/// A chain as `add chain` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainSpec {
    /// The name.
    pub name: String,
    /// Hook, type and priority of a base chain.
    pub base: Option<BaseChain>,
    /// A comment.
    pub comment: Option<String>,
}

impl ChainSpec {
    /// A regular chain without comment.
    pub fn regular(name: impl Into<String>) -> ChainSpec {
        ChainSpec {
            name: name.into(),
            base: None,
            comment: None,
        }
    }
}

/// Set or verdict map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// Keys only.
    Set,
    /// Keys with a value each.
    Map,
}

impl SetKind {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Map => "map",
        }
    }
}

/// A set or map as `add set`/`add map` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    /// Set or map.
    pub kind: SetKind,
    /// The name.
    pub name: String,
    /// The type text: `ipv4_addr`, or for a map `KEY . TYPES : verdict`.
    pub type_text: String,
    /// Flags (`dynamic`, `timeout`).
    pub flags: Vec<String>,
    /// Default element timeout in seconds.
    pub timeout_seconds: Option<u32>,
    /// A comment.
    pub comment: Option<String>,
}

/// One element of a set or map. Its identity is the key text (parts joined by
/// ` . `), as nftables prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    /// The key, parts joined by ` . `.
    pub key: String,
    /// A map element's value (`goto X`, `drop`).
    pub value: Option<String>,
    /// A comment.
    pub comment: Option<String>,
}

/// One operation of a transaction: one line of `nft -f` input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// `add table` (no-op if it exists).
    AddTable {
        /// The table's comment.
        comment: Option<String>,
    },
    /// `delete table`: the table and everything in it.
    DeleteTable,
    /// `add chain` (no-op if it exists).
    AddChain(ChainSpec),
    /// `flush chain`: removes its rules.
    FlushChain(String),
    /// `delete chain`: the chain and its rules; refused while anything jumps to it.
    DeleteChain(String),
    /// `add rule`: appends a rule.
    AddRule {
        /// The chain.
        chain: String,
        /// The rule text.
        rule: String,
        /// A comment, printed after the rule.
        comment: Option<String>,
    },
    /// `add set` / `add map` (no-op if it exists).
    AddSet(SetSpec),
    /// `flush set` / `flush map`: removes every element.
    FlushSet(SetKind, String),
    /// `delete set` / `delete map`.
    DeleteSet(SetKind, String),
    /// `add element`.
    AddElement {
        /// The set or map.
        set: String,
        /// The element.
        element: Element,
    },
    /// `delete element` (by key).
    DeleteElement {
        /// The set or map.
        set: String,
        /// The key text.
        key: String,
    },
}

/// Go's `%q` for the texts kube-proxy quotes (comments). Names and comments
/// reaching a transaction are validated upstream of here, so only the
/// characters that would end the string need escaping.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Op {
    /// Writes the operation as one line (no newline), in `family`'s kube-proxy table.
    pub fn write(&self, family: Family, out: &mut String) {
        let head = |out: &mut String, verb: &str, object: &str| {
            let _ = write!(out, "{verb} {object} {family} {TABLE_NAME}");
        };
        match self {
            Op::AddTable { comment } => {
                head(out, "add", "table");
                if let Some(comment) = comment {
                    let _ = write!(out, " {{ comment {} ; }}", quote(comment));
                }
            }
            Op::DeleteTable => head(out, "delete", "table"),
            Op::AddChain(chain) => {
                head(out, "add", "chain");
                out.push(' ');
                out.push_str(&chain.name);
                if chain.base.is_some() || chain.comment.is_some() {
                    out.push_str(" {");
                    if let Some(base) = &chain.base {
                        let _ = write!(
                            out,
                            " type {} hook {} priority {} ;",
                            base.chain_type,
                            base.hook.as_str(),
                            base.priority
                        );
                    }
                    if let Some(comment) = &chain.comment {
                        let _ = write!(out, " comment {} ;", quote(comment));
                    }
                    out.push_str(" }");
                }
            }
            Op::FlushChain(name) => named(out, family, "flush", "chain", name),
            Op::DeleteChain(name) => named(out, family, "delete", "chain", name),
            Op::AddRule { chain, rule, comment } => {
                named(out, family, "add", "rule", chain);
                out.push(' ');
                out.push_str(rule);
                if let Some(comment) = comment {
                    out.push_str(" comment ");
                    out.push_str(&quote(comment));
                }
            }
            Op::AddSet(set) => {
                named(out, family, "add", set.kind.as_str(), &set.name);
                let _ = write!(out, " {{ type {} ;", set.type_text);
                if !set.flags.is_empty() {
                    let _ = write!(out, " flags {} ;", set.flags.join(","));
                }
                if let Some(timeout) = set.timeout_seconds {
                    let _ = write!(out, " timeout {timeout}s ;");
                }
                if let Some(comment) = &set.comment {
                    let _ = write!(out, " comment {} ;", quote(comment));
                }
                out.push_str(" }");
            }
            Op::FlushSet(kind, name) => named(out, family, "flush", kind.as_str(), name),
            Op::DeleteSet(kind, name) => named(out, family, "delete", kind.as_str(), name),
            Op::AddElement { set, element } => {
                named(out, family, "add", "element", set);
                let _ = write!(out, " {{ {}", element.key);
                if let Some(comment) = &element.comment {
                    let _ = write!(out, " comment {}", quote(comment));
                }
                if let Some(value) = &element.value {
                    let _ = write!(out, " : {value}");
                }
                out.push_str(" }");
            }
            Op::DeleteElement { set, key } => {
                named(out, family, "delete", "element", set);
                let _ = write!(out, " {{ {key} }}");
            }
        }
    }
}

fn named(out: &mut String, family: Family, verb: &str, object: &str, name: &str) {
    let _ = write!(out, "{verb} {object} {family} {TABLE_NAME} {name}");
}

/// Operations for one family's table, applied by the kernel all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The family of the table.
    pub family: Family,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new(family: Family) -> Transaction {
        Transaction {
            family,
            ops: Vec::new(),
        }
    }

    /// Queues an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Upstream's `NumOperations()`: one per line.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The `nft -f` text: one operation per line, each ending in a newline.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.ops.len() * 96);
        for op in &self.ops {
            op.write(self.family, &mut out);
            out.push('\n');
        }
        out
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}
