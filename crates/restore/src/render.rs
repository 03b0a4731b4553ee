//! Plans to `iptables-restore` text.

use std::sync::OnceLock;

use chainsmith_iptables::{Arg, Rule, RuleSink, Target};
use chainsmith_layout::Layout;
use chainsmith_model::Protocol;
use chainsmith_naming::ChainName;
use chainsmith_planner::{NodeContext, Plan, ServicePortPlan};

/// Writes one rule as `-A CHAIN ARGS TARGET\n`, in upstream's spelling.
///
/// Always inlined: at each emitting call site the argument list is a constant
/// shape, so the compiler turns the loop and the matches into straight-line
/// appends (about three times faster than a call per rule).
#[inline(always)]
pub fn write_rule(out: &mut Vec<u8>, rule: &Rule<'_>) {
    out.extend_from_slice(b"-A ");
    out.extend_from_slice(rule.chain.as_bytes());
    for arg in rule.args {
        write_arg(out, arg);
    }
    match rule.target {
        Target::None => {}
        Target::Jump(name) => {
            out.extend_from_slice(b" -j ");
            out.extend_from_slice(name.as_bytes());
        }
        Target::MarkOr(mark) => push(out, &[" -j MARK --or-mark ", mark]),
        Target::MarkXor(mark) => push(out, &[" -j MARK --xor-mark ", mark]),
        Target::MarkSet(mark) => push(out, &[" -j MARK --set-xmark ", mark]),
        Target::Masquerade { random_fully } => {
            out.extend_from_slice(b" -j MASQUERADE");
            if random_fully {
                out.extend_from_slice(b" --random-fully");
            }
        }
        Target::Dnat(endpoint) => push(out, &[" -j DNAT --to-destination ", endpoint]),
    }
    out.push(b'\n');
}

#[inline(always)]
fn write_arg(out: &mut Vec<u8>, arg: &Arg<'_>) {
    match *arg {
        Arg::Comment(parts) => {
            out.extend_from_slice(b" -m comment --comment ");
            // Upstream quotes every multi-word comment and none of the one-word ones.
            // The fixed middle and last parts, where spaces usually are, go first.
            let quoted = [parts[1], parts[2], parts[0]]
                .iter()
                .any(|part| part.as_bytes().contains(&b' '));
            if quoted {
                out.push(b'"');
            }
            push(out, &parts);
            if quoted {
                out.push(b'"');
            }
        }
        Arg::Protocol(protocol) => out.extend_from_slice(match protocol {
            Protocol::Tcp => b" -m tcp -p tcp",
            Protocol::Udp => b" -m udp -p udp",
            Protocol::Sctp => b" -m sctp -p sctp",
        }),
        Arg::Source { addr, negated } => {
            out.extend_from_slice(if negated { b" ! -s " } else { b" -s " });
            out.extend_from_slice(addr.as_bytes());
        }
        Arg::Destination { addr, negated } => {
            out.extend_from_slice(if negated { b" ! -d " } else { b" -d " });
            out.extend_from_slice(addr.as_bytes());
        }
        Arg::InInterface { name, negated } => push(out, &[not(negated), " -i ", name]),
        Arg::DestinationPort(port) => {
            out.extend_from_slice(b" --dport ");
            out.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
        }
        Arg::SourceTypeLocal => out.extend_from_slice(b" -m addrtype --src-type LOCAL"),
        Arg::DestinationTypeLocal => out.extend_from_slice(b" -m addrtype --dst-type LOCAL"),
        Arg::SourceTypeNotLocal => out.extend_from_slice(b" -m addrtype ! --src-type LOCAL"),
        Arg::NotBridgedIn => out.extend_from_slice(b" -m physdev ! --physdev-is-in"),
        Arg::RandomProbability { one_in } => {
            out.extend_from_slice(b" -m statistic --mode random --probability ");
            write_probability(out, one_in);
        }
        Arg::RandomProbabilityFiveDecimals { one_in } => {
            out.extend_from_slice(b" -m statistic --mode random --probability ");
            out.extend_from_slice(format!("{:.5}", 1.0 / one_in.max(1) as f64).as_bytes());
        }
        Arg::RecentCheck { name, seconds } => {
            push(out, &[" -m recent --name ", name, " --rcheck --seconds "]);
            out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
            out.extend_from_slice(b" --reap");
        }
        Arg::RecentSet { name } => push(out, &[" -m recent --name ", name, " --set"]),
        Arg::Nfacct(name) => push(out, &[" -m nfacct --nfacct-name ", name]),
        Arg::ConntrackState { states, negated } => {
            push(out, &[" -m conntrack", not(negated), " --ctstate ", states])
        }
        Arg::Mark { mark, negated } => push(out, &[" -m mark", not(negated), " --mark ", mark]),
    }
}

