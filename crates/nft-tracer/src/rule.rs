//! One rule's text read into statements, in either spelling.
//!
//! kube-proxy (knftables) writes `mark set mark or 0x4000`, `mark and 0x4000
//! == 0`, `ip daddr { 172.30.0.0/16 }` and `{ 0 : goto A , 1 : goto B }`; the
//! kernel lists the same rules as `meta mark set meta mark | 0x00004000`,
//! `meta mark & 0x00004000 == 0x00000000`, `ip daddr 172.30.0.0/16` and
//! `{ 0 : goto A, 1 : goto B }`, with the comment inside the rule text. Both
//! read to the same [`Stmt`]s. A word this grammar does not know is an error:
//! a rule skipped or taken as not matching would make the trace lie.

use std::fmt;
use std::net::IpAddr;

use chainsmith_nftables::Family;
use ipnet::IpNet;

use crate::packet::CtState;

/// `meta l4proto` numbers of the protocols kube-proxy serves.
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const SCTP: u8 = 132;

/// A protocol name or number as `meta l4proto` and `inet_proto` keys spell it.
pub(crate) fn proto_number(word: &str) -> Option<u8> {
    Some(match word {
        "tcp" => TCP,
        "udp" => UDP,
        "sctp" => SCTP,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        other => return other.parse().ok(),
    })
}

fn proto_name(number: u8) -> String {
    match number {
        TCP => "tcp".into(),
        UDP => "udp".into(),
        SCTP => "sctp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// A port, numeric or one of the few service names `nft` may print.
pub(crate) fn port_number(word: &str) -> Option<u16> {
    Some(match word {
        "ssh" => 22,
        "domain" => 53,
        "http" => 80,
        "https" => 443,
        other => return other.parse().ok(),
    })
}

fn number(word: &str) -> Option<u32> {
    match word.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => word.parse().ok(),
    }
}

/// Something of the packet a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selector {
    /// `ip saddr` / `ip6 saddr`.
    Saddr,
    /// `ip daddr` / `ip6 daddr`: the destination as translated so far.
    Daddr,
    /// `meta l4proto`.
    L4Proto,
    /// `th dport` (any transport), or `tcp dport` and the like, which also
    /// require that protocol, even when negated.
    Dport { proto: Option<u8> },
    /// `mark` / `meta mark`, masked with `and M` / `& M`.
    Mark { mask: u32 },
    /// `ct state`.
    CtState,
    /// `iifname` / `iif`: the input interface (none in output and
    /// postrouting, where the kernel compares an empty name).
    IifName,
}

/// What a selector reads from a packet, and what a set key holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Addr(IpAddr),
    Proto(u8),
    Port(u16),
    Mark(u32),
    CtState(CtState),
    Iface(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(ip) => write!(f, "{ip}"),
            Value::Proto(p) => f.write_str(&proto_name(*p)),
            Value::Port(p) => write!(f, "{p}"),
            Value::Mark(m) => write!(f, "0x{m:08x}"),
            Value::CtState(s) => f.write_str(s.as_str()),
            Value::Iface(name) => write!(f, "{name:?}"),
        }
    }
}

/// Key text as nftables prints it: parts joined by ` . `.
pub(crate) fn key_text(key: &[Value]) -> String {
    key.iter().map(Value::to_string).collect::<Vec<_>>().join(" . ")
}

/// One item a value is compared with (an element of an anonymous set, or the
/// only one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(Value),
    Net(IpNet),
    Ports(u16, u16),
    IfPrefix(String),
}

impl Pattern {
    pub(crate) fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Pattern::Exact(want), value) => want == value,
            (Pattern::Net(net), Value::Addr(ip)) => net.contains(ip),
            (Pattern::Ports(first, last), Value::Port(port)) => first <= port && port <= last,
            (Pattern::IfPrefix(prefix), Value::Iface(name)) => name.starts_with(prefix.as_str()),
            _ => false,
        }
    }
}

/// A match: the rule goes on only if it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// `SELECTOR [!=] VALUE` or `SELECTOR [!=] { V1, V2 }`: any item.
    Compare {
        selector: Selector,
        negated: bool,
        patterns: Vec<Pattern>,
    },
    /// `SEL [. SEL]... [!=] @set`.
    InSet {
        key: Vec<Selector>,
        set: String,
        negated: bool,
    },
    /// `fib saddr|daddr type [!=] local`.
    FibLocal { source: bool, negated: bool },
}

