//! Following the API server: one kube watcher per resource, each translating
//! objects into the model and recording them in the [`Inbox`]. A watcher
//! retries with backoff on its own and relists after `410 Gone` or a lost
//! connection; a relist records the deletion of every object it no longer
//! lists, so an outage loses nothing.
//!
//! ServiceCIDRs (followed in nftables mode only) are optional: a cluster
//! older than Kubernetes 1.33 does not serve them (`404`), which is logged
//! once and neither counted as a watch error nor allowed to hold back a
//! sync; the watcher keeps retrying with its backoff, so an API server
//! upgrade is picked up without a restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chainsmith_model::{Diagnostic, IpFamily, ObjectKey, Severity};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
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
    /// Follow ServiceCIDR objects (nftables mode: the only mode with a rule
    /// that uses them, as upstream's).
    pub service_cidrs: bool,
}

/// An API object the node follows.
trait Followed:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    const RESOURCE: Resource;

    /// For a resource the cluster may not serve: the warning logged (once)
    /// when it answers `404`, saying what the node does without it. Such a
    /// `404` is not counted as a watch error, and no error of the resource
    /// holds back the first sync.
    const OPTIONAL: Option<&'static str> = None;

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

impl Followed for networking::ServiceCIDR {
    const RESOURCE: Resource = Resource::ServiceCidrs;
    const OPTIONAL: Option<&'static str> = Some(
        "ServiceCIDRs are not served by this API server (Kubernetes before 1.33, or networking.k8s.io/v1 disabled): \
         traffic to unallocated Service IPs is not dropped until they are; retrying quietly",
    );

    fn record(
        changes: &mut Changes,
        key: ObjectKey,
        object: Option<&Self>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let cidrs = object.and_then(|cidr| chainsmith_k8s::service_cidr_from_k8s(cidr, diagnostics));
        changes.service_cidrs.insert(key.name, cidrs);
    }
}

impl Watchers {
    /// Follows Services, EndpointSlices, this node's Node and (in nftables
    /// mode) ServiceCIDRs until the streams end (they do not: errors are
    /// retried).
    pub async fn run(self: Arc<Self>, client: Client, node_name: &str) {
        let selector = watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
        let node = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        let service_cidrs = async {
            if self.service_cidrs {
                self.follow(
                    Api::<networking::ServiceCIDR>::all(client.clone()),
                    watcher::Config::default(),
                )
                .await;
            } else {
                // Not followed in this mode: nothing for the first sync to wait for.
                self.inbox.listed(Resource::ServiceCidrs);
            }
        };
        tokio::join!(
            self.follow(Api::<core::Service>::all(client.clone()), selector.clone()),
            self.follow(Api::<discovery::EndpointSlice>::all(client.clone()), selector),
            self.follow(Api::<core::Node>::all(client.clone()), node),
            service_cidrs,
        );
    }

    async fn follow<K: Followed>(&self, api: Api<K>, config: watcher::Config) {
        let resource = K::RESOURCE.as_str();
        self.metrics.watch_started(resource);
        let mut known: HashSet<ObjectKey> = HashSet::new();
        let mut relisting: Option<HashSet<ObjectKey>> = None;
        // For an optional resource: the API server answered 404 last.
        let mut not_served = false;
        // The first sync waits for this resource until its first list (or,
        // for an optional resource, its first error).
        let mut holds_first_sync = true;
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
                    not_served = false;
                    holds_first_sync = false;
                    self.inbox.listed(K::RESOURCE);
                }
                Err(error) => {
                    let Some(not_served_warning) = K::OPTIONAL else {
                        self.metrics.watch_error(resource);
                        tracing::warn!(resource, %error, "watch failed; retrying with backoff");
                        continue;
                    };
                    if is_not_found(&error) {
                        // Not an error of this node: the cluster's API level.
                        // Counting it would keep the watch-errors alert firing
                        // on every node of an older cluster. What was listed
                        // before (an API server downgrade) stays as it was.
                        if !not_served {
                            tracing::warn!(resource, %error, "{not_served_warning}");
                        }
                        not_served = true;
                    } else {
                        self.metrics.watch_error(resource);
                        tracing::warn!(resource, %error, "watch failed; retrying with backoff");
                        if holds_first_sync {
                            tracing::warn!(resource, "not listed yet: syncing without it meanwhile");
                        }
                    }
                    // Whatever failed, the syncs go on without it (a missing
                    // RBAC rule after an upgrade must not stop the proxy).
                    holds_first_sync = false;
                    self.inbox.listed(K::RESOURCE);
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
            Resource::Node | Resource::ServiceCidrs => {}
        }
        let now = SystemTime::now();
        let now_unix = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        for family in &self.families {
            self.health.queued(*family, now);
            self.metrics.queued(*family, now_unix);
        }
    }
}

/// Whether a watcher error is the API server's `404 NotFound` for the
/// resource itself (the list or watch path is not served).
fn is_not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            Status::failure("the server could not find the requested resource", "NotFound")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_a_404_for_the_resource_is_not_found() {
        assert!(is_not_found(&watcher::Error::InitialListFailed(api(404))));
        assert!(is_not_found(&watcher::Error::WatchStartFailed(api(404))));
        assert!(is_not_found(&watcher::Error::WatchFailed(api(404))));
        assert!(!is_not_found(&watcher::Error::InitialListFailed(api(403))));
        assert!(!is_not_found(&watcher::Error::WatchStartFailed(api(503))));
        assert!(!is_not_found(&watcher::Error::NoResourceVersion));
    }
}
