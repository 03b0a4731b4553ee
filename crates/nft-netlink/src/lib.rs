//! Applies a [`Transaction`] to the kernel over netlink: one nfnetlink batch,
//! all or nothing as `nft -f`, without running `nft` and without listing the
//! table first (`nft` dumps its whole cache before every transaction; we know
//! what we wrote).
//!
//! - [`NetlinkApplier`]: a `NETLINK_NETFILTER` socket in the calling thread's
//!   network namespace; [`NetlinkApplier::apply`] sends a transaction and
//!   says how big it was ([`ApplyReport`]) or which op the kernel refused and
//!   why ([`NetlinkError::Refused`]).
//! - The encoding is ours and table-driven: `uapi` holds the kernel's numbers,
//!   `wire` the netlink framing, `encode` one message per op, `rule` the rule
//!   forms chainsmith's nftables layout writes, compiled to the expressions
//!   `nft` generates for them, so the kernel lists both alike. A form it does
//!   not know is [`NetlinkError::Unsupported`], never a guess.
//!
//! Architecture invariant: this crate knows the nftables vocabulary
//! (`chainsmith-nftables`) and the kernel's nf_tables netlink protocol only.
//! It does not know Services, the planner or kube-proxy's chain layout, runs
//! no process and reads no table back: what the table holds is the caller's
//! model. Start reading at [`NetlinkApplier::apply`].

mod encode;
mod rule;
mod uapi;
mod value;
mod wire;

use std::os::fd::AsFd;

use chainsmith_nftables::Transaction;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::uapi::{
    NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, NFT_MSG_NEWGEN, NFTA_GEN_ID, NLM_F_ACK, NLMSG_ERROR,
};
use crate::wire::{Batch, NLMSG_HDRLEN};

/// At most this many ops in one transaction of a first full sync into a
/// table that does not exist yet (`Transaction::split_leaves_first`): about
/// 500 Services of 10 endpoints. The kernel's commit grows worse than
/// linearly with the transaction (one `nft -f` of 2.5k such Services: 14 s;
/// five pieces over netlink: 1.7 s, `nft_netlink_sync` example).
pub const FIRST_SYNC_PIECE_OPS: usize = 25_000;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, bound, sized, written or read.
    #[error("netlink socket: {context}")]
    Socket {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel refused an op; nothing of the transaction was applied.
    #[error("kernel refused op {index} ({op}): {reason}")]
    Refused {
        /// The op's index in the transaction.
        index: usize,
        /// The op as `nft -f` reads it.
        op: String,
        /// The errno text.
        reason: String,
    },
    /// The kernel refused a message of the batch that no op owns.
    #[error("kernel refused the batch: {0}")]
    Batch(String),
    /// An op this crate cannot encode yet; nothing was sent.
    #[error("op {index} ({op}): {reason}")]
    Unsupported {
        /// The op's index in the transaction.
        index: usize,
        /// The op as `nft -f` reads it.
        op: String,
        /// What is not supported (`not supported yet: RULE ...`).
        reason: String,
    },
    /// The kernel's answer could not be read.
    #[error("unexpected netlink reply: {0}")]
    Reply(String),
}

/// What one [`NetlinkApplier::apply`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Bytes of the batch.
    pub bytes: usize,
    /// Netlink messages in it (batch begin and end included).
    pub messages: usize,
}

/// A netfilter netlink socket that applies transactions.
#[derive(Debug)]
pub struct NetlinkApplier {
    socket: Socket,
    seq: u32,
    sndbuf: usize,
    /// The ruleset generation [`NetlinkApplier::others_committed`] last
    /// read, and the transactions this socket committed since; `None`
    /// before the first read, or after an apply whose outcome is unknown.
    watch: Option<(u32, u32)>,
    anon_names: encode::AnonNames,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { context, source }
}

