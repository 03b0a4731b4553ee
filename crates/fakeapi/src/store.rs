//! The objects, their change history and what a list or watch sees of them.
//!
//! Synchronous and free of HTTP: the server module locks a [`Store`] and asks
//! it for list pages and watch event lines (already encoded JSON).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::selector::Filter;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Service,
    EndpointSlice,
    Node,
    /// networking.k8s.io/v1 ServiceCIDRs (cluster-scoped).
    ServiceCidr,
    /// events.k8s.io/v1 Events, which the proxy creates (POST).
    Event,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::ServiceCidr,
        Kind::Event,
    ];

    pub(crate) fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::ServiceCidr => "ServiceCIDR",
            Kind::Event => "Event",
        }
    }

    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ServiceCidr => "networking.k8s.io/v1",
            Kind::Event => "events.k8s.io/v1",
        }
    }

    pub(crate) fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
            Kind::Node => "NodeList",
            Kind::ServiceCidr => "ServiceCIDRList",
            Kind::Event => "EventList",
        }
    }

    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
            Kind::ServiceCidr => "servicecidrs",
            Kind::Event => "events",
        }
    }

    /// The path the resource lives under: `/api/v1` or `/apis/GROUP/VERSION`.
    pub(crate) fn group_path(self) -> &'static str {
        match self {
            Kind::Service | Kind::Node => "/api/v1",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1",
            Kind::ServiceCidr => "/apis/networking.k8s.io/v1",
            Kind::Event => "/apis/events.k8s.io/v1",
        }
    }

    pub(crate) fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::ServiceCidr)
    }

    fn index(self) -> usize {
        match self {
            Kind::Service => 0,
            Kind::EndpointSlice => 1,
            Kind::Node => 2,
            Kind::ServiceCidr => 3,
            Kind::Event => 4,
        }
    }
}

/// The storage key: `namespace/name`, or `name` for cluster-scoped objects;
/// etcd's order, which lists are sorted by.
pub(crate) fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// One stored object, with its encodings made once at write time.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The full object, `apiVersion` and `kind` included.
    pub(crate) value: Value,
    /// JSON as a list item: without `apiVersion` and `kind`, as the API server
    /// writes the items of a typed list.
    pub(crate) item: Bytes,
    /// JSON of the full object (watch events, GET).
    pub(crate) full: Bytes,
}

impl Stored {
    fn new(kind: Kind, mut value: Value) -> Stored {
        let mut item = Vec::new();
        if let Some(map) = value.as_object_mut() {
            let api_version = map.remove("apiVersion");
            let kind_field = map.remove("kind");
            // Serialising a `Value` cannot fail (string keys only).
            let _ = serde_json::to_writer(&mut item, map);
            if let Some(v) = api_version {
                map.insert("apiVersion".into(), v);
            }
            if let Some(v) = kind_field {
                map.insert("kind".into(), v);
            }
        }
        let mut full = Vec::with_capacity(item.len() + 64);
        full.extend_from_slice(
            format!(
                "{{\"apiVersion\":\"{}\",\"kind\":\"{}\"",
                kind.api_version(),
                kind.kind()
            )
            .as_bytes(),
        );
        if item.len() > 2 {
            full.push(b',');
            full.extend_from_slice(&item[1..]);
        } else {
            full.push(b'}');
        }
        Stored {
            value,
            item: item.into(),
            full: full.into(),
        }
    }

    fn with_resource_version(&self, kind: Kind, rv: u64) -> Stored {
        let mut value = self.value.clone();
        value["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        Stored::new(kind, value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change history (what etcd's watch replays).
#[derive(Debug)]
struct Change {
    rv: u64,
    ty: ChangeType,
    /// The object after the change; for a deletion, the last state with the
    /// deletion's resource version.
    object: Arc<Stored>,
    /// The object before the change (modifications and deletions).
    prev: Option<Arc<Stored>>,
}

#[derive(Debug, Default)]
struct Collection {
    objects: BTreeMap<String, Arc<Stored>>,
    history: VecDeque<Change>,
}

/// A failure answered with a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: String) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message,
        }
    }

    pub(crate) fn expired(message: String) -> ApiError {
        ApiError {
            code: 410,
            reason: "Expired",
            message,
        }
    }

