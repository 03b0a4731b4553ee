//! The tracer's errors: text it cannot load. Odd rules never fail a trace;
//! they become warnings beside the result. What fails is structure
//! `iptables-restore` would refuse too ([`RuleProblem`]), and text that is no
//! ruleset at all.

use chainsmith_iptables::ReadError;
use thiserror::Error;

/// Why a ruleset or a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceError {
    /// A dump, listing or payload line the kernel (or `iptables-restore`)
    /// would refuse, or text that is not what was asked for; the error names
    /// the line, quotes it and says what is wrong.
    #[error(transparent)]
    Load(#[from] ReadError),
    /// A line that is not a rule at all (it must start with `-A CHAIN`).
    #[error("not a rule (expected \"-A CHAIN ...\"): {0:?}")]
    NotARule(String),
    /// A rule whose words `iptables-restore` would refuse.
    #[error("{problem}, in {rule:?}")]
    Rule {
        /// The rule as given.
        rule: String,
        /// What is wrong with it.
        problem: RuleProblem,
    },
}

/// What is wrong with the words of a rule. Options and modules the tracer
/// does not know are no problem (they are kept and reported in a trace);
/// these are the shapes no iptables extension gives a meaning to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleProblem {
    /// `-j` or `-g` with no target after it.
    #[error("`{option}` names no target{}", follows(.found.as_deref()))]
    NoTarget {
        /// `-j`, `-g` or their long forms.
        option: String,
        /// The word where the target should be, if any.
        found: Option<String>,
    },
    /// An option that takes a value, without one.
    #[error("`{option}` needs a value{}", follows(.found.as_deref()))]
    MissingValue {
        /// The option.
        option: String,
        /// The word where the value should be, if any.
        found: Option<String>,
    },
    /// An option a target whose options the tracer knows does not have.
    #[error("`{option}` is not an option of target {target} ({})", options(.known))]
    NotATargetOption {
        /// The option as written.
        option: String,
        /// The target's name.
        target: String,
        /// The options the target has.
        known: Vec<&'static str>,
    },
    /// A word after the target that is neither one of its options nor an
    /// option's argument (`-j DNAT --to-destination 10.0.0.5:80 // here`).
    #[error("`{word}` after `{after}` is neither an option of target {target} nor an argument of one")]
    StrayWord {
        /// The word.
        word: String,
        /// The target and its options up to the word, as written.
        after: String,
        /// The target's name.
        target: String,
    },
    /// A second `-j` or `-g`: a rule has one target.
    #[error("a second target `{second}`: the rule already has `{first}`")]
    SecondTarget {
        /// The first target, as written (`-j A`).
        first: String,
        /// The second one (`-j B`).
        second: String,
    },
}

fn follows(found: Option<&str>) -> String {
    match found {
        Some(word) => format!(", but `{word}` follows it"),
        None => ", but the rule ends there".to_string(),
    }
}

fn options(known: &[&str]) -> String {
    if known.is_empty() {
        "it takes none".to_string()
    } else {
        format!("it takes {}", known.join(", "))
    }
}
