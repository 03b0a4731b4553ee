//! The one reader of knftables' line form (transactions and dumps).

use crate::op::{BaseChain, ChainSpec, Element, Family, Hook, Op, SetKind, SetSpec, TABLE_NAME, Transaction};

/// A line that is not an operation this vocabulary knows, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text}")]
pub struct ReadError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads a whole transaction or dump. Empty lines and `#` comments are
/// skipped; every operation must name the same family's `kube-proxy` table.
/// `default_family` is the family of an empty text.
pub fn read_transaction(text: &str, default_family: Family) -> Result<Transaction, ReadError> {
    let mut tx: Option<Transaction> = None;
    for (i, line) in text.lines().enumerate() {
        let error = |reason: String| ReadError {
            line: i + 1,
            text: line.to_string(),
            reason,
        };
        let Some((family, op)) = read_line(line).map_err(&error)? else {
            continue;
        };
        let tx = tx.get_or_insert_with(|| Transaction::new(family));
        if tx.family != family {
            return Err(error(format!(
                "family {family} after operations on {}; one transaction is one table",
                tx.family
            )));
        }
        tx.push(op);
    }
    Ok(tx.unwrap_or_else(|| Transaction::new(default_family)))
}

/// Reads one line: `None` for an empty line or a `#` comment.
pub fn read_line(line: &str) -> Result<Option<(Family, Op)>, String> {
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.splitn(5, ' ');
    let verb = words.next().unwrap_or_default();
    let object = words.next().ok_or("no object type")?;
    let family = match words.next().ok_or("no family")? {
        "ip" => Family::Ip,
        "ip6" => Family::Ip6,
        other => return Err(format!("family {other:?} is not ip or ip6")),
    };
    let table = words.next().ok_or("no table")?;
    if table != TABLE_NAME {
        return Err(format!("table {table:?} is not {TABLE_NAME}"));
    }
    let rest = words.next().unwrap_or_default();
    let (name, body) = match rest.split_once(' ') {
        Some((name, body)) => (name, body),
        None => (rest, ""),
    };
    let need_name = || {
        if name.is_empty() {
            Err(format!("{verb} {object} needs a name"))
        } else {
            Ok(name.to_string())
        }
    };
    let no_body = |op: Op| {
        if body.is_empty() {
            Ok(op)
        } else {
            Err(format!("unexpected text after the name: {body:?}"))
        }
    };
    let op = match (verb, object) {
        ("add", "table") => Op::AddTable {
            comment: match rest {
                "" => None,
                body => statements(braced(body)?)?
                    .into_iter()
                    .map(|s| comment_of(&s))
                    .next()
                    .transpose()?,
            },
        },
        ("delete", "table") if rest.is_empty() => Op::DeleteTable,
        ("add", "chain") => Op::AddChain(chain_spec(need_name()?, body)?),
        ("flush", "chain") => no_body(Op::FlushChain(need_name()?))?,
        ("delete", "chain") => no_body(Op::DeleteChain(need_name()?))?,
        ("add", "rule") => {
            let chain = need_name()?;
            if body.is_empty() {
                return Err("a rule needs a statement".into());
            }
            let (rule, comment) = split_comment(body)?;
            Op::AddRule {
                chain,
                rule: rule.to_string(),
                comment,
            }
        }
        ("add", "set") => Op::AddSet(set_spec(SetKind::Set, need_name()?, body)?),
        ("add", "map") => Op::AddSet(set_spec(SetKind::Map, need_name()?, body)?),
        ("flush", "set") => no_body(Op::FlushSet(SetKind::Set, need_name()?))?,
        ("flush", "map") => no_body(Op::FlushSet(SetKind::Map, need_name()?))?,
        ("delete", "set") => no_body(Op::DeleteSet(SetKind::Set, need_name()?))?,
        ("delete", "map") => no_body(Op::DeleteSet(SetKind::Map, need_name()?))?,
        ("add", "element") => Op::AddElement {
            set: need_name()?,
            element: element(braced(body)?)?,
        },
        ("delete", "element") => {
            let element = element(braced(body)?)?;
            if element.value.is_some() || element.comment.is_some() {
                return Err("delete element takes the key only".into());
            }
            Op::DeleteElement {
                set: need_name()?,
                key: element.key,
            }
        }
        _ => return Err(format!("unknown operation \"{verb} {object}\"")),
    };
    Ok(Some((family, op)))
}

/// The inside of `{ ... }`.
fn braced(body: &str) -> Result<&str, String> {
    body.strip_prefix("{ ")
        .and_then(|b| b.strip_suffix(" }"))
        .ok_or_else(|| format!("expected {{ ... }}, got {body:?}"))
}

