//! Label and field selectors, as the API server reads them from a query.
//!
//! Labels: a comma-separated AND of `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)` and `key notin (a,b)`. As upstream, `!=` and
//! `notin` also match objects without the label. Fields: `metadata.name` and
//! `metadata.namespace` with `=`, `==` or `!=`; any other field is refused, as
//! the API server refuses a field label a resource does not index.

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Which metadata field a field requirement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// One field requirement: field, wanted value, negated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    field: Field,
    value: String,
    negated: bool,
}

/// Everything a list or watch filters on: labels, fields and the namespace of
/// a namespaced path (`/api/v1/namespaces/NS/services`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    /// Parses the `labelSelector` and `fieldSelector` query values; `namespace`
    /// is the namespace of the request path, if any.
    pub(crate) fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Filter, String> {
        let mut filter = Filter::default();
        if let Some(labels) = labels {
            filter.labels = parse_labels(labels)?;
        }
        if let Some(fields) = fields {
            filter.fields = parse_fields(fields)?;
        }
        if let Some(namespace) = namespace {
            filter.fields.push(FieldReq {
                field: Field::Namespace,
                value: namespace.to_string(),
                negated: false,
            });
        }
        Ok(filter)
    }

    /// Does this object pass every requirement?
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let labels = &metadata["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_pass = self.labels.iter().all(|req| match req {
            LabelReq::Exists(key) => label(key).is_some(),
            LabelReq::NotExists(key) => label(key).is_none(),
            LabelReq::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelReq::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelReq::In(key, values) => label(key).is_some_and(|v| values.iter().any(|w| w == v)),
            LabelReq::NotIn(key, values) => !label(key).is_some_and(|v| values.iter().any(|w| w == v)),
        });
        labels_pass
            && self.fields.iter().all(|req| {
                let actual = match req.field {
                    Field::Name => metadata["name"].as_str().unwrap_or(""),
                    Field::Namespace => metadata["namespace"].as_str().unwrap_or(""),
                };
                (actual == req.value) != req.negated
            })
    }
}

/// Splits on commas that are not inside parentheses (`a in (x,y),b`).
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn check_key(key: &str, term: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        ))
    }
}

fn parse_labels(selector: &str) -> Result<Vec<LabelReq>, String> {
    split_terms(selector).into_iter().map(parse_label_term).collect()
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(check_key(key.trim(), term)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelReq::NotEquals(
            check_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelReq::Equals(
            check_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    if let Some(open) = term.find('(') {
        let mut head = term[..open].split_whitespace();
        let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
            return Err(format!("unable to parse requirement: {term:?}"));
        };
        let Some(inner) = term[open + 1..].trim_end().strip_suffix(')') else {
            return Err(format!("unable to parse requirement: missing ')' in {term:?}"));
        };
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let key = check_key(key, term)?;
        return match op {
            "in" => Ok(LabelReq::In(key, values)),
            "notin" => Ok(LabelReq::NotIn(key, values)),
            _ => Err(format!("unable to parse requirement: unknown operator {op:?}")),
        };
    }
    Ok(LabelReq::Exists(check_key(term, term)?))
}

fn parse_fields(selector: &str) -> Result<Vec<FieldReq>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: {term:?}; can't understand it"));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            Ok(FieldReq {
                field,
                value: value.trim().to_string(),
                negated,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "labels": labels}})
    }

    fn matches(labels: &str, object: &Value) -> bool {
        Filter::parse(Some(labels), None, None).unwrap().matches(object)
    }

    #[test]
    fn kube_proxy_selector() {
        let sel = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
        assert!(matches(sel, &svc(json!({"app": "web"}))));
        assert!(matches(sel, &json!({"metadata": {"name": "x"}})));
        assert!(!matches(
            sel,
            &svc(json!({"service.kubernetes.io/service-proxy-name": "other"}))
        ));
        assert!(!matches(sel, &svc(json!({"service.kubernetes.io/headless": ""}))));
    }

    #[test]
    fn equality_and_sets() {
        let o = svc(json!({"app": "web", "tier": "front"}));
        assert!(matches("app=web", &o));
        assert!(matches("app==web,tier", &o));
        assert!(!matches("app!=web", &o));
        assert!(matches("missing!=x", &o));
        assert!(matches("tier in (back, front)", &o));
        assert!(!matches("tier notin (back,front),app", &o));
        assert!(matches("other notin (a)", &o));
        assert!(matches("", &o));
        assert!(Filter::parse(Some("a in b"), None, None).is_err());
        assert!(Filter::parse(Some("a b"), None, None).is_err());
    }

    #[test]
    fn fields_and_namespace() {
        let o = svc(json!({}));
        let f = |fields: &str, ns: Option<&str>| Filter::parse(None, Some(fields), ns).unwrap().matches(&o);
        assert!(f("metadata.name=web", None));
        assert!(f("metadata.name==web,metadata.namespace=shop", None));
        assert!(!f("metadata.name!=web", None));
        assert!(!f("metadata.name=web", Some("other")));
        assert!(Filter::parse(None, Some("spec.type=NodePort"), None).is_err());
    }
}
