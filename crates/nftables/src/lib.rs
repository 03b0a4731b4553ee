//! nftables vocabulary: what a transaction says, what a table holds, and how
//! both read and print.
//!
//! - [`Op`] and [`Transaction`]: the operations kube-proxy's nftables mode
//!   sends, printed one per line exactly as knftables prints them (the text
//!   `nft -f` reads);
//! - [`Table`]: a model of one table (chains with rules, sets and maps with
//!   elements) that applies a transaction all or nothing and refuses what the
//!   kernel refuses: a rule or element naming a chain or set that does not
//!   exist, deleting a chain still jumped to, deleting a missing element,
//!   re-adding an element with another value; [`Table::dump`] prints it in
//!   knftables' dump form;
//! - [`Transaction::split_leaves_first`]: one large transaction as a
//!   sequence of small ones that never name what does not exist yet;
//! - [`read_line`]/[`read_transaction`]: the one reader of that line form, for
//!   transactions and dumps alike;
//! - [`read_listing`]: the reader of the kernel's own listing (`nft list
//!   ruleset`), which spells the same rules differently; [`canonical_rule`]
//!   and [`Table::canonical`] bring both spellings to one, so a model and
//!   what the kernel holds compare as values; [`drift`] says how they differ.
//!
//! Architecture invariant: this crate knows nftables text and semantics only.
//! It does not know Services, kube-proxy's chain layout or the planner, and it
//! never runs `nft`: a kube-proxy ruleset is built from these parts elsewhere
//! (`chainsmith-nft-layout`).

mod canonical;
mod drift;
mod listing;
mod op;
mod read;
mod split;
mod table;

pub use canonical::{canonical_key, canonical_rule};
pub use drift::{DriftKind, ObjectDrift, TableDrift, drift};
pub use listing::{Listing, read_listing};
pub use op::{
    BaseChain, ChainSpec, Element, Family, Hook, Op, SetKind, SetSpec, TABLE_NAME, Transaction, quote,
};
pub use read::{ReadError, read_line, read_transaction};
pub use table::{ApplyError, Table};