fn not(negated: bool) -> &'static str {
    if negated { " !" } else { "" }
}

#[inline(always)]
fn push(out: &mut Vec<u8>, parts: &[&str]) {
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
}

/// `1/n` printed as Go's `%0.10f` (both round the exact binary value, so Rust's
/// `{:.10}` gives the same digits). Small denominators are cached.
fn write_probability(out: &mut Vec<u8>, one_in: usize) {
    const CACHED: usize = 512;
    static TABLE: OnceLock<Vec<String>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..CACHED).map(format_probability).collect());
    match table.get(one_in) {
        Some(text) => out.extend_from_slice(text.as_bytes()),
        None => out.extend_from_slice(format_probability(one_in).as_bytes()),
    }
}

fn format_probability(one_in: usize) -> String {
    // Denominators are endpoint counts, far below 2^53, so the conversion is exact.
    format!("{:.10}", 1.0 / one_in.max(1) as f64)
}

/// `:NAME - [0:0]\n`: declares (creates or flushes) a chain.
pub fn write_chain_line(out: &mut Vec<u8>, name: &str) {
    push(out, &[":", name, " - [0:0]\n"]);
}

/// `-X NAME\n`: deletes a chain.
pub fn write_delete_line(out: &mut Vec<u8>, name: &str) {
    push(out, &["-X ", name, "\n"]);
}

/// A sink that renders rules and counts them, optionally only those of some
/// chains.
struct TextSink<'o, F> {
    out: &'o mut Vec<u8>,
    keep: F,
    rules: usize,
}

impl<F: FnMut(&str) -> bool> RuleSink for TextSink<'_, F> {
    #[inline(always)]
    fn rule(&mut self, rule: &Rule<'_>) {
        if (self.keep)(rule.chain) {
            write_rule(self.out, rule);
            self.rules += 1;
        }
    }
}

/// Counts of what a payload holds, for the `sync_proxy_rules_iptables_*` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadCounts {
    /// `-A` lines in `*filter`.
    pub filter_rules: usize,
    /// `-A` lines in `*nat`.
    pub nat_rules: usize,
    /// `-X` lines in `*nat`.
    pub nat_deleted_chains: usize,
}

/// Writes sync payloads into a reusable buffer.
#[derive(Debug, Default)]
pub struct PayloadWriter {
    out: Vec<u8>,
}

impl PayloadWriter {
    /// An empty writer.
    pub fn new() -> PayloadWriter {
        PayloadWriter::default()
    }

    /// The payload written last.
    pub fn payload(&self) -> &[u8] {
        &self.out
    }

