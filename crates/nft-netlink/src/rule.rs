//! Rule text, in the forms chainsmith's nftables layout writes, compiled to
//! the expressions `nft` generates for it (same registers, byte orders and
//! set flags, so the kernel lists both alike). The forms are fixed: a small
//! tokenizer and one match per form; anything else is an error naming it.

use chainsmith_nftables::Family;

use crate::encode::{AnonElement, AnonSet, typeof_udata};
use crate::uapi::*;
use crate::value::{self, Verdict};
use crate::wire::{Batch, Udata};

/// A set an expression reads: by name, or the n-th anonymous set of the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRef {
    Named(String),
    Anon(usize),
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    MetaSet {
        key: u32,
        sreg: u32,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    Bitwise {
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
        with_op: bool,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    Lookup {
        set: SetRef,
        dreg: Option<u32>,
        invert: bool,
    },
    Ct {
        key: u32,
    },
    Fib {
        flags: u32,
    },
    Numgen {
        modulus: u32,
    },
    Nat {
        family: u8,
    },
    Masq {
        flags: Option<u32>,
    },
    Reject {
        code: u8,
    },
    Dynset {
        set: String,
    },
    Counter,
}

/// A rule's expressions and the anonymous sets they use.
#[derive(Debug, Default)]
pub struct Compiled {
    pub exprs: Vec<Expr>,
    pub sets: Vec<AnonSet>,
}

impl Expr {
    /// Writes the expression; `sets` are the batch ids and names of the
    /// rule's anonymous sets.
    pub fn write(&self, b: &mut Batch, sets: &[(u32, String)]) {
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => b.expr("payload", |b| {
                b.u32(NFTA_PAYLOAD_DREG, *dreg);
                b.u32(NFTA_PAYLOAD_BASE, *base);
                b.u32(NFTA_PAYLOAD_OFFSET, *offset);
                b.u32(NFTA_PAYLOAD_LEN, *len);
            }),
            Expr::Meta { key, dreg } => b.expr("meta", |b| {
                b.u32(NFTA_META_KEY, *key);
                b.u32(NFTA_META_DREG, *dreg);
            }),
            Expr::MetaSet { key, sreg } => b.expr("meta", |b| {
                b.u32(NFTA_META_KEY, *key);
                b.u32(NFTA_META_SREG, *sreg);
            }),
            Expr::Cmp { op, data } => b.expr("cmp", |b| {
                b.u32(NFTA_CMP_SREG, NFT_REG_1);
                b.u32(NFTA_CMP_OP, *op);
                crate::encode::key_attr(b, NFTA_CMP_DATA, data);
            }),
            Expr::Bitwise {
                len,
                mask,
                xor,
                with_op,
            } => b.expr("bitwise", |b| {
                b.u32(NFTA_BITWISE_SREG, NFT_REG_1);
                b.u32(NFTA_BITWISE_DREG, NFT_REG_1);
                if *with_op {
                    b.u32(NFTA_BITWISE_OP, NFT_BITWISE_BOOL);
                }
                b.u32(NFTA_BITWISE_LEN, *len);
                crate::encode::key_attr(b, NFTA_BITWISE_MASK, mask);
                crate::encode::key_attr(b, NFTA_BITWISE_XOR, xor);
            }),
            Expr::Immediate { dreg, data } => b.expr("immediate", |b| {
                b.u32(NFTA_IMMEDIATE_DREG, *dreg);
                crate::encode::key_attr(b, NFTA_IMMEDIATE_DATA, data);
            }),
            Expr::Verdict(verdict) => b.expr("immediate", |b| {
                b.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                crate::encode::verdict_attr(b, NFTA_IMMEDIATE_DATA, verdict);
            }),
            Expr::Lookup { set, dreg, invert } => b.expr("lookup", |b| {
                b.u32(NFTA_LOOKUP_SREG, NFT_REG_1);
                if let Some(dreg) = dreg {
                    b.u32(NFTA_LOOKUP_DREG, *dreg);
                }
                match set {
                    SetRef::Named(name) => b.str(NFTA_LOOKUP_SET, name),
                    SetRef::Anon(n) => {
                        let (id, name) = sets.get(*n).map_or((0, ""), |(id, name)| (*id, name.as_str()));
                        b.str(NFTA_LOOKUP_SET, name);
                        b.u32(NFTA_LOOKUP_SET_ID, id);
                    }
                }
                if *invert {
                    b.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }),
            Expr::Ct { key } => b.expr("ct", |b| {
                b.u32(NFTA_CT_KEY, *key);
                b.u32(NFTA_CT_DREG, NFT_REG_1);
            }),
            Expr::Fib { flags } => b.expr("fib", |b| {
                b.u32(NFTA_FIB_FLAGS, *flags);
                b.u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                b.u32(NFTA_FIB_DREG, NFT_REG_1);
            }),
            Expr::Numgen { modulus } => b.expr("numgen", |b| {
                b.u32(NFTA_NG_DREG, NFT_REG_1);
                b.u32(NFTA_NG_MODULUS, *modulus);
                b.u32(NFTA_NG_TYPE, NFT_NG_RANDOM);
                b.u32(NFTA_NG_OFFSET, 0);
            }),
            Expr::Nat { family } => b.expr("nat", |b| {
                b.u32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                b.u32(NFTA_NAT_FAMILY, u32::from(*family));
                b.u32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                b.u32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_1 + 1);
                b.u32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
            }),
            Expr::Masq { flags } => b.expr("masq", |b| {
                if let Some(flags) = flags {
                    b.u32(NFTA_MASQ_FLAGS, *flags);
                }
            }),
            Expr::Reject { code } => b.expr("reject", |b| {
                b.u32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
                b.attr(NFTA_REJECT_ICMP_CODE, &[*code]);
            }),
            Expr::Dynset { set } => b.expr("dynset", |b| {
                b.u32(NFTA_DYNSET_SREG_KEY, NFT_REG_1);
                b.u32(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE);
                b.str(NFTA_DYNSET_SET_NAME, set);
            }),
            Expr::Counter => b.expr("counter", |_| {}),
        }
    }
}

