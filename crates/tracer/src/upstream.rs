//! Upstream kube-proxy's unit-test tracer (`tracePacket` in `proxier_test.go`),
//! exactly as the conformance suite's `check.py` implements it.
//!
//! It is not the kernel: it walks nat `KUBE-SERVICES`, collects every endpoint
//! of a probabilistic `KUBE-SVC-` chain instead of choosing one, and never
//! matches rules that depend on connection history (`--rcheck`, `--mark`,
//! `--ctstate`). Upstream asserts its packet flows in this form, so this is how
//! they are checked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use chainsmith_iptables::words;
use chainsmith_model::Protocol;

use crate::ruleset::Ruleset;

/// Upstream's result for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTrace {
    /// The appended targets (`--to-destination` values, `ACCEPT`, `DROP`,
    /// `REJECT`) joined with `", "`.
    pub output: String,
    /// Whether a rule jumping to `KUBE-MARK-MASQ` matched.
    pub masq: bool,
    /// Every rule that matched, in order.
    pub matched: Vec<String>,
    /// The walk gave up (after evaluating some 4 MiB of rule text), so
    /// `output` and `matched` are incomplete. Only a ruleset with a loop of
    /// jumps (which the kernel refuses) or exponentially many paths through
    /// its chains gets here; upstream's own tracer would never finish on those.
    pub gave_up: bool,
}

/// How much rule evaluation one trace may do: each rule evaluated costs its
/// length plus [`RULE_COST`] (its parse), which also bounds the text copied
/// into `matched`. Every jump is followed, so a loop of jumps, or a few chains
/// each jumping twice to the next, would otherwise take exponential time and
/// memory. A trace of kube-proxy's rules evaluates each about once; this is
/// some 30 000 of them (a tenth of a second).
const MAX_WORK: usize = 4 << 20;
/// The fixed part of the cost of evaluating one rule.
const RULE_COST: usize = 64;

/// The parameters upstream's test parser understands; `true` if they take a value.
const RULE_PARAMS: &[(&str, bool)] = &[
    ("-A", true),
    ("--comment", true),
    ("-p", true),
    ("-s", true),
    ("--src-type", true),
    ("--sport", true),
    ("-d", true),
    ("--dst-type", true),
    ("--dport", true),
    ("--match-set", true),
    ("-j", true),
    ("--random-fully", false),
    ("--probability", true),
    ("--to-destination", true),
    ("--rcheck", false),
    ("--mark", true),
    ("--ctstate", true),
    ("--name", true),
    ("--seconds", true),
    ("--set", false),
    ("--reap", false),
    ("--mode", true),
];

/// `{param: (negated, value)}`; flags get the value `"true"`.
type UpstreamRule = BTreeMap<String, (bool, String)>;

/// Upstream's non-strict rule parser: `-m MODULE` skipped, `!` negates the
/// next parameter, unknown words ignored; `None` where upstream fails.
fn parse_upstream_rule(rule: &str) -> Option<UpstreamRule> {
    let texts: Vec<Cow<str>> = words(rule).map(|w| w.text).collect();
    let words: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    if words.len() < 3 || words.first() != Some(&"-A") {
        return None;
    }
    let mut parsed = UpstreamRule::new();
    let mut negated = false;
    let mut w = 0;
    while let Some(&word) = words.get(w) {
        if word == "-m" && w + 1 < words.len() {
            w += 2;
            continue;
        }
        if word == "!" {
            negated = true;
            w += 1;
            continue;
        }
        match RULE_PARAMS.iter().find(|(p, _)| *p == word) {
            Some((_, true)) => {
                let value = words.get(w + 1)?;
                parsed.insert(word.to_string(), (negated, (*value).to_string()));
                w += 2;
            }
            Some((_, false)) => {
                parsed.insert(word.to_string(), (negated, "true".to_string()));
                w += 1;
            }
            None => w += 1,
        }
        negated = false;
    }
    Some(parsed)
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = match text.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(ip, _)| ip)?,
        None => text,
    };
    text.parse().ok()
}

/// `_addr_matches`: an address or a CIDR, `!` negates; unreadable never matches.
fn addr_matches((negated, value): &(bool, String), ip: &str) -> bool {
    let Some(ip) = parse_ip(ip) else {
        return false;
    };
    let matched = if value.contains('/') {
        match value.parse::<ipnet::IpNet>() {
            Ok(net) => net.trunc().contains(&ip),
            Err(_) => return false,
        }
    } else {
        match parse_ip(value) {
            Some(v) => v == ip,
            None => return false,
        }
    };
    matched != *negated
}

