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
        if let Some(object) = &self.object {
            write!(f, " {object}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}
