//! The HTTP side: a hyper 1 server on its own thread and tokio runtime that
//! routes GETs (and the Events a proxy POSTs) to the [`Store`], streams
//! watches and plays the faults.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::Outage;
use crate::selector::Filter;
use crate::store::{ApiError, Kind, Store, WatchFrom, event_line};

/// What the server answers when garbage is switched on: a syntax error (not
/// merely a truncated document, which kube-rs skips as an incomplete line).
const GARBAGE: &[u8] = b"{\"type\":\"ADDED\",\"object\": ]] this is not JSON [[\n";

/// Watches without `timeoutSeconds` end after this long (the API server picks
/// a random time between 30 and 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// State shared by the test side and the server thread.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Bumped on every change; watch tasks wake on it.
    tick: watch::Sender<u64>,
    requests: Mutex<Vec<String>>,
    open_watches: AtomicUsize,
    drop_generation: AtomicU64,
    /// 0: none; 1: refuse; 2: 503.
    outage: AtomicU8,
    garbage: AtomicBool,
    bookmark_interval_ms: AtomicU64,
    /// Resources answered with `404` as if the API server lacked them.
    not_served: Mutex<BTreeSet<Kind>>,
    /// How long requests for a resource wait before they are answered.
    delays: Mutex<BTreeMap<Kind, Duration>>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            store: Mutex::new(Store::default()),
            tick: watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
            drop_generation: AtomicU64::new(0),
            outage: AtomicU8::new(0),
            garbage: AtomicBool::new(false),
            bookmark_interval_ms: AtomicU64::new(1000),
            not_served: Mutex::new(BTreeSet::new()),
            delays: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every open watch.
    pub(crate) fn notify(&self) {
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    pub(crate) fn drop_watches(&self) {
        self.drop_generation.fetch_add(1, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn outage(&self) -> Option<Outage> {
        match self.outage.load(Ordering::SeqCst) {
            1 => Some(Outage::Refuse),
            2 => Some(Outage::Error503),
            _ => None,
        }
    }

    pub(crate) fn set_outage(&self, outage: Option<Outage>) {
        let code = match outage {
            None => 0,
            Some(Outage::Refuse) => 1,
            Some(Outage::Error503) => 2,
        };
        self.outage.store(code, Ordering::SeqCst);
        if outage.is_some() {
            self.drop_watches();
        }
    }

    pub(crate) fn set_garbage(&self, on: bool) {
        self.garbage.store(on, Ordering::SeqCst);
        self.notify();
    }

    /// Serves `kind` or, with `served` false, answers every request for it
    /// `404`; open watches are cut either way, so a client sees the change.
    pub(crate) fn set_served(&self, kind: Kind, served: bool) {
        let mut not_served = self.not_served.lock().unwrap_or_else(PoisonError::into_inner);
        if served {
            not_served.remove(&kind);
        } else {
            not_served.insert(kind);
        }
        drop(not_served);
        self.drop_watches();
    }

    pub(crate) fn set_delay(&self, kind: Kind, delay: Duration) {
        let mut delays = self.delays.lock().unwrap_or_else(PoisonError::into_inner);
        if delay.is_zero() {
            delays.remove(&kind);
        } else {
            delays.insert(kind, delay);
        }
    }

    fn delay(&self, path: &str) -> Option<Duration> {
        let kind = Route::parse(path)?.kind;
        self.delays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&kind)
            .copied()
    }

    fn served(&self, kind: Kind) -> bool {
        !self
            .not_served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&kind)
    }

    pub(crate) fn set_bookmark_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
        self.bookmark_interval_ms.store(ms, Ordering::SeqCst);
    }

    fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_interval_ms.load(Ordering::SeqCst))
    }
}

/// Runs the server until `stop` fires or its sender is dropped. Reports on
/// `ready` once the listener is registered with the runtime.
pub(crate) fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build the tokio runtime: {e}")));
            return;
        }
    };
    let listener = listener.set_nonblocking(true).and_then(|()| {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)
    });
    let listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot use the listener: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    runtime.block_on(accept_loop(listener, shared, stop));
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: try again shortly.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.outage() == Some(Outage::Refuse) {
            // Accept and close at once: the client's request fails with
            // "connection closed before message completed".
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(Arc::clone(&shared), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ResponseBody = BoxBody<Bytes, io::Error>;

/// The service error that makes hyper close the connection without answering.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outage: request refused")
    }
}

