//! The tracer's errors: text it cannot load. Odd rules never fail a trace;
//! they become warnings beside the result.

use chainsmith_iptables::ReadError;
use thiserror::Error;

/// Why a ruleset or a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceError {
    /// A dump or payload line the kernel (or `iptables-restore`) would refuse.
    #[error("line {line}: {message}")]
    Load {
        /// 1-based line in the text.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A line that is not a rule at all (it must start with `-A CHAIN`).
    #[error("not a rule (expected \"-A CHAIN ...\"): {0:?}")]
    NotARule(String),
}

impl From<ReadError> for TraceError {
    fn from(error: ReadError) -> TraceError {
        TraceError::Load {
            line: error.line,
            message: error.message,
        }
    }
}