/// A verdict, in a rule or as a verdict map's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VerdictStmt {
    Accept,
    Drop,
    Reject,
    Return,
    Continue,
    Jump(String),
    Goto(String),
}

impl fmt::Display for VerdictStmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerdictStmt::Accept => f.write_str("accept"),
            VerdictStmt::Drop => f.write_str("drop"),
            VerdictStmt::Reject => f.write_str("reject"),
            VerdictStmt::Return => f.write_str("return"),
            VerdictStmt::Continue => f.write_str("continue"),
            VerdictStmt::Jump(to) => write!(f, "jump {to}"),
            VerdictStmt::Goto(to) => write!(f, "goto {to}"),
        }
    }
}

impl VerdictStmt {
    pub(crate) fn target(&self) -> Option<&str> {
        match self {
            VerdictStmt::Jump(to) | VerdictStmt::Goto(to) => Some(to),
            _ => None,
        }
    }
}

/// How `mark set` computes the new mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkOp {
    Set(u32),
    Or(u32),
    Xor(u32),
    And(u32),
}

impl MarkOp {
    pub(crate) fn apply(self, mark: u32) -> u32 {
        match self {
            MarkOp::Set(v) => v,
            MarkOp::Or(v) => mark | v,
            MarkOp::Xor(v) => mark ^ v,
            MarkOp::And(v) => mark & v,
        }
    }
}

/// One statement of a rule, evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    Match(Match),
    /// `KEY vmap @map`: a miss ends the rule without a verdict.
    Vmap {
        key: Vec<Selector>,
        map: String,
    },
    /// `numgen random mod N [offset O] vmap { i : verdict, ... }`.
    Numgen {
        modulus: u32,
        offset: u32,
        branches: Vec<(u32, VerdictStmt)>,
    },
    SetMark(MarkOp),
    /// `update @set { KEY }`: adds the key (session affinity).
    Update {
        set: String,
        key: Vec<Selector>,
    },
    /// `dnat to ADDR[:PORT]`: translates and ends the chain (accept).
    Dnat {
        addr: IpAddr,
        port: Option<u16>,
    },
    /// `masquerade [flags]`: ends the chain (accept).
    Masquerade,
    Verdict(VerdictStmt),
}

/// A rule read: its statements and its comment (from the rule text, as the
/// kernel lists it, if the table did not keep it apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedRule {
    pub(crate) stmts: Vec<Stmt>,
    pub(crate) comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Quoted(String),
    Open,
    Close,
    Comma,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => f.write_str(w),
            Tok::Quoted(s) => write!(f, "{s:?}"),
            Tok::Open => f.write_str("{"),
            Tok::Close => f.write_str("}"),
            Tok::Comma => f.write_str(","),
        }
    }
}

