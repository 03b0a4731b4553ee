//! Multi-document YAML manifests (`cluster.yaml`, `kubectl get -o yaml`) ->
//! Services and EndpointSlices.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use chainsmith_model::{Diagnostic, EndpointSlice, ObjectKey, ObjectKind, Service, Severity};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::report::namespace_or_default;
use crate::yaml::{self, MAX_INPUT_BYTES};
use crate::{endpoint_slice_from_k8s, service_from_k8s};

/// What a manifest file contributes to the cluster state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifests {
    /// Services that translated, in file order (a later duplicate replaces an earlier one in place).
    pub services: Vec<Service>,
    /// EndpointSlices that translated, in file order (same duplicate rule).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Everything skipped or changed, each with its `source:line`.
    pub diagnostics: Vec<Diagnostic>,
}

impl Manifests {
    /// Adds another file's objects; an object whose key is already present
    /// replaces the earlier one (as a later `kubectl apply` would), with a warning.
    pub fn extend(&mut self, other: Manifests) {
        let mut index = self.index();
        self.diagnostics.extend(other.diagnostics);
        for svc in other.services {
            let diag = self.insert(&mut index, svc, None);
            self.diagnostics.extend(diag);
        }
        for slice in other.endpoint_slices {
            let diag = self.insert(&mut index, slice, None);
            self.diagnostics.extend(diag);
        }
    }

    fn index(&self) -> Index {
        let services = self.services.iter().map(|s| (Service::KIND, s.key.clone()));
        let slices = self
            .endpoint_slices
            .iter()
            .map(|s| (EndpointSlice::KIND, s.key.clone()));
        let services = services.enumerate().map(|(i, k)| (k, i));
        services.chain(slices.enumerate().map(|(i, k)| (k, i))).collect()
    }

    /// Appends `item`, or replaces the object with its key and returns a warning
    /// (`earlier` says where that one was read, when known).
    fn insert<T: Object>(&mut self, index: &mut Index, item: T, earlier: Option<&str>) -> Option<Diagnostic> {
        let list = T::list(self);
        match index.entry((T::KIND, item.key().clone())) {
            Entry::Vacant(entry) => {
                entry.insert(list.len());
                list.push(item);
                None
            }
            Entry::Occupied(entry) => {
                let message = match earlier {
                    Some(at) => format!("duplicate {}: replaces the one at {at}", T::KIND),
                    None => format!("duplicate {}: replaces the one read earlier", T::KIND),
                };
                let key = Some(entry.key().1.clone());
                list[*entry.get()] = item;
                Some(Diagnostic::warning(T::KIND, key, "", message))
            }
        }
    }
}

/// Position of each object in its list of [`Manifests`].
type Index = HashMap<(ObjectKind, ObjectKey), usize>;

/// What [`Manifests`] holds lists of.
trait Object: Sized {
    const KIND: ObjectKind;
    fn key(&self) -> &ObjectKey;
    fn list(manifests: &mut Manifests) -> &mut Vec<Self>;
}

impl Object for Service {
    const KIND: ObjectKind = ObjectKind::Service;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
    fn list(manifests: &mut Manifests) -> &mut Vec<Self> {
        &mut manifests.services
    }
}

impl Object for EndpointSlice {
    const KIND: ObjectKind = ObjectKind::EndpointSlice;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
    fn list(manifests: &mut Manifests) -> &mut Vec<Self> {
        &mut manifests.endpoint_slices
    }
}

