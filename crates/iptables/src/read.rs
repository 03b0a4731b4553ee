//! The lines of `iptables-restore` input and `iptables-save` output.
//!
//! A text is a sequence of sections: `*table`, chain lines
//! (`:NAME POLICY [packets:bytes]`) and commands (`-A`, `-I`, `-D`, `-N`, `-F`,
//! `-P`, `-X`, `-Z`, or their long forms), then `COMMIT`. Blank lines and `#`
//! comments are skipped, and a line may start with its counters
//! (`[12:3456] -A ...`, as `iptables-save -c` writes it). This module reads
//! what each line says; what it does to the tables is [`crate::RuleSet`]'s.

use std::borrow::Cow;

use thiserror::Error;

use crate::tokenize::words;

/// A line the kernel (or `iptables-restore`) would refuse, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ReadError {
    /// 1-based line in the text.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The lines that say something, with their 1-based numbers, trimmed and
/// without rule counters.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let line = strip_counters(raw.trim());
        (!line.is_empty() && !line.starts_with('#')).then_some((index + 1, line))
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

/// What kind of line a line is; chain lines and commands are read further
/// only where a section is open, so that a stray line is reported as such.
pub(crate) enum Line<'a> {
    /// `*name`.
    Table(&'a str),
    /// `COMMIT`.
    Commit,
    /// `:NAME ...`, see [`ChainLine`].
    Chain(&'a str),
    /// Anything else, see [`Command`].
    Command(&'a str),
}

impl<'a> Line<'a> {
    pub(crate) fn of(line: &'a str) -> Line<'a> {
        if let Some(name) = line.strip_prefix('*') {
            Line::Table(name)
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