/// Splits rule text into words; a quoted string is one word (quotes kept).
pub fn tokenize(text: &str) -> Result<Vec<&str>, String> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = if let Some(quoted) = rest.strip_prefix('"') {
            match quoted.find('"') {
                Some(at) => at + 2,
                None => return Err("unterminated string".to_string()),
            }
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        words.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Ok(words)
}

/// The register nft uses for a value starting `word` 32-bit words into the
/// register file: the 16-byte register when aligned to one, else the 32-bit one.
fn reg(word: u32) -> u32 {
    if word.is_multiple_of(4) {
        NFT_REG_1 + word / 4
    } else {
        NFT_REG32_00 + word
    }
}

/// What a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector {
    /// `ip saddr`, `ip6 daddr`...: offset and length in the network header,
    /// and nft's field number (for typeof user data).
    Addr {
        offset: u32,
        len: u32,
        field: u32,
        v6: bool,
    },
    L4proto,
    ThDport,
    Ifname(u32),
}

impl Selector {
    fn len(self) -> u32 {
        match self {
            Selector::Addr { len, .. } => len,
            Selector::L4proto => 1,
            Selector::ThDport => 2,
            Selector::Ifname(_) => 16,
        }
    }

    fn load(self, dreg: u32, len: u32) -> Expr {
        match self {
            Selector::Addr { offset, .. } => Expr::Payload {
                dreg,
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len,
            },
            Selector::L4proto => Expr::Meta {
                key: NFT_META_L4PROTO,
                dreg,
            },
            Selector::ThDport => Expr::Payload {
                dreg,
                base: NFT_PAYLOAD_TRANSPORT_HEADER,
                offset: 2,
                len: 2,
            },
            Selector::Ifname(key) => Expr::Meta { key, dreg },
        }
    }
}

struct Parser<'a> {
    words: Vec<&'a str>,
    at: usize,
    family: Family,
    out: Compiled,
}

/// Compiles one rule of `family`'s table.
pub fn compile(family: Family, rule: &str) -> Result<Compiled, String> {
    let unsupported = |why: String| format!("not supported yet: {rule:?} ({why})");
    let words = tokenize(rule).map_err(unsupported)?;
    let mut p = Parser {
        words,
        at: 0,
        family,
        out: Compiled::default(),
    };
    while p.at < p.words.len() {
        p.statement().map_err(unsupported)?;
    }
    Ok(p.out)
}

