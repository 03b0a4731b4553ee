//! Traces in plain words: what each step means in kube-proxy's rule layout.
//!
//! Chains are explained as the layout that wrote them uses them; when that
//! layout is not known (a dump whose chains show neither), in words true of
//! every layout. Every chain entered is shown leaving again, and branches that
//! end the same way are counted together in the verdict.

use std::fmt::Write;

use chainsmith_layout::Layout;
use chainsmith_naming::fixed::KUBE_MARK_DROP;
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

/// What a chain is for, as `layout` uses it, or in any layout when `None`.
fn chain_role(layout: Option<Layout>, chain: &str) -> Option<&'static str> {
    match layout {
        Some(layout) => layout.chain_role(chain),
        None => Layout::chain_role_in_any_layout(chain),
    }
}

/// One line for one step; `None` for steps not worth a line. `previous` is
/// the step before it on the path, if shown.
fn describe(step: &Step, previous: Option<&Step>, layout: Option<Layout>) -> Option<String> {
    let label = rule_label(step);
    let back_to = step.back_to.as_deref();
    Some(match &step.action {
        Action::Enter => return None,
        Action::Absent => "not in the rules: taken as empty with policy ACCEPT (assumed)".to_string(),
        Action::Jump { to } | Action::Goto { to } => match chain_role(layout, to) {
            Some(role) => format!("{label} matches: on to {to} ({role})"),
            None => format!("{label} matches: on to {to}"),
        },
        Action::Return => match back_to {
            Some(caller) => format!("{label}: RETURN, back to {caller}"),
            None => format!("{label}: RETURN from the built-in chain, so its policy applies"),
        },
        Action::EndOfChain => {
            let what = if entered_in_vain(step, previous) {
                format!("{}: no rule matched", step.chain)
            } else {
                "end of the chain".to_string()
            };
            match back_to {
                Some(caller) => format!("{what}, back to {caller}"),
                None => what,
            }
        }
        Action::Policy { policy } => format!("no rule decided; the chain's policy is {policy}"),
        Action::Matched => format!("{label} matches; it has no target, so the walk goes on"),
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

/// Whether `step` ends a chain the step before jumped to: the chain was
/// entered and nothing in it matched.
fn entered_in_vain(step: &Step, previous: Option<&Step>) -> bool {
    step.action == Action::EndOfChain
        && previous.is_some_and(|p| match &p.action {
            Action::Jump { to } | Action::Goto { to } => *to == step.chain && p.table == step.table,
            _ => false,
        })
}

fn write_steps(out: &mut String, steps: &[Step], layout: Option<Layout>) {
    let mut chain: Option<(&str, &str)> = None;
    let mut previous: Option<&Step> = None;
    for step in steps {
        let line = describe(step, previous, layout);
        let in_vain = entered_in_vain(step, previous);
        previous = Some(step);
        let Some(line) = line else {
            continue;
        };
        // Under the jump that entered it, so the calling chain's rules read on.
        if in_vain {
            let _ = writeln!(out, "      {line}");
            continue;
        }
        if chain != Some((step.table.as_str(), step.chain.as_str())) {
            chain = Some((&step.table, &step.chain));
            let _ = writeln!(out, "  {} {}", step.table, step.chain);
        }
        let _ = writeln!(out, "    {line}");
    }
}

/// Whether two outcomes end the same way: the same verdict, translations,
/// affinity and final mark. Only the path (the random choices) differs.
fn same_fate(a: &Outcome, b: &Outcome) -> bool {
    a.verdict == b.verdict
        && a.nat_destination == b.nat_destination
        && a.masquerade == b.masquerade
        && a.snat_source == b.snat_source
        && a.affinity_set == b.affinity_set
        && a.final_mark == b.final_mark
}

/// Outcomes of the same fate together, in the order first met: each with
/// its summed probability and how many branches lead there.
fn merge<O>(
    outcomes: &[O],
    probability: impl Fn(&O) -> f64,
    same: impl Fn(&O, &O) -> bool,
) -> Vec<(&O, f64, usize)> {
    let mut groups: Vec<(&O, f64, usize)> = Vec::new();
    for outcome in outcomes {
        match groups.iter_mut().find(|(first, _, _)| same(first, outcome)) {
            Some(group) => {
                group.1 += probability(outcome);
                group.2 += 1;
            }
            None => groups.push((outcome, probability(outcome), 1)),
        }
    }
    groups
}

/// The fate of one outcome in a sentence.
pub fn verdict(outcome: &Outcome) -> String {
    let destination = outcome.nat_destination.as_ref().map(|to| format!("sent to {to}"));
    fate(outcome, destination)
}

/// All outcomes in one sentence: branches of the same fate counted once;
/// when they differ only in the endpoint chosen (a load-balanced Service),
/// the endpoints are listed with their chances.
pub fn summary(outcomes: &[Outcome]) -> String {
    let groups = merge(outcomes, |o| o.probability, same_fate);
    let [(first, _, _), rest @ ..] = groups.as_slice() else {
        return "no outcome".to_string();
    };
    if rest.is_empty() {
        return verdict(first);
    }
    let same_but_endpoint = |o: &Outcome| {
        o.verdict == first.verdict
            && o.masquerade == first.masquerade
            && o.affinity_set.len() == first.affinity_set.len()
            && o.nat_destination.is_some() == first.nat_destination.is_some()
    };
    if !rest.iter().all(|(o, _, _)| same_but_endpoint(o)) || first.nat_destination.is_none() {
        return groups
            .iter()
            .map(|(o, p, _)| format!("{:.1}% {}", p * 100.0, verdict(o)))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let choices: Vec<String> = groups
        .iter()
        .map(|(o, p, _)| {
            format!(
                "{} ({:.1}%)",
                o.nat_destination.as_deref().unwrap_or_default(),
                p * 100.0
            )
        })
        .collect();
    fate(first, Some(format!("sent to one of {}", choices.join(", "))))
}

/// The bits KUBE-MARK-DROP set on this path that the packet still carries.
fn drop_mark(outcome: &Outcome) -> u32 {
    let set: u32 = outcome
        .path
        .iter()
        .filter(|s| s.chain == KUBE_MARK_DROP)
        .map(|s| match s.action {
            Action::Mark { from, to } => to & !from,
            _ => 0,
        })
        .fold(0, |bits, b| bits | b);
    set & outcome.final_mark
}

fn fate(outcome: &Outcome, destination: Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(destination) = destination {
        parts.push(destination);
    }
    if outcome.masquerade {
        parts.push("masqueraded (the endpoint sees this node's address, not the client's)".to_string());
    } else if let Some(source) = &outcome.snat_source {
        parts.push(format!("its source rewritten to {source} (SNAT)"));
    } else if outcome.nat_destination.is_some() {
        parts.push("the client's address is kept".to_string());
    }
    if !outcome.affinity_set.is_empty() {
        parts.push(format!(
            "session affinity recorded in {}",
            outcome.affinity_set.join(", ")
        ));
    }
    let goes_on = matches!(outcome.verdict, Verdict::Accept | Verdict::Pass);
    let marked_for_drop = drop_mark(outcome);
    if goes_on && marked_for_drop != 0 {
        // The 2018 layout leaves the drop to the kubelet's KUBE-FIREWALL in
        // filter INPUT and OUTPUT: a forwarded packet never meets it.
        let forwarded = outcome
            .path
            .iter()
            .any(|s| s.table == "filter" && s.chain == "FORWARD");
        parts.push(format!(
            "marked 0x{marked_for_drop:x} by {KUBE_MARK_DROP} to be dropped, but nothing on this path drops \
             marked packets{}",
            if forwarded {
                " (it is forwarded, and forwarded packets do not pass the filter INPUT and OUTPUT chains where \
                 the kubelet's KUBE-FIREWALL drops them)"
            } else {
                ""
            }
        ));
    }
    if outcome.verdict == Verdict::Pass {
        let other_mark = outcome.final_mark & !marked_for_drop;
        if other_mark != 0 {
            parts.push(format!("it leaves with mark 0x{other_mark:x}"));
        }
        if parts.is_empty() {
            parts.push("not translated or marked".to_string());
        }
    }
    let end = match outcome.verdict {
        // Translated to an endpoint: with nothing in filter against it, the
        // built-in policies deliver it.
        Verdict::Accept | Verdict::Pass if outcome.nat_destination.is_some() => "delivered",
        Verdict::Accept => "accepted",
        Verdict::Pass => "no rule decided its fate: it goes on as routed",
        Verdict::Drop => "dropped (the client times out)",
        Verdict::Reject => "rejected (the client gets an error at once)",
    };
    parts.push(end.to_string());
    parts.join(", ")
}

/// The whole trace as text a person can follow; chains are explained as
/// `layout` uses them, or in words true of every layout when it is `None`.
pub fn narrate(trace: &Trace, layout: Option<Layout>) -> String {
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
    write_outcomes_merging(
        &mut out,
        &trace.outcomes,
        |o| &o.path,
        |o| o.probability,
        verdict,
        |out, steps| write_steps(out, steps, layout),
        same_fate,
    );
    for assumption in &trace.assumptions {
        let _ = writeln!(out, "assumed: {assumption}");
    }
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
    write_outcomes_merging(out, outcomes, path, probability, verdict, write_steps, |_, _| {
        false
    });
}

/// [`write_outcomes`], with the verdicts of outcomes that are `same` listed
/// once, their chances summed.
fn write_outcomes_merging<O, S: PartialEq>(
    out: &mut String,
    outcomes: &[O],
    path: impl Fn(&O) -> &[S],
    probability: impl Fn(&O) -> f64,
    verdict: impl Fn(&O) -> String,
    write_steps: impl Fn(&mut String, &[S]),
    same: impl Fn(&O, &O) -> bool,
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
    let groups = merge(outcomes, &probability, same);
    match groups.as_slice() {
        [(only, _, 1)] => {
            let _ = writeln!(out, "Verdict: {}.", verdict(only));
        }
        [(only, _, n)] => {
            let _ = writeln!(
                out,
                "Verdict, the same for all {n} random choices: {}.",
                verdict(only)
            );
        }
        _ => {
            let _ = writeln!(out, "Verdict, one of {} random choices:", outcomes.len());
            for (outcome, p, n) in &groups {
                let count = if *n > 1 {
                    format!(" ({n} of the {} choices)", outcomes.len())
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  {:5.1}%  {}{count}", p * 100.0, verdict(outcome));
            }
        }
    }
}
