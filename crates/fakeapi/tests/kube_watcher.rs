//! The real kube-rs client and `kube::runtime::watcher` against the fake API
//! server: initial list, live events, kube-proxy's label selector, pagination,
//! `410 Expired` forcing a relist, bookmarks, watch timeouts, outages, garbage,
//! a resource the server does not have (`404`) and a 10k-Service bulk load;
//! and the Events kube's recorder creates.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainsmith_fakeapi::{FakeApiServer, Outage};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector, watcher as watch_stream};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// kube-proxy's Service selector.
const KUBE_PROXY_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

const DEADLINE: Duration = Duration::from_secs(20);

async fn client(server: &FakeApiServer) -> Client {
    Client::try_from(config(server).await).unwrap()
}

async fn config(server: &FakeApiServer) -> Config {
    let kubeconfig = Kubeconfig::from_yaml(&server.kubeconfig("default")).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    // Never through a proxy from the environment: the server is local.
    config.proxy_url = None;
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    assert_eq!(config.default_namespace, "default");
    config
}

fn service(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    })
}

/// A short fixed backoff, so fault tests retry quickly.
struct Quick;

impl Iterator for Quick {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }
}

impl Backoff for Quick {
    fn reset(&mut self) {}
}

fn key<K: Resource>(object: &K) -> String {
    match object.namespace() {
        Some(ns) => format!("{ns}/{}", object.name_any()),
        None => object.name_any(),
    }
}

fn describe<K: Resource>(item: &Result<Event<K>, watcher::Error>) -> String {
    match item {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(o)) => format!("InitApply({})", key(o)),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(o)) => format!("Apply({})", key(o)),
        Ok(Event::Delete(o)) => format!("Delete({})", key(o)),
        Err(e) => format!("Error({e})"),
    }
}

