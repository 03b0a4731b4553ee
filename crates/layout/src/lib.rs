//! Layouts: the planner's decisions turned into iptables rules.
//!
//! A [`Layout`] is one way kube-proxy spelled the same decisions: the v1.33
//! line (`KUBE-SVC-`/`SVL-`/`EXT-`/`FW-`/`SEP-`, filter rejects and the
//! `KUBE-PROXY-FIREWALL`), or the 2018 layout of v1.10 (`KUBE-FW-` for every
//! load-balancer IP, `KUBE-XLB-`, `KUBE-MARK-DROP`). For each service port a
//! layout emits its filter rules, its rules in the shared nat chains and its
//! own chains' rules, in the layout's generation and argument order, as
//! [`chainsmith_iptables::Rule`] values; for the node, the fixed chains, the
//! rules around the per-port ones, and the jumps from the built-in chains.
//!
//! Adding a layout is a module here and a variant of [`Layout`]; the renderer,
//! the sync engine and the binary take whichever they are given.
//!
//! Reading works the other way too: [`Layout::recognise`] tells which layout
//! wrote a ruleset from the chains only one layout writes, and
//! [`Layout::chain_role`] (or [`Layout::chain_role_in_any_layout`] when the
//! layout cannot be told) says what a chain is for, for narrated traces.
//!
//! Architecture invariant: decides nothing the planner decides (which
//! endpoints, what is rejected, masqueraded or filtered) beyond what an older
//! kube-proxy decided differently, and says so where it does (`v1_10`);
//! spells nothing (the renderer owns the text); knows no Kubernetes object and
//! no earlier sync.

mod recognise;
mod v1_10;
mod v1_33;

use std::fmt;
use std::str::FromStr;

use chainsmith_iptables::{BUILTIN_JUMPS, BuiltinJump, CountingSink, Rule, RuleSink, V1_10_JUMPS};
use chainsmith_naming::{ChainName, ServiceChainKind};
use chainsmith_planner::{EndpointInfo, EndpointsInRole, NodeContext, ServicePortPlan};

pub use recognise::RuleSketch;

/// A rule layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// kube-proxy's iptables mode, v1.33 line (the default).
    #[default]
    V1_33,
    /// kube-proxy's iptables mode as of v1.10 (early 2018).
    V1_10,
}

impl Layout {
    /// Every layout, default first.
    pub const ALL: [Layout; 2] = [Layout::V1_33, Layout::V1_10];

