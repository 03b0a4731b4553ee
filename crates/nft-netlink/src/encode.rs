//! A transaction as one nfnetlink batch: each op becomes one message (a rule
//! with an anonymous set or map becomes three: the set, its elements, the
//! rule), and every message's sequence number maps back to its op.

use chainsmith_nftables::{Family, Op, SetKind, SetSpec, TABLE_NAME, Transaction};

use crate::NetlinkError;
use crate::uapi::*;
use crate::value::{self, Verdict};
use crate::wire::{Batch, Udata};

/// A batch ready to send, with the op index of every sequence number.
#[derive(Debug)]
pub struct Encoded {
    pub batch: Batch,
    /// `(first sequence number, op index)`, ascending: an op owns the
    /// sequence numbers from its first up to the next op's.
    pub seqs: Vec<(u32, usize)>,
    pub first_seq: u32,
    pub last_seq: u32,
}

impl Encoded {
    /// The op a sequence number belongs to.
    pub fn op_of(&self, seq: u32) -> Option<usize> {
        let at = self.seqs.partition_point(|(s, _)| *s <= seq);
        at.checked_sub(1).map(|i| self.seqs[i].1)
    }
}

/// An element of an anonymous set: key, interval-end flag, verdict, and
/// whether it opens an interval that runs to the end of the address space.
#[derive(Debug)]
pub struct AnonElement {
    pub key: Vec<u8>,
    pub end: bool,
    pub open: bool,
    pub verdict: Option<Verdict>,
}

/// An anonymous set or map a rule declares inline.
#[derive(Debug)]
pub struct AnonSet {
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub udata: Udata,
    pub elements: Vec<AnonElement>,
}

pub struct Encoder<'n> {
    pub batch: Batch,
    pub family: Family,
    seq: u32,
    next_set_id: u32,
    anon_names: &'n mut AnonNames,
}

/// Names for anonymous sets, unique in any table: `nft` sends `__map%d` and
/// lets the kernel pick the number, for which the kernel parses the name of
/// every set already in the table; with thousands of `numgen` verdict maps
/// that scan made loading a table cost more the more it held. A name of our
/// own skips it, and the set stays anonymous (it lists inline, unnamed).
#[derive(Debug)]
pub struct AnonNames {
    /// Random per socket, so that names never meet those of an earlier
    /// proxy whose sets are still in the table.
    nonce: u64,
    next: u64,
}

impl AnonNames {
    pub fn new() -> AnonNames {
        use std::hash::BuildHasher;
        let nonce = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        AnonNames { nonce, next: 0 }
    }

    fn next(&mut self, map: bool) -> String {
        self.next += 1;
        let kind = if map { "map" } else { "set" };
        format!("__{kind}{:016x}_{:x}", self.nonce, self.next)
    }
}

pub fn family_number(family: Family) -> u8 {
    match family {
        Family::Ip => AF_INET,
        Family::Ip6 => AF_INET6,
    }
}

/// Encodes `tx` into a batch whose sequence numbers start at `first_seq`.
pub fn encode(tx: &Transaction, first_seq: u32, anon_names: &mut AnonNames) -> Result<Encoded, NetlinkError> {
    let mut enc = Encoder {
        batch: Batch::default(),
        family: tx.family,
        seq: first_seq,
        next_set_id: 1,
        anon_names,
    };
    let mut seqs = Vec::with_capacity(tx.ops.len());
    let begin_seq = enc.next_seq();
    enc.batch
        .begin(NFNL_MSG_BATCH_BEGIN, 0, begin_seq, 0, NFNL_SUBSYS_NFTABLES);
    enc.batch.end();
    for (index, op) in tx.ops.iter().enumerate() {
        seqs.push((enc.seq, index));
        enc.op(op).map_err(|reason| NetlinkError::Unsupported {
            index,
            op: op_text(tx.family, op),
            reason,
        })?;
    }
    let last_seq = enc.next_seq();
    enc.batch
        .begin(NFNL_MSG_BATCH_END, 0, last_seq, 0, NFNL_SUBSYS_NFTABLES);
    enc.batch.end();
    Ok(Encoded {
        batch: enc.batch,
        seqs,
        first_seq,
        last_seq,
    })
}

/// The op's line as `nft -f` reads it.
pub fn op_text(family: Family, op: &Op) -> String {
    let mut text = String::new();
    op.write(family, &mut text);
    text
}