impl std::error::Error for Refused {}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<ResponseBody>, Refused> {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{} {target}", request.method()));
    match shared.outage() {
        Some(Outage::Refuse) => return Err(Refused),
        Some(Outage::Error503) => {
            return Ok(status_response(&ApiError {
                code: 503,
                reason: "ServiceUnavailable",
                message: "the server is currently unable to handle the request (fake outage)".into(),
            }));
        }
        None => {}
    }
    if let Some(delay) = shared.delay(request.uri().path()) {
        tokio::time::sleep(delay).await;
    }
    if request.method() == Method::POST {
        let path = request.uri().path().to_owned();
        // A body that cannot be read is an empty one: the create then fails
        // with 400, as a truncated upload would.
        let body = request
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        return Ok(create(&shared, &path, &body));
    }
    Ok(respond(
        &shared,
        request.method(),
        request.uri().path(),
        request.uri().query(),
    ))
}

/// POST to a namespaced collection: creates the object (409 if it exists).
fn create(shared: &Shared, path: &str, body: &[u8]) -> Response<ResponseBody> {
    let route = match Route::parse(path) {
        Some(
            route @ Route {
                name: None,
                namespace: Some(_),
                ..
            },
        ) => route,
        _ => {
            return status_response(&ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: format!("POST is served on namespaced collections only, not {path}"),
            });
        }
    };
    if !shared.served(route.kind) {
        return status_response(&not_served());
    }
    let mut object: serde_json::Value = match serde_json::from_slice(body) {
        Ok(object) => object,
        Err(error) => return status_response(&ApiError::bad_request(format!("body is not JSON: {error}"))),
    };
    if object["kind"].as_str() != Some(route.kind.kind()) {
        return status_response(&ApiError::bad_request(format!(
            "the body's kind {} does not match the path ({})",
            object["kind"],
            route.kind.kind()
        )));
    }
    let namespace = route.namespace.as_deref().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        None => object["metadata"]["namespace"] = json!(namespace),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return status_response(&ApiError::bad_request(format!(
                "the body's namespace {ns:?} does not match the path's {namespace:?}"
            )));
        }
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut store = shared.store();
    if store.get(route.kind, Some(namespace), &name).is_some() {
        return status_response(&ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", route.kind.plural()),
        });
    }
    let result = store.apply(object);
    drop(store);
    match result {
        Ok((stored, _)) => {
            shared.notify();
            json_response(StatusCode::CREATED, stored.full.clone())
        }
        Err(message) => status_response(&ApiError::bad_request(message)),
    }
}

fn respond(shared: &Arc<Shared>, method: &Method, path: &str, query: Option<&str>) -> Response<ResponseBody> {
    if method != Method::GET {
        return status_response(&ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("the fake API server serves GET and POST, not {method}"),
        });
    }
    if path == "/version" {
        let version = json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fakeapi",
                             "platform": "linux/amd64"});
        return json_response(StatusCode::OK, version.to_string().into());
    }
    let Some(route) = Route::parse(path).filter(|route| shared.served(route.kind)) else {
        return status_response(&not_served());
    };
    let query = Query::parse(query.unwrap_or(""));
    if shared.garbage.load(Ordering::SeqCst) {
        return json_response(StatusCode::OK, Bytes::from_static(GARBAGE));
    }
    if let Some(name) = &route.name {
        return match shared.store().get(route.kind, route.namespace.as_deref(), name) {
            Some(stored) => json_response(StatusCode::OK, stored.full.clone()),
            None => status_response(&ApiError::not_found(format!(
                "{} \"{name}\" not found",
                route.kind.plural()
            ))),
        };
    }
    let filter = match Filter::parse(
        query.label_selector.as_deref(),
        query.field_selector.as_deref(),
        route.namespace.as_deref(),
    ) {
        Ok(filter) => filter,
        Err(message) => return status_response(&ApiError::bad_request(message)),
    };
    if query.watch {
        start_watch(shared, route.kind, filter, &query)
    } else {
        list(shared, route.kind, &filter, &query)
    }
}

/// What the API server answers for a path it does not serve (a resource of
/// a newer Kubernetes version, or a disabled API group version).
fn not_served() -> ApiError {
    ApiError::not_found("the server could not find the requested resource".into())
}

