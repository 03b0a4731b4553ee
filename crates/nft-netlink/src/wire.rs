//! Netlink framing: message headers, attributes (4-byte aligned TLVs, nested
//! ones flagged), and nft's user-data TLVs. Values go in as the kernel wants
//! them: numbers in attributes big-endian, data blobs as given.

use crate::uapi::{NFNL_SUBSYS_NFTABLES, NLA_F_NESTED, NLM_F_REQUEST};

/// The size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A buffer of netlink messages (one batch).
#[derive(Debug, Default)]
pub struct Batch {
    pub buf: Vec<u8>,
    msg_start: usize,
    /// The number of messages written.
    pub messages: usize,
}

impl Batch {
    /// Starts a message: `nlmsghdr` then `nfgenmsg` (family, version 0, res_id).
    pub fn begin(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(&msg_type.to_ne_bytes());
        self.buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    /// Starts an nf_tables message of `msg` (`NFT_MSG_*`).
    pub fn begin_nft(&mut self, msg: u8, flags: u16, seq: u32, family: u8) {
        self.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg),
            flags,
            seq,
            family,
            0,
        );
    }

    /// Ends the current message, writing its length.
    pub fn end(&mut self) {
        let len = self.buf.len() - self.msg_start;
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
        self.messages += 1;
    }

    /// An attribute with `data`, padded to 4 bytes.
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// A big-endian `u32` attribute.
    pub fn u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_be_bytes());
    }

    /// A big-endian `u64` attribute.
    pub fn u64(&mut self, ty: u16, value: u64) {
        self.attr(ty, &value.to_be_bytes());
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, value: &str) {
        let mut data = Vec::with_capacity(value.len() + 1);
        data.extend_from_slice(value.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    /// Opens a nested attribute; close it with [`Batch::close`].
    pub fn open(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Closes the nested attribute opened at `at`.
    pub fn close(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// An expression of a rule: `NFTA_LIST_ELEM { NAME, DATA { ... } }`.
    pub fn expr(&mut self, name: &str, data: impl FnOnce(&mut Batch)) {
        let elem = self.open(crate::uapi::NFTA_LIST_ELEM);
        self.str(crate::uapi::NFTA_EXPR_NAME, name);
        let inner = self.open(crate::uapi::NFTA_EXPR_DATA);
        data(self);
        self.close(inner);
        self.close(elem);
    }
}

/// nft's user data: a run of (type byte, length byte, value) entries.
#[derive(Debug, Default)]
pub struct Udata(pub Vec<u8>);

impl Udata {
    /// One entry.
    pub fn put(&mut self, ty: u8, value: &[u8]) -> &mut Udata {
        self.0.push(ty);
        self.0.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        self.0.extend_from_slice(value);
        self
    }

    /// A host-order `u32` entry, as nft writes numbers in user data.
    pub fn u32(&mut self, ty: u8, value: u32) -> &mut Udata {
        self.put(ty, &value.to_ne_bytes())
    }

    /// A NUL-terminated string entry (comments), cut to what one entry holds.
    pub fn str(&mut self, ty: u8, value: &str) -> &mut Udata {
        let mut data: Vec<u8> = value.as_bytes().iter().copied().take(254).collect();
        data.push(0);
        self.put(ty, &data)
    }

    /// A comment alone.
    pub fn comment(tag: u8, text: &str) -> Udata {
        let mut u = Udata::default();
        u.str(tag, text);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut b = Batch::default();
        b.str(1, "kube-proxy");
        assert_eq!(&b.buf[..4], &[15, 0, 1, 0]);
        assert_eq!(b.buf.len(), 4 + 12);
        let at = b.open(4);
        b.u32(1, 0x0a00_0001);
        b.close(at);
        assert_eq!(&b.buf[16..20], &[12, 0, 4, 0x80]);
        assert_eq!(&b.buf[20..28], &[8, 0, 1, 0, 10, 0, 0, 1]);
    }

    #[test]
    fn message_header_and_nfgenmsg() {
        let mut b = Batch::default();
        b.begin_nft(crate::uapi::NFT_MSG_NEWTABLE, crate::uapi::NLM_F_CREATE, 7, 2);
        b.str(1, "t");
        b.end();
        assert_eq!(b.buf.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes([b.buf[0], b.buf[1], b.buf[2], b.buf[3]]), 28);
        assert_eq!(u16::from_ne_bytes([b.buf[4], b.buf[5]]), 0x0a00);
        assert_eq!(u16::from_ne_bytes([b.buf[6], b.buf[7]]), 0x401);
        assert_eq!(&b.buf[16..20], &[2, 0, 0, 0]);
    }

    #[test]
    fn udata_comment_is_nul_terminated() {
        assert_eq!(Udata::comment(0, "hi").0, vec![0, 3, b'h', b'i', 0]);
    }
}