/// A watcher feeding a reflector store, run in the background; every event
/// and error is logged.
struct Observer<K: Resource<DynamicType = ()> + Clone + 'static> {
    log: Arc<Mutex<Vec<String>>>,
    reader: reflector::Store<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Observer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn start<B: Backoff + 'static>(api: Api<K>, config: watcher::Config, backoff: B) -> Observer<K> {
        let (reader, writer) = reflector::store();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stream = reflector(writer, watch_stream(api, config)).backoff(backoff);
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut stream = pin!(stream);
            while let Some(item) = stream.next().await {
                task_log.lock().unwrap().push(describe(&item));
            }
        });
        Observer { log, reader, task }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, entry: &str) -> usize {
        self.log().iter().filter(|e| *e == entry).count()
    }

    fn errors(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|e| e.starts_with("Error("))
            .collect()
    }

    /// Waits until `entry` has been logged `n` times.
    async fn wait_for(&self, entry: &str, n: usize) {
        eventually(&format!("{entry} x{n}"), || self.count(entry) >= n, || self.log()).await;
    }

    /// The reflector's objects: key -> resourceVersion.
    fn state(&self) -> BTreeMap<String, String> {
        self.reader
            .state()
            .iter()
            .map(|o| (key(o.as_ref()), o.resource_version().unwrap_or_default()))
            .collect()
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for Observer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` until it holds; panics after [`DEADLINE`] showing `context`.
async fn eventually<T: Debug>(what: &str, mut condition: impl FnMut() -> bool, context: impl Fn() -> T) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; context: {:#?}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a kube-proxy watcher should hold: matching Services, key -> resourceVersion.
fn expected_services(server: &FakeApiServer) -> BTreeMap<String, String> {
    server
        .list("Service")
        .iter()
        .filter(|s| {
            let labels = &s["metadata"]["labels"];
            labels.get("service.kubernetes.io/service-proxy-name").is_none()
                && labels.get("service.kubernetes.io/headless").is_none()
        })
        .map(|s| {
            let m = &s["metadata"];
            (
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap(),
                    m["name"].as_str().unwrap()
                ),
                m["resourceVersion"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Requests that were Service lists (not watches).
fn service_lists(server: &FakeApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/services") && !r.contains("watch=true"))
        .collect()
}

fn service_watches(server: &FakeApiServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/services") && r.contains("watch=true"))
        .collect()
}

fn query_param(request: &str, name: &str) -> Option<String> {
    let query = request.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(String::from))
}

#[tokio::test]
async fn watcher_lists_then_follows_changes_with_kube_proxy_selector() {
    let server = FakeApiServer::start_local();
    server.set_bookmark_interval(Duration::from_millis(100));
    server.apply(service("shop", "web", json!({"app": "web"})));
    server.apply(service("shop", "db", json!({})));
    server.apply(service("kube-system", "dns", json!({})));
    server.apply(service(
        "shop",
        "other-proxy",
        json!({"service.kubernetes.io/service-proxy-name": "someone-else"}),
    ));
    server.apply(service(
        "shop",
        "headless",
        json!({"service.kubernetes.io/headless": ""}),
    ));
    let api: Api<Service> = Api::all(client(&server).await);
    let observer = Observer::start(api, watcher::Config::default().labels(KUBE_PROXY_SELECTOR), Quick);
    observer.wait_for("InitDone", 1).await;
    assert_eq!(
        observer.log(),
        [
            "Init",
            "InitApply(kube-system/dns)",
            "InitApply(shop/db)",
            "InitApply(shop/web)",
            "InitDone"
        ]
    );
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    server.apply(service("shop", "api", json!({})));
    let mut web = service("shop", "web", json!({"app": "web"}));
    web["spec"]["ports"][0]["port"] = json!(8000);
    server.apply(web);
    server.apply(service(
        "shop",
        "foreign",
        json!({"service.kubernetes.io/service-proxy-name": "someone-else"}),
    ));
    server.delete("Service", Some("shop"), "db");
    // Relabelled out of the selector: a Delete; back in: an Apply.
    server.apply(service(
        "kube-system",
        "dns",
        json!({"service.kubernetes.io/service-proxy-name": "someone-else"}),
    ));
    server.apply(service("shop", "marker", json!({})));
    observer.wait_for("Apply(shop/marker)", 1).await;
    server.apply(service("kube-system", "dns", json!({})));
    observer.wait_for("Apply(kube-system/dns)", 1).await;
    assert_eq!(
        observer.log()[5..],
        [
            "Apply(shop/api)",
            "Apply(shop/web)",
            "Delete(shop/db)",
            "Delete(kube-system/dns)",
            "Apply(shop/marker)",
            "Apply(kube-system/dns)"
        ]
    );
    assert_eq!(observer.state(), expected_services(&server));
    assert!(!observer.state().contains_key("shop/foreign"));

    // One list, then one watch from the list's resource version, with
    // kube-proxy's selector and bookmarks.
    let requests = server.requests();
    assert_eq!(service_lists(&server).len(), 1, "{requests:#?}");
    let list = &service_lists(&server)[0];
    assert_eq!(
        query_param(list, "labelSelector").as_deref(),
        Some("%21service.kubernetes.io%2Fservice-proxy-name%2C%21service.kubernetes.io%2Fheadless")
    );
    let watches = service_watches(&server);
    assert_eq!(watches.len(), 1, "{requests:#?}");
    assert_eq!(
        query_param(&watches[0], "allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        query_param(&watches[0], "resourceVersion").as_deref(),
        Some("1005")
    );
    assert!(observer.errors().is_empty(), "{:#?}", observer.log());
}

#[tokio::test]
async fn paginated_initial_list_is_complete_and_consistent() {
    let server = FakeApiServer::start_local();
    server.apply_many((0..25).map(|i| service("shop", &format!("svc-{i:02}"), json!({}))));
    let api: Api<Service> = Api::all(client(&server).await);

    // The watcher pages through everything.
    let observer = Observer::start(api.clone(), watcher::Config::default().page_size(7), Quick);
    observer.wait_for("InitDone", 1).await;
    let log = observer.log();
    assert_eq!(log.iter().filter(|e| e.starts_with("InitApply(")).count(), 25);
    assert_eq!(observer.state(), expected_services(&server));
    let lists = service_lists(&server);
    assert_eq!(lists.len(), 4, "{lists:#?}");
    assert!(
        lists
            .iter()
            .all(|l| query_param(l, "limit").as_deref() == Some("7"))
    );
    assert_eq!(lists.iter().filter(|l| l.contains("continue=")).count(), 3);

    // Pages are one snapshot: changes between pages do not show.
    let first = api.list(&ListParams::default().limit(10)).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    server.delete("Service", Some("shop"), "svc-20");
    server.apply(service("shop", "svc-99", json!({})));
    let mut names: Vec<String> = first.items.iter().map(ResourceExt::name_any).collect();
    let mut token = first.metadata.continue_;
    while let Some(t) = token {
        let page = api
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        names.extend(page.items.iter().map(ResourceExt::name_any));
        token = page.metadata.continue_;
    }
    let wanted: Vec<String> = (0..25).map(|i| format!("svc-{i:02}")).collect();
    assert_eq!(names, wanted);
    // And the watcher saw the changes live.
    observer.wait_for("Apply(shop/svc-99)", 1).await;
    observer.wait_for("Delete(shop/svc-20)", 1).await;
    assert_eq!(observer.state(), expected_services(&server));

    // A continue token older than a compaction is 410 Expired.
    let first = api.list(&ListParams::default().limit(10)).await.unwrap();
    server.apply(service("shop", "svc-98", json!({})));
    server.compact();
    let token = first.metadata.continue_.unwrap();
    let err = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"),
        "{err:?}"
    );
}

/// The realistic road to `410 Gone`: the watcher is cut off, objects change
/// and etcd compacts meanwhile; resuming from its old resource version gets an
/// `Expired` ERROR event, the watcher relists, and its store ends correct
/// (including a deletion it never saw as an event).
#[tokio::test]
async fn compaction_while_disconnected_forces_a_relist() {
    let server = FakeApiServer::start_local();
    server.apply_many((0..5).map(|i| service("shop", &format!("s{i}"), json!({}))));
    let api: Api<Service> = Api::all(client(&server).await);
    let config = watcher::Config::default()
        .labels(KUBE_PROXY_SELECTOR)
        .disable_bookmarks();
    let observer = Observer::start(api, config, Quick);
    observer.wait_for("InitDone", 1).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    server.set_outage_mode(Some(Outage::Refuse));
    eventually(
        "the watch to drop",
        || server.open_watches() == 0,
        || server.requests(),
    )
    .await;
    server.delete("Service", Some("shop"), "s1");
    server.apply(service("shop", "s5", json!({})));
    let mut s2 = service("shop", "s2", json!({}));
    s2["spec"]["clusterIP"] = json!("10.96.0.22");
    server.apply(s2);
    server.apply(service(
        "shop",
        "s3",
        json!({"service.kubernetes.io/headless": ""}),
    ));
    server.compact();
    // Let the watcher fail to reconnect at least once before the server is back.
    eventually(
        "a refused reconnect",
        || !observer.errors().is_empty(),
        || observer.log(),
    )
    .await;
    server.set_outage_mode(None);

    observer.wait_for("InitDone", 2).await;
    let log = observer.log();
    assert!(
        log.iter()
            .any(|e| e.contains("too old resource version") && e.contains("Expired")),
        "{log:#?}"
    );
    assert_eq!(service_lists(&server).len(), 2, "{:#?}", server.requests());
    assert_eq!(observer.state(), expected_services(&server));
    assert_eq!(
        observer.state().keys().collect::<Vec<_>>(),
        ["shop/s0", "shop/s2", "shop/s4", "shop/s5"]
    );
}

/// Without bookmarks a watcher of a quiet resource keeps the resource version
/// of its last event while the global one moves on; after a compaction and a
/// dropped connection it must relist.
#[tokio::test]
async fn quiet_watcher_without_bookmarks_falls_behind_compaction() {
    let server = FakeApiServer::start_local();
    server.apply_many((0..3).map(|i| service("shop", &format!("s{i}"), json!({}))));
    let api: Api<Service> = Api::all(client(&server).await);
    let config = watcher::Config::default()
        .labels(KUBE_PROXY_SELECTOR)
        .disable_bookmarks();
    let observer = Observer::start(api, config, Quick);
    observer.wait_for("InitDone", 1).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    // Changes this watcher is not shown: another resource, a filtered Service.
    server.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    server.compact();
    server.apply(service(
        "shop",
        "foreign",
        json!({"service.kubernetes.io/service-proxy-name": "someone-else"}),
    ));
    server.drop_watches();

    observer.wait_for("InitDone", 2).await;
    let log = observer.log();
    assert!(
        log.iter().any(|e| e.contains("too old resource version")),
        "{log:#?}"
    );
    assert_eq!(service_lists(&server).len(), 2, "{:#?}", server.requests());
    assert_eq!(observer.state(), expected_services(&server));
    server.apply(service("shop", "late", json!({})));
    observer.wait_for("Apply(shop/late)", 1).await;
}

#[tokio::test]
async fn bookmarks_keep_a_quiet_watcher_current() {
    let server = FakeApiServer::start_local();
    server.set_bookmark_interval(Duration::from_millis(50));
    server.apply_many((0..3).map(|i| service("shop", &format!("s{i}"), json!({}))));
    let client = client(&server).await;

    // On the wire: BOOKMARK events at the current resource version.
    let api: Api<Service> = Api::all(client.clone());
    let rv = server.resource_version().to_string();
    {
        let mut raw = pin!(api.watch(&WatchParams::default(), &rv).await.unwrap());
        match raw.next().await {
            Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                assert_eq!(bookmark.metadata.resource_version, rv);
                assert_eq!(bookmark.types.kind, "Service");
                assert_eq!(bookmark.types.api_version, "v1");
            }
            other => panic!("expected a bookmark, got {other:?}"),
        }
    }

    let observer = Observer::start(api, watcher::Config::default(), Quick);
    observer.wait_for("InitDone", 1).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;
    server.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    let moved_on = server.resource_version();
    // A few bookmark intervals: the watcher takes the bookmark's version.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.compact();
    server.drop_watches();
    eventually(
        "the re-watch",
        || service_watches(&server).len() >= 3,
        || server.requests(),
    )
    .await;
    let resumed = service_watches(&server).last().cloned().unwrap();
    assert_eq!(
        query_param(&resumed, "resourceVersion"),
        Some(moved_on.to_string()),
        "{resumed}"
    );
    server.apply(service("shop", "new", json!({})));
    observer.wait_for("Apply(shop/new)", 1).await;
    assert!(observer.errors().is_empty(), "{:#?}", observer.log());
    assert_eq!(observer.count("Init"), 1);
    assert_eq!(service_lists(&server).len(), 1, "{:#?}", server.requests());
    assert_eq!(observer.state(), expected_services(&server));
}

#[tokio::test]
async fn watch_timeout_ends_streams_and_the_watcher_rewatches() {
    let server = FakeApiServer::start_local();
    server.apply(service("shop", "web", json!({})));
    let api: Api<Service> = Api::all(client(&server).await);
    let observer = Observer::start(api, watcher::Config::default().timeout(1), Quick);
    observer.wait_for("InitDone", 1).await;
    let start = Instant::now();
    eventually(
        "three watches",
        || service_watches(&server).len() >= 3,
        || server.requests(),
    )
    .await;
    // Each stream lasted its second.
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        service_watches(&server)
            .iter()
            .all(|w| query_param(w, "timeoutSeconds").as_deref() == Some("1"))
    );
    server.apply(service("shop", "api", json!({})));
    observer.wait_for("Apply(shop/api)", 1).await;
    assert!(observer.errors().is_empty(), "{:#?}", observer.log());
    assert_eq!(service_lists(&server).len(), 1);
    assert_eq!(observer.state(), expected_services(&server));
}

/// A 503 outage as the watcher sees it when the client does not retry 503s
/// itself (kube-rs's client does by default, see below).
#[tokio::test]
async fn outage_errors_then_recovers_without_losing_changes() {
    let server = FakeApiServer::start_local();
    server.apply_many((0..3).map(|i| service("shop", &format!("s{i}"), json!({}))));
    let mut config = config(&server).await;
    config.default_retry = false;
    let api: Api<Service> = Api::all(Client::try_from(config).unwrap());
    let stream = watch_stream(api, watcher::Config::default().labels(KUBE_PROXY_SELECTOR)).default_backoff();
    let (reader, writer) = reflector::store::<Service>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let task_log = Arc::clone(&log);
    let task = tokio::spawn(async move {
        let mut stream = pin!(reflector(writer, stream));
        while let Some(item) = stream.next().await {
            task_log.lock().unwrap().push(describe(&item));
        }
    });
    let logged = || log.lock().unwrap().clone();
    let count = |prefix: &str| logged().iter().filter(|e| e.starts_with(prefix)).count();
    eventually("the initial list", || count("InitDone") == 1, logged).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    server.set_outage(true);
    server.apply(service("shop", "s3", json!({})));
    server.delete("Service", Some("shop"), "s0");
    eventually("two failed retries", || count("Error(") >= 2, logged).await;
    assert!(
        logged()
            .iter()
            .all(|e| !e.starts_with("Error(") || e.contains("ServiceUnavailable")),
        "{:#?}",
        logged()
    );
    server.set_outage(false);

    eventually(
        "the changes",
        || count("Delete(shop/s0)") == 1 && count("Apply(shop/s3)") == 1,
        logged,
    )
    .await;
    let state: BTreeMap<String, String> = reader
        .state()
        .iter()
        .map(|o| (key(o.as_ref()), o.resource_version().unwrap()))
        .collect();
    assert_eq!(state, expected_services(&server));
    // Resumed from its resource version: no relist was needed.
    assert_eq!(
        logged().iter().filter(|e| *e == "Init").count(),
        1,
        "{:#?}",
        logged()
    );
    assert_eq!(service_lists(&server).len(), 1);
    task.abort();
}

/// kube-rs's client retries 503s itself (15 times, exponential backoff from
/// 5 ms): a short 503 outage never reaches the watcher. A refused
/// connection does, and the watcher retries until the server is back.
#[tokio::test]
async fn default_client_rides_out_503s_and_refused_connections() {
    let server = FakeApiServer::start_local();
    server.apply(service("shop", "s0", json!({})));
    let api: Api<Service> = Api::all(client(&server).await);
    let observer = Observer::start(api, watcher::Config::default(), Quick);
    observer.wait_for("InitDone", 1).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    server.set_outage(true);
    server.apply(service("shop", "s1", json!({})));
    eventually(
        "retried requests",
        || service_watches(&server).len() >= 4,
        || server.requests(),
    )
    .await;
    server.set_outage(false);
    observer.wait_for("Apply(shop/s1)", 1).await;
    assert!(observer.errors().is_empty(), "{:#?}", observer.log());

    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;
    server.set_outage_mode(Some(Outage::Refuse));
    server.apply(service("shop", "s2", json!({})));
    eventually(
        "refused reconnects",
        || observer.errors().len() >= 2,
        || observer.log(),
    )
    .await;
    server.set_outage_mode(None);
    observer.wait_for("Apply(shop/s2)", 1).await;
    assert_eq!(service_lists(&server).len(), 1, "{:#?}", server.requests());
    assert_eq!(observer.state(), expected_services(&server));
}

#[tokio::test]
async fn garbage_answers_are_errors_until_switched_off() {
    let server = FakeApiServer::start_local();
    server.apply(service("shop", "web", json!({})));
    let api: Api<Service> = Api::all(client(&server).await);
    let observer = Observer::start(api.clone(), watcher::Config::default(), Quick);
    observer.wait_for("InitDone", 1).await;
    eventually("the watch", || server.open_watches() == 1, || server.requests()).await;

    server.set_garbage(true);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::SerdeError(_)), "{err:?}");
    eventually("watch errors", || observer.errors().len() >= 2, || observer.log()).await;
    server.apply(service("shop", "api", json!({})));
    server.set_garbage(false);
    observer.wait_for("Apply(shop/api)", 1).await;
    assert_eq!(observer.state(), expected_services(&server));
}

#[tokio::test]
async fn nodes_endpoint_slices_and_namespaces_are_served() {
    let server = FakeApiServer::start_local();
    server.apply(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]},
    }));
    server.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node-1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
    server.apply(service("shop", "web", json!({})));
    server.apply(service("other", "web", json!({})));
    let client = client(&server).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("node-1").await.unwrap();
    assert_eq!(node.labels()["topology.kubernetes.io/zone"], "z1");
    assert!(node.uid().is_some() && node.creation_timestamp().is_some());
    let err = nodes.get("node-2").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    let by_name = nodes
        .list(&ListParams::default().fields("metadata.name=node-1"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let observer = Observer::start(
        slices,
        watcher::Config::default().labels("kubernetes.io/service-name=web"),
        Quick,
    );
    observer.wait_for("InitApply(shop/web-abc)", 1).await;
    server.delete("EndpointSlice", Some("shop"), "web-abc");
    observer.wait_for("Delete(shop/web-abc)", 1).await;

    let shop: Api<Service> = Api::default_namespaced(client.clone());
    assert!(shop.list(&ListParams::default()).await.unwrap().items.is_empty());
    let shop: Api<Service> = Api::namespaced(client, "shop");
    let list = shop.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.iter().map(key).collect::<Vec<_>>(), ["shop/web"]);
    assert_eq!(
        shop.get("web").await.unwrap().metadata.namespace.as_deref(),
        Some("shop")
    );
}

/// Kubernetes 1.27's streaming lists: the initial state arrives as ADDED
/// events on a watch, closed by a bookmark marked `k8s.io/initial-events-end`.
#[tokio::test]
async fn streaming_list_initial_events_end_with_a_bookmark() {
    let server = FakeApiServer::start_local();
    server.apply_many((0..3).map(|i| service("shop", &format!("s{i}"), json!({}))));
    server.apply(service(
        "shop",
        "hidden",
        json!({"service.kubernetes.io/headless": ""}),
    ));
    let api: Api<Service> = Api::all(client(&server).await);
    let config = watcher::Config::default()
        .labels(KUBE_PROXY_SELECTOR)
        .streaming_lists();
    let observer = Observer::start(api, config, Quick);
    observer.wait_for("InitDone", 1).await;
    assert_eq!(
        observer.log(),
        [
            "Init",
            "InitApply(shop/s0)",
            "InitApply(shop/s1)",
            "InitApply(shop/s2)",
            "InitDone"
        ]
    );
    server.delete("Service", Some("shop"), "s1");
    observer.wait_for("Delete(shop/s1)", 1).await;
    assert!(service_lists(&server).is_empty(), "{:#?}", server.requests());
    let first = &service_watches(&server)[0];
    assert_eq!(query_param(first, "sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(observer.state(), expected_services(&server));
}

fn bulk_services(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            service(
                &format!("ns-{}", i % 50),
                &format!("svc-{i:05}"),
                json!({"app": "bulk"}),
            )
        })
        .collect()
}

/// A raw `GET` over a fresh connection; returns the body.
fn raw_get(server: &FakeApiServer, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: fakeapi\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    response[split + 4..].to_vec()
}

/// Bulk loads and lists cost time linear in the number of objects. Test
/// builds are unoptimised and may share the machine, so the time bounds are
/// loose; the numbers are printed (`--nocapture`).
#[tokio::test]
async fn bulk_load_of_10k_services_lists_fast() {
    let small = FakeApiServer::start_local();
    let objects = bulk_services(1_000);
    let start = Instant::now();
    small.apply_many(objects);
    let load_1k = start.elapsed();
    drop(small);

    let server = FakeApiServer::start_local();
    let objects = bulk_services(10_000);
    let start = Instant::now();
    server.apply_many(objects);
    let load_10k = start.elapsed();

    // The server's side of one unpaginated list (HTTP/1.1 without chunking:
    // the whole body in one piece).
    let start = Instant::now();
    let body = raw_get(
        &server,
        "/api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless",
    );
    let serve_list = start.elapsed();
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["items"].as_array().unwrap().len(), 10_000);

    // And kube-rs's watcher paging through it (500 a page).
    server.clear_requests();
    let api: Api<Service> = Api::all(client(&server).await);
    let start = Instant::now();
    let observer = Observer::start(api, watcher::Config::default().labels(KUBE_PROXY_SELECTOR), Quick);
    observer.wait_for("InitDone", 1).await;
    let watcher_list = start.elapsed();
    assert_eq!(observer.state().len(), 10_000);
    assert_eq!(service_lists(&server).len(), 20);
    println!(
        "apply_many 1k: {load_1k:?}, 10k: {load_10k:?}; serving a 10k list: {serve_list:?}; \
         kube watcher's 20 pages: {watcher_list:?}"
    );
    // Linear, not quadratic: 10x the objects cost about 10x (quadratic: 100x).
    assert!(load_10k < load_1k * 30, "1k: {load_1k:?}, 10k: {load_10k:?}");
    assert!(load_10k < Duration::from_secs(10), "{load_10k:?}");
    assert!(serve_list < Duration::from_secs(2), "{serve_list:?}");
}

/// kube's event recorder creates its Event with POST; a second create of the
/// same name is refused as the API server refuses it (409); any served kind can
/// be created.
#[tokio::test]
async fn events_are_created_with_post() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::api::PostParams;
    use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};

    let server = FakeApiServer::start_local();
    let client = client(&server).await;
    let node = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("node-a".into()),
        uid: Some("node-a".into()),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(client.clone(), Reporter::from("test"));
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "Starting".into(),
        note: Some("started".into()),
        action: "Start".into(),
        secondary: None,
    };
    recorder.publish(&event, &node).await.expect("created");
    let stored = server.list("Event");
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["metadata"]["namespace"], "default");
    assert_eq!(stored[0]["regarding"]["name"], "node-a");
    assert!(stored[0]["metadata"]["resourceVersion"].is_string());

    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    let again: K8sEvent = serde_json::from_value(stored[0].clone()).expect("an Event");
    let refused = events
        .create(&PostParams::default(), &again)
        .await
        .expect_err("exists");
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 409),
        "{refused:?}"
    );
    let services: Api<Service> = Api::namespaced(client, "default");
    let mut service: Service = serde_json::from_value(service("default", "web", json!({}))).expect("Service");
    service.metadata.resource_version = None;
    let created = services.create(&PostParams::default(), &service).await;
    assert!(created.is_ok(), "{created:?}");
    assert_eq!(server.list("Service").len(), 1);
}

fn service_cidr(name: &str, cidrs: &[&str]) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name},
        "spec": {"cidrs": cidrs},
    })
}

/// ServiceCIDRs are served like Nodes (cluster-scoped, list + watch); switched
/// off, every request for them is the `404` an older API server answers, a
/// watcher reports it and retries, and switched on again (an upgrade) a
/// watcher that had listed resumes its watch, one that never could lists.
/// Their answers can be made slow.
#[tokio::test]
async fn service_cidrs_are_served_or_not_found() {
    let server = FakeApiServer::start_local();
    server.apply(service_cidr("kubernetes", &["10.96.0.0/16", "fd00:10:96::/112"]));
    let client = client(&server).await;
    let api: Api<ServiceCIDR> = Api::all(client.clone());
    let observer = Observer::start(api.clone(), watcher::Config::default(), Quick);
    observer.wait_for("InitApply(kubernetes)", 1).await;
    observer.wait_for("InitDone", 1).await;
    let listed = api.get("kubernetes").await.unwrap();
    let cidrs = listed.spec.and_then(|s| s.cidrs).unwrap_or_default();
    assert_eq!(cidrs, ["10.96.0.0/16", "fd00:10:96::/112"]);
    server.apply(service_cidr("kubernetes", &["10.96.0.0/16"]));
    observer.wait_for("Apply(kubernetes)", 1).await;
    server.apply(service_cidr("extra", &["10.97.0.0/16"]));
    observer.wait_for("Apply(extra)", 1).await;
    server.delete("ServiceCIDR", None, "extra");
    observer.wait_for("Delete(extra)", 1).await;
    assert!(
        server.requests().iter().any(
            |r| r.starts_with("GET /apis/networking.k8s.io/v1/servicecidrs?") && r.contains("watch=true")
        ),
        "{:#?}",
        server.requests()
    );

    server.set_served("ServiceCIDR", false);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    let err = api.get("kubernetes").await.unwrap_err();
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
    // The open watch is cut; restarting it fails with the 404.
    let not_found = |observer: &Observer<ServiceCIDR>, what: &str| {
        observer
            .errors()
            .iter()
            .filter(|e| e.contains(what) && e.contains("code: 404"))
            .count()
    };
    eventually(
        "404s for the watch",
        || not_found(&observer, "failed to start watching") >= 2,
        || observer.log(),
    )
    .await;
    // A watcher starting now cannot even list.
    let late = Observer::start(api.clone(), watcher::Config::default(), Quick);
    eventually(
        "404s for the list",
        || not_found(&late, "failed to perform initial object list") >= 2,
        || late.log(),
    )
    .await;
    // Other resources are unaffected.
    let services: Api<Service> = Api::all(client);
    assert!(services.list(&ListParams::default()).await.is_ok());

    // A slow answer for one resource only.
    server.set_delay("ServiceCIDR", Duration::from_millis(600));
    let started = Instant::now();
    let _ = api.list(&ListParams::default()).await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    let started = Instant::now();
    services.list(&ListParams::default()).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(600));
    server.set_delay("ServiceCIDR", Duration::ZERO);

    server.apply(service_cidr("extra", &["10.98.0.0/16"]));
    server.set_served("ServiceCIDR", true);
    observer.wait_for("Apply(extra)", 2).await;
    late.wait_for("InitDone", 1).await;
    for watcher in [&observer, &late] {
        let names: Vec<String> = watcher.state().into_keys().collect();
        assert_eq!(names, ["extra", "kubernetes"]);
    }
}
