//! The reader of the kernel's listing: what `nft list ruleset` or `nft list
//! table` prints.
//!
//! The listing is nft's own block form (one object per block, one rule or
//! attribute per line, set elements wrapped across lines), not knftables' line
//! form, and it spells rules the kernel's way. The `kube-proxy` tables of
//! families `ip` and `ip6` are read into [`Table`]s with every rule exactly as
//! printed; compare them with a model through [`Table::canonical`]. Every other
//! table is only named: its contents are someone else's.

use crate::op::{BaseChain, ChainSpec, Element, Family, Hook, Op, SetKind, SetSpec, TABLE_NAME, Transaction};
use crate::read::{ReadError, element, split_comment, unquote};
use crate::table::Table;

/// What a listing holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The `kube-proxy` tables of families `ip` and `ip6`, in listing order.
    pub tables: Vec<Table>,
    /// Every other table, as `FAMILY NAME` (`inet filter`), in listing order.
    pub other_tables: Vec<String>,
}

impl Listing {
    /// The `kube-proxy` table of `family`, if listed.
    pub fn table(&self, family: Family) -> Option<&Table> {
        self.tables.iter().find(|t| t.family() == family)
    }
}

/// One meaningful line: its 1-based number, as printed, and its content
/// (trimmed, `# handle N` from `nft -a` removed).
#[derive(Debug, Clone, Copy)]
struct Line<'t> {
    number: usize,
    raw: &'t str,
    text: &'t str,
}

impl Line<'_> {
    fn error(&self, reason: impl Into<String>) -> ReadError {
        ReadError {
            line: self.number,
            text: self.raw.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads a listing. Errors name the line: anything in a `kube-proxy` table
/// that a [`Table`] cannot hold (another chain type, a `drop` policy, set
/// attributes beyond type, flags, timeout, size and comment, other object
/// kinds) is refused rather than dropped, so a comparison never passes
/// because something went unread.
pub fn read_listing(text: &str) -> Result<Listing, ReadError> {
    let lines: Vec<Line<'_>> = text
        .lines()
        .enumerate()
        .map(|(i, raw)| Line {
            number: i + 1,
            raw,
            text: without_handle(raw.trim()),
        })
        .filter(|l| !l.text.is_empty() && !l.text.starts_with('#'))
        .collect();
    let mut lines = lines.into_iter();
    let mut listing = Listing {
        tables: Vec::new(),
        other_tables: Vec::new(),
    };
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.text.split_whitespace().collect();
        let ["table", family, name, "{", ..] = words[..] else {
            return Err(line.error("expected `table FAMILY NAME {`"));
        };
        let family = match family {
            "ip" => Some(Family::Ip),
            "ip6" => Some(Family::Ip6),
            _ => None,
        };
        match family {
            Some(family) if unquoted_name(name) == TABLE_NAME => {
                if listing.table(family).is_some() {
                    return Err(line.error(format!("a second {family} {TABLE_NAME} table")));
                }
                listing.tables.push(read_table(family, line, &mut lines)?);
            }
            _ => {
                skip_block(line, &mut lines)?;
                listing
                    .other_tables
                    .push(format!("{} {}", words[1], unquoted_name(name)));
            }
        }
    }
    Ok(listing)
}

/// `nft -a` ends lines with `# handle N`; a `#` inside a comment string is text.
fn without_handle(text: &str) -> &str {
    match text.rfind(" # handle ") {
        Some(at)
            if text[at + " # handle ".len()..]
                .bytes()
                .all(|b| b.is_ascii_digit())
                && !inside_quotes(text, at) =>
        {
            text[..at].trim_end()
        }
        _ => text,
    }
}

fn inside_quotes(text: &str, at: usize) -> bool {
    text[..at].bytes().filter(|&b| b == b'"').count() % 2 == 1
}

/// A name may be quoted as well as bare: nft reads both.
fn unquoted_name(name: &str) -> &str {
    name.strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name)
}