/// Words split on blanks; braces and commas are tokens of their own whether
/// spaced (`{ a , b }`, knftables) or not (`{a,b}`, `goto A, 1`, the kernel).
fn tokenize(text: &str) -> Result<Vec<Tok<'_>>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(toks);
        };
        match c {
            '{' | '}' | ',' => {
                toks.push(match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    _ => Tok::Comma,
                });
                rest = &rest[1..];
            }
            '"' => {
                let mut out = String::new();
                let mut chars = rest[1..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i + 2,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => out.push('\n'),
                            Some((_, c)) => out.push(c),
                            None => return Err("unterminated string".into()),
                        },
                        Some((_, c)) => out.push(c),
                        None => return Err("unterminated string".into()),
                    }
                };
                toks.push(Tok::Quoted(out));
                rest = &rest[end..];
            }
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ',' | '"'))
                    .unwrap_or(rest.len());
                toks.push(Tok::Word(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
    family: Family,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        tok
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn word(&mut self) -> Result<&'a str, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(other) => Err(format!("unexpected {other}")),
            None => Err("the rule ends too early".into()),
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek() == Some(&Tok::Word(word)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_tok(&mut self, tok: &Tok<'_>) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Word(w)) if w == word => Ok(()),
            Some(other) => Err(format!("expected {word:?}, found {other}")),
            None => Err(format!("expected {word:?} at the end")),
        }
    }

    fn expect_tok(&mut self, tok: &Tok<'_>) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == tok => Ok(()),
            Some(other) => Err(format!("expected {tok}, found {other}")),
            None => Err(format!("expected {tok} at the end")),
        }
    }

    fn number(&mut self) -> Result<u32, String> {
        let word = self.word()?;
        number(word).ok_or_else(|| format!("{word:?} is not a number"))
    }

    fn set_ref(&mut self) -> Result<String, String> {
        let word = self.word()?;
        word.strip_prefix('@')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("expected @SET, found {word:?}"))
    }

    fn family_word(&self, word: &str) -> Result<(), String> {
        let want = self.family.as_str();
        if word == want {
            Ok(())
        } else {
            Err(format!("{word} in a table of family {want}"))
        }
    }

    /// One selector of a concatenation (`ip daddr`, `meta l4proto`, ...).
    fn selector(&mut self) -> Result<Selector, String> {
        let word = self.word()?;
        self.selector_after(word)
    }

    fn selector_after(&mut self, word: &str) -> Result<Selector, String> {
        Ok(match word {
            "ip" | "ip6" => {
                self.family_word(word)?;
                match self.word()? {
                    "saddr" => Selector::Saddr,
                    "daddr" => Selector::Daddr,
                    other => return Err(format!("{word} {other} is not understood")),
                }
            }
            "meta" => match self.word()? {
                "l4proto" => Selector::L4Proto,
                "mark" => self.mark_mask()?,
                "iifname" | "iif" => Selector::IifName,
                other => return Err(format!("meta {other} is not understood")),
            },
            "mark" => self.mark_mask()?,
            "th" => {
                self.expect("dport")?;
                Selector::Dport { proto: None }
            }
            "tcp" | "udp" | "sctp" => {
                self.expect("dport")?;
                Selector::Dport {
                    proto: proto_number(word),
                }
            }
            "ct" => {
                self.expect("state")?;
                Selector::CtState
            }
            "iifname" | "iif" => Selector::IifName,
            other => return Err(format!("{other:?} is not understood")),
        })
    }

    fn mark_mask(&mut self) -> Result<Selector, String> {
        let mask = if self.eat("and") || self.eat("&") {
            self.number()?
        } else {
            u32::MAX
        };
        Ok(Selector::Mark { mask })
    }

    /// A selector's comparison or lookup: `vmap @M`, `[!=] @S`,
    /// `[!=|==] VALUE`, `[!=] { V, ... }`.
    fn expression(&mut self, first: Selector) -> Result<Stmt, String> {
        let mut key = vec![first];
        while self.eat(".") {
            key.push(self.selector()?);
        }
        if self.eat("vmap") {
            let map = self.set_ref()?;
            return Ok(Stmt::Vmap { key, map });
        }
        let negated = if self.eat("!=") {
            true
        } else {
            self.eat("==");
            false
        };
        if matches!(self.peek(), Some(Tok::Word(w)) if w.starts_with('@')) {
            let set = self.set_ref()?;
            return Ok(Stmt::Match(Match::InSet { key, set, negated }));
        }
        if key.len() > 1 {
            return Err("a concatenation is only understood with @set or vmap @map".into());
        }
        let mut patterns = Vec::new();
        if self.eat_tok(&Tok::Open) {
            loop {
                let tok = self.next().ok_or("unterminated { ... }")?;
                patterns.push(self.pattern(first, tok)?);
                if self.eat_tok(&Tok::Close) {
                    break;
                }
                self.expect_tok(&Tok::Comma)?;
            }
        } else {
            let tok = self.next().ok_or("a comparison without a value")?;
            patterns.push(self.pattern(first, tok)?);
            // `ct state established,related`: a flag list without braces.
            while first == Selector::CtState && self.eat_tok(&Tok::Comma) {
                let tok = self.next().ok_or("a state list ends in a comma")?;
                patterns.push(self.pattern(first, tok)?);
            }
        }
        Ok(Stmt::Match(Match::Compare {
            selector: first,
            negated,
            patterns,
        }))
    }

    fn pattern(&self, selector: Selector, tok: Tok<'_>) -> Result<Pattern, String> {
        if let Selector::IifName = selector {
            let name = match tok {
                Tok::Word(w) => w.to_string(),
                Tok::Quoted(s) => s,
                other => return Err(format!("unexpected {other}")),
            };
            return Ok(match name.strip_suffix('*') {
                Some(prefix) => Pattern::IfPrefix(prefix.to_string()),
                None => Pattern::Exact(Value::Iface(name)),
            });
        }
        let Tok::Word(word) = tok else {
            return Err(format!("unexpected {tok}"));
        };
        let bad = || format!("{word:?} is not a value for {selector:?}");
        Ok(match selector {
            Selector::Saddr | Selector::Daddr => address_pattern(word, self.family)?,
            Selector::L4Proto => Pattern::Exact(Value::Proto(proto_number(word).ok_or_else(bad)?)),
            Selector::Dport { .. } => match word.split_once('-') {
                Some((first, last)) => Pattern::Ports(
                    port_number(first).ok_or_else(bad)?,
                    port_number(last).ok_or_else(bad)?,
                ),
                None => Pattern::Exact(Value::Port(port_number(word).ok_or_else(bad)?)),
            },
            Selector::Mark { .. } => Pattern::Exact(Value::Mark(number(word).ok_or_else(bad)?)),
            Selector::CtState => Pattern::Exact(Value::CtState(CtState::from_keyword(word).ok_or_else(bad)?)),
            Selector::IifName => return Err(bad()),
        })
    }

    fn verdict(&mut self) -> Result<VerdictStmt, String> {
        let word = self.word()?;
        verdict_after(self, word)
    }

    fn numgen(&mut self) -> Result<Stmt, String> {
        match self.word()? {
            "random" => {}
            other => return Err(format!("numgen {other} (only numgen random is understood)")),
        }
        self.expect("mod")?;
        let modulus = self.number()?;
        if modulus == 0 {
            return Err("numgen mod 0".into());
        }
        let offset = if self.eat("offset") { self.number()? } else { 0 };
        self.expect("vmap")?;
        self.expect_tok(&Tok::Open)?;
        let mut branches = Vec::new();
        loop {
            let value = self.number()?;
            self.expect(":")?;
            branches.push((value, self.verdict()?));
            if self.eat_tok(&Tok::Close) {
                break;
            }
            self.expect_tok(&Tok::Comma)?;
        }
        Ok(Stmt::Numgen {
            modulus,
            offset,
            branches,
        })
    }

    fn mark_statement(&mut self) -> Result<Stmt, String> {
        if !self.eat("set") {
            let selector = self.mark_mask()?;
            return self.expression(selector);
        }
        let reads_mark = if self.eat("meta") {
            self.expect("mark")?;
            true
        } else {
            self.eat("mark")
        };
        if !reads_mark {
            return Ok(Stmt::SetMark(MarkOp::Set(self.number()?)));
        }
        let op = self.word()?;
        let value = self.number()?;
        Ok(Stmt::SetMark(match op {
            "or" | "|" => MarkOp::Or(value),
            "xor" | "^" => MarkOp::Xor(value),
            "and" | "&" => MarkOp::And(value),
            other => return Err(format!("mark set mark {other} is not understood")),
        }))
    }

    fn statement(&mut self, word: &'a str, comment: &mut Option<String>) -> Result<Option<Stmt>, String> {
        Ok(Some(match word {
            "comment" => {
                match self.next() {
                    Some(Tok::Quoted(text)) => *comment = Some(text),
                    Some(Tok::Word(text)) => *comment = Some(text.to_string()),
                    _ => return Err("comment without a text".into()),
                }
                if !self.at_end() {
                    return Err("text after the comment".into());
                }
                return Ok(None);
            }
            // Counters count; they never change what happens to a packet.
            "counter" => {
                if self.eat("packets") {
                    self.number()?;
                    self.expect("bytes")?;
                    self.number()?;
                }
                return Ok(None);
            }
            "mark" => self.mark_statement()?,
            "meta" if self.peek() == Some(&Tok::Word("mark")) => {
                self.pos += 1;
                self.mark_statement()?
            }
            "fib" => {
                let source = match self.word()? {
                    "saddr" => true,
                    "daddr" => false,
                    other => return Err(format!("fib {other} is not understood")),
                };
                self.expect("type")?;
                let negated = self.eat("!=");
                self.expect("local")?;
                Stmt::Match(Match::FibLocal { source, negated })
            }
            "numgen" => self.numgen()?,
            "masquerade" => {
                // Port-selection flags change the source port, not whether
                // or to what address the packet is masqueraded.
                while matches!(
                    self.peek(),
                    Some(Tok::Word("fully-random" | "random" | "persistent"))
                ) {
                    self.pos += 1;
                    self.eat_tok(&Tok::Comma);
                }
                Stmt::Masquerade
            }
            "dnat" => {
                if self.eat("ip") || self.eat("ip6") {
                    // `dnat ip to`: the inet-family spelling.
                }
                self.expect("to")?;
                let target = self.word()?;
                let (addr, port) = nat_target(target).ok_or_else(|| format!("dnat to {target:?}"))?;
                if family_of(&addr) != self.family {
                    return Err(format!("dnat to {addr} in a table of family {}", self.family));
                }
                Stmt::Dnat { addr, port }
            }
            "update" | "add" => {
                let set = self.set_ref()?;
                self.expect_tok(&Tok::Open)?;
                let mut key = vec![self.selector()?];
                while self.eat(".") {
                    key.push(self.selector()?);
                }
                self.expect_tok(&Tok::Close)?;
                Stmt::Update { set, key }
            }
            "accept" | "drop" | "reject" | "return" | "continue" | "jump" | "goto" => {
                Stmt::Verdict(verdict_after(self, word)?)
            }
            other => {
                let selector = self.selector_after(other)?;
                self.expression(selector)?
            }
        }))
    }
}