impl Encoder<'_> {
    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Starts an nf_tables message in this transaction's family.
    pub fn begin(&mut self, msg: u8, flags: u16) {
        let (seq, family) = (self.next_seq(), family_number(self.family));
        self.batch.begin_nft(msg, flags, seq, family);
    }

    fn op(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::AddTable { comment } => {
                self.begin(NFT_MSG_NEWTABLE, NLM_F_CREATE);
                let b = &mut self.batch;
                b.str(NFTA_TABLE_NAME, TABLE_NAME);
                b.u32(NFTA_TABLE_FLAGS, 0);
                if let Some(comment) = comment {
                    b.attr(NFTA_TABLE_USERDATA, &Udata::comment(UDATA_COMMENT, comment).0);
                }
            }
            Op::DeleteTable => {
                self.begin(NFT_MSG_DELTABLE, 0);
                self.batch.str(NFTA_TABLE_NAME, TABLE_NAME);
            }
            Op::AddChain(chain) => {
                self.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
                let b = &mut self.batch;
                b.str(NFTA_CHAIN_TABLE, TABLE_NAME);
                b.str(NFTA_CHAIN_NAME, &chain.name);
                if let Some(base) = &chain.base {
                    b.str(NFTA_CHAIN_TYPE, base.chain_type);
                    let hook = b.open(NFTA_CHAIN_HOOK);
                    let number = match base.hook {
                        chainsmith_nftables::Hook::Prerouting => 0,
                        chainsmith_nftables::Hook::Input => 1,
                        chainsmith_nftables::Hook::Forward => 2,
                        chainsmith_nftables::Hook::Output => 3,
                        chainsmith_nftables::Hook::Postrouting => 4,
                    };
                    b.u32(NFTA_HOOK_HOOKNUM, number);
                    b.attr(NFTA_HOOK_PRIORITY, &base.priority.to_be_bytes());
                    b.close(hook);
                }
                if let Some(comment) = &chain.comment {
                    b.attr(NFTA_CHAIN_USERDATA, &Udata::comment(UDATA_COMMENT, comment).0);
                }
            }
            Op::FlushChain(name) => {
                self.begin(NFT_MSG_DELRULE, 0);
                self.batch.str(NFTA_RULE_TABLE, TABLE_NAME);
                self.batch.str(NFTA_RULE_CHAIN, name);
            }
            Op::DeleteChain(name) => {
                self.begin(NFT_MSG_DELCHAIN, 0);
                self.batch.str(NFTA_CHAIN_TABLE, TABLE_NAME);
                self.batch.str(NFTA_CHAIN_NAME, name);
            }
            Op::AddSet(set) => self.add_set(set)?,
            Op::FlushSet(_, name) => {
                self.begin(NFT_MSG_DELSETELEM, 0);
                self.batch.str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
                self.batch.str(NFTA_SET_ELEM_LIST_SET, name);
            }
            Op::DeleteSet(_, name) => {
                self.begin(NFT_MSG_DELSET, 0);
                self.batch.str(NFTA_SET_TABLE, TABLE_NAME);
                self.batch.str(NFTA_SET_NAME, name);
            }
            Op::AddElement { set, element } => {
                let key = value::key(&element.key).ok_or_else(|| format!("element key {:?}", element.key))?;
                let verdict = match &element.value {
                    Some(text) => {
                        let words: Vec<&str> = text.split_whitespace().collect();
                        Some(value::verdict(&words).ok_or_else(|| format!("element value {text:?}"))?)
                    }
                    None => None,
                };
                self.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
                let b = &mut self.batch;
                b.str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
                b.str(NFTA_SET_ELEM_LIST_SET, set);
                let list = b.open(NFTA_SET_ELEM_LIST_ELEMENTS);
                let elem = b.open(NFTA_LIST_ELEM);
                key_attr(b, NFTA_SET_ELEM_KEY, &key);
                if let Some(verdict) = &verdict {
                    verdict_attr(b, NFTA_SET_ELEM_DATA, verdict);
                }
                if let Some(comment) = &element.comment {
                    b.attr(NFTA_SET_ELEM_USERDATA, &Udata::comment(UDATA_COMMENT, comment).0);
                }
                b.close(elem);
                b.close(list);
            }
            Op::DeleteElement { set, key } => {
                let bytes = value::key(key).ok_or_else(|| format!("element key {key:?}"))?;
                self.begin(NFT_MSG_DELSETELEM, 0);
                let b = &mut self.batch;
                b.str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
                b.str(NFTA_SET_ELEM_LIST_SET, set);
                let list = b.open(NFTA_SET_ELEM_LIST_ELEMENTS);
                let elem = b.open(NFTA_LIST_ELEM);
                key_attr(b, NFTA_SET_ELEM_KEY, &bytes);
                b.close(elem);
                b.close(list);
            }
            Op::AddRule { chain, rule, comment } => {
                let compiled = crate::rule::compile(self.family, rule)?;
                let mut sets = Vec::with_capacity(compiled.sets.len());
                for set in &compiled.sets {
                    sets.push(self.anon_set(set));
                }
                self.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
                let b = &mut self.batch;
                b.str(NFTA_RULE_TABLE, TABLE_NAME);
                b.str(NFTA_RULE_CHAIN, chain);
                let exprs = b.open(NFTA_RULE_EXPRESSIONS);
                for expr in &compiled.exprs {
                    expr.write(b, &sets);
                }
                b.close(exprs);
                if let Some(comment) = comment {
                    b.attr(NFTA_RULE_USERDATA, &Udata::comment(UDATA_COMMENT, comment).0);
                }
            }
        }
        self.batch.end();
        Ok(())
    }

    fn add_set(&mut self, set: &SetSpec) -> Result<(), String> {
        let (key_text, data_text) = match set.type_text.split_once(" : ") {
            Some((k, d)) => (k.trim(), Some(d.trim())),
            None => (set.type_text.trim(), None),
        };
        let (key_type, key_len, concat) =
            value::key_type(key_text).ok_or_else(|| format!("set key type {key_text:?}"))?;
        let mut flags = 0;
        for flag in &set.flags {
            flags |= match flag.as_str() {
                "dynamic" => NFT_SET_EVAL,
                "timeout" => NFT_SET_TIMEOUT,
                "interval" => NFT_SET_INTERVAL,
                "constant" => NFT_SET_CONSTANT,
                other => return Err(format!("set flag {other:?}")),
            };
        }
        let map = set.kind == SetKind::Map;
        if map {
            flags |= NFT_SET_MAP;
            if data_text != Some("verdict") {
                return Err(format!("map value type {data_text:?} (only verdict)"));
            }
        }
        let mut udata = Udata::default();
        let byteorder = if concat { BYTEORDER_INVALID } else { BYTEORDER_BIG };
        udata.u32(UDATA_SET_KEYBYTEORDER, byteorder);
        if map {
            udata.u32(UDATA_SET_DATABYTEORDER, BYTEORDER_INVALID);
        }
        if concat {
            udata.put(UDATA_SET_KEY_TYPEOF, &typeof_udata(EXPR_CONCAT, &[]));
        }
        if map {
            udata.u32(UDATA_SET_DATA_INTERVAL, 0);
        }
        if let Some(comment) = &set.comment {
            udata.str(UDATA_SET_COMMENT, comment);
        }
        let id = self.next_set_id;
        self.next_set_id += 1;
        self.begin(NFT_MSG_NEWSET, NLM_F_CREATE);
        let b = &mut self.batch;
        b.str(NFTA_SET_TABLE, TABLE_NAME);
        b.str(NFTA_SET_NAME, &set.name);
        b.u32(NFTA_SET_FLAGS, flags);
        b.u32(NFTA_SET_KEY_TYPE, key_type);
        b.u32(NFTA_SET_KEY_LEN, key_len);
        if map {
            b.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            b.u32(NFTA_SET_DATA_LEN, 0);
        }
        b.u32(NFTA_SET_ID, id);
        if let Some(seconds) = set.timeout_seconds {
            b.u64(NFTA_SET_TIMEOUT, u64::from(seconds) * 1000);
        }
        b.attr(NFTA_SET_USERDATA, &udata.0);
        Ok(())
    }

    /// Declares an anonymous set and its elements (two messages); returns
    /// its id in the batch and its name.
    fn anon_set(&mut self, set: &AnonSet) -> (u32, String) {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let map = set.flags & NFT_SET_MAP != 0;
        let name = self.anon_names.next(map);
        self.begin(NFT_MSG_NEWSET, NLM_F_CREATE);
        let b = &mut self.batch;
        b.str(NFTA_SET_TABLE, TABLE_NAME);
        b.str(NFTA_SET_NAME, &name);
        b.u32(NFTA_SET_FLAGS, set.flags);
        b.u32(NFTA_SET_KEY_TYPE, set.key_type);
        b.u32(NFTA_SET_KEY_LEN, set.key_len);
        if map {
            b.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            b.u32(NFTA_SET_DATA_LEN, 0);
        }
        b.u32(NFTA_SET_ID, id);
        let desc = b.open(NFTA_SET_DESC);
        b.u32(
            NFTA_SET_DESC_SIZE,
            u32::try_from(set.elements.len()).unwrap_or(u32::MAX),
        );
        b.close(desc);
        b.attr(NFTA_SET_USERDATA, &set.udata.0);
        b.end();

        self.begin(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
        let b = &mut self.batch;
        b.str(NFTA_SET_ELEM_LIST_TABLE, TABLE_NAME);
        b.str(NFTA_SET_ELEM_LIST_SET, &name);
        b.u32(NFTA_SET_ELEM_LIST_SET_ID, id);
        let list = b.open(NFTA_SET_ELEM_LIST_ELEMENTS);
        for element in &set.elements {
            let elem = b.open(NFTA_LIST_ELEM);
            if element.end {
                b.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            key_attr(b, NFTA_SET_ELEM_KEY, &element.key);
            if let Some(verdict) = &element.verdict {
                verdict_attr(b, NFTA_SET_ELEM_DATA, verdict);
            }
            if element.open {
                let mut udata = Udata::default();
                udata.u32(UDATA_SET_ELEM_FLAGS, 1);
                b.attr(NFTA_SET_ELEM_USERDATA, &udata.0);
            }
            b.close(elem);
        }
        b.close(list);
        b.end();
        (id, name)
    }
}

/// nft's typeof user data: the expression kind, then its own data.
pub fn typeof_udata(expr: u32, data: &[u8]) -> Vec<u8> {
    let mut u = Udata::default();
    u.u32(UDATA_TYPEOF_EXPR, expr);
    u.put(UDATA_TYPEOF_DATA, data);
    u.0
}

/// `ATTR { NFTA_DATA_VALUE bytes }`.
pub fn key_attr(b: &mut Batch, ty: u16, bytes: &[u8]) {
    let at = b.open(ty);
    b.attr(NFTA_DATA_VALUE, bytes);
    b.close(at);
}

/// `ATTR { NFTA_DATA_VERDICT { CODE, CHAIN } }`.
pub fn verdict_attr(b: &mut Batch, ty: u16, verdict: &Verdict) {
    let at = b.open(ty);
    let inner = b.open(NFTA_DATA_VERDICT);
    b.attr(NFTA_VERDICT_CODE, &verdict.code.to_be_bytes());
    if let Some(chain) = &verdict.chain {
        b.str(NFTA_VERDICT_CHAIN, chain);
    }
    b.close(inner);
    b.close(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_maps_back_to_its_op() {
        let tx = chainsmith_nftables::read_transaction(
            "add table ip kube-proxy
add chain ip kube-proxy a
add rule ip kube-proxy a numgen random mod 2 vmap { 0 : goto a , 1 : goto a }
flush chain ip kube-proxy a
",
            Family::Ip,
        )
        .unwrap();
        let e = encode(&tx, 100, &mut AnonNames::new()).unwrap();
        // begin 100, table 101, chain 102, anonymous map 103 + elements 104 + rule 105, flush 106, end 107
        assert_eq!(e.batch.messages, 8);
        assert_eq!(e.last_seq, 107);
        let ops: Vec<Option<usize>> = (101..=106).map(|s| e.op_of(s)).collect();
        assert_eq!(ops, [Some(0), Some(1), Some(2), Some(2), Some(2), Some(3)]);
    }

    #[test]
    fn an_unknown_rule_names_its_op_and_sends_nothing() {
        let tx = chainsmith_nftables::read_transaction(
            "add table ip kube-proxy\nadd rule ip kube-proxy a tcp dport 22 accept\n",
            Family::Ip,
        )
        .unwrap();
        let err = encode(&tx, 1, &mut AnonNames::new()).unwrap_err().to_string();
        assert!(
            err.starts_with("op 1 (add rule ip kube-proxy a tcp dport 22 accept): not supported yet"),
            "{err}"
        );
    }
}