/// `{` minus `}` outside double quotes.
fn brace_balance(text: &str) -> i64 {
    let mut balance = 0;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => balance += 1,
            '}' if !quoted => balance -= 1,
            _ => {}
        }
    }
    balance
}

/// Skips a block whose header is `header`, up to its closing brace.
fn skip_block<'t>(header: Line<'t>, lines: &mut impl Iterator<Item = Line<'t>>) -> Result<(), ReadError> {
    let mut depth = brace_balance(header.text);
    while depth > 0 {
        let line = lines
            .next()
            .ok_or_else(|| header.error("the block is never closed"))?;
        depth += brace_balance(line.text);
    }
    Ok(())
}

struct ChainBlock<'t> {
    line: Line<'t>,
    spec: ChainSpec,
    rules: Vec<(Line<'t>, String, Option<String>)>,
}

struct SetBlock<'t> {
    line: Line<'t>,
    spec: SetSpec,
    elements: Vec<(Line<'t>, Element)>,
}

fn read_table<'t>(
    family: Family,
    header: Line<'t>,
    lines: &mut impl Iterator<Item = Line<'t>>,
) -> Result<Table, ReadError> {
    let mut comment = None;
    let mut chains = Vec::new();
    let mut sets = Vec::new();
    loop {
        let line = lines
            .next()
            .ok_or_else(|| header.error("the table is never closed"))?;
        if line.text == "}" {
            break;
        }
        if line.text.starts_with("comment ") {
            comment = Some(comment_of(line)?);
            continue;
        }
        let words: Vec<&str> = line.text.split_whitespace().collect();
        match words[..] {
            ["chain", name, "{"] => chains.push(read_chain(unquoted_name(name), line, lines)?),
            ["chain", name, "{", "}"] => chains.push(ChainBlock {
                line,
                spec: ChainSpec::regular(unquoted_name(name)),
                rules: Vec::new(),
            }),
            ["set", name, "{"] => sets.push(read_set(SetKind::Set, unquoted_name(name), line, lines)?),
            ["map", name, "{"] => sets.push(read_set(SetKind::Map, unquoted_name(name), line, lines)?),
            _ => return Err(line.error("not a chain, set or map; a kube-proxy table holds nothing else")),
        }
    }

    // The listing prints sets before the chains their map elements jump to
    // and chains before the chains their rules jump to, so declare every
    // object first, then fill them, as `nft -f` of a dump would.
    let mut ops: Vec<(Line<'t>, Op)> = vec![(header, Op::AddTable { comment })];
    ops.extend(chains.iter().map(|c| (c.line, Op::AddChain(c.spec.clone()))));
    ops.extend(sets.iter().map(|s| (s.line, Op::AddSet(s.spec.clone()))));
    for chain in &chains {
        ops.extend(chain.rules.iter().map(|(line, rule, comment)| {
            let op = Op::AddRule {
                chain: chain.spec.name.clone(),
                rule: rule.clone(),
                comment: comment.clone(),
            };
            (*line, op)
        }));
    }
    for set in &sets {
        ops.extend(set.elements.iter().map(|(line, element)| {
            let op = Op::AddElement {
                set: set.spec.name.clone(),
                element: element.clone(),
            };
            (*line, op)
        }));
    }
    let (op_lines, ops): (Vec<Line<'t>>, Vec<Op>) = ops.into_iter().unzip();
    let mut table = Table::new(family);
    table
        .apply(&Transaction { family, ops })
        .map_err(|e| match op_lines.get(e.index.saturating_sub(1)) {
            Some(line) => line.error(e.reason),
            None => header.error(e.reason),
        })?;
    Ok(table)
}

fn comment_of(line: Line<'_>) -> Result<String, ReadError> {
    let quoted = line.text.strip_prefix("comment ").unwrap_or(line.text);
    unquote(quoted).map_err(|e| line.error(e))
}

fn read_chain<'t>(
    name: &str,
    header: Line<'t>,
    lines: &mut impl Iterator<Item = Line<'t>>,
) -> Result<ChainBlock<'t>, ReadError> {
    let mut block = ChainBlock {
        line: header,
        spec: ChainSpec::regular(name),
        rules: Vec::new(),
    };
    loop {
        let line = lines
            .next()
            .ok_or_else(|| header.error("the chain is never closed"))?;
        if line.text == "}" {
            return Ok(block);
        }
        // No statement starts with `type` or `comment`, so these lines are
        // the chain's own wherever they stand.
        if line.text.starts_with("type ") {
            block.spec.base = Some(base_chain(line.text).map_err(|e| line.error(e))?);
        } else if line.text.starts_with("comment ") {
            block.spec.comment = Some(comment_of(line)?);
        } else {
            let (rule, comment) = split_comment(line.text).map_err(|e| line.error(e))?;
            block.rules.push((line, rule.to_string(), comment));
        }
    }
}

