//! Traces in plain words: what each step means in kube-proxy's rule layout.

use std::fmt::Write;

use chainsmith_layout::Layout;
use chainsmith_tracer::{Action, Origin, Outcome, Step, Trace, Verdict};

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

/// One line for one step; `None` for steps not worth a line.
fn describe(step: &Step, layout: Layout) -> Option<String> {
    let label = rule_label(step);
    Some(match &step.action {
        Action::Enter => return None,
        Action::Jump { to } | Action::Goto { to } => match layout.chain_role(to) {
            Some(role) => format!("{label} matches: on to {to} ({role})"),
            None => format!("{label} matches: on to {to}"),
        },
        Action::Return => format!("{label}: RETURN to the calling chain"),
        Action::EndOfChain => return None,
        Action::Policy { policy } => format!("no rule decided; the chain's policy is {policy}"),
        Action::Matched => format!("{label} matches but does nothing (the end of the road in this chain)"),
        Action::NotTaken => format!(
            "{label}: not chosen on this branch ({:.1}% of connections go past it)",
            step.probability.map(|p| p * 100.0).unwrap_or_default()
        ),
        Action::Mark { from, to } => format!("{label}: mark 0x{from:x} -> 0x{to:x}"),
        Action::Dnat { to } => format!("{label}: DNAT, the destination becomes {to}"),
        Action::Snat { to } => format!("{label}: SNAT, the source becomes {to}"),
        Action::Masquerade => format!("{label}: masquerade, the source becomes this node's address"),
        Action::Accept => format!("{label}: ACCEPT"),
        Action::Drop => format!("{label}: DROP, the packet is discarded silently"),
        Action::Reject => format!("{label}: REJECT, the sender gets an error at once"),
        Action::Unmodelled { target } => {
            format!("{label}: target {target} is not modelled; assumed to do nothing")
        }
    })
}

fn write_steps(out: &mut String, steps: &[Step], layout: Layout) {
    let mut chain: Option<(&str, &str)> = None;
    for step in steps {
        let Some(line) = describe(step, layout) else {
            continue;
        };
        if chain != Some((step.table.as_str(), step.chain.as_str())) {
            chain = Some((&step.table, &step.chain));
            let _ = writeln!(out, "  {} {}", step.table, step.chain);
        }
        let _ = writeln!(out, "    {line}");
    }
}

/// The fate of one outcome in a sentence.
pub fn verdict(outcome: &Outcome) -> String {
    let destination = outcome.nat_destination.as_ref().map(|to| format!("sent to {to}"));
    fate(outcome, destination)
}

/// All outcomes in one sentence: when they differ only in the endpoint chosen
/// (a load-balanced Service), the endpoints are listed with their chances.
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
            && o.affinity_set.len() == first.affinity_set.len()
            && o.nat_destination.is_some() == first.nat_destination.is_some()
    };
    if !rest.iter().all(same_fate) || first.nat_destination.is_none() {
        return outcomes
            .iter()
            .map(|o| format!("{:.1}% {}", o.probability * 100.0, verdict(o)))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let choices: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{} ({:.1}%)",
                o.nat_destination.as_deref().unwrap_or_default(),
                o.probability * 100.0
            )
        })
        .collect();
    fate(first, Some(format!("sent to one of {}", choices.join(", "))))
}

fn fate(outcome: &Outcome, destination: Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(destination) = destination {
        parts.push(destination);
    }
    if outcome.masquerade {
        parts.push("masqueraded (the endpoint sees this node's address, not the client's)".to_string());
    } else if outcome.nat_destination.is_some() {
        parts.push("the client's address is kept".to_string());
    }
    if !outcome.affinity_set.is_empty() {
        parts.push(format!(
            "session affinity recorded in {}",
            outcome.affinity_set.join(", ")
        ));
    }
    let end = match outcome.verdict {
        Verdict::Accept | Verdict::Pass if outcome.nat_destination.is_some() => "delivered",
        Verdict::Accept => "accepted",
        Verdict::Pass => "not touched by kube-proxy's rules",
        Verdict::Drop => "dropped (the client times out)",
        Verdict::Reject => "rejected (the client gets an error at once)",
    };
    parts.push(end.to_string());
    parts.join(", ")
}

/// The whole trace as text a person can follow; chains are explained as the
/// layout that wrote them uses them.
pub fn narrate(trace: &Trace, layout: Layout) -> String {
    let mut out = String::new();
    let packet = &trace.packet;
    let origin = match packet.origin {
        Origin::FromOutside => "arriving at this node (nat PREROUTING first)",
        Origin::FromNode => "sent by this node itself (nat OUTPUT first)",
    };
    let _ = writeln!(
        out,
        "Packet: {} {} -> {}:{}, {origin}, connection state {}\n",
        packet.protocol.as_api(),
        packet.src,
        packet.dst,
        packet.dport,
        packet.conntrack.as_iptables()
    );
    write_outcomes(
        &mut out,
        &trace.outcomes,
        |o| &o.path,
        |o| o.probability,
        verdict,
        |out, steps| write_steps(out, steps, layout),
    );
    for warning in &trace.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// The steps of the first outcome, then where each other outcome leaves it,
/// then the verdicts with their chances: the shape of every trace's text.
pub fn write_outcomes<O, S: PartialEq>(
    out: &mut String,
    outcomes: &[O],
    path: impl Fn(&O) -> &[S],
    probability: impl Fn(&O) -> f64,
    verdict: impl Fn(&O) -> String,
    write_steps: impl Fn(&mut String, &[S]),
) {
    let Some(first) = outcomes.first() else {
        let _ = writeln!(out, "No outcome.");
        return;
    };
    write_steps(out, path(first));
    for (n, outcome) in outcomes.iter().enumerate().skip(1) {
        // Show where this branch leaves the first one.
        let shared = path(first)
            .iter()
            .zip(path(outcome))
            .take_while(|(a, b)| a == b)
            .count();
        let _ = writeln!(out, "\n  ... branch {} of {}:", n + 1, outcomes.len());
        write_steps(out, &path(outcome)[shared..]);
    }
    let _ = writeln!(out);
    if outcomes.len() == 1 {
        let _ = writeln!(out, "Verdict: {}.", verdict(first));
    } else {
        let _ = writeln!(out, "Verdict, one of {} random choices:", outcomes.len());
        for outcome in outcomes {
            let _ = writeln!(
                out,
                "  {:5.1}%  {}",
                probability(outcome) * 100.0,
                verdict(outcome)
            );
        }
    }
}
