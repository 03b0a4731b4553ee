//! The lines of `iptables-restore` input and `iptables-save` output.
//!
//! A text is a sequence of sections: `*table`, chain lines
//! (`:NAME POLICY [packets:bytes]`) and commands (`-A`, `-I`, `-D`, `-N`, `-F`,
//! `-P`, `-X`, `-Z`, or their long forms), then `COMMIT`. Blank lines are
//! skipped, `#` comments are read only for the header naming the tool that
//! wrote the text (see `family.rs`), and a line may start with its counters
//! (`[12:3456] -A ...`, as `iptables-save -c` writes it). This module reads
//! what each line says; what it does to the tables is [`crate::RuleSet`]'s.
//!
//! Errors quote the line as written (counters included) with its number, and
//! a text that is not `iptables-save` output at all (`iptables -S`, grep, `-L`
//! output) is named as such, so that the error says what to give instead.

use std::borrow::Cow;

use thiserror::Error;

use crate::family::FamilyConflict;
use crate::tokenize::words;

/// A text `iptables-restore` (or the kernel) would refuse, or one that is not
/// what the reader was asked to read, with the line that shows it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", location(*.line, .text))]
pub struct ReadError {
    /// 1-based line in the text; 0 when the error is about no line (an
    /// unknown table named by the caller).
    pub line: usize,
    /// The line as written, counters included, surrounding blanks trimmed.
    pub text: String,
    /// What is wrong.
    pub message: ReadProblem,
}

/// The longest stretch of a line an error quotes: a line is quoted to be
/// found, and fuzzed or binary input can be one very long line.
const QUOTED_CHARS: usize = 240;

/// `line 14 (`-A X -j`): `, or nothing for line 0.
fn location(line: usize, text: &str) -> String {
    if line == 0 {
        return String::new();
    }
    if text.is_empty() {
        return format!("line {line}: ");
    }
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("line {line} (`{}...`): ", &text[..cut]),
        None => format!("line {line} (`{text}`): "),
    }
}

/// What is wrong with a text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadProblem {
    /// A chain line or command `iptables-restore` refuses, or a section the
    /// kernel refuses at `COMMIT` (a jump to a missing or deleted chain).
    #[error("{0}")]
    Refused(String),
    /// A rule its reader refused ([`crate::RuleLine::from_line`]'s reason,
    /// e.g. the tracer's: a `-j` without target, a word after the target).
    #[error("{0}")]
    Rule(String),
    /// A line outside any `*table ... COMMIT` section; `shape` is what the
    /// whole text looks like, to say what to give instead.
    #[error("{}", outside_table(.shape, *.after_commit))]
    OutsideTable {
        /// What the text looks like.
        shape: Shape,
        /// The line of the last `COMMIT` before this line, if any.
        after_commit: Option<usize>,
    },
    /// A section without its `COMMIT`: the text ends inside it (`next` is
    /// `None`: it looks truncated) or the next `*table` line starts inside it.
    #[error("{}", missing_commit(.table, *.opened, .next.as_deref()))]
    MissingCommit {
        /// The table of the unfinished section.
        table: String,
        /// The line of its `*table`.
        opened: usize,
        /// The table whose `*table` line came instead of `COMMIT`.
        next: Option<String>,
    },
    /// Two lines of one text say different IP families (a header naming
    /// `ip6tables-save` and an IPv4 address, or addresses of both families).
    #[error("{0}")]
    MixedFamilies(Box<FamilyConflict>),
    /// A rules listing read for a table that iptables does not have.
    #[error("unknown table {0:?}: iptables has the tables filter, nat, mangle, raw and security")]
    UnknownTable(String),
}

/// What a text that is not `iptables-save` output looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `iptables -S` output: `-P`, `-N` and `-A` lines of one table, which it
    /// does not name.
    RulesListing,
    /// Lines picked out by grep: rules without their `*table`, chain lines and
    /// `COMMIT`.
    Grep,
    /// Lines with the prefix grep writes before a match (`dump.txt:-A ...`,
    /// `12:-A ...`).
    GrepPrefixed {
        /// The prefix, without its last `:`.
        prefix: String,
    },
    /// `iptables -L` output (`Chain INPUT (policy ACCEPT)`), which cannot be
    /// read back into rules.
    Listing,
    /// An nftables listing (`table ip nat {`).
    Nftables,
    /// None of these.
    Other,
}

