//! Following the API server: one kube watcher per resource, each translating
//! objects into the model and recording them in the [`Inbox`]. A watcher
//! retries with backoff on its own and relists after `410 Gone` or a lost
//! connection; a relist records the deletion of every object it no longer
//! lists, so an outage loses nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chainsmith_model::{Diagnostic, IpFamily, ObjectKey, Severity};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::health::ProxyHealth;
use crate::inbox::{Changes, Inbox, Resource};
use crate::metrics::Metrics;

/// Services and EndpointSlices handed to another proxy, or of headless
/// Services, are not ours (the selector upstream's informers use).
pub const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// The EndpointSlice annotation telling when the change behind it happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What the watchers share.
pub struct Watchers {
    /// Where changes go.
    pub inbox: Arc<Inbox>,
    /// Change counters and watch errors.
    pub metrics: Arc<Metrics>,
    /// Told that a change is queued.
    pub health: Arc<ProxyHealth>,
    /// The families being synced.
    pub families: Vec<IpFamily>,
}

/// An API object the node follows.
trait Followed:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    const RESOURCE: Resource;

    fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// Records the object's current state (`None`: deleted).
    fn record(
        changes: &mut Changes,
        key: ObjectKey,
        object: Option<&Self>,
        diagnostics: &mut Vec<Diagnostic>,
    );
}

impl Followed for core::Service {
    const RESOURCE: Resource = Resource::Services;

    fn record(
        changes: &mut Changes,
        key: ObjectKey,
        object: Option<&Self>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let service = object.and_then(|svc| chainsmith_k8s::service_from_k8s(svc, diagnostics));
        changes.services.insert(key, service);
    }
}

impl Followed for discovery::EndpointSlice {
    const RESOURCE: Resource = Resource::EndpointSlices;

    fn record(
        changes: &mut Changes,
        key: ObjectKey,
        object: Option<&Self>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let trigger = object
            .and_then(|slice| slice.metadata.annotations.as_ref()?.get(TRIGGER_TIME_ANNOTATION))
            .and_then(|text| text.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(SystemTime::from);
        changes.trigger_times.extend(trigger);
        let slice = object.and_then(|slice| chainsmith_k8s::endpoint_slice_from_k8s(slice, diagnostics));
        changes.slices.insert(key, slice);
    }
}

impl Followed for core::Node {
    const RESOURCE: Resource = Resource::Node;

    fn record(
        changes: &mut Changes,
        _key: ObjectKey,
        object: Option<&Self>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        changes.node = Some(object.and_then(|node| chainsmith_k8s::node_from_k8s(node, diagnostics)));
    }
}

impl Watchers {
    /// Follows Services, EndpointSlices and this node's Node until the
    /// streams end (they do not: errors are retried).
    pub async fn run(self: Arc<Self>, client: Client, node_name: &str) {
        let selector = watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
        let node = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        tokio::join!(
            self.follow(Api::<core::Service>::all(client.clone()), selector.clone()),
            self.follow(Api::<discovery::EndpointSlice>::all(client.clone()), selector),
            self.follow(Api::<core::Node>::all(client), node),
        );
    }

    async fn follow<K: Followed>(&self, api: Api<K>, config: watcher::Config) {
        let resource = K::RESOURCE.as_str();
        self.metrics.watch_started(resource);
        let mut known: HashSet<ObjectKey> = HashSet::new();
        let mut relisting: Option<HashSet<ObjectKey>> = None;
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    let key = object.key();
                    if let Some(fresh) = relisting.as_mut() {
                        fresh.insert(key.clone());
                    }
                    known.insert(key.clone());
                    self.record::<K>(key, Some(&object));
                }
                Ok(watcher::Event::Delete(object)) => {
                    let key = object.key();
                    known.remove(&key);
                    self.record::<K>(key, None);
                }
                Ok(watcher::Event::Init) => relisting = Some(HashSet::new()),
                Ok(watcher::Event::InitDone) => {
                    let fresh = relisting.take().unwrap_or_default();
                    let gone: Vec<ObjectKey> = known.difference(&fresh).cloned().collect();
                    for key in gone {
                        self.record::<K>(key, None);
                    }
                    tracing::info!(resource, objects = fresh.len(), "listed");
                    known = fresh;
                    self.inbox.listed(K::RESOURCE);
                }
                Err(error) => {
                    self.metrics.watch_error(resource);
                    tracing::warn!(resource, %error, "watch failed; retrying with backoff");
                }
            }
        }
    }

    fn record<K: Followed>(&self, key: ObjectKey, object: Option<&K>) {
        let mut diagnostics = Vec::new();
        let (services, slices) = self
            .inbox
            .record(|changes| K::record(changes, key, object, &mut diagnostics));
        for diagnostic in &diagnostics {
            match diagnostic.severity {
                Severity::Warning => tracing::warn!(%diagnostic, "object partly or wholly ignored"),
                _ => tracing::debug!(%diagnostic),
            }
        }
        match K::RESOURCE {
            Resource::Services => self.metrics.change(false, services),
            Resource::EndpointSlices => self.metrics.change(true, slices),
            Resource::Node => {}
        }
        let now = SystemTime::now();
        let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        for family in &self.families {
            self.health.queued(*family, now);
            self.metrics.queued(*family, now_unix);
        }
    }
}