/// A manifest that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML. `line`/`column` are 1-based (0 when the reader could not tell,
    /// e.g. a resource budget was exceeded).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The name the caller gave the input (`cluster.yaml`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Larger than [`MAX_INPUT_BYTES`].
    #[error("{file}: {size} bytes is more than the limit of {limit} bytes")]
    TooLarge {
        /// The name the caller gave the input.
        file: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// Reads multi-document YAML holding Services and EndpointSlices (also inside
/// `kind: List` or `ServiceList`-style lists). Objects that cannot be used are
/// skipped with a diagnostic; only unreadable YAML fails the whole input.
/// `source` names the input in diagnostics (`cluster.yaml:12`).
pub fn parse_manifests(text: &str, source: &str) -> Result<Manifests, ManifestError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ManifestError::TooLarge {
            file: source.to_owned(),
            size: text.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let docs: Vec<Spanned<Node>> =
        serde_saphyr::from_multiple_with_options(text, yaml::options()).map_err(|e| {
            let (line, column, message) = yaml::describe(&e);
            ManifestError::Syntax {
                file: source.to_owned(),
                line,
                column,
                message,
            }
        })?;
    let mut reader = Reader {
        source,
        out: Manifests::default(),
        index: Index::new(),
        seen: HashMap::new(),
        to_place: Vec::new(),
    };
    for (i, doc) in docs.into_iter().enumerate() {
        let start = Start::of(&doc.referenced);
        reader.node(doc.value, start, &format!("document {}", i + 1), "", None);
    }
    let mut out = reader.out;
    place_on_fields(text, source, &mut out.diagnostics, &reader.to_place);
    Ok(out)
}

/// Where an object starts: its first key's line and column (1-based) and
/// byte offset in the text.
#[derive(Clone, Copy)]
struct Start {
    line: usize,
    column: usize,
    byte: Option<usize>,
}

impl Start {
    fn of(location: &serde_saphyr::Location) -> Start {
        Start {
            line: yaml::to_usize(location.line()),
            column: yaml::to_usize(location.column()),
            byte: location.span().byte_offset().map(yaml::to_usize),
        }
    }
}

/// Points warnings about a field at the field's line, where the object's
/// line was given first (`cluster.yaml:134` is the Service, the bad external
/// IP is on 144).
///
/// The first reading turns each object into JSON for `k8s-openapi`, which
/// keeps no positions; a second reading of the whole text would double the
/// cost of a large manifest. So only the text of each object a warning is
/// about is read again, into a tree of positions ([`object_text`]): clean
/// input pays nothing, a warning costs a read of one object. Notes (an
/// object skipped by design: headless, another proxy's) keep the object's
/// line, which is what they are about. Where the object's text cannot be
/// read on its own (flow style, an alias to an anchor outside it), the
/// object's line stays.
fn place_on_fields(text: &str, source: &str, diagnostics: &mut [Diagnostic], to_place: &[(usize, Start)]) {
    let mut read: HashMap<usize, Option<Tree>> = HashMap::new();
    for (index, start) in to_place {
        let Some(byte) = start.byte else { continue };
        let object = read.entry(byte).or_insert_with(|| {
            let slice = object_text(text, *start)?;
            let docs: Vec<Tree> = serde_saphyr::from_multiple_with_options(&slice, yaml::options()).ok()?;
            docs.into_iter().next()
        });
        let (Some(object), Some(diagnostic)) = (object.as_ref(), diagnostics.get_mut(*index)) else {
            continue;
        };
        if let Some(line) = field_line(object, &diagnostic.field) {
            // Lines of the slice count from the object's first line.
            diagnostic.source = Some(format!("{source}:{}", start.line + line - 1));
        }
    }
}

/// The text of one block-style object on its own, as YAML that reads the
/// same: from its first key to the first later line indented less than
/// it (the next list item, the enclosing object's next key) or a document
/// marker, the first line padded to its column. `None` for a flow-style
/// object (`{...}`) or a position that is not in the text.
fn object_text(text: &str, start: Start) -> Option<String> {
    let byte = start.byte?;
    let rest = text.get(byte..)?;
    if rest.starts_with(['{', '[']) {
        return None;
    }
    let indent = start.column.checked_sub(1)?;
    let mut slice = " ".repeat(indent);
    let mut lines = rest.split_inclusive('\n');
    slice.push_str(lines.next()?);
    for line in lines {
        let content = line.trim_start_matches(' ');
        let blank = content.trim().is_empty() || content.starts_with('#');
        let marker = line.starts_with("---") || line.starts_with("...");
        // A document's own keys are at column 1: only a marker ends it.
        if marker || (indent > 0 && !blank && line.len() - content.len() < indent) {
            break;
        }
        slice.push_str(line);
    }
    Some(slice)
}

/// The line of the deepest part of a field path (`spec.ports[0].protocol`,
/// `metadata.labels["app"]`) the object holds: the key's line for a mapping
/// entry, the entry's line for a list item. `None` when not even the first
/// part is there (a missing field: the object's line says it best).
fn field_line(object: &Tree, path: &str) -> Option<usize> {
    let mut tree = object;
    let mut line = None;
    for step in path_steps(path)? {
        let (next, at) = match (&step, tree) {
            (Step::Key(key), Tree::Map(_)) => {
                let (key, value) = tree.entry(key)?;
                (&value.value, key.referenced.line())
            }
            (Step::Index(i), Tree::Seq(entries)) => {
                let entry = entries.get(*i)?;
                (&entry.value, entry.referenced.line())
            }
            _ => break,
        };
        // Position 0 means the reader could not tell (e.g. merged keys).
        if at == 0 {
            break;
        }
        line = Some(yaml::to_usize(at));
        tree = next;
    }
    line
}

/// One step of a field path.
enum Step {
    Key(String),
    Index(usize),
}

/// `spec.ports[0].protocol` -> `spec`, `ports`, 0, `protocol`;
/// `metadata.labels["a.b/c"]` -> `metadata`, `labels`, `a.b/c` (the quoted
/// form diagnostics give keys holding dots). `None` for a path it cannot read.
fn path_steps(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix("[\"") {
            let end = inner.find("\"]")?;
            steps.push(Step::Key(inner[..end].replace("\\\"", "\"")));
            rest = &inner[end + 2..];
        } else if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            steps.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        } else {
            let rest_key = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_key.find(['.', '[']).unwrap_or(rest_key.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(rest_key[..end].to_string()));
            rest = &rest_key[end..];
        }
    }
    Some(steps)
}

