//! One rule line (`-A CHAIN ...`) read into matches and a target.
//!
//! Both spellings of a rule are understood: kube-proxy's restore input
//! (`-m comment --comment "x y" -m tcp -p tcp -d 10.0.0.1 --dport 80 -j X`,
//! `MARK --or-mark 0x4000`) and `iptables-save`'s canonical form
//! (`-d 10.0.0.1/32 -p tcp -m comment --comment "x y" -m tcp --dport 80 -j X`,
//! `MARK --set-xmark 0x4000/0x4000`, probabilities with 11 decimals). Both parse
//! to the same [`Match`] and [`Target`] values: addresses become networks, marks
//! become the kernel's `value/mask` pair, probabilities are quantised the way
//! the kernel stores them.
//!
//! What a rule means is read leniently, its structure strictly. An option or
//! module the tracer does not model becomes [`Match::Unknown`] (the rule then
//! never matches, and the trace says why), an unmodelled target becomes
//! [`Target::Unknown`]: dumps carry other software's rules (`-m set`,
//! `-m physdev`, `-j CT`, ...). What `iptables-restore` would refuse whatever
//! the extensions is an error ([`RuleProblem`]): a `-j` without target, an
//! option without its value, and after the target a word that is neither one
//! of its options nor an argument of one. The options of the targets the
//! tracer knows (the verdicts, a chain, `REJECT`, `DNAT`, `SNAT`,
//! `MASQUERADE`, `MARK`, `CONNMARK`, `LOG`, `REDIRECT`) are known with their
//! arity; of other targets, `--option [argument]` is accepted.

use std::net::IpAddr;

use chainsmith_iptables::{Word, is_builtin_target, words};
use chainsmith_model::{parse_cidr_sloppy, parse_ip_sloppy};
use ipnet::IpNet;

use crate::error::{RuleProblem, TraceError};

/// A parsed `-A CHAIN ...` line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRule {
    /// The chain the rule belongs to.
    pub chain: String,
    /// The rule line as written (starting with `-A`).
    pub text: String,
    /// The `-m comment --comment` text, if any.
    pub comment: Option<String>,
    /// The matches, in the order written.
    pub matches: Vec<Match>,
    /// What the rule does when every match matches.
    pub target: Target,
}

