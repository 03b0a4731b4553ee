//! Problems found in the input, reported beside the result instead of failing it.

use std::fmt;

use crate::ObjectKey;

/// The kind of object a diagnostic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A `v1/Service`.
    Service,
    /// A `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// A `v1/Node`.
    Node,
    /// A `networking.k8s.io/v1/ServiceCIDR`.
    ServiceCidr,
    /// The node / proxier configuration.
    NodeConfig,
    /// A manifest document that could not be identified.
    Document,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Node => "Node",
            ObjectKind::ServiceCidr => "ServiceCIDR",
            ObjectKind::NodeConfig => "node config",
            ObjectKind::Document => "document",
        })
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Input was skipped or changed; the rules may differ from what the user meant.
    Warning,
    /// Expected behaviour worth knowing (e.g. a Service skipped by design).
    Info,
}

/// One problem with one field of one object, e.g.
/// `Service ns1/svc1: spec.externalIPs[1]: invalid IP address "1.2.3" (skipped)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// What kind of object.
    pub kind: ObjectKind,
    /// Which object (`None` when it could not be identified).
    pub object: Option<ObjectKey>,
    /// The field path (`spec.ports[0].port`); empty for the whole object.
    pub field: String,
    /// What is wrong and what was done about it.
    pub message: String,
    /// Where the object came from (`cluster.yaml:12`), when known.
    pub source: Option<String>,
}

impl Diagnostic {
    /// A warning about one field.
    pub fn warning(
        kind: ObjectKind,
        object: Option<ObjectKey>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(Severity::Warning, kind, object, field.into(), message.into())
    }

    /// An informational note about one object.
    pub fn info(
        kind: ObjectKind,
        object: Option<ObjectKey>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(Severity::Info, kind, object, field.into(), message.into())
    }

    fn new(
        severity: Severity,
        kind: ObjectKind,
        object: Option<ObjectKey>,
        field: String,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            kind,
            object,
            field,
            message,
            source: None,
        }
    }
}

impl Diagnostic {
    /// The same diagnostic with its origin recorded.
    pub fn at(mut self, source: impl Into<String>) -> Diagnostic {
        self.source = Some(source.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        write!(f, "{}", self.kind)?;
        match &self.object {
            // Cluster-scoped objects (Nodes, ServiceCIDRs) have no namespace:
            // `Node n1`, not `Node /n1`.
            Some(object) if object.namespace.is_empty() => write!(f, " {}", object.name)?,
            Some(object) => write!(f, " {object}")?,
            None => {}
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_object_its_field_and_what_was_done() {
        let namespaced = Diagnostic::warning(
            ObjectKind::Service,
            Some(ObjectKey::new("ns1", "svc1")),
            "spec.externalIPs[1]",
            "invalid IP address \"1.2.3\" (skipped)",
        );
        assert_eq!(
            namespaced.to_string(),
            "Service ns1/svc1: spec.externalIPs[1]: invalid IP address \"1.2.3\" (skipped)"
        );
        let cluster_scoped = Diagnostic::warning(
            ObjectKind::ServiceCidr,
            Some(ObjectKey::new("", "kubernetes")),
            "spec.cidrs[0]",
            "invalid CIDR \"x\" (ignored)",
        )
        .at("cidrs.yaml:3");
        assert_eq!(
            cluster_scoped.to_string(),
            "cidrs.yaml:3: ServiceCIDR kubernetes: spec.cidrs[0]: invalid CIDR \"x\" (ignored)"
        );
        let unnamed = Diagnostic::warning(ObjectKind::Node, None, "metadata.name", "missing name");
        assert_eq!(unnamed.to_string(), "Node: metadata.name: missing name");
    }
}