    pub(crate) fn not_found(message: String) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message,
        }
    }

    /// The `Status` object the API server answers with.
    pub(crate) fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) resource_version: u64,
    pub(crate) items: Vec<Arc<Stored>>,
    pub(crate) continue_token: Option<String>,
}

/// A sorted, unfiltered copy of one collection at one resource version, for
/// the later pages of a paginated list.
type Snapshot = Arc<Vec<(String, Arc<Stored>)>>;

/// How many paginated-list snapshots are kept (oldest forgotten first).
const MAX_SNAPSHOTS: usize = 32;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchFrom {
    /// No resource version, or `0`: the current objects as ADDED events first.
    Now,
    /// Every change after this resource version.
    After(u64),
}

/// All objects, the change history and the counters.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    /// Changes at or below this resource version are forgotten.
    compacted: u64,
    uid_seed: u64,
    next_uid: u64,
    collections: [Collection; 5],
    snapshots: BTreeMap<(u64, Kind), Snapshot>,
    /// Open watches: id -> resource version they have seen up to.
    cursors: HashMap<u64, u64>,
    next_watch: u64,
}

impl Default for Store {
    fn default() -> Store {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Store {
            // Start away from 0 and 1 so a client that confuses "0" (any
            // version) with a real resource version is caught.
            rv: 1000,
            compacted: 0,
            uid_seed: (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32),
            next_uid: 0,
            collections: Default::default(),
            snapshots: BTreeMap::new(),
            cursors: HashMap::new(),
            next_watch: 0,
        }
    }
}

impl Store {
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    #[cfg(test)]
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    fn collection(&self, kind: Kind) -> &Collection {
        &self.collections[kind.index()]
    }

    fn collection_mut(&mut self, kind: Kind) -> &mut Collection {
        &mut self.collections[kind.index()]
    }

    fn new_uid(&mut self) -> String {
        self.next_uid += 1;
        let n = self
            .uid_seed
            .wrapping_add(self.next_uid.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (n >> 32) as u32,
            (n >> 16) & 0xffff,
            n & 0xfff,
            (n >> 20) & 0xfff,
            self.next_uid & 0xffff_ffff_ffff
        )
    }

    /// Creates or replaces an object. Returns the stored object and whether it
    /// changed: the API server skips no-op updates (no new resource version,
    /// no event).
    pub(crate) fn apply(&mut self, object: Value) -> Result<(Arc<Stored>, bool), String> {
        let kind_name = object["kind"]
            .as_str()
            .ok_or("object has no \"kind\"")?
            .to_string();
        let kind = Kind::from_kind(&kind_name).ok_or_else(|| {
            format!(
                "kind {kind_name:?} is not served (only Service, EndpointSlice, Node, ServiceCIDR and Event)"
            )
        })?;
        let mut object = object;
        match object["apiVersion"].as_str() {
            None => object["apiVersion"] = Value::String(kind.api_version().into()),
            Some(v) if v == kind.api_version() => {}
            Some(v) => {
                return Err(format!(
                    "{} has apiVersion {v:?}, the server serves {:?}",
                    kind.kind(),
                    kind.api_version()
                ));
            }
        }
        if !object["metadata"].is_object() {
            return Err("object has no \"metadata\"".into());
        }
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("object has no metadata.name")?
            .to_string();
        let namespace = if kind.namespaced() {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string();
            object["metadata"]["namespace"] = Value::String(ns.clone());
            Some(ns)
        } else {
            if let Some(meta) = object["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            None
        };
        let key = key(kind, namespace.as_deref(), &name);
        let prev = self.collection(kind).objects.get(&key).cloned();
        let metadata = &mut object["metadata"];
        if let Some(prev) = &prev {
            for field in ["uid", "creationTimestamp", "resourceVersion"] {
                metadata[field] = prev.value["metadata"][field].clone();
            }
            if object == prev.value {
                return Ok((Arc::clone(prev), false));
            }
        } else {
            metadata["uid"] = Value::String(self.new_uid());
            metadata["creationTimestamp"] = Value::String(rfc3339_now());
        }
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let stored = Arc::new(Stored::new(kind, object));
        let collection = self.collection_mut(kind);
        collection.objects.insert(key, Arc::clone(&stored));
        collection.history.push_back(Change {
            rv,
            ty: if prev.is_some() {
                ChangeType::Modified
            } else {
                ChangeType::Added
            },
            object: Arc::clone(&stored),
            prev,
        });
        Ok((stored, true))
    }

    /// Deletes an object; returns its last state (with the deletion's
    /// resource version), or `None` if there was none.
    pub(crate) fn delete(&mut self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = key(kind, namespace, name);
        let prev = self.collection_mut(kind).objects.remove(&key)?;
        self.rv += 1;
        let rv = self.rv;
        let tombstone = Arc::new(prev.with_resource_version(kind, rv));
        let value = tombstone.value.clone();
        self.collection_mut(kind).history.push_back(Change {
            rv,
            ty: ChangeType::Deleted,
            object: tombstone,
            prev: Some(prev),
        });
        Some(value)
    }

    /// Every object of a kind, in list order.
    pub(crate) fn objects(&self, kind: Kind) -> Vec<Value> {
        self.collection(kind)
            .objects
            .values()
            .map(|s| s.value.clone())
            .collect()
    }

    pub(crate) fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Arc<Stored>> {
        self.collection(kind)
            .objects
            .get(&key(kind, namespace, name))
            .cloned()
    }

    /// Forgets every change up to now: watches from an older resource version
    /// and continue tokens of older lists get `410 Expired`. Changes that an
    /// open watch has not been sent yet are kept for it.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.rv;
        let keep_after = self.cursors.values().copied().fold(self.compacted, u64::min);
        for collection in &mut self.collections {
            while collection.history.front().is_some_and(|c| c.rv <= keep_after) {
                collection.history.pop_front();
            }
        }
        let compacted = self.compacted;
        self.snapshots.retain(|(rv, _), _| *rv >= compacted);
    }