/// `type filter hook prerouting priority dstnat - 10; policy accept;`
fn base_chain(text: &str) -> Result<BaseChain, String> {
    let mut base = None;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words[..] {
            ["type", chain_type, "hook", hook, "priority", ref priority @ ..] => {
                base = Some(BaseChain {
                    chain_type: match chain_type {
                        "filter" => "filter",
                        "nat" => "nat",
                        other => return Err(format!("chain type {other:?} is not filter or nat")),
                    },
                    hook: Hook::ALL
                        .into_iter()
                        .find(|h| h.as_str() == hook)
                        .ok_or_else(|| format!("unknown hook {hook:?}"))?,
                    priority: priority_number(priority)?,
                });
            }
            ["policy", "accept"] => {}
            _ => {
                return Err(format!(
                    "{part:?} is not modelled (type, hook, priority and policy accept are)"
                ));
            }
        }
    }
    base.ok_or_else(|| "a base chain without type".to_string())
}

/// A priority as nft prints it: a number, or a name with an optional `+ N`/`- N`.
fn priority_number(words: &[&str]) -> Result<i32, String> {
    let text = words.join(" ");
    let bad = || format!("priority {text:?} is not a number or a standard name");
    let (base, offset) = match words {
        [number] if number.parse::<i32>().is_ok() => return number.parse().map_err(|_| bad()),
        [name] => (*name, 0),
        [name, "+", n] => (*name, n.parse::<i32>().map_err(|_| bad())?),
        [name, "-", n] => (
            *name,
            n.parse::<i32>()
                .map_err(|_| bad())?
                .checked_neg()
                .ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    // The ip and ip6 families' standard priorities (nft(8), CHAINS).
    let base: i32 = match base {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return Err(bad()),
    };
    base.checked_add(offset).ok_or_else(bad)
}

fn read_set<'t>(
    kind: SetKind,
    name: &str,
    header: Line<'t>,
    lines: &mut impl Iterator<Item = Line<'t>>,
) -> Result<SetBlock<'t>, ReadError> {
    let mut block = SetBlock {
        line: header,
        spec: SetSpec {
            kind,
            name: name.to_string(),
            type_text: String::new(),
            flags: Vec::new(),
            timeout_seconds: None,
            comment: None,
        },
        elements: Vec::new(),
    };
    loop {
        let line = lines
            .next()
            .ok_or_else(|| header.error("the set is never closed"))?;
        let text = line.text;
        if text == "}" {
            break;
        }
        if let Some(type_text) = text.strip_prefix("type ") {
            block.spec.type_text = type_text.to_string();
        } else if let Some(flags) = text.strip_prefix("flags ") {
            block.spec.flags = flags.split(',').map(|f| f.trim().to_string()).collect();
        } else if let Some(timeout) = text.strip_prefix("timeout ") {
            block.spec.timeout_seconds = Some(seconds(timeout).map_err(|e| line.error(e))?);
        } else if let Some(size) = text.strip_prefix("size ") {
            // The kernel's limit on a set's elements (65535 for sets the packet
            // path fills); knftables leaves it to the kernel, so it says nothing.
            size.parse::<u32>()
                .map_err(|_| line.error(format!("size {size:?} is not a number")))?;
        } else if text.starts_with("comment ") {
            block.spec.comment = Some(comment_of(line)?);
        } else if let Some(first) = text.strip_prefix("elements = ") {
            block.elements = read_elements(line, first, lines)?;
        } else {
            return Err(line.error(format!("{text:?} is not modelled in a {}", kind.as_str())));
        }
    }
    if block.spec.type_text.is_empty() {
        return Err(header.error(format!("a {} without type", kind.as_str())));
    }
    if (kind == SetKind::Map) != block.spec.type_text.contains(" : ") {
        return Err(header.error(format!(
            "type {:?} does not fit a {}",
            block.spec.type_text,
            kind.as_str()
        )));
    }
    Ok(block)
}

