//! The jumps from the built-in chains into kube-proxy's chains.
//!
//! kube-proxy does not write these with iptables-restore (that would replace
//! whatever else lives in PREROUTING, INPUT, ...); on every full sync it checks
//! each with `iptables -C` and inserts a missing one at the top with `-I`, in
//! this order, so later entries end up above earlier ones in the same chain.

use crate::Table;

/// One jump rule from a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinJump {
    /// The table.
    pub table: Table,
    /// The built-in chain jumped from (`PREROUTING`, `INPUT`, ...).
    pub from: &'static str,
    /// kube-proxy's chain jumped to.
    pub to: &'static str,
    /// Matches before the comment (`-m conntrack --ctstate NEW`).
    pub matches: &'static [&'static str],
    /// The rule's comment, if any.
    pub comment: Option<&'static str>,
}

impl BuiltinJump {
    /// The rule's arguments as iptables takes them (no quoting: one vector
    /// element per argument).
    pub fn args(&self) -> Vec<&'static str> {
        let mut args: Vec<&'static str> = self.matches.to_vec();
        if let Some(comment) = self.comment {
            args.extend(["-m", "comment", "--comment", comment]);
        }
        args.extend(["-j", self.to]);
        args
    }
}

const NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

/// Every jump of the v1.33 layout, in upstream's insertion order
/// (`iptablesJumpChains` followed by the kubelet firewall jumps).
pub const BUILTIN_JUMPS: [BuiltinJump; 14] = [
    INPUT_TO_EXTERNAL_SERVICES,
    jump(
        Table::Filter,
        "FORWARD",
        "KUBE-EXTERNAL-SERVICES",
        NEW,
        "kubernetes externally-visible service portals",
    ),
    jump(
        Table::Filter,
        "INPUT",
        "KUBE-NODEPORTS",
        &[],
        "kubernetes health check service ports",
    ),
    jump(
        Table::Filter,
        "FORWARD",
        "KUBE-SERVICES",
        NEW,
        "kubernetes service portals",
    ),
    OUTPUT_TO_SERVICES,
    FORWARD_TO_FORWARD,
    jump(
        Table::Filter,
        "INPUT",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    jump(
        Table::Filter,
        "OUTPUT",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    jump(
        Table::Filter,
        "FORWARD",
        "KUBE-PROXY-FIREWALL",
        NEW,
        "kubernetes load balancer firewall",
    ),
    NAT_JUMPS[0],
    NAT_JUMPS[1],
    NAT_JUMPS[2],
    KUBELET_FIREWALL_JUMPS[0],
    KUBELET_FIREWALL_JUMPS[1],
];

/// The jumps of kube-proxy's 2018 layout (v1.10), in its insertion order,
/// followed by the kubelet's firewall jumps: no `KUBE-PROXY-FIREWALL`, no
/// `KUBE-NODEPORTS` in filter, `KUBE-SERVICES` in filter only from OUTPUT.
pub const V1_10_JUMPS: [BuiltinJump; 8] = [
    INPUT_TO_EXTERNAL_SERVICES,
    OUTPUT_TO_SERVICES,
    NAT_JUMPS[0],
    NAT_JUMPS[1],
    NAT_JUMPS[2],
    FORWARD_TO_FORWARD,
    KUBELET_FIREWALL_JUMPS[0],
    KUBELET_FIREWALL_JUMPS[1],
];

/// filter INPUT -> KUBE-EXTERNAL-SERVICES for new connections, in both layouts.
const INPUT_TO_EXTERNAL_SERVICES: BuiltinJump = jump(
    Table::Filter,
    "INPUT",
    "KUBE-EXTERNAL-SERVICES",
    NEW,
    "kubernetes externally-visible service portals",
);

/// filter OUTPUT -> KUBE-SERVICES for new connections, in both layouts.
const OUTPUT_TO_SERVICES: BuiltinJump = jump(
    Table::Filter,
    "OUTPUT",
    "KUBE-SERVICES",
    NEW,
    "kubernetes service portals",
);

/// filter FORWARD -> KUBE-FORWARD, in both layouts.
const FORWARD_TO_FORWARD: BuiltinJump = jump(
    Table::Filter,
    "FORWARD",
    "KUBE-FORWARD",
    &[],
    "kubernetes forwarding rules",
);

/// The nat jumps, the same in both layouts.
const NAT_JUMPS: [BuiltinJump; 3] = [
    jump(
        Table::Nat,
        "OUTPUT",
        "KUBE-SERVICES",
        &[],
        "kubernetes service portals",
    ),
    jump(
        Table::Nat,
        "PREROUTING",
        "KUBE-SERVICES",
        &[],
        "kubernetes service portals",
    ),
    jump(
        Table::Nat,
        "POSTROUTING",
        "KUBE-POSTROUTING",
        &[],
        "kubernetes postrouting rules",
    ),
];

/// The kubelet's jumps to its `KUBE-FIREWALL` (no comment), in both layouts.
const KUBELET_FIREWALL_JUMPS: [BuiltinJump; 2] = [
    BuiltinJump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-FIREWALL",
        matches: &[],
        comment: None,
    },
    BuiltinJump {
        table: Table::Filter,
        from: "OUTPUT",
        to: "KUBE-FIREWALL",
        matches: &[],
        comment: None,
    },
];

const fn jump(
    table: Table,
    from: &'static str,
    to: &'static str,
    matches: &'static [&'static str],
    comment: &'static str,
) -> BuiltinJump {
    BuiltinJump {
        table,
        from,
        to,
        matches,
        comment: Some(comment),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_put_matches_then_comment_then_target() {
        assert_eq!(
            BUILTIN_JUMPS[0].args(),
            [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                "kubernetes externally-visible service portals",
                "-j",
                "KUBE-EXTERNAL-SERVICES"
            ]
        );
        assert_eq!(BUILTIN_JUMPS[13].args(), ["-j", "KUBE-FIREWALL"]);
    }

    /// `shared/spec/kube-proxy-v1.10.md` section 3, in its order, then the
    /// kubelet's two.
    #[test]
    fn v1_10_jumps_are_the_specs() {
        let rules: Vec<String> = V1_10_JUMPS
            .iter()
            .map(|j| format!("{} {} {}", j.table.as_str(), j.from, j.args().join(" ")))
            .collect();
        assert_eq!(
            rules,
            [
                "filter INPUT -m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible service portals -j KUBE-EXTERNAL-SERVICES",
                "filter OUTPUT -m conntrack --ctstate NEW -m comment --comment kubernetes service portals -j KUBE-SERVICES",
                "nat OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES",
                "nat PREROUTING -m comment --comment kubernetes service portals -j KUBE-SERVICES",
                "nat POSTROUTING -m comment --comment kubernetes postrouting rules -j KUBE-POSTROUTING",
                "filter FORWARD -m comment --comment kubernetes forwarding rules -j KUBE-FORWARD",
                "filter INPUT -j KUBE-FIREWALL",
                "filter OUTPUT -j KUBE-FIREWALL",
            ]
        );
    }
}
