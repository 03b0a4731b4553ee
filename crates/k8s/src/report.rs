//! Diagnostics about one object, and the checks shared by Services and slices.

use chainsmith_model::{Diagnostic, ObjectKey, ObjectKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Label that hands a Service (and its slices) to another proxy implementation.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on headless Services' slices.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Collects diagnostics about one object.
pub struct Report<'a> {
    kind: ObjectKind,
    key: Option<ObjectKey>,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub fn new(kind: ObjectKind, key: Option<ObjectKey>, diags: &'a mut Vec<Diagnostic>) -> Report<'a> {
        Report { kind, key, diags }
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(self.kind, self.key.clone(), field, message));
    }

    pub fn info(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::info(self.kind, self.key.clone(), field, message));
    }

    /// Refuses a name that would break the rules it is written into: an
    /// iptables comment (`--comment "ns/svc:port"`), or an nftables chain name
    /// (`service-HASH-ns/svc/tcp/port`), which `nft` reads as a bare word of
    /// letters, digits, `_`, `-`, `.` and `/`. Kubernetes names never hold
    /// anything else (DNS labels and subdomains, IANA service names), so only
    /// hand-written input is refused. Returns false after warning.
    pub fn check_name(&mut self, field: &str, value: &str) -> bool {
        let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        else {
            return true;
        };
        let message = format!(
            "{value:?} contains {bad:?}, which is not allowed in a Kubernetes name and would corrupt the rules ({} skipped)",
            self.kind
        );
        self.warn(field, message);
        false
    }
}

/// The checks every Service and EndpointSlice starts with: a name, names that
/// cannot corrupt a payload, and none of the labels that keep an object from
/// kube-proxy (its informers' label selector). Returns the object's key and
/// its report, or `None` (with a diagnostic) when the object is skipped.
pub fn start<'a>(
    kind: ObjectKind,
    meta: &ObjectMeta,
    diags: &'a mut Vec<Diagnostic>,
) -> Option<(ObjectKey, Report<'a>)> {
    let namespace = namespace_or_default(meta.namespace.as_deref());
    let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) else {
        Report::new(kind, None, diags).warn("metadata.name", format!("missing name ({kind} skipped)"));
        return None;
    };
    let key = ObjectKey::new(namespace, name);
    let mut report = Report::new(kind, Some(key.clone()), diags);
    if !report.check_name("metadata.namespace", namespace) || !report.check_name("metadata.name", name) {
        return None;
    }
    let labels = meta.labels.as_ref();
    for label in [SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL] {
        if labels.is_some_and(|l| l.contains_key(label)) {
            report.info(
                format!("metadata.labels[{label:?}]"),
                format!("not for kube-proxy ({kind} skipped)"),
            );
            return None;
        }
    }
    Some((key, report))
}

/// `metadata.namespace`, defaulting the way `kubectl apply` does.
pub fn namespace_or_default(namespace: Option<&str>) -> &str {
    match namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// A port number in 1..=65535.
pub fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}