impl NetlinkApplier {
    /// A socket in the calling thread's current network namespace.
    pub fn new() -> Result<NetlinkApplier, NetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io("open"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io("connect"))?;
        // Room for the errors of a large refused batch, and never a hang.
        let _ = setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &(4 << 20));
        setsockopt(&socket.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(60, 0))
            .map_err(|e| io("set a receive timeout")(e.into()))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        Ok(NetlinkApplier {
            socket,
            seq: u32::try_from(seed & 0x3fff_ffff).unwrap_or(1),
            sndbuf: 0,
            watch: None,
            anon_names: encode::AnonNames::new(),
        })
    }

    /// A socket in the network namespace mounted at `netns` (`ip netns`'s
    /// `/run/netns/NAME`). A socket stays in the namespace it was opened in,
    /// so a short-lived thread joins the namespace and opens it there; the
    /// caller's own namespace never changes.
    pub fn in_netns(netns: &std::path::Path) -> Result<NetlinkApplier, NetlinkError> {
        let file = std::fs::File::open(netns).map_err(io("open the network namespace"))?;
        std::thread::scope(|scope| {
            let opened = scope.spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io("join the network namespace")(e.into()))?;
                NetlinkApplier::new()
            });
            opened.join().unwrap_or_else(|_| {
                Err(NetlinkError::Reply(
                    "the thread opening the socket died".to_string(),
                ))
            })
        })
    }

    /// Sends a sync's main transaction. Into a kernel without the table (a
    /// node's first start), it goes in leaves-first pieces of at most
    /// [`FIRST_SYNC_PIECE_OPS`]: nothing can reach a Service before its
    /// chains are whole, and the kernel commits small pieces far faster
    /// than one. Returns the bytes and the transactions sent; a refused
    /// piece stops there, leaving the pieces before it applied.
    pub fn apply_main(
        &mut self,
        main: &Transaction,
        into_empty: bool,
    ) -> Result<(usize, usize), NetlinkError> {
        if !into_empty {
            return Ok((self.apply(main)?.bytes, 1));
        }
        let (mut bytes, mut transactions) = (0, 0);
        for piece in main.split_leaves_first(FIRST_SYNC_PIECE_OPS) {
            bytes += self.apply(&piece)?.bytes;
            transactions += 1;
        }
        Ok((bytes, transactions))
    }

    /// Bounds the wait for the kernel's answer to a batch (60 s unless set):
    /// a hung transaction becomes an error instead of a hung sync, as
    /// `--command-timeout` bounds an `nft` or `iptables-restore` process.
    pub fn with_timeout(self, timeout: std::time::Duration) -> Result<NetlinkApplier, NetlinkError> {
        let micros = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX).max(1);
        setsockopt(
            &self.socket.as_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::new(micros / 1_000_000, micros % 1_000_000),
        )
        .map_err(|e| io("set a receive timeout")(e.into()))?;
        Ok(self)
    }

    /// The namespace's nf_tables ruleset generation (`nft list ruleset`'s
    /// "generation"): every committed transaction raises it by one, whoever
    /// sent it and whichever table it changed.
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.request_generation(seq, 0)?;
        let newgen = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(NFT_MSG_NEWGEN);
        // Answers to an earlier request that failed half-read are skipped.
        self.receive_until(|kind, message_seq, message| {
            if message_seq != seq {
                return None;
            }
            if let Some(errno) = error_of(kind, message) {
                return Some(Err(NetlinkError::Reply(errno_text(errno))));
            }
            (kind == newgen).then(|| {
                generation_id(message)
                    .ok_or_else(|| NetlinkError::Reply("a generation without its id".to_string()))
            })
        })
    }

    /// Sends `NFT_MSG_GETGEN` with sequence number `seq`.
    fn request_generation(&mut self, seq: u32, flags: u16) -> Result<(), NetlinkError> {
        let mut request = Batch::default();
        request.begin_nft(NFT_MSG_GETGEN, flags, seq, 0);
        request.end();
        self.socket
            .send(&request.buf, 0)
            .map_err(io("send the generation request"))?;
        Ok(())
    }

    /// Reads messages, handing each (type, sequence number, whole message)
    /// to `each`, until it returns an answer.
    fn receive_until<T>(
        &mut self,
        mut each: impl FnMut(u16, u32, &[u8]) -> Option<Result<T, NetlinkError>>,
    ) -> Result<T, NetlinkError> {
        loop {
            let mut buf = Vec::with_capacity(1 << 16);
            self.socket.recv(&mut buf, 0).map_err(io("receive"))?;
            let mut rest = buf.as_slice();
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32_at(rest, 0) as usize;
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(NetlinkError::Reply(format!("message of length {len}")));
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if let Some(answer) = each(kind, u32_at(rest, 8), &rest[..len]) {
                    return answer;
                }
                rest = rest.get((len + 3) & !3..).unwrap_or_default();
            }
        }
    }

    /// Whether anyone but this socket committed an nf_tables transaction in
    /// the namespace since the previous call (true on the first call, and
    /// after an apply whose outcome is unknown); from now on it watches
    /// again. One netlink round trip: a caller that knows what it wrote
    /// needs to read the table back only when this says so.
    pub fn others_committed(&mut self) -> Result<bool, NetlinkError> {
        let now = self.generation()?;
        let others = self.watch.is_none_or(|(seen, own)| now.wrapping_sub(seen) != own);
        self.watch = Some((now, 0));
        Ok(others)
    }

    /// Sends the transaction as one nfnetlink batch (all or nothing, as `nft
    /// -f`); on a kernel refusal returns an error naming the failing op (its
    /// index and its `nft -f` line) and the errno text. An op this crate
    /// cannot encode is an error before anything is sent.
    pub fn apply(&mut self, transaction: &Transaction) -> Result<ApplyReport, NetlinkError> {
        let result = self.send_batch(transaction);
        match &result {
            Ok(_) => {
                if let Some((_, own)) = &mut self.watch {
                    *own += 1;
                }
            }
            // Refused or never sent: the kernel committed nothing.
            Err(NetlinkError::Refused { .. } | NetlinkError::Batch(_) | NetlinkError::Unsupported { .. }) => {
            }
            // The batch may or may not have been committed.
            Err(NetlinkError::Socket { .. } | NetlinkError::Reply(_)) => self.watch = None,
        }
        result
    }

    fn send_batch(&mut self, transaction: &Transaction) -> Result<ApplyReport, NetlinkError> {
        let encoded = encode::encode(transaction, self.seq, &mut self.anon_names)?;
        self.seq = encoded.last_seq.wrapping_add(2);
        let bytes = encoded.batch.buf.len();
        if bytes + 4096 > self.sndbuf {
            // The whole batch must fit one datagram.
            let size = (bytes + 65536).max(1 << 20);
            setsockopt(&self.socket.as_fd(), sockopt::SndBufForce, &size)
                .or_else(|_| setsockopt(&self.socket.as_fd(), sockopt::SndBuf, &size))
                .map_err(|e| io("size the send buffer")(e.into()))?;
            self.sndbuf = size;
        }
        self.socket
            .send(&encoded.batch.buf, 0)
            .map_err(io("send the batch"))?;
        // A request after the batch: its answer comes after every error of
        // the batch, so reading up to it reads them all.
        let probe = encoded.last_seq.wrapping_add(1);
        self.request_generation(probe, NLM_F_ACK)?;
        let mut first_error: Option<NetlinkError> = None;
        self.receive_until(|kind, seq, message| {
            // Answers to an earlier apply (one that failed half-read) are not ours.
            let ours = seq.wrapping_sub(encoded.first_seq) <= probe.wrapping_sub(encoded.first_seq);
            let errno = error_of(kind, message).filter(|_| ours)?;
            if seq == probe {
                return Some(match first_error.take() {
                    Some(error) => Err(error),
                    None if errno == 0 => Ok(ApplyReport {
                        bytes,
                        messages: encoded.batch.messages,
                    }),
                    None => Err(NetlinkError::Reply(errno_text(errno))),
                });
            }
            if errno != 0 && first_error.is_none() {
                let reason = errno_text(errno);
                first_error = Some(match encoded.op_of(seq) {
                    Some(index) if seq > encoded.first_seq && seq < encoded.last_seq => {
                        NetlinkError::Refused {
                            index,
                            op: transaction
                                .ops
                                .get(index)
                                .map(|op| encode::op_text(transaction.family, op))
                                .unwrap_or_default(),
                            reason,
                        }
                    }
                    _ => NetlinkError::Batch(reason),
                });
            }
            None
        })
    }
}

/// The errno of an `NLMSG_ERROR` message (0 for an acknowledgement).
fn error_of(kind: u16, message: &[u8]) -> Option<i32> {
    if kind != NLMSG_ERROR {
        return None;
    }
    let errno = message.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)?;
    Some(i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]))
}

/// `NFTA_GEN_ID` of a `NFT_MSG_NEWGEN` message (big-endian, after the
/// netlink and nfgenmsg headers).
fn generation_id(message: &[u8]) -> Option<u32> {
    let mut attrs = message.get(NLMSG_HDRLEN + 4..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFTA_GEN_ID && len == 8 {
            return Some(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno.saturating_neg()).to_string()
}
