//! What a port's plan and the node write in nftables mode, per chain, set
//! and map, for `chainsmith_changes`' Service-by-Service comparison.

use chainsmith_changes::{OwnedRules, RulesOf};
use chainsmith_nftables::{Op, Transaction, quote};
use chainsmith_planner::{Plan, ServicePortPlan};

use crate::{NftContext, PortObjects, setup};

/// The rules of kube-proxy's nftables mode, as [`RulesOf`] hands them to the
/// diff: a chain's rules under `chain`, a set's or map's elements under
/// `set` or `map`.
pub struct NftRules;

const CHAIN: &str = "chain";

fn rule_text(rule: &str, comment: Option<&str>) -> String {
    match comment {
        Some(comment) => format!("{rule} comment {}", quote(comment)),
        None => rule.to_string(),
    }
}

impl RulesOf for NftRules {
    fn port(&self, port: &ServicePortPlan, plan: &Plan) -> OwnedRules {
        let objects = PortObjects::of(port, &NftContext::new(&plan.ctx));
        let mut owned = OwnedRules::default();
        for chain in &objects.chains {
            owned.declare(CHAIN, &chain.name);
            for (rule, comment) in &chain.rules {
                owned.push(CHAIN, &chain.name, rule_text(rule, comment.as_deref()));
            }
        }
        for set in &objects.affinity_sets {
            owned.declare(set.kind.as_str(), &set.name);
        }
        for (map, element) in &objects.elements {
            let mut text = element.key.clone();
            if let Some(comment) = &element.comment {
                text.push_str(" comment ");
                text.push_str(&quote(comment));
            }
            if let Some(value) = &element.value {
                text.push_str(" : ");
                text.push_str(value);
            }
            owned.push(map.kind().as_str(), map.name(), text);
        }
        owned
    }

    fn node(&self, plan: &Plan) -> OwnedRules {
        let ctx = NftContext::new(&plan.ctx);
        let mut tx = Transaction::new(ctx.family());
        setup(&ctx, false, &mut tx);
        let mut owned = OwnedRules::default();
        for op in &tx.ops {
            match op {
                Op::AddChain(chain) => owned.declare(CHAIN, &chain.name),
                Op::AddRule { chain, rule, comment } => {
                    owned.push(CHAIN, chain, rule_text(rule, comment.as_deref()));
                }
                Op::AddSet(set) => owned.declare(set.kind.as_str(), &set.name),
                Op::AddElement { set, element } => owned.push("set", set, element.key.clone()),
                _ => {}
            }
        }
        owned
    }
}