fn value_matches((negated, value): &(bool, String), s: &str) -> bool {
    (value == s) != *negated
}

struct Tracer<'a> {
    ruleset: &'a Ruleset,
    local_ips: &'a [IpAddr],
    src: String,
    protocol: &'static str,
    dport: String,
    out: Vec<String>,
    masq: bool,
    matched: Vec<String>,
    /// Work done so far, see [`MAX_WORK`].
    work: usize,
}

impl Tracer<'_> {
    fn is_local(&self, ip: &str) -> bool {
        parse_ip(ip).is_some_and(|ip| self.local_ips.contains(&ip))
    }

    fn rule_matches(&self, r: &UpstreamRule, dst_ip: &str) -> bool {
        if r.get("-s").is_some_and(|p| !addr_matches(p, &self.src)) {
            return false;
        }
        let src_type = if self.is_local(&self.src) {
            "LOCAL"
        } else {
            "not-matched"
        };
        if r.get("--src-type").is_some_and(|p| !value_matches(p, src_type)) {
            return false;
        }
        if r.get("-p").is_some_and(|p| !value_matches(p, self.protocol)) {
            return false;
        }
        if r.get("-d").is_some_and(|p| !addr_matches(p, dst_ip)) {
            return false;
        }
        let dst_type = if self.is_local(dst_ip) {
            "LOCAL"
        } else {
            "not-matched"
        };
        if r.get("--dst-type").is_some_and(|p| !value_matches(p, dst_type)) {
            return false;
        }
        if r.get("--dport").is_some_and(|p| !value_matches(p, &self.dport)) {
            return false;
        }
        // Anything depending on history or state never matches.
        !(r.contains_key("--rcheck") || r.contains_key("--mark") || r.contains_key("--ctstate"))
    }

    /// Returns whether the chain "terminated" (appended an output).
    fn run(&mut self, table: &str, chain: &str, dst_ip: &str, depth: usize) -> bool {
        let Some(chain) = self.ruleset.chain(table, chain) else {
            return false;
        };
        if depth > 64 {
            return false;
        }
        for rule in &chain.rules {
            self.work += RULE_COST + rule.text.len();
            if self.work > MAX_WORK {
                return false;
            }
            let Some(r) = parse_upstream_rule(&rule.text) else {
                continue;
            };
            let Some((_, target)) = r.get("-j") else {
                continue;
            };
            if !self.rule_matches(&r, dst_ip) {
                continue;
            }
            self.matched.push(rule.text.clone());
            match target.as_str() {
                "KUBE-MARK-MASQ" => self.masq = true,
                "ACCEPT" | "REJECT" | "DROP" => {
                    self.out.push(target.clone());
                    return true;
                }
                "DNAT" => {
                    let to = r.get("--to-destination").map(|(_, v)| v.clone());
                    self.out.push(to.unwrap_or_default());
                    return true;
                }
                other => {
                    if self.run(table, other, dst_ip, depth + 1) && !r.contains_key("--probability") {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// Upstream's test tracer with the matched rules; see [`trace_upstream_test`].
pub fn trace_upstream_test_detailed(
    ruleset: &Ruleset,
    local_ips: &[IpAddr],
    src: IpAddr,
    protocol: Protocol,
    dst: IpAddr,
    dport: u16,
) -> UpstreamTrace {
    let mut tracer = Tracer {
        ruleset,
        local_ips,
        src: src.to_string(),
        protocol: protocol.as_iptables(),
        dport: dport.to_string(),
        out: Vec::new(),
        masq: false,
        matched: Vec::new(),
        work: 0,
    };
    let dst = dst.to_string();
    tracer.run("nat", "KUBE-SERVICES", &dst, 0);
    let dst2 = match tracer.out.first() {
        Some(first) if first.starts_with('[') => first
            .get(1..)
            .and_then(|rest| rest.split_once(']'))
            .map(|(ip, _)| ip.to_string())
            .unwrap_or_default(),
        Some(first) => first
            .rsplit_once(':')
            .map_or(first.as_str(), |(ip, _)| ip)
            .to_string(),
        None => dst,
    };
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ] {
        tracer.run("filter", chain, &dst2, 0);
    }
    UpstreamTrace {
        output: tracer.out.join(", "),
        masq: tracer.masq,
        matched: tracer.matched,
        gave_up: tracer.work > MAX_WORK,
    }
}

/// Upstream's unit-test tracer (`check.py` `trace`): walk nat `KUBE-SERVICES`
/// (`-j KUBE-MARK-MASQ` sets masq and goes on; ACCEPT/REJECT/DROP and DNAT's
/// `--to-destination` are appended and stop; other chains are entered and stop
/// the walk unless the jumping rule has `--probability`; rules with `--rcheck`,
/// `--mark` or `--ctstate` never match), then, with the first DNAT's address as
/// destination, filter `KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`,
/// `KUBE-NODEPORTS` and `KUBE-PROXY-FIREWALL`. Returns the outputs joined with
/// `", "` and whether the packet was marked for masquerading.
pub fn trace_upstream_test(
    ruleset: &Ruleset,
    local_ips: &[IpAddr],
    src: IpAddr,
    protocol: Protocol,
    dst: IpAddr,
    dport: u16,
) -> (String, bool) {
    let trace = trace_upstream_test_detailed(ruleset, local_ips, src, protocol, dst, dport);
    (trace.output, trace.masq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parser_semantics() {
        let r = parse_upstream_rule(
            r#"-A KUBE-SVC-X -m comment --comment "a b" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
        )
        .expect("parses");
        assert_eq!(r.get("--comment"), Some(&(false, "a b".to_string())));
        assert_eq!(r.get("-s"), Some(&(true, "10.0.0.0/8".to_string())));
        assert_eq!(r.get("-j"), Some(&(false, "KUBE-MARK-MASQ".to_string())));
        assert!(parse_upstream_rule("-A X").is_none());
        assert!(parse_upstream_rule("-A X -j").is_none());
        assert!(addr_matches(&(false, "10.0.0.0/8".into()), "10.1.2.3"));
        assert!(!addr_matches(&(false, "10.0.0.0/8".into()), "fd00::1"));
        assert!(addr_matches(&(false, "fd00::1".into()), "[fd00::1]"));
    }

    /// Found by fuzzing (`fuzz/` target `dump`): every jump is followed, so a
    /// loop with two ways round took 2^64 steps, and so does a chain of chains
    /// each jumping twice to the next (which the kernel accepts).
    #[test]
    fn gives_up_on_exponentially_many_paths() {
        let looped = "*nat\n:KUBE-SERVICES - [0:0]\n:A - [0:0]\n-A KUBE-SERVICES -j A\n\
            -A A -m statistic --mode random --probability 0.5 -j A\n\
            -A A -m statistic --mode random --probability 0.5 -j A\nCOMMIT\n";
        let mut doubling = String::from("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j C0\n");
        for i in 0..40 {
            doubling.push_str(&format!(":C{i} - [0:0]\n"));
            for _ in 0..2 {
                let next = i + 1;
                doubling.push_str(&format!(
                    "-A C{i} -m statistic --mode random --probability 0.5 -j C{next}\n"
                ));
            }
        }
        doubling.push_str(":C40 - [0:0]\n-A C40 -j DNAT --to-destination 10.180.0.1:80\nCOMMIT\n");
        let ip = |text: &str| -> IpAddr { text.parse().expect("ip") };
        let trace_dump = |text: &str| {
            let ruleset = Ruleset::from_dump(text).expect("loads");
            trace_upstream_test_detailed(
                &ruleset,
                &[],
                ip("10.0.0.2"),
                Protocol::Tcp,
                ip("172.30.0.41"),
                80,
            )
        };
        for text in [looped, doubling.as_str()] {
            let trace = trace_dump(text);
            assert!(trace.gave_up, "{text}");
            assert!(trace.matched.len() <= MAX_WORK / RULE_COST);
        }
        let fine = "*nat\n:KUBE-SERVICES - [0:0]\n:A - [0:0]\n-A KUBE-SERVICES -j A\n\
            -A A -j DNAT --to-destination 10.180.0.1:80\nCOMMIT\n";
        let trace = trace_dump(fine);
        assert_eq!((trace.output.as_str(), trace.gave_up), ("10.180.0.1:80", false));
    }
}
