//! A fake Kubernetes API server, for tests only.
//!
//! [`FakeApiServer`] serves the list + watch protocol over plain HTTP on a
//! loopback (or any given) listener, well enough that kube-rs's
//! `kube::runtime::watcher` runs against it unmodified: Services,
//! EndpointSlices, Nodes and ServiceCIDRs (and events.k8s.io Events, which a
//! client may create with POST), cluster-wide or per namespace, with resource
//! versions, label and field selectors, paginated lists (`limit`/`continue`,
//! consistent snapshots), watch events with the API server's selector
//! transitions, bookmarks, `timeoutSeconds`, and `410 Expired` after
//! [`FakeApiServer::compact`]. Tests change the objects with synchronous
//! methods ([`FakeApiServer::apply`], [`FakeApiServer::delete`]) and switch
//! faults on and off at run time: dropped watch connections, outages, garbage
//! answers, a resource the server does not have (`404`, as an older
//! cluster answers for ServiceCIDRs), slow answers for one resource.
//! [`FakeApiServer::requests`] and [`FakeApiServer::open_watches`] let a test
//! check what the client did (relisted, reconnected).
//!
//! What it is not: there is no authentication or authorisation, no writes over
//! HTTP but creates (POST; no update, patch or delete), no validation or defaulting of objects beyond the server-set
//! metadata (`resourceVersion`, `uid`, `creationTimestamp`), no other
//! resources, no protobuf, and of the storage semantics only what watchers
//! need (a list ignores `resourceVersion`/`resourceVersionMatch` and always
//! answers with the current state).
//!
//! Where to start reading: [`FakeApiServer`] here; `store.rs` holds the objects,
//! the change history and how a watch sees it (`Store::watch_drain` converts
//! changes as the API server's watch cache does); `server.rs` is the hyper
//! side (routing, watch streaming, faults); `selector.rs` the selectors.

mod selector;
mod server;
mod store;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::server::Shared;
use crate::store::Kind;

/// How the server fails during an outage ([`FakeApiServer::set_outage_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// New connections are accepted and closed at once, and requests on open
    /// connections get no answer (the connection is closed): the client sees
    /// a transport error, as when the API server is down.
    Refuse,
    /// Every request is answered `503 Service Unavailable` with a `Status`
    /// body, as an overloaded or restarting API server does.
    ///
    /// kube-rs's client retries 503s itself (`Config::default_retry`, on by
    /// default: 15 tries, exponential backoff from 5 ms), so a short 503
    /// outage only delays requests; with it off, a watcher sees the errors.
    Error503,
}

