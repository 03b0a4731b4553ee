//! nftables-mode traces in plain words: what each step means in kube-proxy's
//! nftables table.

use std::fmt::Write;

use chainsmith_nft_layout::chain_role;
use chainsmith_nft_tracer::{Action, Origin, Outcome, Step, Trace, Verdict};

fn rule_label(step: &Step) -> String {
    let mut label = match step.rule_index {
        Some(index) => format!("rule {index}"),
        None => "chain".to_string(),
    };
    if let Some(comment) = &step.comment {
        let _ = write!(label, " \"{comment}\"");
    }
    label
}

fn on_to(label: &str, to: &str) -> String {
    match chain_role(to) {
        Some(role) => format!("{label} matches: on to {to} ({role})"),
        None => format!("{label} matches: on to {to}"),
    }
}

/// One line for one step; `None` for steps not worth a line.
fn describe(step: &Step) -> Option<String> {
    let label = rule_label(step);
    Some(match &step.action {
        Action::Enter | Action::NotMatched => return None,
        Action::NatSkipped => "skipped: nat chains see only a connection's first packet, once".to_string(),
        Action::Matched => format!("{label} matches"),
        Action::MapHit { map, key, verdict } => format!("{label}: {key} is in {map}: {verdict}"),
        Action::MapMiss { map, key } => format!("{label}: {key} is not in {map}"),
        Action::Numgen { value, of, verdict } => format!(
            "{label}: random choice {value} of {of} ({:.1}%): {}",
            100.0 / f64::from(*of),
            verdict.as_deref().unwrap_or("no element, the rule ends")
        ),
        Action::Mark { from, to } => format!("{label}: mark 0x{from:x} -> 0x{to:x}"),
        Action::SetUpdate { set, key } => format!("{label}: {key} recorded in {set} (session affinity)"),
        Action::Jump { to } | Action::Goto { to } => on_to(&label, to),
        Action::Return => format!("{label}: return to the calling chain"),
        Action::EndOfChain => "no rule decided: back to the calling chain".to_string(),
        Action::EndOfBaseChain => "end of the base chain: accepted".to_string(),
        Action::Dnat { to } => format!("{label}: DNAT, the destination becomes {to}"),
        Action::Masquerade => format!("{label}: masquerade, the source becomes this node's address"),
        Action::Accept => format!("{label}: accept"),
        Action::Drop => format!("{label}: drop, the packet is discarded silently"),
        Action::Reject => format!("{label}: reject, the sender gets an error at once"),
    })
}

/// What a verdict-map lookup or a random choice found, when its verdict
/// moves on to a chain: said on the same line as the move.
fn lookup_detail(step: &Step) -> Option<String> {
    let moves = |verdict: &str| verdict.starts_with("goto ") || verdict.starts_with("jump ");
    match &step.action {
        Action::MapHit { map, key, verdict } if moves(verdict) => Some(format!("{key} is in {map}")),
        Action::Numgen {
            value,
            of,
            verdict: Some(verdict),
        } if moves(verdict) => Some(format!(
            "random choice {value} of {of} ({:.1}%)",
            100.0 / f64::from(*of)
        )),
        _ => None,
    }
}

fn write_steps(out: &mut String, steps: &[Step]) {
    let mut chain: Option<(&str, &str)> = None;
    let mut detail: Option<String> = None;
    for step in steps {
        if let Some(found) = lookup_detail(step) {
            detail = Some(found);
            continue;
        }
        let line = match (&step.action, detail.take()) {
            (Action::Jump { to } | Action::Goto { to }, Some(found)) => {
                let label = format!("{}: {found}", rule_label(step));
                on_to(&label, to).replacen(" matches:", ",", 1)
            }
            _ => match describe(step) {
                Some(line) => line,
                None => continue,
            },
        };
        let here = (step.hook.as_str(), step.chain.as_str());
        if chain != Some(here) {
            chain = Some(here);
            let _ = writeln!(out, "  {} {}", step.hook.as_str(), step.chain);
        }
        let _ = writeln!(out, "    {line}");
    }
}

/// The fate of one outcome in a sentence.
pub fn verdict(outcome: &Outcome) -> String {
    fate(outcome, outcome.nat_destination.map(|to| format!("sent to {to}")))
}

/// All outcomes in one sentence: when they differ only in the endpoint
/// chosen, the endpoints are listed with their chances.
pub fn summary(outcomes: &[Outcome]) -> String {
    let [first, rest @ ..] = outcomes else {
        return "no outcome".to_string();
    };
    if rest.is_empty() {
        return verdict(first);
    }
    let same_fate = |o: &Outcome| {
        o.verdict == first.verdict
            && o.masquerade == first.masquerade
            && o.nat_destination.is_some()
            && o.affinity_set.len() == first.affinity_set.len()
    };
    if first.nat_destination.is_none() || !rest.iter().all(same_fate) {
        return outcomes
            .iter()
            .map(|o| format!("{:.1}% {}", o.probability * 100.0, verdict(o)))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let choices: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.nat_destination
                .map(|to| format!("{to} ({:.1}%)", o.probability * 100.0))
        })
        .collect();
    fate(first, Some(format!("sent to one of {}", choices.join(", "))))
}

fn fate(outcome: &Outcome, destination: Option<String>) -> String {
    let mut parts = Vec::new();
    let translated = destination.is_some();
    if let Some(destination) = destination {
        parts.push(destination);
    }
    if outcome.masquerade {
        parts.push("masqueraded (the endpoint sees this node's address, not the client's)".to_string());
    } else if translated {
        parts.push("the client's address is kept".to_string());
    }
    if !outcome.affinity_set.is_empty() {
        parts.push(format!(
            "session affinity recorded in {}",
            outcome.affinity_set.join(", ")
        ));
    }
    parts.push(match &outcome.verdict {
        Verdict::Delivered => "delivered to this node".to_string(),
        Verdict::Forwarded | Verdict::Sent if translated => "delivered".to_string(),
        Verdict::Forwarded => "forwarded, not touched by kube-proxy's rules".to_string(),
        Verdict::Sent => "sent, not touched by kube-proxy's rules".to_string(),
        Verdict::Dropped { by } => {
            format!("dropped by {} rule {} (the client times out)", by.chain, by.index)
        }
        Verdict::Rejected { by } => format!(
            "rejected by {} rule {} (the client gets an error at once)",
            by.chain, by.index
        ),
    });
    parts.join(", ")
}

/// The whole trace as text a person can follow.
pub fn narrate(trace: &Trace) -> String {
    let mut out = String::new();
    let packet = &trace.packet;
    let origin = match &packet.origin {
        Origin::FromOutside { interface } => format!("arriving on {interface} (prerouting first)"),
        Origin::FromNode => "sent by this node itself (output first)".to_string(),
    };
    let _ = writeln!(
        out,
        "Packet: {} {} -> {}:{}, {origin}, connection state {}\n",
        packet.protocol.as_api(),
        packet.src,
        packet.dst,
        packet.dport,
        packet.conntrack.as_str()
    );
    crate::narrate::write_outcomes(
        &mut out,
        &trace.outcomes,
        |o| &o.path,
        |o| o.probability,
        verdict,
        write_steps,
    );
    out
}