    /// Takes the payload, leaving an empty buffer.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Writes upstream's payload: every filter chain, the fixed nat chains and
    /// the own chains of the ports whose flag is true (all of them in a full
    /// sync, the changed ones in a partial sync), then the stale chains to
    /// delete. `ports` is called once per pass over the ports.
    pub fn write_upstream<'p, I>(
        &mut self,
        layout: Layout,
        ctx: &NodeContext,
        large_cluster: bool,
        ports: impl Fn() -> I,
        stale_nat_chains: &[ChainName],
    ) -> PayloadCounts
    where
        I: Iterator<Item = (&'p ServicePortPlan, bool)>,
    {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"*filter\n");
        for chain in layout.filter_chains(ctx) {
            write_chain_line(out, chain);
        }
        let mut filter = TextSink {
            out,
            keep: |_: &str| true,
            rules: 0,
        };
        layout.emit_filter_head(ctx, &mut filter);
        for (port, _) in ports() {
            layout.emit_filter(port, &mut filter);
        }
        layout.emit_filter_tail(ctx, &mut filter);
        let filter_rules = filter.rules;
        out.extend_from_slice(b"COMMIT\n*nat\n");
        for chain in layout.nat_chains() {
            write_chain_line(out, chain);
        }
        for (port, own) in ports() {
            if own {
                for chain in layout.own_chains(port) {
                    write_chain_line(out, chain.as_str());
                }
            }
        }
        for chain in stale_nat_chains {
            write_chain_line(out, chain.as_str());
        }
        let mut nat = TextSink {
            out,
            keep: |_: &str| true,
            rules: 0,
        };
        layout.emit_nat_head(ctx, &mut nat);
        for (port, own) in ports() {
            layout.emit_nat(port, ctx, large_cluster, own, &mut nat);
        }
        let mut nat_rules = nat.rules;
        for chain in stale_nat_chains {
            write_delete_line(out, chain.as_str());
        }
        let mut nat = TextSink {
            out,
            keep: |_: &str| true,
            rules: 0,
        };
        layout.emit_nat_tail(ctx, &mut nat);
        nat_rules += nat.rules;
        out.extend_from_slice(b"COMMIT\n");
        PayloadCounts {
            filter_rules,
            nat_rules,
            nat_deleted_chains: stale_nat_chains.len(),
        }
    }

    /// Writes a payload that rewrites only the chains listed: `filter_chains`
    /// and `nat_fixed_chains` are fixed chains rewritten whole (their rules
    /// gathered from every port), `nat_own_chains` are per-service chains
    /// rewritten from the ports that own them, `nat_deleted` are flushed and
    /// deleted. A table with nothing to do is left out; nothing at all gives an
    /// empty payload.
    pub fn write_chains<'p, I>(
        &mut self,
        layout: Layout,
        ctx: &NodeContext,
        large_cluster: bool,
        request: &ChainRequest<'p, I>,
    ) -> PayloadCounts
    where
        I: Iterator<Item = &'p ServicePortPlan> + Clone,
    {
        let out = &mut self.out;
        out.clear();
        let mut counts = PayloadCounts::default();
        if !request.filter_chains.is_empty() {
            out.extend_from_slice(b"*filter\n");
            for chain in &request.filter_chains {
                write_chain_line(out, chain);
            }
            let wanted = &request.filter_chains;
            let mut sink = TextSink {
                out,
                keep: |chain: &str| wanted.contains(&chain),
                rules: 0,
            };
            layout.emit_filter_head(ctx, &mut sink);
            for port in request.all_ports.clone() {
                layout.emit_filter(port, &mut sink);
            }
            layout.emit_filter_tail(ctx, &mut sink);
            counts.filter_rules = sink.rules;
            out.extend_from_slice(b"COMMIT\n");
        }
        let own_chains = request
            .nat_own_chains
            .iter()
            .flat_map(|(_, chains)| chains.iter());
        if request.nat_fixed_chains.is_empty()
            && own_chains.clone().next().is_none()
            && request.nat_deleted.is_empty()
        {
            return counts;
        }
        out.extend_from_slice(b"*nat\n");
        for chain in &request.nat_fixed_chains {
            write_chain_line(out, chain);
        }
        for chain in own_chains.chain(&request.nat_deleted) {
            write_chain_line(out, chain.as_str());
        }
        let fixed = &request.nat_fixed_chains;
        let mut sink = TextSink {
            out,
            keep: |chain: &str| fixed.contains(&chain),
            rules: 0,
        };
        layout.emit_nat_head(ctx, &mut sink);
        if fixed.iter().any(|chain| {
            *chain == chainsmith_naming::fixed::KUBE_SERVICES
                || *chain == chainsmith_naming::fixed::KUBE_NODEPORTS
        }) {
            for port in request.all_ports.clone() {
                layout.emit_nat(port, ctx, large_cluster, false, &mut sink);
            }
        }
        layout.emit_nat_tail(ctx, &mut sink);
        counts.nat_rules = sink.rules;
        for (port, chains) in &request.nat_own_chains {
            let mut sink = TextSink {
                out,
                keep: |chain: &str| chains.iter().any(|c| c.as_str() == chain),
                rules: 0,
            };
            layout.emit_nat(port, ctx, large_cluster, true, &mut sink);
            counts.nat_rules += sink.rules;
        }
        for chain in &request.nat_deleted {
            write_delete_line(out, chain.as_str());
        }
        counts.nat_deleted_chains = request.nat_deleted.len();
        out.extend_from_slice(b"COMMIT\n");
        counts
    }
}

/// What [`PayloadWriter::write_chains`] should rewrite.
#[derive(Debug)]
pub struct ChainRequest<'p, I> {
    /// Every port of the plan (shared chains gather their rules from all).
    pub all_ports: I,
    /// Fixed filter chains to rewrite.
    pub filter_chains: Vec<&'static str>,
    /// Fixed nat chains to rewrite.
    pub nat_fixed_chains: Vec<&'static str>,
    /// Per-service chains to rewrite, with the port that owns them.
    pub nat_own_chains: Vec<(&'p ServicePortPlan, Vec<ChainName>)>,
    /// Per-service chains to delete.
    pub nat_deleted: Vec<ChainName>,
}

/// The full-sync payload of a plan in a layout: what `chainsmith compile`
/// prints. Every piece written is a `&str`, so the bytes are UTF-8.
pub fn render_plan(plan: &Plan, layout: Layout) -> Vec<u8> {
    let mut writer = PayloadWriter::new();
    // About three lines of ~110 bytes per endpoint and eight per port; growing
    // the buffer by doubling would copy the payload twice over.
    let endpoints: usize = plan.ports.iter().map(|p| p.endpoints().len()).sum();
    writer
        .out
        .reserve(endpoints * 330 + plan.ports.len() * 900 + 4096);
    writer.write_upstream(
        layout,
        &plan.ctx,
        plan.large_cluster,
        || plan.ports.iter().map(|p| (&**p, true)),
        &[],
    );
    writer.take()
}