fn list(shared: &Shared, kind: Kind, filter: &Filter, query: &Query) -> Response<ResponseBody> {
    let limit = match query
        .limit
        .as_deref()
        .filter(|l| !l.is_empty())
        .map(str::parse::<usize>)
    {
        None => None,
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return status_response(&ApiError::bad_request("limit is not a number".into())),
    };
    let page = match shared
        .store()
        .list(kind, filter, limit, query.continue_token.as_deref())
    {
        Ok(page) => page,
        Err(e) => return status_response(&e),
    };
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = token.clone().into();
    }
    let size: usize = page.items.iter().map(|s| s.item.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 256);
    body.extend_from_slice(
        format!(
            "{{\"apiVersion\":\"{}\",\"kind\":\"{}\",\"metadata\":{metadata},\"items\":[",
            kind.api_version(),
            kind.list_kind()
        )
        .as_bytes(),
    );
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.item);
    }
    body.extend_from_slice(b"]}");
    json_response(StatusCode::OK, body.into())
}

fn start_watch(shared: &Arc<Shared>, kind: Kind, filter: Filter, query: &Query) -> Response<ResponseBody> {
    let from = match query.resource_version.as_deref() {
        None | Some("" | "0") => WatchFrom::Now,
        Some(rv) => match rv.parse() {
            Ok(rv) => WatchFrom::After(rv),
            Err(_) => {
                return status_response(&ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: {rv:?}"
                )));
            }
        },
    };
    let timeout = match query.timeout_seconds.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => {
            return status_response(&ApiError::bad_request("timeoutSeconds is not a number".into()));
        }
    };
    // Subscribe and read the drop generation before registering, so no change
    // or drop between registration and the task's first wait is missed.
    let tick = shared.tick.subscribe();
    let generation = shared.drop_generation.load(Ordering::SeqCst);
    let mut first = Vec::new();
    let id = {
        let mut store = shared.store();
        match store.watch_start(kind, &filter, from, &mut first) {
            Ok(id) => {
                if query.send_initial_events && query.allow_bookmarks && from == WatchFrom::Now {
                    store.bookmark(kind, true, &mut first);
                }
                id
            }
            Err(e) if e.code == 410 => {
                // As the API server: the watch is accepted (200) and its one
                // event is the error.
                let mut body = Vec::new();
                event_line(&mut body, "ERROR", e.status().to_string().as_bytes());
                return json_response(StatusCode::OK, body.into());
            }
            Err(e) => return status_response(&e),
        }
    };
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel(16);
    let task = WatchTask {
        guard: WatchGuard {
            shared: Arc::clone(shared),
            id,
        },
        kind,
        filter,
        allow_bookmarks: query.allow_bookmarks,
        deadline: Instant::now() + timeout,
        generation,
        tick,
        tx,
    };
    tokio::spawn(task.run(first));
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Unregisters a watch however its task ends.
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.store().watch_end(self.id);
        self.shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WatchTask {
    guard: WatchGuard,
    kind: Kind,
    filter: Filter,
    allow_bookmarks: bool,
    deadline: Instant,
    generation: u64,
    tick: watch::Receiver<u64>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl WatchTask {
    async fn run(mut self, first: Vec<u8>) {
        let shared = Arc::clone(&self.guard.shared);
        let interval = shared.bookmark_interval();
        let mut bookmarks = tokio::time::interval_at(Instant::now() + interval, interval);
        bookmarks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut out = first;
        let mut want_bookmark = false;
        loop {
            if shared.drop_generation.load(Ordering::SeqCst) != self.generation {
                // An error frame makes hyper abort the connection mid-body:
                // the client sees the chunked stream end without its end.
                let _ = self.tx.send(Err(io::Error::other("watch dropped"))).await;
                return;
            }
            if shared.garbage.load(Ordering::SeqCst) {
                let _ = self.tx.send(Ok(Bytes::from_static(GARBAGE))).await;
                return;
            }
            {
                let mut store = shared.store();
                store.watch_drain(self.guard.id, self.kind, &self.filter, &mut out);
                if want_bookmark {
                    store.bookmark(self.kind, false, &mut out);
                }
            }
            if !out.is_empty() && self.tx.send(Ok(std::mem::take(&mut out).into())).await.is_err() {
                return;
            }
            want_bookmark = false;
            tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => return,
                () = self.tx.closed() => return,
                changed = self.tick.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = bookmarks.tick(), if self.allow_bookmarks => want_bookmark = true,
            }
        }
    }
}

