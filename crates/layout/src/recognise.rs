//! Which layout wrote a ruleset, told from the chains kube-proxy left in it,
//! and what its chains are for when that cannot be told.

use chainsmith_naming::{ServiceChainKind, XLB_PREFIX, fixed};

use crate::{Layout, v1_10, v1_33};

/// What recognition reads of one rule of a ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSketch<'a> {
    /// The chain the rule is in.
    pub chain: &'a str,
    /// The chain it jumps or goes to, if any.
    pub target: Option<&'a str>,
    /// Its comment, if any.
    pub comment: Option<&'a str>,
}

/// What one rule says about the layout that wrote it.
fn evidence(rule: &RuleSketch<'_>) -> Option<Layout> {
    let names = || std::iter::once(rule.chain).chain(rule.target);
    let v1_33_only = [ServiceChainKind::Ext.prefix(), ServiceChainKind::Svl.prefix()];
    // KUBE-PROXY-FIREWALL counts only with rules in it: tools that complete a
    // ruleset with v1.33's jumps from the built-in chains create it empty.
    if names().any(|n| v1_33_only.iter().any(|p| n.starts_with(p)))
        || rule.chain == fixed::KUBE_PROXY_FIREWALL
    {
        return Some(Layout::V1_33);
    }
    // The v1.33 line names the endpoint in the comment of each balancing jump.
    let svc_to_sep = rule.chain.starts_with(ServiceChainKind::Svc.prefix())
        && rule
            .target
            .is_some_and(|t| t.starts_with(ServiceChainKind::Sep.prefix()));
    if svc_to_sep && rule.comment.is_some_and(|c| c.contains(" -> ")) {
        return Some(Layout::V1_33);
    }
    // Before the v1.33 line, every load-balancer IP went through KUBE-FW, which
    // marked for drop what it did not admit, and Local policy had KUBE-XLB.
    let fw_marks_drop =
        rule.chain.starts_with(ServiceChainKind::Fw.prefix()) && rule.target == Some(fixed::KUBE_MARK_DROP);
    if fw_marks_drop || names().any(|n| n.starts_with(XLB_PREFIX)) {
        return Some(Layout::V1_10);
    }
    None
}

impl Layout {
    /// The layout a ruleset's rules show, or `None` when they show none (only
    /// chains both layouts write) or both (a node in the middle of an
    /// upgrade, or rules of a version between the two).
    pub fn recognise<'a>(rules: impl IntoIterator<Item = RuleSketch<'a>>) -> Option<Layout> {
        let mut seen = (false, false);
        for rule in rules {
            match evidence(&rule) {
                Some(Layout::V1_33) => seen.0 = true,
                Some(Layout::V1_10) => seen.1 = true,
                None => {}
            }
            if seen == (true, true) {
                return None;
            }
        }
        match seen {
            (true, false) => Some(Layout::V1_33),
            (false, true) => Some(Layout::V1_10),
            _ => None,
        }
    }

    /// What a kube-proxy chain is for, in words true of every layout: for a
    /// ruleset whose layout is not known. Where the layouts use a chain
    /// differently, this says what kind of chain it is and no more.
    pub fn chain_role_in_any_layout(chain: &str) -> Option<&'static str> {
        if v1_10::chain_role(chain).is_none() {
            return v1_33::chain_role(chain);
        }
        Some(match chain {
            fixed::KUBE_EXTERNAL_SERVICES => "external traffic to Services without (local) endpoints",
            fixed::KUBE_FIREWALL => "a firewall chain of the kubelet or kube-proxy",
            fixed::KUBE_MARK_DROP => "marks the packet for a KUBE-FIREWALL rule to drop",
            _ if chain.starts_with(XLB_PREFIX) => "externalTrafficPolicy Local: this node's endpoints",
            _ => "a load-balancer IP's own chain",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule<'a>(chain: &'a str, target: Option<&'a str>, comment: Option<&'a str>) -> RuleSketch<'a> {
        RuleSketch {
            chain,
            target,
            comment,
        }
    }

    #[test]
    fn layouts_are_told_from_their_own_chains() {
        let shared = [
            rule(
                "PREROUTING",
                Some("KUBE-SERVICES"),
                Some("kubernetes service portals"),
            ),
            rule("KUBE-SERVICES", Some("KUBE-SVC-A"), Some("ns/a:http cluster IP")),
            rule("KUBE-SVC-A", Some("KUBE-SEP-B"), Some("ns/a:http")),
            rule("KUBE-FW-A", Some("KUBE-MARK-MASQ"), None),
            rule("FORWARD", Some("KUBE-PROXY-FIREWALL"), None),
        ];
        let with = |more: &[RuleSketch<'static>]| Layout::recognise(shared.iter().chain(more).copied());
        assert_eq!(with(&[]), None);
        assert_eq!(
            with(&[rule("KUBE-SERVICES", Some("KUBE-EXT-A"), None)]),
            Some(Layout::V1_33)
        );
        assert_eq!(
            with(&[rule("KUBE-PROXY-FIREWALL", None, None)]),
            Some(Layout::V1_33)
        );
        assert_eq!(
            with(&[rule(
                "KUBE-SVC-A",
                Some("KUBE-SEP-C"),
                Some("ns/a:http -> 10.0.0.1:80")
            )]),
            Some(Layout::V1_33)
        );
        assert_eq!(
            with(&[rule("KUBE-FW-A", Some("KUBE-MARK-DROP"), None)]),
            Some(Layout::V1_10)
        );
        assert_eq!(
            with(&[rule("KUBE-NODEPORTS", Some("KUBE-XLB-A"), None)]),
            Some(Layout::V1_10)
        );
        assert_eq!(
            with(&[
                rule("KUBE-NODEPORTS", Some("KUBE-XLB-A"), None),
                rule("KUBE-SVL-A", Some("KUBE-SEP-C"), None),
            ]),
            None
        );
    }

    #[test]
    fn roles_in_any_layout_claim_nothing_a_layout_does_differently() {
        for chain in [
            "KUBE-FW-A",
            "KUBE-FIREWALL",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-MARK-DROP",
            "KUBE-XLB-A",
        ] {
            let neutral = Layout::chain_role_in_any_layout(chain);
            assert!(neutral.is_some(), "{chain}");
            for layout in Layout::ALL {
                assert_ne!(neutral, layout.chain_role(chain), "{chain} in {layout}");
            }
        }
        assert_eq!(
            Layout::chain_role_in_any_layout("KUBE-SVC-A"),
            Layout::V1_33.chain_role("KUBE-SVC-A")
        );
        assert!(!Layout::chain_role_in_any_layout("KUBE-FW-A").is_some_and(|r| r.contains("SourceRanges")));
    }
}