    /// One page of a list. `limit` 0 or `None` means everything.
    pub(crate) fn list(
        &mut self,
        kind: Kind,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let limit = limit.filter(|l| *l > 0);
        if let Some(token) = continue_token {
            let (rv, start) = parse_continue(token)?;
            let snapshot = if rv < self.compacted {
                None
            } else {
                self.snapshots.get(&(rv, kind)).cloned()
            };
            let Some(snapshot) = snapshot else {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter."
                        .into(),
                ));
            };
            let from = snapshot.partition_point(|(k, _)| k.as_str() < start);
            let (items, next) = page(
                snapshot[from..].iter().map(|(k, s)| (k.as_str(), s)),
                filter,
                limit,
            );
            return Ok(ListPage {
                resource_version: rv,
                items,
                continue_token: next.map(|k| continue_token_for(rv, &k)),
            });
        }
        let rv = self.rv;
        let objects = &self.collection(kind).objects;
        let (items, next) = page(objects.iter().map(|(k, s)| (k.as_str(), s)), filter, limit);
        let continue_token = next.map(|k| continue_token_for(rv, &k));
        if continue_token.is_some() && !self.snapshots.contains_key(&(rv, kind)) {
            let snapshot: Vec<(String, Arc<Stored>)> =
                objects.iter().map(|(k, s)| (k.clone(), Arc::clone(s))).collect();
            self.snapshots.insert((rv, kind), Arc::new(snapshot));
            while self.snapshots.len() > MAX_SNAPSHOTS {
                self.snapshots.pop_first();
            }
        }
        Ok(ListPage {
            resource_version: rv,
            items,
            continue_token,
        })
    }

    /// Registers a watch. Returns its id and the lines to send first (ADDED
    /// events of the current objects when starting from now), or the `410`
    /// that a resource version older than the compaction point gets.
    pub(crate) fn watch_start(
        &mut self,
        kind: Kind,
        filter: &Filter,
        from: WatchFrom,
        out: &mut Vec<u8>,
    ) -> Result<u64, ApiError> {
        let cursor = match from {
            WatchFrom::After(rv) if rv < self.compacted => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                )));
            }
            WatchFrom::After(rv) => rv,
            WatchFrom::Now => {
                for stored in self.collection(kind).objects.values() {
                    if filter.matches(&stored.value) {
                        event_line(out, "ADDED", &stored.full);
                    }
                }
                self.rv
            }
        };
        self.next_watch += 1;
        self.cursors.insert(self.next_watch, cursor);
        Ok(self.next_watch)
    }

    /// Appends the events of every change this watch has not seen yet, as the
    /// API server's watch cache converts them for a filtered watcher: an object
    /// that starts matching is ADDED, one that stops matching is DELETED (its
    /// previous content, with the change's resource version).
    pub(crate) fn watch_drain(&mut self, id: u64, kind: Kind, filter: &Filter, out: &mut Vec<u8>) {
        let Some(cursor) = self.cursors.get(&id).copied() else {
            return;
        };
        let history = &self.collection(kind).history;
        let from = history.partition_point(|c| c.rv <= cursor);
        for change in history.range(from..) {
            let now = change.ty != ChangeType::Deleted && filter.matches(&change.object.value);
            let before = change.prev.as_ref().is_some_and(|p| filter.matches(&p.value));
            match (before, now) {
                (false, true) => event_line(out, "ADDED", &change.object.full),
                (true, true) => event_line(out, "MODIFIED", &change.object.full),
                (true, false) if change.ty == ChangeType::Deleted => {
                    event_line(out, "DELETED", &change.object.full);
                }
                (true, false) => {
                    if let Some(prev) = &change.prev {
                        let gone = prev.with_resource_version(kind, change.rv);
                        event_line(out, "DELETED", &gone.full);
                    }
                }
                (false, false) => {}
            }
        }
        let rv = self.rv;
        self.cursors.insert(id, rv);
    }

    /// A BOOKMARK event at the current resource version (call after
    /// [`Store::watch_drain`], so every change up to it has been sent).
    pub(crate) fn bookmark(&self, kind: Kind, initial_events_end: bool, out: &mut Vec<u8>) {
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "apiVersion": kind.api_version(),
            "kind": kind.kind(),
            "metadata": metadata,
        });
        event_line(out, "BOOKMARK", object.to_string().as_bytes());
    }

    pub(crate) fn watch_end(&mut self, id: u64) {
        self.cursors.remove(&id);
    }
}