fn verdict_after(parser: &mut Parser<'_>, word: &str) -> Result<VerdictStmt, String> {
    Ok(match word {
        "accept" => VerdictStmt::Accept,
        "drop" => VerdictStmt::Drop,
        "return" => VerdictStmt::Return,
        "continue" => VerdictStmt::Continue,
        "reject" => {
            // `reject with icmp type port-unreachable`, `... tcp reset`: how
            // the sender is told, not whether it is.
            if parser.eat("with") {
                while matches!(parser.peek(), Some(Tok::Word(w)) if *w != "comment") {
                    parser.pos += 1;
                }
            }
            VerdictStmt::Reject
        }
        "jump" | "goto" => {
            let to = parser.word()?.to_string();
            if word == "jump" {
                VerdictStmt::Jump(to)
            } else {
                VerdictStmt::Goto(to)
            }
        }
        other => return Err(format!("{other:?} is not a verdict")),
    })
}

pub(crate) fn family_of(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ip,
        IpAddr::V6(_) => Family::Ip6,
    }
}

fn address_pattern(word: &str, family: Family) -> Result<Pattern, String> {
    let (pattern, ip) = if word.contains('/') {
        let net: IpNet = word.parse().map_err(|_| format!("{word:?} is not a network"))?;
        (Pattern::Net(net), net.addr())
    } else {
        let ip: IpAddr = word.parse().map_err(|_| format!("{word:?} is not an address"))?;
        (Pattern::Exact(Value::Addr(ip)), ip)
    };
    if family_of(&ip) != family {
        return Err(format!("{word} in a table of family {family}"));
    }
    Ok(pattern)
}