/// Splits `a ; b ; ` on `;` outside quotes, trimmed, empty parts dropped.
fn statements(inner: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    parts.push(current);
    Ok(parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}

fn comment_of(statement: &str) -> Result<String, String> {
    statement
        .strip_prefix("comment ")
        .ok_or_else(|| format!("unexpected {statement:?}"))
        .and_then(unquote)
}

/// Reverses [`crate::quote`].
pub(crate) fn unquote(text: &str) -> Result<String, String> {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| format!("expected a quoted string, got {text:?}"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\')) => out.push(c),
                other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
            },
            '"' => return Err(format!("stray quote in {text:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A rule's trailing ` comment "..."`, split off.
pub(crate) fn split_comment(body: &str) -> Result<(&str, Option<String>), String> {
    if body.ends_with('"')
        && let Some(at) = body.rfind(" comment \"")
    {
        return Ok((&body[..at], Some(unquote(&body[at + " comment ".len()..])?)));
    }
    Ok((body, None))
}

fn chain_spec(name: String, body: &str) -> Result<ChainSpec, String> {
    let mut spec = ChainSpec::regular(name);
    if body.is_empty() {
        return Ok(spec);
    }
    for statement in statements(braced(body)?)? {
        if statement.starts_with("comment ") {
            spec.comment = Some(comment_of(&statement)?);
            continue;
        }
        let words: Vec<&str> = statement.split(' ').collect();
        let ["type", chain_type, "hook", hook, "priority", priority] = words[..] else {
            return Err(format!("unexpected {statement:?} in a chain"));
        };
        spec.base = Some(BaseChain {
            chain_type: match chain_type {
                "filter" => "filter",
                "nat" => "nat",
                other => return Err(format!("chain type {other:?} is not filter or nat")),
            },
            hook: Hook::ALL
                .into_iter()
                .find(|h| h.as_str() == hook)
                .ok_or_else(|| format!("unknown hook {hook:?}"))?,
            priority: priority
                .parse()
                .map_err(|_| format!("priority {priority:?} is not a number"))?,
        });
    }
    Ok(spec)
}

fn set_spec(kind: SetKind, name: String, body: &str) -> Result<SetSpec, String> {
    let mut spec = SetSpec {
        kind,
        name,
        type_text: String::new(),
        flags: Vec::new(),
        timeout_seconds: None,
        comment: None,
    };
    for statement in statements(braced(body)?)? {
        if let Some(type_text) = statement.strip_prefix("type ") {
            spec.type_text = type_text.to_string();
        } else if let Some(flags) = statement.strip_prefix("flags ") {
            spec.flags = flags.split(',').map(str::to_string).collect();
        } else if let Some(timeout) = statement.strip_prefix("timeout ") {
            let seconds = timeout.strip_suffix('s').and_then(|t| t.parse().ok());
            spec.timeout_seconds = Some(seconds.ok_or_else(|| format!("timeout {timeout:?} is not Ns"))?);
        } else if statement.starts_with("comment ") {
            spec.comment = Some(comment_of(&statement)?);
        } else {
            return Err(format!("unexpected {statement:?} in a {}", kind.as_str()));
        }
    }
    if spec.type_text.is_empty() {
        return Err(format!("a {} needs a type", kind.as_str()));
    }
    if (kind == SetKind::Map) != spec.type_text.contains(" : ") {
        return Err(format!(
            "type {:?} does not fit a {}",
            spec.type_text,
            kind.as_str()
        ));
    }
    Ok(spec)
}

/// `KEY[ comment "C"][ : VALUE]`.
pub(crate) fn element(inner: &str) -> Result<Element, String> {
    let (before_value, value) = match inner.rfind(" : ") {
        Some(at) if !inner[at..].contains('"') => (&inner[..at], Some(inner[at + 3..].to_string())),
        _ => (inner, None),
    };
    let (key, comment) = split_comment(before_value)?;
    if key.is_empty() || key.contains(['{', '}', '"']) {
        return Err(format!("bad element key {key:?}"));
    }
    Ok(Element {
        key: key.to_string(),
        value,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line form kube-proxy writes reads back to the operation that printed it.
    #[test]
    fn lines_read_back_to_what_printed_them() {
        let text = r#"add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-A , 1 : goto endpoint-B }
add set ip kube-proxy affinity-X { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy no-endpoint-services { 172.30.0.42 . tcp . 80 comment "ns2/svc2:p80" : goto reject-chain }
delete element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 }
flush set ip kube-proxy nodeport-ips
delete set ip kube-proxy affinity-X
delete chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
delete table ip kube-proxy
"#;
        let tx = read_transaction(text, Family::Ip).expect("reads");
        assert_eq!(tx.len(), 16);
        assert_eq!(tx.to_text(), text);
    }

    #[test]
    fn bad_lines_are_named() {
        for (line, why) in [
            ("add rule ip filter INPUT accept", "table \"filter\""),
            ("add chain inet kube-proxy x", "family \"inet\""),
            ("add element ip kube-proxy s 1.2.3.4", "expected {"),
            ("add rule ip kube-proxy services", "needs a statement"),
            ("insert rule ip kube-proxy x drop", "unknown operation"),
            ("add element ip kube-proxy s { a comment \"x }", "bad element key"),
        ] {
            let error = read_transaction(line, Family::Ip).expect_err(line);
            assert!(error.to_string().contains(why), "{line}: {error}");
            assert_eq!(error.line, 1);
        }
    }
}