/// An inclusive port range (`80` is `80:80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// What a `-m recent` match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentAction {
    /// `--rcheck`: is the source address in the list?
    Check,
    /// `--update`: like `--rcheck`, refreshing the entry.
    Update,
    /// `--set`: add the source address (always matches).
    Set,
    /// `--remove`: remove the source address if present (matches if it was).
    Remove,
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// `[!] -s ADDR[/PREFIX]`.
    Source {
        /// The network (`/32` or `/128` for a single address).
        net: IpNet,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -d ADDR[/PREFIX]`.
    Destination {
        /// The network.
        net: IpNet,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -p PROTO` (lower case; numbers 6/17/132 read as tcp/udp/sctp, `0` as `all`).
    Protocol {
        /// The protocol name.
        name: String,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -i NAME` (a trailing `+` matches every name with that prefix).
    InInterface {
        /// The name or prefix.
        name: String,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] -o NAME`.
    OutInterface {
        /// The name or prefix.
        name: String,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] --dport N[:M]`.
    DestinationPort {
        /// The ports.
        range: PortRange,
        /// Negated with `!`.
        negated: bool,
    },
    /// `[!] --sport N[:M]`.
    SourcePort {
        /// The ports.
        range: PortRange,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m multiport [!] --dports/--sports/--ports A,B:C`.
    Multiport {
        /// Which port(s) the list applies to.
        field: PortField,
        /// The ports.
        ranges: Vec<PortRange>,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m addrtype [!] --src-type LOCAL` (`source`) or `--dst-type LOCAL`.
    AddrTypeLocal {
        /// `--src-type` (else `--dst-type`).
        source: bool,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m statistic --mode random --probability P`.
    Statistic {
        /// The probability the kernel applies: `P` quantised to 31 bits, as
        /// `iptables` stores it (so `0.3333333333` and iptables-save's
        /// `0.33333333349` are the same value). Already inverted when negated.
        probability: f64,
    },
    /// `-m recent [!] --name N --rcheck|--update|--set|--remove [--seconds T] [--reap]`
    /// (`--mask` and `--rsource` are accepted and do not change anything here).
    Recent {
        /// The list name (`DEFAULT` if not given).
        name: String,
        /// What the match does.
        action: RecentAction,
        /// `--seconds`.
        seconds: Option<u64>,
        /// `--reap`.
        reap: bool,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m mark [!] --mark VALUE[/MASK]`: `(mark & mask) == value`.
    Mark {
        /// The value.
        value: u32,
        /// The mask (`0xffffffff` when not given).
        mask: u32,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m conntrack [!] --ctstate A,B` (also `-m state [!] --state A,B`).
    Conntrack {
        /// The states, upper case.
        states: Vec<String>,
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m physdev [!] --physdev-is-in`: the packet came in through a bridge
    /// port (seen by iptables only with `br_netfilter`).
    PhysdevIsIn {
        /// Negated with `!`.
        negated: bool,
    },
    /// `-m nfacct --nfacct-name N`: a counter, always matches.
    Nfacct {
        /// The counter.
        name: String,
    },
    /// A match the tracer does not model, as written; a rule holding one is
    /// treated as not matching.
    Unknown(String),
}

/// The port a `-m multiport` list applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortField {
    /// `--dports`.
    Destination,
    /// `--sports`.
    Source,
    /// `--ports` (either).
    Either,
}

impl Match {
    /// Whether the kernel checks this match in the IP header part of the rule
    /// (before any `-m` module, whatever the written order).
    pub fn is_header(&self) -> bool {
        matches!(
            self,
            Match::Source { .. }
                | Match::Destination { .. }
                | Match::Protocol { .. }
                | Match::InInterface { .. }
                | Match::OutInterface { .. }
        )
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `-j` (a comment-only rule): matching has no effect.
    None,
    /// `-j CHAIN`: jump to a user chain, come back at its end or on `RETURN`.
    Chain(String),
    /// `-g CHAIN`: go to a user chain; its end returns to this chain's caller.
    Goto(String),
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP`.
    Drop,
    /// `-j REJECT [--reject-with ...]`.
    Reject,
    /// `-j RETURN`.
    Return,
    /// `-j MARK`: the new mark is `(mark & !mask) ^ value`. `--or-mark V` is
    /// `V/V`, `--xor-mark V` is `V/0`, `--and-mark V` is `0/!V`, `--set-mark V/M`
    /// is `V/(M|V)`, `--set-xmark V/M` is `V/M` (a missing mask is `0xffffffff`).
    Mark {
        /// XORed in.
        value: u32,
        /// Cleared first.
        mask: u32,
    },
    /// `-j MASQUERADE [--random-fully]`.
    Masquerade {
        /// `--random-fully` given.
        random_fully: bool,
    },
    /// `-j DNAT --to-destination D` (`ip:port`, `[ipv6]:port`, `ip`).
    Dnat {
        /// The `--to-destination` value.
        to: String,
    },
    /// `-j SNAT --to-source S`.
    Snat {
        /// The `--to-source` value.
        to: String,
    },
    /// A target the tracer does not model (`LOG`, `REDIRECT`, `CT`, an
    /// extension it does not know), with its options as written; it is
    /// reported and skipped.
    Unknown(String),
}

/// The kernel's 31-bit quantisation of a `statistic` probability.
fn quantize_probability(p: f64) -> f64 {
    const SCALE: f64 = 2_147_483_648.0; // 0x80000000
    let clamped = p.clamp(0.0, 1.0);
    (clamped * SCALE).round() / SCALE
}

/// `0x4000`, `16384`, `0x0`.
fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `VALUE[/MASK]`, the mask defaulting to all ones.
fn parse_value_mask(text: &str) -> Option<(u32, Option<u32>)> {
    match text.split_once('/') {
        Some((value, mask)) => Some((parse_u32(value)?, Some(parse_u32(mask)?))),
        None => Some((parse_u32(text)?, None)),
    }
}

/// `80`, `80:90`, `:90`, `80:`.
fn parse_port_range(text: &str) -> Option<PortRange> {
    let port = |t: &str, default: u16| {
        if t.is_empty() {
            Some(default)
        } else {
            t.parse::<u16>().ok()
        }
    };
    let (first, last) = match text.split_once(':') {
        Some((a, b)) => (port(a, 0)?, port(b, u16::MAX)?),
        None => {
            let p = text.parse::<u16>().ok()?;
            (p, p)
        }
    };
    (first <= last).then_some(PortRange { first, last })
}

/// `10.0.0.1`, `10.0.0.1/32`, `10.0.0.0/255.0.0.0`, `fd00::1/128`.
fn parse_net(text: &str) -> Option<IpNet> {
    match text.split_once('/') {
        Some((addr, mask)) if mask.contains('.') => {
            let ip = parse_ip_sloppy(addr)?;
            let IpAddr::V4(mask) = parse_ip_sloppy(mask)? else {
                return None;
            };
            let bits = u32::from(mask);
            let prefix = u8::try_from(bits.leading_ones()).ok()?;
            (bits.count_ones() == bits.leading_ones())
                .then(|| IpNet::new(ip, prefix).ok().map(|n| n.trunc()))
                .flatten()
        }
        Some(_) => parse_cidr_sloppy(text),
        None => {
            let ip = parse_ip_sloppy(text)?;
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            IpNet::new(ip, prefix).ok()
        }
    }
}

fn normalize_protocol(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "6" => "tcp".to_string(),
        "17" => "udp".to_string(),
        "132" => "sctp".to_string(),
        "0" => "all".to_string(),
        other => other.to_string(),
    }
}

/// Options that take no value.
fn is_flag(option: &str) -> bool {
    matches!(
        option,
        "--rcheck"
            | "--physdev-is-in"
            | "--update"
            | "--set"
            | "--remove"
            | "--reap"
            | "--rsource"
            | "--rdest"
            | "--random"
            | "--random-fully"
            | "--persistent"
            | "--syn"
            | "-f"
            | "--fragment"
    )
}

/// The options of one `-m recent` or `-m statistic` instance, gathered until
/// the module ends (their order varies between restore input and iptables-save).
#[derive(Default)]
struct ModuleOptions {
    negated: bool,
    options: Vec<(String, Option<String>)>,
}

struct Parser {
    matches: Vec<Match>,
    comment: Option<String>,
    target: Target,
    /// The name of a target read with its options (`REJECT`, `MARK`, an
    /// extension), while there is one.
    target_name: Option<String>,
    target_options: Vec<(String, Option<String>)>,
    /// The target and its options as written so far (`-j DNAT
    /// --to-destination 10.0.0.5:80`), once there is a target.
    target_written: Option<String>,
    /// The name after `-j` or `-g`, for errors.
    jumped_to: String,
    /// The words being read follow the target: they must be its options,
    /// until a match option (`-m`, `-p`, `-s`, ...) starts matches again.
    in_target: bool,
    /// Bare words an extension target's last option may still take.
    spare_arguments: usize,
    module: Option<String>,
    gathered: Option<ModuleOptions>,
}

/// What the words after a target may be.
enum TargetOptions {
    /// The target's options and how many arguments each takes.
    Known(&'static [(&'static str, usize)]),
    /// A jump to a chain: no options. An option after it means the name is an
    /// extension target the tracer does not know, not a chain.
    Chain,
    /// An extension target the tracer does not know: `--option [argument]`.
    Extension,
}

/// The options of the targets whose spelling the tracer knows, with the
/// number of arguments each takes.
fn known_target_options(name: &str) -> Option<&'static [(&'static str, usize)]> {
    const MARK: &[(&str, usize)] = &[
        ("--set-xmark", 1),
        ("--set-mark", 1),
        ("--or-mark", 1),
        ("--xor-mark", 1),
        ("--and-mark", 1),
    ];
    Some(match name {
        "ACCEPT" | "DROP" | "RETURN" => &[],
        "REJECT" => &[("--reject-with", 1)],
        "DNAT" => &[("--to-destination", 1), ("--random", 0), ("--persistent", 0)],
        "SNAT" => &[
            ("--to-source", 1),
            ("--random", 0),
            ("--random-fully", 0),
            ("--persistent", 0),
        ],
        "MASQUERADE" => &[("--to-ports", 1), ("--random", 0), ("--random-fully", 0)],
        "REDIRECT" => &[("--to-ports", 1), ("--random", 0)],
        "MARK" => MARK,
        "CONNMARK" => &[
            ("--set-xmark", 1),
            ("--set-mark", 1),
            ("--or-mark", 1),
            ("--xor-mark", 1),
            ("--and-mark", 1),
            ("--save-mark", 0),
            ("--restore-mark", 0),
            ("--nfmask", 1),
            ("--ctmask", 1),
            ("--mask", 1),
        ],
        "LOG" => &[
            ("--log-level", 1),
            ("--log-prefix", 1),
            ("--log-tcp-sequence", 0),
            ("--log-tcp-options", 0),
            ("--log-ip-options", 0),
            ("--log-uid", 0),
            ("--log-macdecode", 0),
        ],
        _ => return None,
    })
}