/// `10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1`, `fd00::1`.
pub(crate) fn nat_target(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip.parse().ok()?, port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let (ip, port) = text.rsplit_once(':')?;
    let ip: IpAddr = ip.parse().ok()?;
    ip.is_ipv4().then_some(())?;
    Some((ip, Some(port.parse().ok()?)))
}

/// Reads one rule in the table's family.
pub(crate) fn parse_rule(text: &str, family: Family) -> Result<ParsedRule, String> {
    let mut parser = Parser {
        toks: tokenize(text)?,
        pos: 0,
        family,
    };
    let mut stmts = Vec::new();
    let mut comment = None;
    while let Some(tok) = parser.next() {
        let Tok::Word(word) = tok else {
            return Err(format!("unexpected {tok}"));
        };
        if let Some(stmt) = parser.statement(word, &mut comment)? {
            stmts.push(stmt);
        }
    }
    if stmts.is_empty() {
        return Err("no statement".into());
    }
    Ok(ParsedRule { stmts, comment })
}

/// Reads a verdict map element's value (`goto X`, `drop`).
pub(crate) fn parse_verdict(text: &str) -> Result<VerdictStmt, String> {
    let mut parser = Parser {
        toks: tokenize(text)?,
        pos: 0,
        family: Family::Ip,
    };
    let verdict = parser.verdict()?;
    if !parser.at_end() {
        return Err(format!("text after the verdict in {text:?}"));
    }
    if verdict == VerdictStmt::Reject {
        return Err("reject is not a verdict a map can hold".into());
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedRule {
        parse_rule(text, Family::Ip).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn both_spellings_read_alike() {
        let pairs = [
            ("mark set mark or 0x4000", "meta mark set meta mark | 0x00004000"),
            (
                "mark and 0x4000 == 0 return",
                "meta mark & 0x00004000 == 0x00000000 return",
            ),
            ("mark set mark xor 0x4000", "meta mark set meta mark ^ 0x00004000"),
            ("ip daddr { 172.30.0.0/16 } drop", "ip daddr 172.30.0.0/16 drop"),
            (
                "ip saddr != { 203.0.113.0/25 , 1.2.3.4 } drop",
                "ip saddr != { 203.0.113.0/25, 1.2.3.4 } drop",
            ),
            (
                "ip daddr { 172.30.0.0/16,172.50.0.0/16 } drop",
                "ip daddr { 172.30.0.0/16, 172.50.0.0/16 } drop",
            ),
            (
                "numgen random mod 2 vmap { 0 : goto a/b , 1 : goto c/d }",
                "numgen random mod 2 vmap { 0 : goto a/b, 1 : goto c/d }",
            ),
            ("iifname != \"veth*\" jump x", "iifname != veth* jump x"),
            ("iifname eth0 jump x", "iifname \"eth0\" jump x"),
            ("reject", "reject with icmp type port-unreachable"),
        ];
        for (knftables, kernel) in pairs {
            assert_eq!(parse(knftables), parse(kernel), "{knftables} / {kernel}");
        }
    }

    #[test]
    fn every_form_kube_proxy_writes_is_understood() {
        let ipv4 = [
            "ct state new jump firewall-check",
            "jump services",
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
            "ip daddr @cluster-ips reject",
            "ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "ip daddr 172.30.0.41 jump mark-for-masquerade",
            "ip saddr 10.0.0.0/8 goto service-X",
            "iifname cni0 goto service-X",
            "iifname != \"veth*\" jump mark-for-masquerade",
            "iif != cni0 jump mark-for-masquerade",
            "fib saddr type local jump mark-for-masquerade",
            "fib saddr type local goto service-X",
            "ip saddr @affinity-E goto endpoint-E",
            "update @affinity-E { ip saddr }",
            "meta l4proto tcp dnat to 10.180.0.1:80",
            "meta l4proto sctp dnat to 10.180.0.1:80",
            "masquerade fully-random",
            "ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop",
            "tcp dport 3001 drop",
            "meta l4proto udp accept",
        ];
        for text in ipv4 {
            parse(text);
        }
        for text in [
            "ip6 daddr != ::1 meta l4proto . th dport vmap @no-endpoint-nodeports",
            "ip6 daddr fd00:172:30::41 ip6 saddr != fd00:10::/64 jump mark-for-masquerade",
            "ip6 daddr { fd00:10:96::/112 } drop",
            "meta l4proto tcp dnat to [fd00:10:180::1]:80",
            "update @affinity-E { ip6 saddr }",
        ] {
            parse_rule(text, Family::Ip6).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn comments_in_the_text_are_taken_apart() {
        let rule = parse("ip saddr 10.0.0.0/8 goto s comment \"short-circuit \\\"pod\\\" traffic\"");
        assert_eq!(rule.comment.as_deref(), Some("short-circuit \"pod\" traffic"));
        assert_eq!(rule.stmts.len(), 2);
    }

    #[test]
    fn nat_targets() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            nat_target("10.180.0.1:80"),
            ip("10.180.0.1").map(|i| (i, Some(80)))
        );
        assert_eq!(nat_target("[fd00::1]:80"), ip("fd00::1").map(|i| (i, Some(80))));
        assert_eq!(nat_target("fd00::1"), ip("fd00::1").map(|i| (i, None)));
        assert_eq!(nat_target("10.0.0.1"), ip("10.0.0.1").map(|i| (i, None)));
        assert_eq!(nat_target("nonsense:80"), None);
    }

    #[test]
    fn unknown_forms_are_errors() {
        for text in [
            "ip daddr 10.0.0.1 log prefix x",
            "ip6 daddr ::1 drop",
            "ip daddr fd00::1 drop",
            "numgen inc mod 2 vmap { 0 : goto a, 1 : goto b }",
            "ip daddr . th dport 10.0.0.1 drop",
            "snat to 10.0.0.1",
            "",
        ] {
            assert!(parse_rule(text, Family::Ip).is_err(), "{text}");
        }
    }
}