/// A YAML node with the position of every mapping key and list entry, and
/// nothing else (scalars are not kept).
enum Tree {
    Map(Vec<(Spanned<Key>, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Leaf,
}

impl Tree {
    fn entry(&self, key: &str) -> Option<&(Spanned<Key>, Spanned<Tree>)> {
        match self {
            Tree::Map(entries) => entries.iter().find(|(k, _)| k.value.0.as_deref() == Some(key)),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element()? {
            entries.push(entry);
        }
        Ok(Tree::Seq(entries))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tree, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
}

/// A mapping key: its text when it is a string (only those can be named by
/// a field path), `None` for any other scalar.
struct Key(Option<String>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Tree::deserialize_key(deserializer)
    }
}

impl Tree {
    fn deserialize_key<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Key(None))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

struct Reader<'a> {
    source: &'a str,
    out: Manifests,
    index: Index,
    /// Where each object was read, to report duplicates.
    seen: HashMap<(ObjectKind, ObjectKey), String>,
    /// Warnings about a field, to point at the field's line once every
    /// document is read: the index in `out.diagnostics` and where the
    /// object starts.
    to_place: Vec<(usize, Start)>,
}

impl Reader<'_> {
    /// One document or list item. `label` names it in messages ("document 2",
    /// "item"), `path` prefixes field names inside lists (`items[0].`) and
    /// `item_kind` is the kind implied by a typed list (`ServiceList`).
    fn node(&mut self, node: Node, start: Start, label: &str, path: &str, item_kind: Option<&str>) {
        let at = format!("{}:{}", self.source, start.line);
        let (value, items) = match node {
            Node::Map { value, items } => (value, items),
            Node::Other(what) => {
                let message = format!("{label} is {what}, not a mapping (skipped)");
                self.push(
                    Diagnostic::warning(ObjectKind::Document, None, path.trim_end_matches('.'), message),
                    &at,
                );
                return;
            }
        };
        let key = key_of(&value);
        let kind = match value.get("kind") {
            Some(Value::String(kind)) => kind.clone(),
            None => match item_kind {
                Some(kind) => kind.to_owned(),
                None => {
                    let message = format!("{label} has no kind (skipped)");
                    self.push(
                        Diagnostic::warning(ObjectKind::Document, key, format!("{path}kind"), message),
                        &at,
                    );
                    return;
                }
            },
            Some(other) => {
                let message = format!("{label} has kind {other}, not a string (skipped)");
                self.push(
                    Diagnostic::warning(ObjectKind::Document, key, format!("{path}kind"), message),
                    &at,
                );
                return;
            }
        };
        let api_version = value.get("apiVersion").and_then(Value::as_str).map(str::to_owned);
        match kind.as_str() {
            "Service" if matches!(api_version.as_deref(), None | Some("v1")) => {
                if let Some(svc) = self.object::<core::Service, _>(
                    value,
                    ObjectKind::Service,
                    key,
                    &at,
                    start,
                    service_from_k8s,
                ) {
                    self.keep(svc, &at);
                }
            }
            "EndpointSlice" if matches!(api_version.as_deref(), None | Some("discovery.k8s.io/v1")) => {
                let slice = self.object::<discovery::EndpointSlice, _>(
                    value,
                    ObjectKind::EndpointSlice,
                    key,
                    &at,
                    start,
                    endpoint_slice_from_k8s,
                );
                if let Some(slice) = slice {
                    self.keep(slice, &at);
                }
            }
            "EndpointSlice" => {
                let version = api_version.as_deref().unwrap_or_default();
                let message = format!(
                    "apiVersion {version:?} is not read by kube-proxy, only discovery.k8s.io/v1 (skipped)"
                );
                self.push(
                    Diagnostic::warning(
                        ObjectKind::EndpointSlice,
                        key,
                        format!("{path}apiVersion"),
                        message,
                    ),
                    &at,
                );
            }
            _ if kind.ends_with("List") => {
                let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
                let Some(items) = items else {
                    if value.get("items").is_some_and(|v| !v.is_null()) {
                        let message = format!("{label} has items that are not a list (skipped)");
                        self.push(
                            Diagnostic::warning(ObjectKind::Document, key, format!("{path}items"), message),
                            &at,
                        );
                    }
                    return;
                };
                for (i, item) in items.into_iter().enumerate() {
                    let start = Start::of(&item.referenced);
                    let item_path = format!("{path}items[{i}].");
                    self.node(item.value, start, "item", &item_path, item_kind);
                }
            }
            _ => {
                let version = api_version
                    .as_deref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default();
                let message = format!("kind {kind:?}{version} is not used by the proxier (skipped)");
                self.push(
                    Diagnostic::info(ObjectKind::Document, key, format!("{path}kind"), message),
                    &at,
                );
            }
        }
    }

    /// Deserializes one object, naming the offending field if its shape is wrong,
    /// and translates it.
    fn object<K: DeserializeOwned, T>(
        &mut self,
        value: Map<String, Value>,
        kind: ObjectKind,
        key: Option<ObjectKey>,
        at: &str,
        start: Start,
        translate: impl FnOnce(&K, &mut Vec<Diagnostic>) -> Option<T>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, K>(Value::Object(value)) {
            Ok(object) => {
                let mut diags = Vec::new();
                let result = translate(&object, &mut diags);
                for diag in diags {
                    self.push_about_field(diag, at, start);
                }
                result
            }
            Err(err) => {
                let path = err.path().to_string();
                let field = if path == "." { String::new() } else { path };
                let message = format!("{} ({kind} skipped)", err.inner());
                self.push_about_field(Diagnostic::warning(kind, key, field, message), at, start);
                None
            }
        }
    }

    /// Pushes a diagnostic about a field of one object; a warning is pointed
    /// at the field's line once every document is read ([`place_on_fields`]).
    fn push_about_field(&mut self, diag: Diagnostic, at: &str, start: Start) {
        if diag.severity == Severity::Warning && !diag.field.is_empty() {
            self.to_place.push((self.out.diagnostics.len(), start));
        }
        self.push(diag, at);
    }

    fn keep<T: Object>(&mut self, item: T, at: &str) {
        let earlier = self.seen.insert((T::KIND, item.key().clone()), at.to_owned());
        if let Some(diag) = self.out.insert(&mut self.index, item, earlier.as_deref()) {
            self.push(diag, at);
        }
    }

    fn push(&mut self, diag: Diagnostic, at: &str) {
        self.out.diagnostics.push(diag.at(at));
    }
}

/// `metadata.namespace/name` read from the raw object, for diagnostics about
/// objects that did not deserialize.
fn key_of(value: &Map<String, Value>) -> Option<ObjectKey> {
    let meta = value.get("metadata")?;
    let name = meta.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let namespace = namespace_or_default(meta.get("namespace").and_then(Value::as_str));
    Some(ObjectKey::new(namespace, name))
}

/// A document or list item. `items` of a mapping is kept apart, each entry with
/// its position, so objects inside a `List` can be reported at their own line.
enum Node {
    Map {
        value: Map<String, Value>,
        items: Option<Vec<Spanned<Node>>>,
    },
    /// Not a mapping; says what it is ("a list", "a string").
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut value = Map::new();
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                match map.next_value::<Items>()? {
                    Items::Seq(list) => items = Some(list),
                    Items::Other(other) => {
                        value.insert(key, other);
                    }
                }
            } else {
                let field = map.next_value::<Value>()?;
                value.insert(key, field);
            }
        }
        Ok(Node::Map { value, items })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Other("a list"))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Other("a string"))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Other("binary data"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other("null"))
    }
}