    /// The name users give (`v1.33`, `v1.10`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::V1_33 => "v1.33",
            Layout::V1_10 => "v1.10",
        }
    }

    /// Whether a sync may rewrite only what changed. kube-proxy wrote every
    /// chain on every sync until partial syncs arrived in v1.26.
    pub fn has_partial_syncs(self) -> bool {
        matches!(self, Layout::V1_33)
    }

    /// The jumps from the built-in chains a node holds beside the payload.
    pub fn builtin_jumps(self) -> &'static [BuiltinJump] {
        match self {
            Layout::V1_33 => &BUILTIN_JUMPS,
            Layout::V1_10 => &V1_10_JUMPS,
        }
    }

    /// Whether `chain` is a per-service-port chain of this layout, so that one
    /// left over from earlier syncs is deleted.
    pub fn owns_service_chain(self, chain: &str) -> bool {
        match self {
            Layout::V1_33 => ServiceChainKind::of(chain).is_some(),
            Layout::V1_10 => v1_10::owns_service_chain(chain),
        }
    }

    /// Fixed filter chains, in declaration order.
    pub fn filter_chains(self, ctx: &NodeContext) -> &'static [&'static str] {
        match self {
            Layout::V1_33 => v1_33::filter_chains(ctx),
            Layout::V1_10 => v1_10::filter_chains(),
        }
    }

    /// Fixed nat chains, in declaration order.
    pub fn nat_chains(self) -> &'static [&'static str] {
        match self {
            Layout::V1_33 => v1_33::nat_chains(),
            Layout::V1_10 => v1_10::nat_chains(),
        }
    }

    /// filter rules written before any service port's.
    pub fn emit_filter_head(self, ctx: &NodeContext, sink: &mut impl RuleSink) {
        match self {
            Layout::V1_33 => v1_33::emit_filter_head(ctx, sink),
            Layout::V1_10 => {}
        }
    }

    /// filter rules written after every service port's.
    pub fn emit_filter_tail(self, ctx: &NodeContext, sink: &mut impl RuleSink) {
        match self {
            Layout::V1_33 => v1_33::emit_filter_tail(ctx, sink),
            Layout::V1_10 => v1_10::emit_filter_tail(ctx, sink),
        }
    }

    /// nat rules written before any service port's.
    pub fn emit_nat_head(self, ctx: &NodeContext, sink: &mut impl RuleSink) {
        match self {
            Layout::V1_33 => v1_33::emit_nat_head(ctx, sink),
            Layout::V1_10 => v1_10::emit_nat_head(ctx, sink),
        }
    }

    /// nat rules written last: the jump(s) to KUBE-NODEPORTS, which must stay
    /// at the end of KUBE-SERVICES.
    pub fn emit_nat_tail(self, ctx: &NodeContext, sink: &mut impl RuleSink) {
        match self {
            Layout::V1_33 => v1_33::emit_nat_tail(ctx, sink),
            Layout::V1_10 => v1_10::emit_nat_tail(ctx, sink),
        }
    }

    /// One port's filter rules, in the layout's order.
    #[inline]
    pub fn emit_filter(self, port: &ServicePortPlan, sink: &mut impl RuleSink) {
        match self {
            Layout::V1_33 => v1_33::emit_filter(port, sink),
            Layout::V1_10 => v1_10::emit_filter(port, sink),
        }
    }

    /// One port's nat rules in the layout's order: with `own`, those of its
    /// own chains too, else only those in the shared chains (`KUBE-SERVICES`,
    /// `KUBE-NODEPORTS`), as a partial sync writes an unchanged port.
    #[inline]
    pub fn emit_nat(
        self,
        port: &ServicePortPlan,
        ctx: &NodeContext,
        large_cluster: bool,
        own: bool,
        sink: &mut impl RuleSink,
    ) {
        match self {
            Layout::V1_33 => {
                v1_33::emit_nat_shared(port, ctx, sink);
                if own {
                    v1_33::emit_nat_own(port, ctx, large_cluster, sink);
                }
            }
            Layout::V1_10 if own => v1_10::emit_nat(port, ctx, sink),
            Layout::V1_10 => {
                let mut shared = |rule: &Rule<'_>| {
                    if !self.owns_service_chain(rule.chain) {
                        sink.rule(rule);
                    }
                };
                v1_10::emit_nat(port, ctx, &mut shared);
            }
        }
    }

    /// The port's own nat chains, in declaration order.
    pub fn own_chains(self, port: &ServicePortPlan) -> OwnChains<'_> {
        match self {
            Layout::V1_33 => v1_33::own_chains(port),
            Layout::V1_10 => OwnChains::listed(v1_10::own_chains(port)),
        }
    }

    /// How this layout names one port and uses its endpoints, for
    /// explanations (`chainsmith explain`).
    pub fn describe_port(self, port: &ServicePortPlan) -> PortView<'_> {
        match self {
            Layout::V1_33 => v1_33::describe_port(port),
            Layout::V1_10 => v1_10::describe_port(port),
        }
    }

    /// What one of this layout's chains is for, in a few words (for
    /// narrated traces); `None` for a chain it does not write.
    pub fn chain_role(self, chain: &str) -> Option<&'static str> {
        match self {
            Layout::V1_33 => v1_33::chain_role(chain),
            Layout::V1_10 => v1_10::chain_role(chain).or_else(|| v1_33::chain_role(chain)),
        }
    }

    /// What this layout does with load-balancer traffic of one port, in a
    /// sentence (for `chainsmith explain`); `None` when there is nothing
    /// beyond the capture itself to say.
    pub fn load_balancer_note(self, port: &ServicePortPlan) -> Option<String> {
        match self {
            Layout::V1_33 => v1_33::load_balancer_note(port),
            Layout::V1_10 => v1_10::load_balancer_note(port),
        }
    }

    /// How many rules one port contributes, for the rule metrics.
    pub fn rule_counts(self, port: &ServicePortPlan, ctx: &NodeContext) -> PortRuleCounts {
        let mut filter = CountingSink::default();
        self.emit_filter(port, &mut filter);
        let mut counts = PortRuleCounts {
            filter: filter.rules,
            ..PortRuleCounts::default()
        };
        self.emit_nat(port, ctx, false, true, &mut |rule: &Rule<'_>| {
            if !self.owns_service_chain(rule.chain) {
                counts.nat_shared += 1;
                return;
            }
            counts.nat_own += 1;
            if let Some(kind) = ServiceChainKind::of(rule.chain) {
                counts.nat_own_by_kind[kind as usize] += 1;
            }
        });
        counts
    }

    /// Rules of the fixed chains (heads and tails), for the rule metrics.
    pub fn fixed_rule_counts(self, ctx: &NodeContext) -> (usize, usize) {
        let mut filter = CountingSink::default();
        self.emit_filter_head(ctx, &mut filter);
        self.emit_filter_tail(ctx, &mut filter);
        let mut nat = CountingSink::default();
        self.emit_nat_head(ctx, &mut nat);
        self.emit_nat_tail(ctx, &mut nat);
        (filter.rules, nat.rules)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A layout name that is not one of [`Layout::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLayout(pub String);

impl fmt::Display for UnknownLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Layout::ALL.iter().map(|l| l.name()).collect();
        write!(f, "unknown layout {:?} (one of: {})", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownLayout {}

impl FromStr for Layout {
    type Err = UnknownLayout;

    fn from_str(name: &str) -> Result<Layout, UnknownLayout> {
        Layout::ALL
            .into_iter()
            .find(|layout| layout.name() == name)
            .ok_or_else(|| UnknownLayout(name.to_string()))
    }
}

/// How many rules one service port contributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortRuleCounts {
    /// Rules in the filter table.
    pub filter: usize,
    /// Rules in the shared nat chains (`KUBE-SERVICES`, `KUBE-NODEPORTS`).
    pub nat_shared: usize,
    /// Rules in the port's own nat chains.
    pub nat_own: usize,
    /// Of those, by kind (`ServiceChainKind::ALL` order; chains of no kind,
    /// such as v1.10's `KUBE-XLB-`, count only in `nat_own`).
    pub nat_own_by_kind: [usize; 5],
}

/// One port as a layout writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView<'p> {
    /// The service-port name in comments and chain hashes.
    pub name: String,
    /// The port's cluster balancing chain (`KUBE-SVC-`), declared or not.
    pub service_chain: ChainName,
    /// Every endpoint of the port, in the plan's order.
    pub endpoints: Vec<EndpointView<'p>>,
}

/// One endpoint as a layout uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView<'p> {
    /// The endpoint.
    pub info: &'p EndpointInfo,
    /// Its endpoint chain (`KUBE-SEP-`).
    pub chain: ChainName,
    /// Cluster traffic is balanced over it.
    pub cluster: bool,
    /// Traffic under a Local policy is balanced over it.
    pub local: bool,
}

/// The own chains of one port, without allocating for the v1.33 layout.
#[derive(Debug, Clone)]
pub struct OwnChains<'p> {
    inner: OwnChainsInner<'p>,
}

#[derive(Debug, Clone)]
enum OwnChainsInner<'p> {
    PerPortThenEndpoints {
        per_port: arrayvec::IntoIter<ChainName, 4>,
        endpoints: EndpointsInRole<'p>,
    },
    Listed(std::vec::IntoIter<ChainName>),
}

impl<'p> OwnChains<'p> {
    fn new(per_port: arrayvec::ArrayVec<ChainName, 4>, endpoints: EndpointsInRole<'p>) -> OwnChains<'p> {
        OwnChains {
            inner: OwnChainsInner::PerPortThenEndpoints {
                per_port: per_port.into_iter(),
                endpoints,
            },
        }
    }

    fn listed(chains: Vec<ChainName>) -> OwnChains<'p> {
        OwnChains {
            inner: OwnChainsInner::Listed(chains.into_iter()),
        }
    }
}

impl Iterator for OwnChains<'_> {
    type Item = ChainName;

    #[inline]
    fn next(&mut self) -> Option<ChainName> {
        match &mut self.inner {
            OwnChainsInner::PerPortThenEndpoints { per_port, endpoints } => {
                per_port.next().or_else(|| endpoints.next().map(|ep| ep.chain))
            }
            OwnChainsInner::Listed(chains) => chains.next(),
        }
    }
}