/// Arguments an option of an unknown extension target may take: one, but
/// the `SET` target's set options name a set and its flags.
fn extension_arguments(option: &str) -> usize {
    match option {
        "--add-set" | "--del-set" | "--map-set" => 2,
        _ => 1,
    }
}

/// Options of iptables itself (not of a match or target): after a target they
/// start matches again, as `iptables` allows options in any order.
fn is_rule_option(word: &Word) -> bool {
    !word.quoted
        && matches!(
            &*word.text,
            "-m" | "--match"
                | "-p"
                | "--protocol"
                | "-s"
                | "--source"
                | "-d"
                | "--destination"
                | "-i"
                | "--in-interface"
                | "-o"
                | "--out-interface"
                | "-f"
                | "--fragment"
                | "-c"
                | "--set-counters"
                | "-j"
                | "--jump"
                | "-g"
                | "--goto"
        )
}

/// Match options that always take a value, in whatever module: without one
/// the rule is refused rather than kept as an unknown match.
fn needs_value(option: &str) -> bool {
    matches!(
        option,
        "--dport"
            | "--destination-port"
            | "--sport"
            | "--source-port"
            | "--dports"
            | "--destination-ports"
            | "--sports"
            | "--source-ports"
            | "--ports"
            | "--src-type"
            | "--dst-type"
            | "--mark"
            | "--ctstate"
            | "--state"
            | "--nfacct-name"
            | "--name"
            | "--seconds"
            | "--hitcount"
            | "--mode"
            | "--probability"
            | "--every"
            | "--packet"
            | "--match-set"
            | "--limit"
            | "--limit-burst"
    )
}

/// A word that can be a target option's argument: no option, no negation.
fn can_be_argument(word: &Word) -> bool {
    !looks_like_option(word) && (word.quoted || word.text != "!")
}

/// An unquoted word that reads as an option (`--x`, `-x`), not as a value
/// (`-`, `-1`).
fn looks_like_option(word: &Word) -> bool {
    !word.quoted
        && word.text.len() > 1
        && word.text.starts_with('-')
        && !word.text[1..].starts_with(|c: char| c.is_ascii_digit())
}

impl ParsedRule {
    /// Parses one rule line. Fails when the line does not start with
    /// `-A CHAIN` (or `--append CHAIN`) and on the structure `iptables-restore`
    /// refuses ([`TraceError::Rule`], see the module documentation); what the
    /// tracer does not model is kept as [`Match::Unknown`] / [`Target::Unknown`].
    pub fn parse(line: &str) -> Result<ParsedRule, TraceError> {
        let text = line.trim();
        let words: Vec<Word> = words(text).collect();
        let (Some(command), Some(chain)) = (words.first(), words.get(1)) else {
            return Err(TraceError::NotARule(line.to_string()));
        };
        if !matches!(&*command.text, "-A" | "--append") || chain.text.starts_with('-') {
            return Err(TraceError::NotARule(line.to_string()));
        }
        let mut parser = Parser {
            matches: Vec::new(),
            comment: None,
            target: Target::None,
            target_name: None,
            target_options: Vec::new(),
            target_written: None,
            jumped_to: String::new(),
            in_target: false,
            spare_arguments: 0,
            module: None,
            gathered: None,
        };
        parser.run(&words[2..]).map_err(|problem| TraceError::Rule {
            rule: text.to_string(),
            problem,
        })?;
        Ok(ParsedRule {
            chain: chain.text.to_string(),
            text: text.to_string(),
            comment: parser.comment,
            matches: parser.matches,
            target: parser.target,
        })
    }

