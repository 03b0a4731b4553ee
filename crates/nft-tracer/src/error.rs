//! Why a table cannot be traced: the tracer answers as the kernel would or
//! not at all, so anything it cannot read is an error, never a guess.

use thiserror::Error;

/// Why a table or a packet could not be traced.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceError {
    /// A rule whose form the tracer does not understand, or that names a
    /// chain or set the table does not have.
    #[error("chain {chain}, rule {index} ({rule:?}): {reason}")]
    Rule {
        /// The chain.
        chain: String,
        /// The rule's 1-based position in the chain.
        index: usize,
        /// The rule as stored.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A set or map whose type, or one of whose elements, the tracer does not
    /// understand.
    #[error("set or map {set}: {reason}")]
    Set {
        /// The set or map.
        set: String,
        /// What is wrong (naming the element, if one is).
        reason: String,
    },
    /// The packet's addresses are not of the table's family.
    #[error("packet {src} -> {dst}: the table is of family {family}")]
    Family {
        /// The source address.
        src: String,
        /// The destination address.
        dst: String,
        /// The table's family.
        family: String,
    },
    /// The walk does not end: jumps nested deeper than the kernel allows, or
    /// a loop of gotos (both refused by the kernel, so the table is not one it
    /// could hold).
    #[error("chain {chain}: {reason}")]
    Walk {
        /// The chain where the walk stopped.
        chain: String,
        /// What happened.
        reason: String,
    },
    /// More `numgen` branches than [`crate::MAX_BRANCHES`].
    #[error("more than {0} numgen branches")]
    TooManyBranches(usize),
}