fn outside_table(shape: &Shape, after_commit: Option<usize>) -> String {
    let place = match after_commit {
        Some(commit) => format!("outside any table (the last one ended with COMMIT on line {commit})"),
        None => "no `*table` line before it".to_string(),
    };
    let save = "give the whole `iptables-save` output";
    match shape {
        Shape::RulesListing => format!(
            "{place}. This looks like `iptables -S` output, which holds one table without saying \
             which: give `iptables-save` output, or say the table (e.g. --table nat)"
        ),
        Shape::Grep => format!(
            "{place}. This looks like grep output (rules without their `*table`, chain lines and \
             COMMIT): {save}"
        ),
        Shape::GrepPrefixed { prefix } => format!(
            "{place}. It starts with `{prefix}:` as grep marks a match, so this looks like grep \
             output: {save}"
        ),
        Shape::Listing => format!(
            "{place}. This looks like `iptables -L` output, which does not hold the rules as \
             written: give `iptables-save` output"
        ),
        Shape::Nftables => format!(
            "{place}. This looks like an nftables listing (`nft list ...`), not `iptables-save` output"
        ),
        Shape::Other => format!("{place}: each table starts with a `*name` line (`*filter`, `*nat`, ...)"),
    }
}

fn missing_commit(table: &str, opened: usize, next: Option<&str>) -> String {
    match next {
        Some(next) => {
            format!("table {next} starts inside table {table} (from line {opened}), which has no COMMIT")
        }
        None => format!(
            "the text ends inside table {table} (from line {opened}) without its COMMIT: it looks \
             truncated"
        ),
    }
}

/// A line that says something: a blank line says nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Numbered<'a> {
    /// 1-based.
    pub(crate) number: usize,
    /// As written, trimmed: what errors quote.
    pub(crate) written: &'a str,
    /// Without the rule counters of `iptables-save -c`: what is read.
    pub(crate) body: &'a str,
}

/// The lines that say something (comments included), with their numbers.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = Numbered<'_>> {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let written = raw.trim();
        (!written.is_empty()).then(|| Numbered {
            number: index + 1,
            written,
            body: strip_counters(written),
        })
    })
}

/// `[12:3456] -A ...` (iptables-save -c) -> `-A ...`.
fn strip_counters(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((counters, rest)) if counters.chars().all(|c| c.is_ascii_digit() || c == ':') => {
            rest.trim_start()
        }
        _ => line,
    }
}

/// What `text` looks like, when `first` (the line that made it fail) is
/// outside any table.
pub(crate) fn shape_of(text: &str, first: &str) -> Shape {
    if let Some(prefix) = grep_prefix(first) {
        return Shape::GrepPrefixed {
            prefix: prefix.to_string(),
        };
    }
    let bodies = || lines(text).map(|l| l.body);
    if bodies().any(|l| l.starts_with("Chain ") && (l.contains("(policy ") || l.contains("references)"))) {
        return Shape::Listing;
    }
    let nft = |l: &str| {
        let mut w = l.split_whitespace();
        w.next() == Some("table")
            && matches!(
                w.next(),
                Some("ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev")
            )
    };
    if bodies().any(nft) {
        return Shape::Nftables;
    }
    let command = |l: &str, names: &[&str]| names.iter().any(|n| l.split_whitespace().next() == Some(n));
    if bodies().any(|l| command(l, &["-P", "--policy", "-N", "--new-chain"])) {
        return Shape::RulesListing;
    }
    let structure = |l: &str| l.starts_with('*') || l.starts_with(':') || l == "COMMIT";
    if command(first, &["-A", "--append", "-I", "--insert"]) && !bodies().any(structure) {
        return Shape::Grep;
    }
    Shape::Other
}

/// The `FILE:` or `NUMBER:` (or both) that grep writes before a matching
/// line of a dump.
fn grep_prefix(line: &str) -> Option<&str> {
    let starts_dump_line = |rest: &str| {
        ["-A ", "-I ", "-N ", "-P ", "*", ":", "COMMIT", "#", "["]
            .iter()
            .any(|start| rest.starts_with(start))
    };
    if line.starts_with(['-', '*', ':', '#', '[']) {
        return None;
    }
    line.match_indices(':')
        .map(|(at, _)| at)
        .find(|&at| at > 0 && starts_dump_line(&line[at + 1..]))
        .map(|at| &line[..at])
        .filter(|prefix| !prefix.contains(char::is_whitespace))
}