    /// The unmodelled matches of the rule, as written.
    pub fn unknown_matches(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().filter_map(|m| match m {
            Match::Unknown(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// Whether two rules are the same rule for the kernel (`iptables -C`): same
    /// target, same comment, same matches in any order. Spelling does not matter
    /// (`/32`, `--or-mark` vs `--set-xmark`, argument order).
    pub fn same_rule(&self, other: &ParsedRule) -> bool {
        if self.chain != other.chain
            || self.target != other.target
            || self.comment != other.comment
            || self.matches.len() != other.matches.len()
        {
            return false;
        }
        let mut used = vec![false; other.matches.len()];
        self.matches.iter().all(|m| {
            let found = other
                .matches
                .iter()
                .enumerate()
                .position(|(i, o)| !used[i] && o == m);
            found.map(|i| used[i] = true).is_some()
        })
    }
}

impl Parser {
    fn run(&mut self, words: &[Word]) -> Result<(), RuleProblem> {
        let mut negated = false;
        let mut i = 0;
        while let Some(word) = words.get(i) {
            if self.in_target {
                let bang_then_option =
                    !word.quoted && word.text == "!" && words.get(i + 1).is_some_and(is_rule_option);
                if !is_rule_option(word) && !bang_then_option {
                    self.target_word(words, &mut i)?;
                    continue;
                }
                self.in_target = false;
            }
            i += 1;
            let option = &*word.text;
            if option == "!" && !word.quoted {
                negated = true;
                continue;
            }
            match option {
                "-m" | "--match" => {
                    self.end_module();
                    let name = required_value(words, &mut i, &mut negated, option)?;
                    if matches!(name.as_str(), "recent" | "statistic") {
                        self.gathered = Some(ModuleOptions::default());
                    }
                    let known = matches!(
                        name.as_str(),
                        "comment"
                            | "tcp"
                            | "udp"
                            | "sctp"
                            | "multiport"
                            | "addrtype"
                            | "statistic"
                            | "recent"
                            | "mark"
                            | "conntrack"
                            | "state"
                            | "nfacct"
                            | "physdev"
                    );
                    if !known {
                        self.matches.push(Match::Unknown(format!("-m {name}")));
                    }
                    self.module = Some(name);
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    let name = match words.get(i) {
                        Some(w) if w.quoted || !(w.text.starts_with('-') || w.text == "!") => {
                            w.text.to_string()
                        }
                        other => {
                            return Err(RuleProblem::NoTarget {
                                option: option.to_string(),
                                found: other.map(|w| w.text.to_string()),
                            });
                        }
                    };
                    i += 1;
                    if let Some(first) = self.target_written.take() {
                        return Err(RuleProblem::SecondTarget {
                            first,
                            second: format!("{option} {name}"),
                        });
                    }
                    self.end_module();
                    self.module = None;
                    self.start_target(option, &name);
                }
                "-s" | "--source" | "-d" | "--destination" => {
                    let value = required_value(words, &mut i, &mut negated, option)?;
                    let source = matches!(option, "-s" | "--source");
                    self.matches.push(match parse_net(&value) {
                        Some(net) if source => Match::Source { net, negated },
                        Some(net) => Match::Destination { net, negated },
                        None => Match::Unknown(format!("{option} {value}")),
                    });
                }
                "-p" | "--protocol" => {
                    let value = required_value(words, &mut i, &mut negated, option)?;
                    self.matches.push(Match::Protocol {
                        name: normalize_protocol(&value),
                        negated,
                    });
                }
                "-i" | "--in-interface" | "-o" | "--out-interface" => {
                    let name = required_value(words, &mut i, &mut negated, option)?;
                    self.matches.push(if matches!(option, "-i" | "--in-interface") {
                        Match::InInterface { name, negated }
                    } else {
                        Match::OutInterface { name, negated }
                    });
                }
                // Counters (`iptables -S -v`, restore input): no match.
                "-c" | "--set-counters" => {
                    for _ in 0..2 {
                        required_value(words, &mut i, &mut negated, option)?;
                    }
                }
                _ if self.target_name.is_some() && self.is_target_option(option) => {
                    let takes_value = match self.target_options() {
                        TargetOptions::Known(known) => known.iter().any(|&(o, n)| o == option && n > 0),
                        TargetOptions::Extension | TargetOptions::Chain => {
                            !is_flag(option) && next_is_value(words, i)
                        }
                    };
                    let value = if takes_value {
                        Some(required_value(words, &mut i, &mut negated, option)?)
                    } else {
                        None
                    };
                    self.target_options.push((option.to_string(), value));
                    self.finish_target();
                }
                "--comment" if self.module.as_deref() == Some("comment") => {
                    let Some(mut comment) = take_value(words, &mut i, &mut negated) else {
                        return Err(missing_value(option, None));
                    };
                    // Upstream's hand-written test data leaves multi-word comments
                    // unquoted: the words up to the next option belong to it.
                    if !word_was_quoted(words, i) {
                        while let Some(next) = words.get(i) {
                            if next.text.starts_with('-') || next.text == "!" {
                                break;
                            }
                            comment.push(' ');
                            comment.push_str(&next.text);
                            i += 1;
                        }
                    }
                    self.comment = Some(comment);
                }
                _ => {
                    if needs_value(option) && !next_is_value(words, i) {
                        return Err(missing_value(option, words.get(i)));
                    }
                    // A flag, a stray word, or an option of a module the
                    // tracer does not know, with or without a value.
                    let value = if is_flag(option) || !option.starts_with('-') || !next_is_value(words, i) {
                        None
                    } else {
                        take_value(words, &mut i, &mut negated)
                    };
                    self.module_option(option, value, negated);
                }
            }
            negated = false;
        }
        self.end_module();
        if self.target_name.is_some() {
            self.finish_target();
        }
        Ok(())
    }

    /// What the words after the target may be.
    fn target_options(&self) -> TargetOptions {
        match (&self.target, self.target_name.as_deref()) {
            (_, Some(name)) => {
                known_target_options(name).map_or(TargetOptions::Extension, TargetOptions::Known)
            }
            (Target::Chain(_) | Target::Goto(_), None) => TargetOptions::Chain,
            (_, None) => TargetOptions::Known(&[]),
        }
    }

    /// Reads the word at `i`, which follows the target, with the arguments
    /// it takes.
    fn target_word(&mut self, words: &[Word], i: &mut usize) -> Result<(), RuleProblem> {
        let Some(word) = words.get(*i) else {
            return Ok(());
        };
        *i += 1;
        let text = word.text.to_string();
        let name = || self.jumped_to.clone();
        let stray = |parser: &Parser| RuleProblem::StrayWord {
            word: text.clone(),
            after: parser.target_written.clone().unwrap_or_default(),
            target: name(),
        };
        let option = looks_like_option(word);
        match self.target_options() {
            TargetOptions::Known(known) if option => {
                let Some(&(_, arity)) = known.iter().find(|(o, _)| *o == text) else {
                    return Err(RuleProblem::NotATargetOption {
                        option: text,
                        target: name(),
                        known: known.iter().map(|(o, _)| *o).collect(),
                    });
                };
                let mut arguments = Vec::new();
                for _ in 0..arity {
                    match words.get(*i) {
                        Some(value) if can_be_argument(value) => {
                            arguments.push(value.text.to_string());
                            *i += 1;
                        }
                        other => return Err(missing_value(&text, other)),
                    }
                }
                self.write_target(&text, &arguments);
                self.target_options.push((text, arguments.into_iter().next()));
                self.finish_target();
            }
            TargetOptions::Chain if option && text.starts_with("--") => {
                // A chain takes no options: the name is a target the tracer
                // does not know (not every extension is in iptables' list).
                self.target_name = Some(name());
                return self.extension_option(text);
            }
            TargetOptions::Extension if option => return self.extension_option(text),
            TargetOptions::Extension if self.spare_arguments > 0 => {
                self.spare_arguments -= 1;
                self.write_target("", std::slice::from_ref(&text));
                if let Some((_, value)) = self.target_options.last_mut() {
                    match value {
                        Some(value) => {
                            value.push(' ');
                            value.push_str(&text);
                        }
                        None => *value = Some(text),
                    }
                }
                self.finish_target();
            }
            TargetOptions::Known(_) | TargetOptions::Chain | TargetOptions::Extension => {
                return Err(stray(self));
            }
        }
        Ok(())
    }

    /// An option of a target the tracer does not know, as written.
    fn extension_option(&mut self, option: String) -> Result<(), RuleProblem> {
        self.spare_arguments = extension_arguments(&option);
        self.write_target(&option, &[]);
        self.target_options.push((option, None));
        self.finish_target();
        Ok(())
    }

    /// Appends words to the target as written, for errors.
    fn write_target(&mut self, option: &str, arguments: &[String]) {
        if let Some(written) = self.target_written.as_mut() {
            for word in std::iter::once(option).chain(arguments.iter().map(String::as_str)) {
                if !word.is_empty() {
                    written.push(' ');
                    written.push_str(word);
                }
            }
        }
    }

    fn module_option(&mut self, option: &str, value: Option<String>, negated: bool) {
        let module = self.module.clone().unwrap_or_default();
        let unknown = |option: &str, value: &Option<String>| {
            let bang = if negated { "! " } else { "" };
            match value {
                Some(v) => Match::Unknown(format!("{bang}{option} {v}")),
                None => Match::Unknown(format!("{bang}{option}")),
            }
        };
        if let Some(gathered) = self.gathered.as_mut() {
            gathered.negated |= negated;
            gathered.options.push((option.to_string(), value));
            return;
        }
        let v = value.as_deref().unwrap_or_default();
        let parsed = match (module.as_str(), option) {
            // `-p tcp --dport 80` loads the tcp module implicitly.
            (m, "--dport" | "--destination-port") if m != "multiport" => {
                parse_port_range(v).map(|range| Match::DestinationPort { range, negated })
            }
            (m, "--sport" | "--source-port") if m != "multiport" => {
                parse_port_range(v).map(|range| Match::SourcePort { range, negated })
            }
            ("multiport", "--dports" | "--destination-ports" | "--sports" | "--source-ports" | "--ports") => {
                let field = match option {
                    "--dports" | "--destination-ports" => PortField::Destination,
                    "--sports" | "--source-ports" => PortField::Source,
                    _ => PortField::Either,
                };
                v.split(',')
                    .map(parse_port_range)
                    .collect::<Option<Vec<_>>>()
                    .map(|ranges| Match::Multiport {
                        field,
                        ranges,
                        negated,
                    })
            }
            ("addrtype", "--src-type" | "--dst-type") if v == "LOCAL" => Some(Match::AddrTypeLocal {
                source: option == "--src-type",
                negated,
            }),
            ("mark", "--mark") => parse_value_mask(v).map(|(value, mask)| Match::Mark {
                value,
                mask: mask.unwrap_or(u32::MAX),
                negated,
            }),
            ("conntrack", "--ctstate") | ("state", "--state") => Some(Match::Conntrack {
                states: v.split(',').map(|s| s.trim().to_ascii_uppercase()).collect(),
                negated,
            }),
            ("nfacct", "--nfacct-name") => Some(Match::Nfacct { name: v.to_string() }),
            ("physdev", "--physdev-is-in") if value.is_none() => Some(Match::PhysdevIsIn { negated }),
            _ => None,
        };
        self.matches
            .push(parsed.unwrap_or_else(|| unknown(option, &value)));
    }

    /// Ends a gathered `-m recent` / `-m statistic` instance.
    fn end_module(&mut self) {
        let Some(gathered) = self.gathered.take() else {
            return;
        };
        let module = self.module.clone().unwrap_or_default();
        let written = || {
            let mut text = format!("-m {module}");
            if gathered.negated {
                text.push_str(" !");
            }
            for (option, value) in &gathered.options {
                text.push(' ');
                text.push_str(option);
                if let Some(value) = value {
                    text.push(' ');
                    text.push_str(value);
                }
            }
            Match::Unknown(text)
        };
        let get = |name: &str| {
            gathered
                .options
                .iter()
                .find(|(o, _)| o == name)
                .map(|(_, v)| v.clone().unwrap_or_default())
        };
        let has = |name: &str| gathered.options.iter().any(|(o, _)| o == name);
        let parsed = if module == "statistic" {
            let random = get("--mode").is_some_and(|m| m == "random");
            let allowed = gathered
                .options
                .iter()
                .all(|(o, _)| matches!(o.as_str(), "--mode" | "--probability"));
            match get("--probability").and_then(|p| p.parse::<f64>().ok()) {
                Some(p) if random && allowed && p.is_finite() => {
                    let q = quantize_probability(p);
                    Some(Match::Statistic {
                        probability: if gathered.negated { 1.0 - q } else { q },
                    })
                }
                _ => None,
            }
        } else {
            let allowed = gathered.options.iter().all(|(o, _)| {
                matches!(
                    o.as_str(),
                    "--name"
                        | "--rcheck"
                        | "--update"
                        | "--set"
                        | "--remove"
                        | "--seconds"
                        | "--reap"
                        | "--mask"
                        | "--rsource"
                        | "--rdest"
                )
            });
            let actions: Vec<RecentAction> = [
                ("--rcheck", RecentAction::Check),
                ("--update", RecentAction::Update),
                ("--set", RecentAction::Set),
                ("--remove", RecentAction::Remove),
            ]
            .into_iter()
            .filter(|(o, _)| has(o))
            .map(|(_, a)| a)
            .collect();
            let seconds = match get("--seconds") {
                Some(s) => s.parse::<u64>().ok().map(Some),
                None => Some(None),
            };
            match (actions.as_slice(), seconds) {
                ([action], Some(seconds)) if allowed && !has("--rdest") => Some(Match::Recent {
                    name: get("--name").unwrap_or_else(|| "DEFAULT".to_string()),
                    action: *action,
                    seconds,
                    reap: has("--reap"),
                    negated: gathered.negated,
                }),
                _ => None,
            }
        };
        self.matches.push(parsed.unwrap_or_else(written));
    }

    fn start_target(&mut self, option: &str, name: &str) {
        self.target_options.clear();
        self.target_name = None;
        self.target_written = Some(format!("{option} {name}"));
        self.jumped_to = name.to_string();
        self.in_target = true;
        self.spare_arguments = 0;
        let goto = matches!(option, "-g" | "--goto");
        self.target = match name {
            "ACCEPT" => Target::Accept,
            "DROP" => Target::Drop,
            "RETURN" => Target::Return,
            _ if is_builtin_target(name) => {
                self.target_name = Some(name.to_string());
                Target::Unknown(name.to_string())
            }
            _ if goto => Target::Goto(name.to_string()),
            _ => Target::Chain(name.to_string()),
        };
        if self.target_name.is_some() {
            self.finish_target();
        }
    }

    /// Whether `option`, met among matches after the target, is the target's
    /// (`iptables` takes options in any order).
    fn is_target_option(&self, option: &str) -> bool {
        match self.target_options() {
            TargetOptions::Known(known) => known.iter().any(|(o, _)| *o == option),
            TargetOptions::Extension => option.starts_with("--") && option != "--comment",
            TargetOptions::Chain => false,
        }
    }

    /// Rebuilds the target from its name and the options seen so far.
    fn finish_target(&mut self) {
        let Some(name) = self.target_name.as_deref() else {
            return;
        };
        let get = |wanted: &str| {
            self.target_options
                .iter()
                .find(|(o, _)| o == wanted)
                .and_then(|(_, v)| v.clone())
        };
        let has = |wanted: &str| self.target_options.iter().any(|(o, _)| o == wanted);
        let written = || {
            let mut text = name.to_string();
            for (option, value) in &self.target_options {
                text.push(' ');
                text.push_str(option);
                if let Some(value) = value {
                    text.push(' ');
                    text.push_str(value);
                }
            }
            Target::Unknown(text)
        };
        let mark = || -> Option<Target> {
            let [(option, Some(value))] = self.target_options.as_slice() else {
                return None;
            };
            let (value, mask) = parse_value_mask(value)?;
            let (value, mask) = match option.as_str() {
                "--set-xmark" => (value, mask.unwrap_or(u32::MAX)),
                "--set-mark" => (value, mask.unwrap_or(u32::MAX) | value),
                "--or-mark" if mask.is_none() => (value, value),
                "--xor-mark" if mask.is_none() => (value, 0),
                "--and-mark" if mask.is_none() => (0, !value),
                _ => return None,
            };
            Some(Target::Mark { value, mask })
        };
        let target = match name {
            "REJECT" => Some(Target::Reject),
            "MARK" => mark(),
            "MASQUERADE" if !has("--to-ports") => Some(Target::Masquerade {
                random_fully: has("--random-fully"),
            }),
            "DNAT" => get("--to-destination").map(|to| Target::Dnat { to }),
            "SNAT" => get("--to-source").map(|to| Target::Snat { to }),
            _ => None,
        };
        self.target = target.unwrap_or_else(written);
    }
}

/// Takes an option's value at `i`, possibly preceded by an old-style `!`
/// (`--dst-type ! LOCAL`).
fn take_value(words: &[Word], i: &mut usize, negated: &mut bool) -> Option<String> {
    if words.get(*i).is_some_and(|w| w.text == "!" && !w.quoted) {
        *negated = !*negated;
        *i += 1;
    }
    let value = words.get(*i).map(|w| w.text.to_string());
    if value.is_some() {
        *i += 1;
    }
    value
}

/// [`take_value`] for an option that must have a value.
fn required_value(
    words: &[Word],
    i: &mut usize,
    negated: &mut bool,
    option: &str,
) -> Result<String, RuleProblem> {
    if !next_is_value(words, *i) {
        return Err(missing_value(option, words.get(*i)));
    }
    take_value(words, i, negated).ok_or_else(|| missing_value(option, None))
}

fn missing_value(option: &str, found: Option<&Word>) -> RuleProblem {
    RuleProblem::MissingValue {
        option: option.to_string(),
        found: found.map(|w| w.text.to_string()),
    }
}

/// Whether the word at `i` (after an optional `!`) can be an option's value.
fn next_is_value(words: &[Word], i: usize) -> bool {
    let is_value = |w: &Word| w.quoted || !w.text.starts_with('-');
    match words.get(i) {
        Some(w) if w.text == "!" && !w.quoted => words.get(i + 1).is_some_and(is_value),
        Some(w) => is_value(w),
        None => false,
    }
}

/// Whether the value just taken (the word before index `next`) was quoted.
fn word_was_quoted(words: &[Word], next: usize) -> bool {
    next.checked_sub(1)
        .and_then(|i| words.get(i))
        .is_some_and(|w| w.quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> ParsedRule {
        ParsedRule::parse(line).expect("a rule")
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    #[test]
    fn restore_order_and_iptables_save_order_are_the_same_rule() {
        let pairs = [
            (
                r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
                r#"-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
            ),
            (
                "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
                "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            ),
            (
                "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
                "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            ),
            (
                "-A KUBE-SEP-A -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-A -s 10.180.0.1/32 -m comment --comment ns1/svc1:p80 -j KUBE-MARK-MASQ",
            ),
            (
                r#"-A KUBE-SVC-X -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A"#,
                r#"-A KUBE-SVC-X -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A"#,
            ),
            (
                "-A KUBE-SEP-A -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-A --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
                "-A KUBE-SEP-A -p tcp -m comment --comment ns1/svc1:p80 -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.180.0.1:80",
            ),
            (
                r#"-A KUBE-SVC-X -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-A"#,
                r#"-A KUBE-SVC-X -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-A"#,
            ),
            (
                r#"-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"#,
                r#"-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"#,
            ),
            (
                r#"-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT"#,
                r#"-A KUBE-SERVICES -d 172.30.0.46/32 -p tcp -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"#,
            ),
            (
                r#"-A KUBE-EXT-X -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"#,
                r#"-A KUBE-EXT-X -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"#,
            ),
            (
                "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            ),
            (
                r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#,
                r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#,
            ),
            (
                "-A KUBE-SEP-B -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [fd00::1]:80",
                "-A KUBE-SEP-B -p tcp -m comment --comment ns1/svc1:p80 -m tcp -j DNAT --to-destination [fd00::1]:80",
            ),
        ];
        for (restore, save) in pairs {
            let (a, b) = (parse(restore), parse(save));
            assert!(a.same_rule(&b), "{restore}\n{save}\n{a:#?}\n{b:#?}");
            assert_eq!(a.unknown_matches().count(), 0, "{restore}");
            assert!(!matches!(a.target, Target::Unknown(_)), "{restore}");
        }
    }

    #[test]
    fn matches_and_targets_are_read() {
        let cases: &[(&str, &[Match], Target)] = &[
            (
                "-A X ! -i cni0 -o veth+ ! -p udp -j ACCEPT",
                &[
                    Match::InInterface {
                        name: "cni0".into(),
                        negated: true,
                    },
                    Match::OutInterface {
                        name: "veth+".into(),
                        negated: false,
                    },
                    Match::Protocol {
                        name: "udp".into(),
                        negated: true,
                    },
                ],
                Target::Accept,
            ),
            (
                "-A X -p 6 -m tcp ! --dport 30000:32767 -m addrtype ! --dst-type LOCAL -g Y",
                &[
                    Match::Protocol {
                        name: "tcp".into(),
                        negated: false,
                    },
                    Match::DestinationPort {
                        range: PortRange {
                            first: 30000,
                            last: 32767,
                        },
                        negated: true,
                    },
                    Match::AddrTypeLocal {
                        source: false,
                        negated: true,
                    },
                ],
                Target::Goto("Y".into()),
            ),
            (
                "-A X -s 10.0.0.0/255.0.0.0 -m addrtype --src-type ! LOCAL -m mark --mark 16384 -j MARK --set-mark 0x1/0xf",
                &[
                    Match::Source {
                        net: net("10.0.0.0/8"),
                        negated: false,
                    },
                    Match::AddrTypeLocal {
                        source: true,
                        negated: true,
                    },
                    Match::Mark {
                        value: 0x4000,
                        mask: u32::MAX,
                        negated: false,
                    },
                ],
                Target::Mark { value: 1, mask: 0xf },
            ),
            (
                "-A X -m state --state NEW,established -m nfacct --nfacct-name c -m multiport --dports 80,443:444 -j SNAT --to-source 1.2.3.4",
                &[
                    Match::Conntrack {
                        states: vec!["NEW".into(), "ESTABLISHED".into()],
                        negated: false,
                    },
                    Match::Nfacct { name: "c".into() },
                    Match::Multiport {
                        field: PortField::Destination,
                        ranges: vec![
                            PortRange { first: 80, last: 80 },
                            PortRange {
                                first: 443,
                                last: 444,
                            },
                        ],
                        negated: false,
                    },
                ],
                Target::Snat { to: "1.2.3.4".into() },
            ),
            (
                "-A X -m statistic --mode random ! --probability 0.25",
                &[Match::Statistic { probability: 0.75 }],
                Target::None,
            ),
        ];
        for (line, matches, target) in cases {
            let rule = parse(line);
            assert_eq!(&rule.matches, matches, "{line}");
            assert_eq!(&rule.target, target, "{line}");
        }
    }

    #[test]
    fn comments_quoted_unquoted_and_multi_word() {
        let cases = [
            (
                "-A INPUT -m comment --comment kubernetes health check service ports -j KUBE-NODEPORTS",
                "kubernetes health check service ports",
            ),
            (
                "-A KUBE-SEP-X -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
                "ns1/svc1:p80",
            ),
            (
                r#"-A X -m comment --comment "a \"quoted\" word" -j Y"#,
                r#"a "quoted" word"#,
            ),
            (r#"-A X -m comment --comment "x y" z -j Y"#, "x y"),
        ];
        for (line, comment) in cases {
            let rule = parse(line);
            assert_eq!(rule.comment.as_deref(), Some(comment), "{line}");
            assert!(matches!(rule.target, Target::Chain(_)), "{line}");
        }
        // The unquoted words after a quoted comment are not part of it.
        assert_eq!(
            parse(r#"-A X -m comment --comment "x y" z -j Y"#).matches,
            [Match::Unknown("z".into())]
        );
    }

    #[test]
    fn unknown_matches_and_targets_are_kept() {
        let cases = [
            ("-A X -m set --match-set kube src -j DROP", "-m set"),
            ("-A X -m limit --limit 5/min -j LOG --log-prefix x", "-m limit"),
            (
                "-A X -m statistic --mode nth --every 2 --packet 0 -j Y",
                "-m statistic",
            ),
            ("-A X -m recent --name A --rcheck --hitcount 3 -j Y", "-m recent"),
            ("-A X -m addrtype --dst-type UNICAST -j Y", "--dst-type UNICAST"),
            ("-A X -d not-an-address -j Y", "-d not-an-address"),
            ("-A X -m tcp --dport http -j Y", "--dport http"),
            ("-A X -m connmark --mark 1 -j Y", "-m connmark"),
        ];
        for (line, unknown) in cases {
            let rule = parse(line);
            let found: Vec<&str> = rule.unknown_matches().collect();
            assert!(found.iter().any(|u| u.starts_with(unknown)), "{line}: {found:?}");
        }
        assert_eq!(
            parse("-A X -j LOG --log-prefix x").target,
            Target::Unknown("LOG --log-prefix x".into())
        );
        assert_eq!(
            parse("-A X -j MASQUERADE --to-ports 80").target,
            Target::Unknown("MASQUERADE --to-ports 80".into())
        );
    }

    #[test]
    fn other_softwares_rules_still_load() {
        let cases = [
            ("-A FORWARD -m physdev --physdev-is-in -j ACCEPT", "", "ACCEPT"),
            (
                "-A cali-INPUT -m set --match-set cali40all-hosts-net src -j RETURN",
                "-m set",
                "RETURN",
            ),
            (
                "-A INPUT -m pkttype --pkt-type multicast -j ACCEPT",
                "-m pkttype",
                "ACCEPT",
            ),
            (
                "-A PREROUTING -m rpfilter --invert -j DROP",
                "-m rpfilter",
                "DROP",
            ),
            (
                "-A INPUT -m limit --limit 5/s --limit-burst 10 -j LOG --log-prefix \"in: \" --log-level 4",
                "-m limit",
                "LOG --log-prefix in:  --log-level 4",
            ),
            ("-A PREROUTING -j CT --notrack", "", "CT --notrack"),
            ("-A cali-PREROUTING -j CT --zone 1", "", "CT --zone 1"),
            (
                "-A PREROUTING -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1",
                "",
                "TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1",
            ),
            (
                "-A POSTROUTING -p udp -j CHECKSUM --checksum-fill",
                "",
                "CHECKSUM --checksum-fill",
            ),
            (
                "-A X -j SET --add-set cali-set src --exist",
                "",
                "SET --add-set cali-set src --exist",
            ),
            ("-A X -j NOTRACK", "", "NOTRACK"),
            (
                "-A X -j SOME-EXTENSION --its-option 3",
                "",
                "SOME-EXTENSION --its-option 3",
            ),
            (
                "-A X -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff",
                "",
                "CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff",
            ),
            ("-A X -j ACCEPT -m comment --comment late", "", "ACCEPT"),
            ("-A X -c 1 2 -j DROP", "", "DROP"),
        ];
        for (line, unknown, target) in cases {
            let rule = ParsedRule::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if !unknown.is_empty() {
                assert!(
                    rule.unknown_matches().any(|m| m.starts_with(unknown)),
                    "{line}: {rule:?}"
                );
            }
            let written = match &rule.target {
                Target::Unknown(t) => t.clone(),
                other => format!("{other:?}").to_uppercase(),
            };
            assert_eq!(written, target, "{line}");
        }
        assert_eq!(
            parse("-A X -j ACCEPT -m comment --comment late")
                .comment
                .as_deref(),
            Some("late")
        );
        assert!(parse("-A X -c 1 2 -j DROP").matches.is_empty());
    }

    #[test]
    fn structure_iptables_restore_refuses_is_an_error() {
        let problem = |line: &str| match ParsedRule::parse(line) {
            Err(TraceError::Rule { problem, .. }) => problem.to_string(),
            other => panic!("{line}: {other:?}"),
        };
        let cases = [
            (
                "-A KUBE-SERVICES -p tcp -j",
                "`-j` names no target, but the rule ends there",
            ),
            ("-A X -g", "`-g` names no target, but the rule ends there"),
            (
                "-A X -j --to-destination 1.2.3.4",
                "`-j` names no target, but `--to-destination` follows it",
            ),
            (
                "-A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination 10.0.0.5:80 // here",
                "`//` after `-j DNAT --to-destination 10.0.0.5:80` is neither an option of target DNAT nor an argument of one",
            ),
            (
                "-A X -j KUBE-SVC-A here",
                "`here` after `-j KUBE-SVC-A` is neither an option of target KUBE-SVC-A nor an argument of one",
            ),
            (
                "-A X -j ACCEPT now",
                "`now` after `-j ACCEPT` is neither an option of target ACCEPT nor an argument of one",
            ),
            (
                "-A X -j REJECT --reject-with icmp-port-unreachable twice",
                "`twice` after `-j REJECT --reject-with icmp-port-unreachable` is neither an option of target REJECT nor an argument of one",
            ),
            (
                "-A X -j MASQUERADE --random-fully --to-destination 1.2.3.4",
                "`--to-destination` is not an option of target MASQUERADE (it takes --to-ports, --random, --random-fully)",
            ),
            (
                "-A X -j DROP --reject-with x",
                "`--reject-with` is not an option of target DROP (it takes none)",
            ),
            (
                "-A X -j CT --notrack on and on",
                "`and` after `-j CT --notrack on` is neither an option of target CT nor an argument of one",
            ),
            (
                "-A X -p tcp -m tcp --dport",
                "`--dport` needs a value, but the rule ends there",
            ),
            (
                "-A X -p tcp --dport -j X",
                "`--dport` needs a value, but `-j` follows it",
            ),
            (
                "-A X -j DNAT --to-destination",
                "`--to-destination` needs a value, but the rule ends there",
            ),
            (
                "-A X -j MARK --or-mark -m x",
                "`--or-mark` needs a value, but `-m` follows it",
            ),
            ("-A X -d", "`-d` needs a value, but the rule ends there"),
            ("-A X -m", "`-m` needs a value, but the rule ends there"),
            (
                "-A X -m comment --comment",
                "`--comment` needs a value, but the rule ends there",
            ),
            (
                "-A X -j A -j B",
                "a second target `-j B`: the rule already has `-j A`",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(problem(line), want, "{line}");
        }
    }

    #[test]
    fn odd_lines_never_panic() {
        let odd = [
            "",
            "!",
            "-A",
            "-A X",
            "-A X !",
            "-A X -j",
            "-A X -m",
            "-A X -m comment --comment",
            "-A X -m comment --comment \"unterminated",
            "-A X -s",
            "-A X ! ! -s 1.2.3.4",
            "-A X --dport 99999",
            "-A X -m mark --mark 0x/0x",
            "-A X -m statistic --probability nan",
            "-A X -m recent --set --rcheck",
            "-A X -j MARK",
            "-A X -j MARK --or-mark",
            "-A X -j DNAT",
            "-A X -j MARK --set-xmark 1/2 --or-mark 3",
            "-A X -p",
            "-A X garbage \u{0} \"\" \\\" ] [",
            "-A -j X",
            "garbage",
            "*nat",
            "-A X -m tcp --dport 9:1",
            "-A X -s 10.0.0.0/255.0.255.0",
        ];
        for line in odd {
            let _ = ParsedRule::parse(line);
            for cut in 0..line.len() {
                if let Some(prefix) = line.get(..cut) {
                    let _ = ParsedRule::parse(prefix);
                    let _ = ParsedRule::parse(&format!("-A X {prefix}"));
                }
            }
        }
        assert!(ParsedRule::parse("garbage").is_err());
        assert!(ParsedRule::parse("-A").is_err());
        assert_eq!(parse("-A X").target, Target::None);
    }
}