/// A streamed body fed by a watch task; ends when the task drops its sender.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let body = Full::new(body)
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn status_response(error: &ApiError) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, error.status().to_string().into())
}

/// What a path names: a collection (maybe within a namespace) or one object.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let path = path.strip_suffix('/').unwrap_or(path);
        Kind::ALL.into_iter().find_map(|kind| {
            let rest = path.strip_prefix(kind.group_path())?.strip_prefix('/')?;
            let segments: Vec<&str> = rest.split('/').map(decode).collect::<Option<_>>()?;
            let (namespace, name) = match segments.as_slice() {
                [plural] if *plural == kind.plural() => (None, None),
                [plural, name] if *plural == kind.plural() && !kind.namespaced() => (None, Some(*name)),
                ["namespaces", ns, plural] if *plural == kind.plural() && kind.namespaced() => {
                    (Some(*ns), None)
                }
                ["namespaces", ns, plural, name] if *plural == kind.plural() && kind.namespaced() => {
                    (Some(*ns), Some(*name))
                }
                _ => return None,
            };
            Some(Route {
                kind,
                namespace: namespace.map(String::from),
                name: name.map(String::from),
            })
        })
    }
}

/// Path segments are names: anything percent-encoded in them is not served.
fn decode(segment: &str) -> Option<&str> {
    (!segment.is_empty() && !segment.contains('%')).then_some(segment)
}

/// The query parameters a list or watch reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: Option<String>,
    continue_token: Option<String>,
    resource_version: Option<String>,
    timeout_seconds: Option<String>,
    watch: bool,
    allow_bookmarks: bool,
    send_initial_events: bool,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let truthy = matches!(value.as_str(), "1" | "true" | "True");
            match percent_decode(key).as_str() {
                "labelSelector" => parsed.label_selector = Some(value),
                "fieldSelector" => parsed.field_selector = Some(value),
                "limit" => parsed.limit = Some(value),
                "continue" => parsed.continue_token = Some(value),
                "resourceVersion" => parsed.resource_version = Some(value),
                "timeoutSeconds" => parsed.timeout_seconds = Some(value),
                "watch" => parsed.watch = truthy,
                "allowWatchBookmarks" => parsed.allow_bookmarks = truthy,
                "sendInitialEvents" => parsed.send_initial_events = truthy,
                _ => {}
            }
        }
        parsed
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |p| Route::parse(p);
        assert_eq!(
            r("/api/v1/services"),
            Some(Route {
                kind: Kind::Service,
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            r("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/web-abc"),
            Some(Route {
                kind: Kind::EndpointSlice,
                namespace: Some("shop".into()),
                name: Some("web-abc".into())
            })
        );
        assert_eq!(
            r("/api/v1/nodes/node-1"),
            Some(Route {
                kind: Kind::Node,
                namespace: None,
                name: Some("node-1".into())
            })
        );
        assert_eq!(
            r("/apis/networking.k8s.io/v1/servicecidrs/kubernetes"),
            Some(Route {
                kind: Kind::ServiceCidr,
                namespace: None,
                name: Some("kubernetes".into())
            })
        );
        assert_eq!(r("/apis/networking.k8s.io/v1/namespaces/x/servicecidrs"), None);
        assert_eq!(r("/api/v1/services/web"), None);
        assert_eq!(r("/api/v1/namespaces/x/nodes"), None);
        assert_eq!(r("/api/v1/pods"), None);
        assert_eq!(r("/api/v1/servicesx"), None);
    }

    #[test]
    fn queries() {
        let q = Query::parse(
            "watch=true&labelSelector=%21service.kubernetes.io%2Fheadless%2Ca+in+%28x%29\
             &resourceVersion=12&allowWatchBookmarks=true&timeoutSeconds=5&limit=&x=%",
        );
        assert!(q.watch && q.allow_bookmarks && !q.send_initial_events);
        assert_eq!(
            q.label_selector.as_deref(),
            Some("!service.kubernetes.io/headless,a in (x)")
        );
        assert_eq!(q.resource_version.as_deref(), Some("12"));
        assert_eq!(q.timeout_seconds.as_deref(), Some("5"));
        assert_eq!(q.limit.as_deref(), Some(""));
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