impl<'a> Parser<'a> {
    fn peek(&self, n: usize) -> Option<&'a str> {
        self.words.get(self.at + n).copied()
    }

    fn next(&mut self) -> Result<&'a str, String> {
        let word = self.peek(0).ok_or("unexpected end")?;
        self.at += 1;
        Ok(word)
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        let got = self.next()?;
        if got == word {
            Ok(())
        } else {
            Err(format!("expected {word:?}, found {got:?}"))
        }
    }

    fn push(&mut self, expr: Expr) {
        self.out.exprs.push(expr);
    }

    fn selector(&mut self) -> Result<Option<Selector>, String> {
        let (Some(a), b) = (self.peek(0), self.peek(1)) else {
            return Ok(None);
        };
        let selector = match (a, b) {
            ("ip", Some(field @ ("saddr" | "daddr"))) if self.family == Family::Ip => {
                let daddr = field == "daddr";
                Selector::Addr {
                    offset: if daddr { 16 } else { 12 },
                    len: 4,
                    field: if daddr { 12 } else { 11 },
                    v6: false,
                }
            }
            ("ip6", Some(field @ ("saddr" | "daddr"))) if self.family == Family::Ip6 => {
                let daddr = field == "daddr";
                Selector::Addr {
                    offset: if daddr { 24 } else { 8 },
                    len: 16,
                    field: if daddr { 9 } else { 8 },
                    v6: true,
                }
            }
            ("meta", Some("l4proto")) => Selector::L4proto,
            ("th", Some("dport")) => Selector::ThDport,
            ("iifname", _) => {
                self.at += 1;
                return Ok(Some(Selector::Ifname(NFT_META_IIFNAME)));
            }
            ("oifname", _) => {
                self.at += 1;
                return Ok(Some(Selector::Ifname(NFT_META_OIFNAME)));
            }
            _ => return Ok(None),
        };
        self.at += 2;
        Ok(Some(selector))
    }

    fn statement(&mut self) -> Result<(), String> {
        if let Some(first) = self.selector()? {
            return self.relation(first);
        }
        let word = self.next()?;
        match word {
            "jump" | "goto" => {
                let chain = self.next()?;
                self.push(Expr::Verdict(value::verdict(&[word, chain]).ok_or("verdict")?));
            }
            "drop" | "accept" | "return" => {
                self.push(Expr::Verdict(value::verdict(&[word]).ok_or("verdict")?));
            }
            "reject" => {
                let code = match self.family {
                    Family::Ip => ICMP_PORT_UNREACH,
                    Family::Ip6 => ICMPV6_PORT_UNREACH,
                };
                self.push(Expr::Reject { code });
            }
            "counter" => self.push(Expr::Counter),
            "masquerade" => {
                let flags = if self.peek(0) == Some("fully-random") {
                    self.at += 1;
                    Some(NF_NAT_RANGE_PROTO_RANDOM_FULLY)
                } else {
                    None
                };
                self.push(Expr::Masq { flags });
            }
            "ct" => {
                self.expect("state")?;
                self.expect("new")?;
                self.push(Expr::Ct { key: NFT_CT_STATE });
                self.push(Expr::Bitwise {
                    len: 4,
                    mask: 8u32.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                    with_op: false,
                });
                self.push(Expr::Cmp {
                    op: NFT_CMP_NEQ,
                    data: vec![0; 4],
                });
            }
            "fib" => {
                let flags = match self.next()? {
                    "saddr" => NFTA_FIB_F_SADDR,
                    "daddr" => NFTA_FIB_F_DADDR,
                    other => return Err(format!("fib {other}")),
                };
                self.expect("type")?;
                self.expect("local")?;
                self.push(Expr::Fib { flags });
                self.push(Expr::Cmp {
                    op: NFT_CMP_EQ,
                    data: RTN_LOCAL.to_ne_bytes().to_vec(),
                });
            }
            "mark" => self.mark()?,
            "numgen" => self.numgen()?,
            "dnat" => self.dnat()?,
            "update" => {
                let set = self.next()?.strip_prefix('@').ok_or("update of a non-set")?;
                self.expect("{")?;
                let selector = self.selector()?.ok_or("update key")?;
                self.expect("}")?;
                self.push(selector.load(NFT_REG_1, selector.len()));
                self.push(Expr::Dynset { set: set.to_string() });
            }
            other => return Err(format!("unknown word {other:?}")),
        }
        Ok(())
    }

    /// `SELECTOR [. SELECTOR...] (vmap @map | @set | [!=] VALUE | [!=] { ... })`.
    fn relation(&mut self, first: Selector) -> Result<(), String> {
        let mut selectors = vec![first];
        while self.peek(0) == Some(".") {
            self.at += 1;
            selectors.push(self.selector()?.ok_or("concatenation of an unknown selector")?);
        }
        let load_all = |p: &mut Parser<'_>| {
            let mut word = 0;
            for s in &selectors {
                p.push(s.load(reg(word), s.len()));
                word += s.len().div_ceil(4);
            }
        };
        if self.peek(0) == Some("vmap") {
            self.at += 1;
            let set = self.next()?.strip_prefix('@').ok_or("vmap of an inline map")?;
            load_all(self);
            self.push(Expr::Lookup {
                set: SetRef::Named(set.to_string()),
                dreg: Some(NFT_REG_VERDICT),
                invert: false,
            });
            return Ok(());
        }
        if selectors.len() > 1 {
            return Err("concatenation outside a vmap".to_string());
        }
        let invert = self.peek(0) == Some("!=");
        if invert {
            self.at += 1;
        }
        let op = if invert { NFT_CMP_NEQ } else { NFT_CMP_EQ };
        let word = self.next()?;
        if let Some(set) = word.strip_prefix('@') {
            load_all(self);
            self.push(Expr::Lookup {
                set: SetRef::Named(set.to_string()),
                dreg: None,
                invert,
            });
            return Ok(());
        }
        match first {
            Selector::Addr { .. } => {
                if word == "{" {
                    let mut items = Vec::new();
                    loop {
                        let item = self.next()?;
                        if item == "}" {
                            break;
                        }
                        // `{ a , b }`, `{ a, b }` and upstream's `{ a,b }` alike.
                        for part in item.split(',').filter(|p| !p.is_empty()) {
                            items.push(value::prefix(part).ok_or_else(|| format!("address {part:?}"))?);
                        }
                    }
                    match items.as_slice() {
                        [one] => self.prefix_match(first, op, one),
                        [] => return Err("empty set".to_string()),
                        _ => self.anon_addr_set(first, invert, items),
                    }
                } else {
                    let prefix = value::prefix(word).ok_or_else(|| format!("address {word:?}"))?;
                    self.prefix_match(first, op, &prefix);
                }
            }
            Selector::L4proto => {
                let proto = value::proto(word).ok_or_else(|| format!("protocol {word:?}"))?;
                self.push(first.load(NFT_REG_1, 1));
                self.push(Expr::Cmp {
                    op,
                    data: vec![proto],
                });
            }
            Selector::Ifname(_) => {
                let name = word
                    .strip_prefix('"')
                    .and_then(|w| w.strip_suffix('"'))
                    .ok_or_else(|| format!("interface name {word:?}"))?;
                let data = match name.strip_suffix('*') {
                    Some(stem) => stem.as_bytes().to_vec(),
                    None => {
                        let mut data = name.as_bytes().to_vec();
                        data.resize(16, 0);
                        data
                    }
                };
                if data.len() > 16 || data.is_empty() {
                    return Err(format!("interface name {word:?}"));
                }
                self.push(first.load(NFT_REG_1, 16));
                self.push(Expr::Cmp { op, data });
            }
            Selector::ThDport => return Err("th dport compared to a value".to_string()),
        }
        Ok(())
    }

    /// An address or prefix compared as nft does: a byte-aligned prefix loads
    /// only its bytes; another prefix is masked first.
    fn prefix_match(&mut self, selector: Selector, op: u32, (bytes, len): &(Vec<u8>, usize)) {
        let Selector::Addr { offset, .. } = selector else {
            return;
        };
        let load = u32::try_from(len.div_ceil(8)).unwrap_or(0);
        self.push(Expr::Payload {
            dreg: NFT_REG_1,
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: load,
        });
        let mut data = bytes[..len.div_ceil(8)].to_vec();
        if !len.is_multiple_of(8) {
            let mask = value::prefix_mask(*len, data.len());
            for (d, m) in data.iter_mut().zip(&mask) {
                *d &= m;
            }
            self.push(Expr::Bitwise {
                len: load,
                mask,
                xor: vec![0; data.len()],
                with_op: false,
            });
        }
        self.push(Expr::Cmp { op, data });
    }

    fn anon_addr_set(&mut self, selector: Selector, invert: bool, mut items: Vec<(Vec<u8>, usize)>) {
        let Selector::Addr {
            offset,
            len,
            field,
            v6,
        } = selector
        else {
            return;
        };
        let full = len as usize * 8;
        let interval = items.iter().any(|(_, l)| *l < full);
        let mut elements = Vec::new();
        if interval {
            items.sort();
            let zero = vec![0u8; len as usize];
            let mut masked: Vec<(Vec<u8>, usize)> = items
                .into_iter()
                .map(|(b, l)| {
                    let mask = value::prefix_mask(l, b.len());
                    (b.iter().zip(&mask).map(|(x, m)| x & m).collect(), l)
                })
                .collect();
            masked.sort();
            if masked.first().is_some_and(|(b, _)| *b != zero) {
                elements.push(AnonElement {
                    key: zero,
                    end: true,
                    open: false,
                    verdict: None,
                });
            }
            // nft merges overlapping and adjacent ranges into one.
            let mut ranges: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            for (bytes, l) in masked {
                let end = value::after_prefix(&bytes, l);
                match ranges.last_mut() {
                    Some((_, last_end)) if last_end.as_ref().is_none_or(|e| *e >= bytes) => {
                        if last_end.is_some() && end.as_ref().is_none_or(|e| Some(e) > last_end.as_ref()) {
                            *last_end = end;
                        }
                    }
                    _ => ranges.push((bytes, end)),
                }
            }
            for (start, end) in ranges {
                match end {
                    Some(end) => {
                        elements.push(AnonElement {
                            key: start,
                            end: false,
                            open: false,
                            verdict: None,
                        });
                        elements.push(AnonElement {
                            key: end,
                            end: true,
                            open: false,
                            verdict: None,
                        });
                    }
                    None => elements.push(AnonElement {
                        key: start,
                        end: false,
                        open: true,
                        verdict: None,
                    }),
                }
            }
        } else {
            for (bytes, _) in items {
                elements.push(AnonElement {
                    key: bytes,
                    end: false,
                    open: false,
                    verdict: None,
                });
            }
        }
        let mut payload_desc = Udata::default();
        payload_desc.u32(0, if v6 { 13 } else { 12 }).u32(1, field);
        let mut udata = Udata::default();
        udata.u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_BIG);
        if interval {
            udata.u32(UDATA_SET_MERGE_ELEMENTS, 1);
        }
        udata.put(UDATA_SET_KEY_TYPEOF, &typeof_udata(EXPR_PAYLOAD, &payload_desc.0));
        let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | if interval { NFT_SET_INTERVAL } else { 0 };
        self.out.sets.push(AnonSet {
            flags,
            key_type: if v6 { 8 } else { 7 },
            key_len: len,
            udata,
            elements,
        });
        self.push(Expr::Payload {
            dreg: NFT_REG_1,
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
        });
        self.push(Expr::Lookup {
            set: SetRef::Anon(self.out.sets.len() - 1),
            dreg: None,
            invert,
        });
    }

    /// `mark and MASK == VALUE` or `mark set mark or|xor BITS`.
    fn mark(&mut self) -> Result<(), String> {
        let number = |w: &str| -> Result<u32, String> {
            match w.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => w.parse(),
            }
            .map_err(|_| format!("number {w:?}"))
        };
        let load = Expr::Meta {
            key: NFT_META_MARK,
            dreg: NFT_REG_1,
        };
        match self.next()? {
            "and" => {
                let mask = number(self.next()?)?;
                let op = match self.next()? {
                    "==" => NFT_CMP_EQ,
                    "!=" => NFT_CMP_NEQ,
                    other => return Err(format!("mark comparison {other:?}")),
                };
                let value = number(self.next()?)?;
                self.push(load);
                self.push(Expr::Bitwise {
                    len: 4,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                    with_op: true,
                });
                self.push(Expr::Cmp {
                    op,
                    data: value.to_ne_bytes().to_vec(),
                });
            }
            "set" => {
                self.expect("mark")?;
                let how = self.next()?;
                let bits = number(self.next()?)?;
                let mask = match how {
                    "or" => !bits,
                    "xor" => u32::MAX,
                    other => return Err(format!("mark set mark {other}")),
                };
                self.push(load);
                self.push(Expr::Bitwise {
                    len: 4,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: bits.to_ne_bytes().to_vec(),
                    with_op: true,
                });
                self.push(Expr::MetaSet {
                    key: NFT_META_MARK,
                    sreg: NFT_REG_1,
                });
            }
            other => return Err(format!("mark {other}")),
        }
        Ok(())
    }

    /// `numgen random mod N vmap { 0 : goto A , 1 : goto B }`.
    fn numgen(&mut self) -> Result<(), String> {
        self.expect("random")?;
        self.expect("mod")?;
        let modulus: u32 = self.next()?.parse().map_err(|_| "numgen modulus")?;
        self.expect("vmap")?;
        self.expect("{")?;
        let mut elements = Vec::new();
        loop {
            let key = self.next()?;
            if key == "}" {
                break;
            }
            if key == "," {
                continue;
            }
            let key: u32 = key.parse().map_err(|_| format!("numgen key {key:?}"))?;
            self.expect(":")?;
            let verb = self.next()?;
            let verdict = match verb {
                "jump" | "goto" => {
                    let chain = self.next()?;
                    value::verdict(&[verb, chain])
                }
                other => value::verdict(&[other]),
            }
            .ok_or("numgen verdict")?;
            elements.push(AnonElement {
                key: key.to_ne_bytes().to_vec(),
                end: false,
                open: false,
                verdict: Some(verdict),
            });
        }
        let mut udata = Udata::default();
        udata
            .u32(UDATA_SET_KEYBYTEORDER, BYTEORDER_HOST)
            .u32(UDATA_SET_DATABYTEORDER, BYTEORDER_INVALID)
            .put(UDATA_SET_DATA_TYPEOF, &typeof_udata(EXPR_VERDICT, &[]))
            .u32(UDATA_SET_DATA_INTERVAL, 0);
        self.out.sets.push(AnonSet {
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
            key_type: 4,
            key_len: 4,
            udata,
            elements,
        });
        self.push(Expr::Numgen { modulus });
        self.push(Expr::Lookup {
            set: SetRef::Anon(self.out.sets.len() - 1),
            dreg: Some(NFT_REG_VERDICT),
            invert: false,
        });
        Ok(())
    }

    /// `dnat to ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    fn dnat(&mut self) -> Result<(), String> {
        self.expect("to")?;
        let target = self.next()?;
        let (addr, port) = match target.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").ok_or("dnat target")?,
            None => target.rsplit_once(':').ok_or("dnat target")?,
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| format!("dnat address {addr:?}"))?;
        let port: u16 = port.parse().map_err(|_| format!("dnat port {port:?}"))?;
        let family = match (self.family, addr) {
            (Family::Ip, std::net::IpAddr::V4(_)) => AF_INET,
            (Family::Ip6, std::net::IpAddr::V6(_)) => AF_INET6,
            _ => return Err("dnat address of the other family".to_string()),
        };
        self.push(Expr::Immediate {
            dreg: NFT_REG_1,
            data: value::addr_bytes(addr),
        });
        self.push(Expr::Immediate {
            dreg: NFT_REG_1 + 1,
            data: port.to_be_bytes().to_vec(),
        });
        self.push(Expr::Nat { family });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(family: Family, rule: &str) -> Vec<String> {
        compile(family, rule)
            .unwrap_or_else(|e| panic!("{e}"))
            .exprs
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn forms_compile_to_nfts_expressions() {
        assert_eq!(
            names(Family::Ip, "ip daddr . meta l4proto . th dport vmap @service-ips"),
            ["Payload", "Meta", "Payload", "Lookup"]
        );
        assert_eq!(
            names(Family::Ip, "ct state new jump firewall-check"),
            ["Ct", "Bitwise", "Cmp", "Verdict"]
        );
        assert_eq!(
            names(Family::Ip, "ip saddr != 10.244.0.128/25 drop"),
            ["Payload", "Bitwise", "Cmp", "Verdict"]
        );
        let c = compile(Family::Ip, "ip saddr != { 10.0.0.0/8 , 1.2.3.4 } drop").unwrap_or_default();
        assert_eq!(c.sets.len(), 1);
        assert_eq!(c.sets[0].elements.len(), 5);
    }

    #[test]
    fn concatenations_use_nfts_registers() {
        let c = compile(Family::Ip6, "ip6 daddr . meta l4proto . th dport vmap @m").unwrap_or_default();
        let regs: Vec<u32> = c
            .exprs
            .iter()
            .filter_map(|e| match e {
                Expr::Payload { dreg, .. } | Expr::Meta { dreg, .. } => Some(*dreg),
                _ => None,
            })
            .collect();
        assert_eq!(regs, [1, 2, 13]);
    }

    #[test]
    fn unknown_forms_are_errors_naming_the_rule() {
        let err = compile(Family::Ip, "tcp dport 80 accept")
            .err()
            .unwrap_or_default();
        assert!(
            err.contains("not supported yet: \"tcp dport 80 accept\""),
            "{err}"
        );
        assert!(compile(Family::Ip, "ip daddr { 1.2.3.4").is_err());
    }
}