/// `elements = { a, b,` continued on further lines up to the closing `}`;
/// each element is attributed to the line it starts on.
fn read_elements<'t>(
    first_line: Line<'t>,
    first: &'t str,
    lines: &mut impl Iterator<Item = Line<'t>>,
) -> Result<Vec<(Line<'t>, Element)>, ReadError> {
    let mut parts: Vec<(Line<'t>, &'t str)> = vec![(first_line, first)];
    // nft wraps the list between elements, never inside a quoted comment, so
    // a line with an open quote is broken, and must not hide the closing brace.
    let unterminated = |line: Line<'_>, text: &str| {
        if inside_quotes(text, text.len()) {
            Err(line.error("unterminated quote"))
        } else {
            Ok(())
        }
    };
    unterminated(first_line, first)?;
    let mut depth = brace_balance(first);
    while depth > 0 {
        let line = lines
            .next()
            .ok_or_else(|| first_line.error("the elements are never closed"))?;
        unterminated(line, line.text)?;
        depth += brace_balance(line.text);
        parts.push((line, line.text));
    }
    // Split on commas outside quotes, across lines, remembering where each element began.
    let mut elements: Vec<(Line<'t>, String)> = Vec::new();
    let mut current = String::new();
    let mut current_line = first_line;
    let mut quoted = false;
    for (line, part) in parts {
        if !current.trim().is_empty() {
            current.push(' ');
        }
        for c in part.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    elements.push((current_line, std::mem::take(&mut current)));
                    continue;
                }
                _ => {}
            }
            if current.trim().is_empty() && !c.is_whitespace() {
                current_line = line;
            }
            current.push(c);
        }
    }
    elements.push((current_line, current));

    // Strip the braces from the first and last elements.
    let count = elements.len();
    let mut read = Vec::with_capacity(count);
    for (i, (line, text)) in elements.into_iter().enumerate() {
        let mut trimmed = text.trim();
        if i == 0 {
            trimmed = trimmed
                .strip_prefix('{')
                .ok_or_else(|| line.error("expected `elements = { ... }`"))?
                .trim_start();
        }
        if i + 1 == count {
            trimmed = trimmed
                .strip_suffix('}')
                .ok_or_else(|| line.error("expected `elements = { ... }`"))?
                .trim_end();
        }
        let mut element = element(trimmed).map_err(|e| line.error(e))?;
        element.key = without_timers(&element.key);
        read.push((line, element));
    }
    Ok(read)
}

/// An element the packet path added to a timeout set is listed with its
/// timers (`10.0.0.1 timeout 1h expires 59m58s`); they are the entry's state,
/// not part of its key.
fn without_timers(key: &str) -> String {
    let mut words = key.split(' ');
    let mut kept = Vec::new();
    while let Some(word) = words.next() {
        if word == "timeout" || word == "expires" {
            words.next();
        } else {
            kept.push(word);
        }
    }
    kept.join(" ")
}