/// Takes up to `limit` matching items; returns them and the key to continue
/// from if another matching item follows.
fn page<'a>(
    items: impl Iterator<Item = (&'a str, &'a Arc<Stored>)>,
    filter: &Filter,
    limit: Option<usize>,
) -> (Vec<Arc<Stored>>, Option<String>) {
    let mut out = Vec::new();
    for (key, stored) in items {
        if !filter.matches(&stored.value) {
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            return (out, Some(key.to_string()));
        }
        out.push(Arc::clone(stored));
    }
    (out, None)
}

fn continue_token_for(rv: u64, start_key: &str) -> String {
    format!("{rv}:{start_key}")
}

fn parse_continue(token: &str) -> Result<(u64, &str), ApiError> {
    token
        .split_once(':')
        .and_then(|(rv, start)| Some((rv.parse().ok()?, start)))
        .ok_or_else(|| ApiError::bad_request(format!("continue key is not valid: {token:?}")))
}

/// Appends `{"type":TYPE,"object":OBJECT}\n`.
pub(crate) fn event_line(out: &mut Vec<u8>, ty: &str, object: &[u8]) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
}

/// The current UTC time as RFC 3339 with second precision, as Kubernetes
/// writes timestamps.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "shop", "labels": labels},
               "spec": {"clusterIP": "10.96.0.10"}})
    }

    fn lines(out: &[u8]) -> Vec<Value> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn apply_sets_server_fields_and_skips_no_ops() {
        let mut store = Store::default();
        let (first, changed) = store.apply(svc("web", json!({}))).unwrap();
        let first = first.value.clone();
        assert!(changed);
        let meta = &first["metadata"];
        assert_eq!(meta["resourceVersion"], "1001");
        assert!(meta["uid"].as_str().unwrap().len() == 36);
        assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
        let (again, changed) = store.apply(svc("web", json!({}))).unwrap();
        assert!(!changed);
        assert_eq!(again.value, first);
        assert_eq!(store.resource_version(), 1001);
        let (third, changed) = store.apply(svc("web", json!({"a": "b"}))).unwrap();
        let third = third.value.clone();
        assert!(changed);
        assert_eq!(third["metadata"]["uid"], first["metadata"]["uid"]);
        assert_eq!(third["metadata"]["resourceVersion"], "1002");
        let stored = store.get(Kind::Service, Some("shop"), "web").unwrap();
        let item: Value = serde_json::from_slice(&stored.item).unwrap();
        assert!(item.get("kind").is_none());
        let full: Value = serde_json::from_slice(&stored.full).unwrap();
        assert_eq!(full, third);
        assert!(
            store
                .apply(json!({"kind": "Pod", "metadata": {"name": "x"}}))
                .is_err()
        );
        assert!(
            store
                .apply(json!({"kind": "EndpointSlice", "apiVersion": "v1", "metadata": {"name": "x"}}))
                .is_err()
        );
    }

    #[test]
    fn paginated_list_is_a_snapshot() {
        let mut store = Store::default();
        for i in 0..5 {
            store.apply(svc(&format!("s{i}"), json!({}))).unwrap();
        }
        let all = Filter::default();
        let first = store.list(Kind::Service, &all, Some(2), None).unwrap();
        assert_eq!(first.items.len(), 2);
        let token = first.continue_token.unwrap();
        store.delete(Kind::Service, Some("shop"), "s3");
        store.apply(svc("s9", json!({}))).unwrap();
        let second = store.list(Kind::Service, &all, Some(2), Some(&token)).unwrap();
        assert_eq!(second.resource_version, first.resource_version);
        let third = store
            .list(Kind::Service, &all, Some(2), second.continue_token.as_deref())
            .unwrap();
        assert!(third.continue_token.is_none());
        let names: Vec<_> = [first.items, second.items, third.items]
            .concat()
            .iter()
            .map(|s| s.value["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
        store.compact();
        let err = store
            .list(Kind::Service, &all, Some(2), Some(&token))
            .unwrap_err();
        assert_eq!(err.code, 410);
    }

    #[test]
    fn watch_converts_selector_transitions() {
        let mut store = Store::default();
        store.apply(svc("a", json!({}))).unwrap();
        let rv = store.resource_version();
        let filter = Filter::parse(Some("!skip"), None, None).unwrap();
        let mut out = Vec::new();
        let id = store
            .watch_start(Kind::Service, &filter, WatchFrom::After(rv), &mut out)
            .unwrap();
        assert!(out.is_empty());
        store.apply(svc("a", json!({"skip": "yes"}))).unwrap();
        store.apply(svc("b", json!({"skip": "yes"}))).unwrap();
        store.apply(svc("b", json!({}))).unwrap();
        store.delete(Kind::Service, Some("shop"), "b");
        store.watch_drain(id, Kind::Service, &filter, &mut out);
        let events = lines(&out);
        let summary: Vec<_> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["type"].as_str().unwrap(),
                    e["object"]["metadata"]["name"].as_str().unwrap(),
                    e["object"]["metadata"]["resourceVersion"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(summary, ["DELETED a 1002", "ADDED b 1004", "DELETED b 1005"]);
        // The DELETED for a relabelled object carries its previous content.
        assert!(
            events[0]["object"]["metadata"]
                .get("labels")
                .unwrap()
                .get("skip")
                .is_none()
        );
    }

    #[test]
    fn compaction_expires_old_watches_only() {
        let mut store = Store::default();
        store.apply(svc("a", json!({}))).unwrap();
        let old = store.resource_version() - 1;
        let all = Filter::default();
        let mut out = Vec::new();
        let live = store
            .watch_start(Kind::Service, &all, WatchFrom::After(old), &mut out)
            .unwrap();
        store.compact();
        let err = store
            .watch_start(Kind::Service, &all, WatchFrom::After(old), &mut out)
            .unwrap_err();
        assert_eq!(err.code, 410);
        assert_eq!(
            err.message,
            format!("too old resource version: {old} ({})", old + 1)
        );
        assert!(
            store
                .watch_start(Kind::Service, &all, WatchFrom::After(store.compacted()), &mut out)
                .is_ok()
        );
        // The watch that was open keeps what it has not been sent yet.
        store.watch_drain(live, Kind::Service, &all, &mut out);
        assert_eq!(lines(&out).len(), 1);
    }
}