/// What kind of line a line is; chain lines and commands are read further
/// only where a section is open, so that a stray line is reported as such.
pub(crate) enum Line<'a> {
    /// `*name`.
    Table(&'a str),
    /// `COMMIT`.
    Commit,
    /// `# ...`: read only for the header naming the tool that wrote the text.
    Comment(&'a str),
    /// `:NAME ...`, see [`ChainLine`].
    Chain(&'a str),
    /// Anything else, see [`Command`].
    Command(&'a str),
}

impl<'a> Line<'a> {
    pub(crate) fn of(line: &'a str) -> Line<'a> {
        if let Some(name) = line.strip_prefix('*') {
            Line::Table(name)
        } else if line.starts_with('#') {
            Line::Comment(line)
        } else if line == "COMMIT" {
            Line::Commit
        } else if line.starts_with(':') {
            Line::Chain(line)
        } else {
            Line::Command(line)
        }
    }
}

/// `:NAME POLICY [packets:bytes]`; the counters may be left out.
pub(crate) struct ChainLine<'a> {
    pub(crate) name: &'a str,
    /// `None` for `-`, which user chains have and leaves a built-in chain's
    /// policy as it is.
    pub(crate) policy: Option<&'a str>,
    pub(crate) counters: (u64, u64),
}

impl<'a> ChainLine<'a> {
    pub(crate) fn parse(line: &'a str) -> Result<ChainLine<'a>, String> {
        let mut parts = line.strip_prefix(':').unwrap_or(line).split_whitespace();
        let (Some(name), policy, counters, None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad chain line {line:?}"));
        };
        if !is_chain_name(name) {
            return Err(format!("invalid chain name {name:?}"));
        }
        let counters = match counters {
            Some(text) => {
                parse_counters(text).ok_or_else(|| format!("bad counters in chain line {line:?}"))?
            }
            None => (0, 0),
        };
        Ok(ChainLine {
            name,
            policy: policy.filter(|p| *p != "-"),
            counters,
        })
    }
}

/// `[packets:bytes]`; an empty number is 0.
fn parse_counters(text: &str) -> Option<(u64, u64)> {
    let number = |text: &str| {
        if text.is_empty() {
            Some(0)
        } else {
            text.parse().ok()
        }
    };
    let (packets, bytes) = text.strip_prefix('[')?.strip_suffix(']')?.split_once(':')?;
    Some((number(packets)?, number(bytes)?))
}

/// A name a chain can have: words of restore text must be able to name it.
fn is_chain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '"')
}

/// One command of a section. Rules are given as the rule set keeps their
/// text: `-A CHAIN` and the words after the chain as written.
pub(crate) enum Command<'a> {
    /// `-A CHAIN RULE`.
    Append { chain: Cow<'a, str>, rule: String },
    /// `-I CHAIN [POSITION] RULE` (1-based, 1 when not given).
    Insert {
        chain: Cow<'a, str>,
        position: usize,
        rule: String,
    },
    /// `-D CHAIN RULE`.
    DeleteRule { chain: Cow<'a, str>, rule: String },
    /// `-D CHAIN NUMBER` (1-based).
    DeleteNumber { chain: Cow<'a, str>, number: usize },
    /// `-N CHAIN`.
    NewChain(Cow<'a, str>),
    /// `-F [CHAIN]`: every chain of the table without one.
    Flush(Option<Cow<'a, str>>),
    /// `-P CHAIN POLICY`.
    Policy {
        chain: Cow<'a, str>,
        policy: Cow<'a, str>,
    },
    /// `-X CHAIN`.
    DeleteChain(Cow<'a, str>),
    /// `-Z`: counters, which only a dump's chain lines carry here.
    Zero,
}

impl<'a> Command<'a> {
    pub(crate) fn parse(line: &'a str) -> Result<Command<'a>, String> {
        let mut words = words(line);
        let command = words.next().map(|w| w.text).unwrap_or_default();
        let chain = words.next().map(|w| w.text).unwrap_or_default();
        let after_chain = words.rest();
        let third = words.next().map(|w| w.text);
        let after_third = words.rest();
        let only_three = words.next().is_none();
        let number = third.as_deref().and_then(|w| w.parse::<usize>().ok());
        let names_chain = !chain.is_empty() && !chain.starts_with('-');
        let command = match &*command {
            "-A" | "--append" | "-I" | "--insert" | "-D" | "--delete" if !names_chain => {
                return Err(format!("{command} without a chain"));
            }
            "-A" | "--append" => Command::Append {
                rule: rule_line(&chain, after_chain),
                chain,
            },
            "-I" | "--insert" => {
                let (position, body) = match number {
                    Some(position) => (position, after_third),
                    None => (1, after_chain),
                };
                Command::Insert {
                    rule: rule_line(&chain, body),
                    chain,
                    position,
                }
            }
            "-D" | "--delete" => match number {
                Some(number) if only_three => Command::DeleteNumber { chain, number },
                _ => Command::DeleteRule {
                    rule: rule_line(&chain, after_chain),
                    chain,
                },
            },
            "-N" | "--new-chain" if !names_chain || !is_chain_name(&chain) => {
                return Err(format!("invalid chain name {chain:?} in {line:?}"));
            }
            "-N" | "--new-chain" => Command::NewChain(chain),
            "-F" | "--flush" => Command::Flush((!chain.is_empty()).then_some(chain)),
            "-P" | "--policy" => Command::Policy {
                chain,
                policy: third.unwrap_or_default(),
            },
            "-X" | "--delete-chain" => Command::DeleteChain(chain),
            "-Z" | "--zero" => Command::Zero,
            other => return Err(format!("unsupported command {other:?} in {line:?}")),
        };
        Ok(command)
    }
}

/// A rule's text as the rule set keeps it: `-A CHAIN BODY`.
fn rule_line(chain: &str, body: &str) -> String {
    if body.is_empty() {
        format!("-A {chain}")
    } else {
        format!("-A {chain} {body}")
    }
}