/// The value of a top-level `items` key: list entries with positions, or
/// whatever else it was (kept as plain JSON).
enum Items {
    Seq(Vec<Spanned<Node>>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl ItemsVisitor {
    fn plain<T: Serialize, E: de::Error>(v: T) -> Result<Items, E> {
        serde_json::to_value(v).map(Items::Other).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        let mut list = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            list.push(item);
        }
        Ok(Items::Seq(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Items, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Items::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Items, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Items, E> {
        Ok(Items::Other(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Items, E> {
        Self::plain(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Items, E> {
        Self::plain(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Items, E> {
        Self::plain(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Items, E> {
        Ok(Items::Other(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items::Other(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items::Other(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use chainsmith_model::{LoadBalancerIpMode, ServiceType, SessionAffinity, Severity, TrafficPolicy};

    use super::*;
    use crate::test_support::conformance_files;

    fn parse(text: &str) -> Manifests {
        parse_manifests(text, "cluster.yaml").unwrap()
    }

    /// Each diagnostic as its display text.
    fn shown(m: &Manifests) -> Vec<String> {
        m.diagnostics.iter().map(ToString::to_string).collect()
    }

    fn names<T>(list: &[T], key: impl Fn(&T) -> &ObjectKey) -> Vec<String> {
        list.iter().map(|o| key(o).to_string()).collect()
    }

    fn service<'a>(m: &'a Manifests, key: &str) -> &'a Service {
        m.services.iter().find(|s| s.key.to_string() == key).unwrap()
    }

    #[test]
    fn every_conformance_cluster_file_parses_without_warnings() {
        let files = conformance_files("cluster.yaml");
        assert!(files.len() > 60, "found only {} files", files.len());
        for (label, text) in files {
            let m = parse_manifests(&text, &label).unwrap();
            let warnings: Vec<_> = m
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .collect();
            assert!(warnings.is_empty(), "{label}: {warnings:?}");
            let services = text.matches("\nkind: Service\n").count();
            let slices = text.matches("\nkind: EndpointSlice\n").count();
            assert_eq!(
                (m.services.len(), m.endpoint_slices.len()),
                (services, slices),
                "{label}"
            );
        }
    }

    #[test]
    fn conformance_case_01_spot_checks() {
        let (_, text) = conformance_files("cluster.yaml")
            .into_iter()
            .find(|(label, _)| label.starts_with("01-"))
            .unwrap();
        let m = parse(&text);
        assert_eq!(m.diagnostics, []);
        let svc2 = service(&m, "ns2/svc2");
        assert_eq!(svc2.service_type, ServiceType::LoadBalancer);
        assert_eq!(svc2.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc2.health_check_node_port, 30000);
        assert_eq!(svc2.ports[0].node_port, 3001);
        assert_eq!(svc2.load_balancer_ingress[0].ip.to_string(), "1.2.3.4");
        assert_eq!(svc2.load_balancer_ingress[0].ip_mode, None);
        let svc5 = service(&m, "ns5/svc5");
        assert_eq!(svc5.load_balancer_source_ranges[0].to_string(), "203.0.113.0/25");
        assert_eq!(
            svc5.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 10800
            }
        );
        let slice = m.endpoint_slices.iter().find(|s| s.key.name == "svc4-1").unwrap();
        assert_eq!(slice.endpoints[1].node_name.as_deref(), Some("test-node"));
    }

    #[test]
    fn conformance_case_11_is_ipv6() {
        let (_, text) = conformance_files("cluster.yaml")
            .into_iter()
            .find(|(label, _)| label.starts_with("11-"))
            .unwrap();
        let m = parse(&text);
        assert_eq!(
            m.services[0].cluster_ips.v6.map(|ip| ip.to_string()).as_deref(),
            Some("fd00:172:30::41")
        );
        assert_eq!(
            m.endpoint_slices[0].address_type,
            chainsmith_model::AddressType::Ipv6
        );
    }

    const BAD_AMONG_GOOD: &str = "\
# leading comment
---
apiVersion: v1
kind: Service
metadata: {name: good, namespace: ns1}
spec:
  clusterIP: 172.30.0.041
  externalIPs: [1.2.3.4, 1.2.3]
  ports:
  - {name: a, port: 80, protocol: FOO}
  - {name: b, port: 81, nodePort: -1}
---
apiVersion: v1
kind: Service
metadata:
  name: bad
  namespace: ns1
spec:
  clusterIP: 172.30.0.42
  ports:
  - name: p
    port: \"abc\"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: good-1, namespace: ns1, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: b, port: 8081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: no-type, namespace: ns1, labels: {kubernetes.io/service-name: good}}
---
apiVersion: v1
kind: Service
metadata: {name: also-good, namespace: ns2}
spec: {clusterIP: 172.30.0.43, type: ClusterIP}
";

    #[test]
    fn one_bad_object_does_not_spoil_the_file() {
        let m = parse(BAD_AMONG_GOOD);
        assert_eq!(names(&m.services, |s| &s.key), ["ns1/good", "ns2/also-good"]);
        assert_eq!(names(&m.endpoint_slices, |s| &s.key), ["ns1/good-1"]);
        let good = service(&m, "ns1/good");
        assert_eq!(
            good.cluster_ips.v4.map(|ip| ip.to_string()).as_deref(),
            Some("172.30.0.41")
        );
        assert_eq!(good.ports.len(), 1);
        assert_eq!(
            shown(&m),
            // Each warning at its field's line; a missing field at its object's.
            [
                "cluster.yaml:10: Service ns1/good: spec.ports[0].protocol: unknown protocol \"FOO\" (port skipped)",
                "cluster.yaml:11: Service ns1/good: spec.ports[1].nodePort: -1 is not in 0..=65535 (treated as 0)",
                "cluster.yaml:8: Service ns1/good: spec.externalIPs[1]: invalid IP address \"1.2.3\" (skipped)",
                "cluster.yaml:22: Service ns1/bad: spec.ports[0].port: \
                 invalid type: string \"abc\", expected i32 (Service skipped)",
                "cluster.yaml:31: EndpointSlice ns1/no-type: addressType: missing address type (EndpointSlice skipped)",
            ]
        );
    }

    #[test]
    fn warnings_point_at_the_field_inside_lists_too() {
        // `kubectl get -o yaml`: one List document; notes stay on the object.
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: shop
  spec:
    clusterIP: 10.96.0.10
    externalIPs:
    - 203.0.113.7
    - 203.0.113.300
    ports:
    - port: 80
- apiVersion: v1
  kind: List
  items:
  - kind: EndpointSlice
    apiVersion: discovery.k8s.io/v1
    metadata:
      name: web-1
      namespace: shop
      labels: {kubernetes.io/service-name: web}
    addressType: IPv4
    endpoints:
    - addresses: [10.0.0.1]
    - addresses:
      - 10.0.0.300
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: shop}
  spec:
    clusterIP: None
metadata:
  resourceVersion: \"\"
";
        let m = parse(text);
        assert_eq!(
            shown(&m),
            [
                "cluster.yaml:13: Service shop/web: spec.externalIPs[1]: invalid IP address \"203.0.113.300\" (skipped)",
                "cluster.yaml:29: EndpointSlice shop/web-1: endpoints[1].addresses[0]: \
                 invalid IP address \"10.0.0.300\" (endpoint skipped)",
                "cluster.yaml:30: Service shop/db: spec.clusterIP: headless or no cluster IP (Service skipped)",
            ]
        );
    }

    #[test]
    fn objects_that_do_not_read_alone_keep_their_line() {
        // A flow-style object, and one holding an alias to an anchor in
        // another item: the object's line, as before.
        let text = "\
{kind: Service, metadata: {name: a, namespace: ns}, spec: {clusterIP: 10.0.0.1, externalIPs: [1.2.3]}}
---
kind: ServiceList
items:
- metadata: {name: b, namespace: ns, labels: &labels {app: b}}
  spec: {clusterIP: 10.0.0.2}
- metadata:
    name: c
    namespace: ns
    labels: *labels
  spec:
    clusterIP: 10.0.0.3
    externalIPs:
    - 1.2.3
";
        let m = parse(text);
        assert_eq!(
            shown(&m),
            [
                "cluster.yaml:1: Service ns/a: spec.externalIPs[0]: invalid IP address \"1.2.3\" (skipped)",
                "cluster.yaml:7: Service ns/c: spec.externalIPs[0]: invalid IP address \"1.2.3\" (skipped)",
            ]
        );
    }

    #[test]
    fn field_paths_are_read_as_diagnostics_write_them() {
        let steps = |path: &str| -> Vec<String> {
            path_steps(path)
                .unwrap()
                .into_iter()
                .map(|s| match s {
                    Step::Key(k) => k,
                    Step::Index(i) => format!("#{i}"),
                })
                .collect()
        };
        assert_eq!(
            steps("spec.ports[0].protocol"),
            ["spec", "ports", "#0", "protocol"]
        );
        assert_eq!(
            steps("metadata.labels[\"service.kubernetes.io/headless\"]"),
            ["metadata", "labels", "service.kubernetes.io/headless"]
        );
        assert_eq!(
            steps("endpoints[1].addresses[0]"),
            ["endpoints", "#1", "addresses", "#0"]
        );
        assert!(path_steps("spec.ports[x]").is_none());
        assert!(path_steps("spec..ports").is_none());
    }

    #[test]
    fn lists_are_read_item_by_item() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: ns}
  spec: {clusterIP: 10.0.0.1}
- kind: Deployment
  metadata: {name: d, namespace: ns}
-   kind: ServiceList
    items:
    - metadata: {name: nested, namespace: ns}
      spec: {clusterIP: 10.0.0.3}
- just text
---
kind: EndpointSliceList
items:
- metadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
- {}
";
        let m = parse(text);
        assert_eq!(names(&m.services, |s| &s.key), ["ns/a", "ns/nested"]);
        assert_eq!(names(&m.endpoint_slices, |s| &s.key), ["ns/a-1"]);
        assert_eq!(
            shown(&m),
            [
                "cluster.yaml:8: document ns/d: items[1].kind: kind \"Deployment\" is not used by the proxier (skipped)",
                "cluster.yaml:14: document: items[3]: item is a string, not a mapping (skipped)",
                "cluster.yaml:20: EndpointSlice: metadata.name: missing name (EndpointSlice skipped)",
            ]
        );
    }

    #[test]
    fn odd_documents_are_reported_or_skipped() {
        let text = "\
---
# comments only
---
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
---
- a list
---
metadata: {name: kindless}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: kn, namespace: ns}
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: old, namespace: ns}
";
        let m = parse(text);
        assert_eq!((m.services.len(), m.endpoint_slices.len()), (0, 0));
        let severities: Vec<_> = m.diagnostics.iter().map(|d| d.severity).collect();
        use Severity::{Info, Warning};
        assert_eq!(severities, [Info, Warning, Warning, Info, Warning]);
        assert_eq!(
            shown(&m),
            [
                "cluster.yaml:5: document ns/web: kind: kind \"Deployment\" (apps/v1) is not used by the proxier (skipped)",
                "cluster.yaml:9: document: document 2 is a list, not a mapping (skipped)",
                "cluster.yaml:11: document default/kindless: kind: document 3 has no kind (skipped)",
                "cluster.yaml:13: document ns/kn: kind: kind \"Service\" (serving.knative.dev/v1) \
                 is not used by the proxier (skipped)",
                "cluster.yaml:17: EndpointSlice ns/old: apiVersion: apiVersion \"discovery.k8s.io/v1beta1\" \
                 is not read by kube-proxy, only discovery.k8s.io/v1 (skipped)",
            ]
        );
        assert_eq!(parse(""), Manifests::default());
        assert_eq!(parse("# nothing\n---\n"), Manifests::default());
    }

    #[test]
    fn yaml_scalars_follow_yaml_1_2() {
        // YAML 1.1 would read `Y` as true and `012` as octal.
        let m = parse("kind: Y\nmetadata: {name: n, namespace: \"012\"}\n");
        assert_eq!(
            shown(&m),
            ["cluster.yaml:1: document 012/n: kind: kind \"Y\" is not used by the proxier (skipped)"]
        );
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let cases = [
            ("kind: Service\nmetadata:\n  name: a\n   namespace: b\n", 4, 13),
            ("---\nkind: Service\n---\nspec:\n  ports: [1, 2\n", 5, 10),
            ("a: 1\na: 2\n", 2, 1),
        ];
        for (text, line, column) in cases {
            let err = parse_manifests(text, "cluster.yaml").unwrap_err();
            let ManifestError::Syntax {
                line: l, column: c, ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!((*l, *c), (line, column), "{err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("cluster.yaml:{line}:{column}: ")),
                "{err}"
            );
        }
        let err = parse_manifests("a: [1, 2\n", "c.yaml").unwrap_err();
        assert_eq!(err.to_string(), "c.yaml:1:4: unclosed bracket '['");
    }

    #[test]
    fn duplicates_replace_earlier_objects_with_a_warning() {
        let doc = |ip: &str| {
            format!("kind: Service\nmetadata: {{name: a, namespace: ns}}\nspec: {{clusterIP: {ip}}}\n")
        };
        let text = format!("{}---\n{}", doc("10.0.0.1"), doc("10.0.0.2"));
        let mut m = parse(&text);
        assert_eq!(m.services.len(), 1);
        assert_eq!(
            m.services[0].cluster_ips.v4.map(|ip| ip.to_string()).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            shown(&m),
            ["cluster.yaml:5: Service ns/a: duplicate Service: replaces the one at cluster.yaml:1"]
        );

        m.extend(parse_manifests(&doc("10.0.0.3"), "more.yaml").unwrap());
        assert_eq!(m.services.len(), 1);
        assert_eq!(
            m.services[0].cluster_ips.v4.map(|ip| ip.to_string()).as_deref(),
            Some("10.0.0.3")
        );
        assert_eq!(m.diagnostics.len(), 2);
    }

    #[test]
    fn large_manifests_are_not_cut_by_reader_budgets() {
        let doc = |i: usize| {
            format!(
                "kind: Service\nmetadata: {{name: s{i}, namespace: ns}}\nspec: {{clusterIP: 10.0.{}.{}}}\n",
                i / 256,
                i % 256
            )
        };
        let text: Vec<String> = (0..1500).map(doc).collect();
        let m = parse(&text.join("---\n"));
        assert_eq!((m.services.len(), m.diagnostics.len()), (1500, 0));
    }

    #[test]
    fn oversized_input_is_refused() {
        let text = " ".repeat(MAX_INPUT_BYTES + 1);
        let err = parse_manifests(&text, "big.yaml").unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn ip_mode_and_leading_zeros_survive_yaml() {
        let text = "\
kind: Service
metadata: {name: lb, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 010.000.000.001
  loadBalancerSourceRanges: ['203.0.113.000/025']
status: {loadBalancer: {ingress: [{ip: 1.2.3.4, ipMode: Proxy}]}}
";
        let m = parse(text);
        let svc = service(&m, "ns/lb");
        assert_eq!(
            svc.cluster_ips.v4.map(|ip| ip.to_string()).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(svc.load_balancer_source_ranges[0].to_string(), "203.0.113.0/25");
        assert_eq!(
            svc.load_balancer_ingress[0].ip_mode,
            Some(LoadBalancerIpMode::Proxy)
        );
    }
}
