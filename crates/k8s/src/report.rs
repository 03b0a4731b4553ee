//! Diagnostics about one object, and the checks shared by Services and slices.

use chainsmith_model::{Diagnostic, ObjectKey, ObjectKind};

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

    /// Refuses text that would break out of a quoted `--comment "..."` or a rule
    /// line in the iptables-restore payload. Returns false after warning.
    pub fn check_name(&mut self, field: &str, value: &str) -> bool {
        let Some(bad) = value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'))
        else {
            return true;
        };
        let message = format!(
            "{value:?} contains {bad:?}, which would corrupt the iptables-restore input ({} skipped)",
            self.kind
        );
        self.warn(field, message);
        false
    }
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