/// A duration as nft prints or reads it (`3h`, `1h30m`, `1d1m1s`, `10800s`,
/// `500ms`) in whole seconds.
fn seconds(text: &str) -> Result<u32, String> {
    let bad = || format!("timeout {text:?} is not a duration in whole seconds");
    let mut millis: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |at| digits + at);
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit: u64 = match &rest[digits..unit_end] {
            "d" => 86_400_000,
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(bad()),
        };
        millis = value
            .checked_mul(unit)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_end..];
    }
    if !millis.is_multiple_of(1000) {
        return Err(bad());
    }
    u32::try_from(millis / 1000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, read_transaction};

    const LISTING: &str = r#"# Warning: table ip nat is managed by iptables-nft, do not touch!
table ip nat {
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		counter packets 0 bytes 0 masquerade comment "a } { comment"
	}
}
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs, {all}"
		elements = { 172.30.0.41, 172.30.0.42,
			     172.30.0.43 }
	}

	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80, { odd }" : drop,
			     172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
	}

	set affinity-X {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 1h30m
		elements = { 10.0.0.1 timeout 1h expires 59m59s992ms, 10.0.0.3 expires 1h29m comment "c" }
	}

	chain filter-prerouting-pre-dnat {
		type filter hook prerouting priority dstnat - 10; policy accept;
		jump reject-chain
	}

	chain nat-postrouting {
		comment "base, with comment"
		type nat hook postrouting priority srcnat + 5; policy accept;
	}

	chain reject-chain {
		comment "helper for @no-endpoint-services / @no-endpoint-nodeports"
		ip daddr @cluster-ips reject comment "quoted, { braces } and # handle 9"
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
	}
}
"#;

    #[test]
    fn a_listing_reads_into_tables_and_names_the_others() {
        let listing = read_listing(LISTING).expect("reads");
        assert_eq!(listing.other_tables, ["ip nat", "inet filter"]);
        let table = listing.table(Family::Ip).expect("ip kube-proxy");
        assert!(listing.table(Family::Ip6).is_none());

        let keys: Vec<&str> = table.elements("cluster-ips").map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["172.30.0.41", "172.30.0.42", "172.30.0.43"]);
        assert_eq!(
            table.set("cluster-ips").and_then(|s| s.comment.as_deref()),
            Some("Active ClusterIPs, {all}")
        );
        let odd = table
            .element("no-endpoint-services", "1.2.3.4 . tcp . 80")
            .expect("element with a comma and braces in its comment");
        assert_eq!(odd.comment.as_deref(), Some("ns2/svc2:p80, { odd }"));
        assert_eq!(odd.value.as_deref(), Some("drop"));

        let affinity = table.set("affinity-X").expect("dynamic set");
        assert_eq!(affinity.timeout_seconds, Some(5400));
        assert_eq!(affinity.flags, ["dynamic", "timeout"]);
        let learned: Vec<&str> = table.elements("affinity-X").map(|e| e.key.as_str()).collect();
        assert_eq!(learned, ["10.0.0.1", "10.0.0.3"]);

        let pre_dnat = table
            .chain("filter-prerouting-pre-dnat")
            .and_then(|c| c.base.clone());
        assert_eq!(pre_dnat.map(|b| b.priority), Some(-110));
        let post = table.chain("nat-postrouting").expect("chain");
        assert_eq!(post.base.as_ref().map(|b| b.priority), Some(105));
        assert_eq!(post.comment.as_deref(), Some("base, with comment"));
        let rules: Vec<_> = table.rules("reject-chain").collect();
        assert_eq!(
            rules,
            [(
                "ip daddr @cluster-ips reject",
                Some("quoted, { braces } and # handle 9")
            )]
        );
    }

    #[test]
    fn handles_from_nft_a_are_dropped() {
        let listing = read_listing(
            "table ip kube-proxy { # handle 1\n\tchain a { # handle 2\n\t\tjump b # handle 4\n\t}\n\tchain b { # handle 3\n\t}\n}\n",
        )
        .expect("reads");
        let table = listing.table(Family::Ip).expect("table");
        assert_eq!(table.rules("a").collect::<Vec<_>>(), [("jump b", None)]);
    }

    #[test]
    fn the_listing_of_a_dump_is_the_same_table() {
        let tx = read_transaction(
            concat!(
                "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n",
                "add chain ip kube-proxy services\n",
                "add chain ip kube-proxy service-A\n",
                "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n",
                "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n",
                "add element ip kube-proxy service-ips { 172.30.0.1 . tcp . 80 : goto service-A }\n",
            ),
            Family::Ip,
        )
        .expect("reads");
        let mut model = Table::new(Family::Ip);
        model.apply(&tx).expect("applies");
        let listing = read_listing(
            r#"table ip kube-proxy {
	comment "rules for kube-proxy"
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 172.30.0.1 . tcp . 80 : goto service-A }
	}

	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}

	chain service-A {
	}
}
"#,
        )
        .expect("reads");
        assert_eq!(listing.tables, [model]);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        for (text, line, why) in [
            (
                "table ip kube-proxy {\n\tchain a {\n\t\tjump nowhere\n\t}\n}\n",
                3,
                "no chain nowhere",
            ),
            (
                "table ip kube-proxy {\n\tflowtable f {\n\t}\n}\n",
                2,
                "not a chain, set or map",
            ),
            (
                "table ip kube-proxy {\n\tchain a {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n",
                3,
                "policy drop",
            ),
            (
                "table ip kube-proxy {\n\tchain a {\n\t\ttype route hook output priority 0; policy accept;\n\t}\n}\n",
                3,
                "chain type",
            ),
            (
                "table ip kube-proxy {\n\tchain a {\n\t\ttype filter hook input priority first; policy accept;\n\t}\n}\n",
                3,
                "priority",
            ),
            (
                "table ip kube-proxy {\n\tset s {\n\t\ttype ipv4_addr\n\t\ttimeout 1h500ms\n\t}\n}\n",
                4,
                "whole seconds",
            ),
            (
                "table ip kube-proxy {\n\tset s {\n\t\ttype ipv4_addr\n\t\tpolicy memory\n\t}\n}\n",
                4,
                "not modelled",
            ),
            (
                "table ip kube-proxy {\n\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 10.0.0.1 : drop,\n\t\t\t     10.0.0.2 : goto missing }\n\t}\n}\n",
                5,
                "no chain missing",
            ),
            (
                "table ip kube-proxy {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1,\n\t\t\t     10.0.0.2 \"x }\n\t}\n}\n",
                5,
                "unterminated quote",
            ),
            ("table ip kube-proxy {\n\tchain a {\n\t}\n", 1, "never closed"),
            ("chain a {\n}\n", 1, "expected `table"),
            ("table inet filter {\n\tchain a {\n", 1, "never closed"),
        ] {
            let error = read_listing(text).expect_err(text);
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn durations_in_every_nft_unit() {
        for (text, expected) in [
            ("3h", 10_800),
            ("10800s", 10_800),
            ("1h30m", 5_400),
            ("1d", 86_400),
            ("1d1m1s", 86_461),
            ("10m", 600),
            ("1s1000ms", 2),
        ] {
            assert_eq!(seconds(text), Ok(expected), "{text}");
        }
        for text in ["", "3", "h", "1x", "500ms", "99999999999d"] {
            assert!(seconds(text).is_err(), "{text}");
        }
    }

    #[test]
    fn priorities_by_name_or_number() {
        for (words, expected) in [
            (&["dstnat", "-", "10"][..], -110),
            (&["filter"][..], 0),
            (&["srcnat"][..], 100),
            (&["mangle"][..], -150),
            (&["raw"][..], -300),
            (&["security", "+", "1"][..], 51),
            (&["-110"][..], -110),
            (&["100"][..], 100),
        ] {
            assert_eq!(priority_number(words), Ok(expected), "{words:?}");
        }
    }
}