/// A fake API server on its own thread and tokio runtime; stopped and joined
/// on drop.
///
/// ```
/// use chainsmith_fakeapi::FakeApiServer;
/// use serde_json::json;
///
/// let server = FakeApiServer::start_local();
/// server.apply(json!({
///     "apiVersion": "v1", "kind": "Service",
///     "metadata": {"name": "web", "namespace": "shop"},
///     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
/// }));
/// let kubeconfig = server.kubeconfig("shop"); // for kube::config::Kubeconfig::from_yaml
/// assert!(kubeconfig.contains(&server.url()));
/// ```
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Serves on an already bound listener (which may live in another network
    /// namespace; the server never creates a socket itself).
    ///
    /// # Panics
    /// If the listener has no local address or cannot be registered with the
    /// server's runtime, or the thread cannot be started.
    #[track_caller]
    pub fn start(listener: TcpListener) -> FakeApiServer {
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("fake API server: listener has no local address: {e}"),
        };
        let shared = Arc::new(Shared::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fakeapi-{}", addr.port()))
            .spawn(move || server::run(listener, thread_shared, stop_rx, ready_tx));
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => panic!("fake API server: cannot start its thread: {e}"),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("fake API server: {e}"),
            Err(_) => panic!("fake API server: its thread ended before serving"),
        }
        FakeApiServer {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Binds `127.0.0.1:0` and serves there.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    #[track_caller]
    pub fn start_local() -> FakeApiServer {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(listener) => FakeApiServer::start(listener),
            Err(e) => panic!("fake API server: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// The address served (a wildcard bind is reported as loopback).
    pub fn addr(&self) -> SocketAddr {
        let mut addr = self.addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A kubeconfig that points a client at this server over plain HTTP with
    /// no credentials, `namespace` being the context's default namespace.
    ///
    /// kube-rs takes `HTTPS_PROXY` from the environment when a kubeconfig
    /// names no proxy; a test that may run with one set should clear
    /// `Config::proxy_url` after loading.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        let quote = |s: &str| Value::String(s.to_string()).to_string();
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fakeapi\n\
             \x20 cluster:\n\
             \x20   server: {server}\n\
             contexts:\n\
             - name: fakeapi\n\
             \x20 context:\n\
             \x20   cluster: fakeapi\n\
             \x20   user: fakeapi\n\
             \x20   namespace: {namespace}\n\
             current-context: fakeapi\n\
             users:\n\
             - name: fakeapi\n\
             \x20 user: {{}}\n\
             preferences: {{}}\n",
            server = quote(&self.url()),
            namespace = quote(namespace),
        )
    }

    /// Creates or replaces an object (a full Kubernetes object: `kind`,
    /// `metadata.name`, and `metadata.namespace` for Services and
    /// EndpointSlices, `default` if absent; Nodes and ServiceCIDRs are
    /// cluster-scoped). Sets `resourceVersion`, and on
    /// creation `uid` and `creationTimestamp` (a replacement keeps them).
    /// Watches see ADDED or MODIFIED; an update that changes nothing is
    /// skipped as the API server skips it (no new version, no event). Returns
    /// the stored object.
    ///
    /// # Panics
    /// If the object is not a Service, EndpointSlice, Node or ServiceCIDR
    /// (`kind`, and `apiVersion` if given) or has no name.
    #[track_caller]
    pub fn apply(&self, object: Value) -> Value {
        let result = self.shared.store().apply(object);
        match result {
            Ok((stored, changed)) => {
                if changed {
                    self.shared.notify();
                }
                stored.value.clone()
            }
            Err(e) => panic!("fake API server: cannot apply: {e}"),
        }
    }

    /// [`FakeApiServer::apply`] for many objects under one lock, waking the
    /// watches once (10k objects take milliseconds, not seconds).
    ///
    /// # Panics
    /// As [`FakeApiServer::apply`]; the objects before the bad one are stored.
    #[track_caller]
    pub fn apply_many(&self, objects: impl IntoIterator<Item = Value>) {
        let mut failure = None;
        {
            let mut store = self.shared.store();
            for object in objects {
                if let Err(e) = store.apply(object) {
                    failure = Some(e);
                    break;
                }
            }
        }
        self.shared.notify();
        if let Some(e) = failure {
            panic!("fake API server: cannot apply: {e}");
        }
    }

    /// Deletes an object (`kind` is `Service`, `EndpointSlice`, `Node` or
    /// `ServiceCIDR`; `namespace` is ignored for the cluster-scoped ones). Watches see DELETED with its last
    /// state. Returns that state, or `None` if there was no such object.
    ///
    /// # Panics
    /// If `kind` is not served.
    #[track_caller]
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let kind = served(kind);
        let deleted = self.shared.store().delete(kind, namespace, name);
        if deleted.is_some() {
            self.shared.notify();
        }
        deleted
    }

    /// The stored object, if any.
    ///
    /// # Panics
    /// If `kind` is not served.
    #[track_caller]
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let kind = served(kind);
        self.shared
            .store()
            .get(kind, namespace, name)
            .map(|s| s.value.clone())
    }

    /// Every stored object of a kind, sorted by namespace/name as lists are.
    ///
    /// # Panics
    /// If `kind` is not served.
    #[track_caller]
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let kind = served(kind);
        self.shared.store().objects(kind)
    }

    /// The current (latest) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the change history up to now, as etcd's compaction does: a
    /// watch asking to resume from an older resource version gets a `410`
    /// `Expired` ERROR event ("too old resource version"), and so does a
    /// continue token of an older paginated list. Open watches are not
    /// affected.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Cuts every open watch stream at once: the connection is closed in the
    /// middle of the chunked body, as when a connection is reset.
    pub fn drop_watches(&self) {
        self.shared.drop_watches();
    }

    /// Starts (`true`, as [`Outage::Error503`]) or ends an outage. Starting
    /// one also cuts every open watch.
    pub fn set_outage(&self, on: bool) {
        self.set_outage_mode(on.then_some(Outage::Error503));
    }

    /// Starts an outage of the given kind, or ends it with `None`. Starting
    /// one also cuts every open watch.
    pub fn set_outage_mode(&self, outage: Option<Outage>) {
        self.shared.set_outage(outage);
    }

    /// While on, lists, gets and new watches are answered with invalid JSON,
    /// and an open watch sends one invalid line and ends.
    pub fn set_garbage(&self, on: bool) {
        self.shared.set_garbage(on);
    }

    /// Serves `kind` (the default) or, with `served` false, answers every
    /// request for it (list, watch, get, create) `404 NotFound`, "the server
    /// could not find the requested resource", as an API server without that
    /// resource does (ServiceCIDRs before Kubernetes 1.33). The stored objects
    /// stay and can still be changed with [`FakeApiServer::apply`]; serving
    /// again is an API server upgrade. Either switch cuts every open watch.
    ///
    /// # Panics
    /// If `kind` is not served.
    #[track_caller]
    pub fn set_served(&self, kind: &str, served: bool) {
        self.shared.set_served(crate::served(kind), served);
    }

    /// Answers every request for `kind` only after `delay` (zero: at once
    /// again), as a slow API server does; applies to requests received
    /// afterwards.
    ///
    /// # Panics
    /// If `kind` is not served.
    #[track_caller]
    pub fn set_delay(&self, kind: &str, delay: Duration) {
        self.shared.set_delay(crate::served(kind), delay);
    }

    /// How often watches that allow bookmarks get one (default 1 s); applies
    /// to watches opened afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.set_bookmark_interval(interval);
    }

    /// Every request received so far, in order: method, path and raw
    /// (percent-encoded) query, e.g.
    /// `GET /api/v1/services?watch=true&timeoutSeconds=290&resourceVersion=1003`.
    /// Requests refused or failed by an outage are included.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[track_caller]
fn served(kind: &str) -> Kind {
    match Kind::from_kind(kind) {
        Some(kind) => kind,
        None => panic!(
            "fake API server: kind {kind:?} is not served (only Service, EndpointSlice, Node, ServiceCIDR and Event)"
        ),
    }
}
