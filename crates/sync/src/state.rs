//! The desired state: what every sync engine remembers between syncs,
//! whatever it writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chainsmith_model::{Diagnostic, EndpointSlice, ObjectKey, Protocol, Service};
use chainsmith_planner::{
    NodeContext, PortEndpoints, PortKey, ServicePortInfo, ServicePortPlan, distinct_service_ports,
    endpoints_by_port, plan_service,
};

/// What the cluster wants for one node and family, and which Services changed
/// since the last successful sync.
///
/// Shared by the engines of every mode so that they record objects, detect
/// changes and plan in exactly the same way; an engine keeps only what its
/// output format needs (rule counts, chains to delete) on top of it.
#[derive(Debug)]
pub struct DesiredState {
    ctx: Arc<NodeContext>,
    /// The derived ports of each Service with ports of the family: what a
    /// Service update is compared against, and what re-planning starts from.
    services: HashMap<ObjectKey, Vec<Arc<ServicePortInfo>>>,
    /// The slices of each Service, by slice name, in [`canonical`] form.
    slices: HashMap<ObjectKey, BTreeMap<String, EndpointSlice>>,
    /// The Service each slice was recorded under, so a deleted slice (which
    /// arrives without its content) or a re-labelled one finds its old owner.
    slice_owner: HashMap<ObjectKey, ObjectKey>,
    /// The last endpoints of each Service, which let the planner keep
    /// unchanged endpoints' shared data.
    endpoints: HashMap<ObjectKey, BTreeMap<(String, Protocol), PortEndpoints>>,
    ports: BTreeMap<PortKey, Arc<ServicePortPlan>>,
    ports_of_service: HashMap<ObjectKey, Vec<PortKey>>,
    changed: BTreeSet<ObjectKey>,
    diagnostics: Vec<Diagnostic>,
}

/// One Service planned again by [`DesiredState::replan_changed`].
#[derive(Debug)]
pub struct Replanned {
    /// The Service.
    pub service: ObjectKey,
    /// Its plans before, in plan order: what the kernel may still hold. Its
    /// plans now are [`DesiredState::ports_of`] (not repeated here, which
    /// would cost a key clone per port).
    pub old: Vec<Arc<ServicePortPlan>>,
}

impl DesiredState {
    /// An empty state: nothing recorded, nothing changed.
    pub fn new(ctx: Arc<NodeContext>) -> DesiredState {
        DesiredState {
            ctx,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            endpoints: HashMap::new(),
            ports: BTreeMap::new(),
            ports_of_service: HashMap::new(),
            changed: BTreeSet::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The node context plans are made with, which writers need to render them
    /// consistently.
    pub fn context(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Replaces the node context (a changed zone label, pod CIDR, ...): every
    /// Service is marked changed, so the next [`DesiredState::replan_changed`]
    /// plans them all again.
    pub fn set_context(&mut self, ctx: Arc<NodeContext>) {
        self.ctx = ctx;
        // What changes at run time (zone labels, the pod CIDR) shapes the plans,
        // not the derived ports, so re-planning every Service from its stored
        // ports and slices is enough.
        let keys = self.services.keys().chain(self.slices.keys()).cloned();
        self.changed.extend(keys);
    }

    /// The Services held (those with ports of the family), so a caller can
    /// tell which ones a fresh listing no longer has.
    pub fn service_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.services.keys()
    }

    /// The EndpointSlices held (those of the family), for the same reason.
    pub fn endpoint_slice_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.slice_owner.keys()
    }

    /// The current plans of every service port, in key order: the order
    /// upstream's tests sort rules in, which a full payload follows. Cloneable,
    /// as a writer may walk them once per table.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<ServicePortPlan>> + Clone {
        self.ports.values()
    }

    /// The current plan of one service port, for a writer walking
    /// [`DesiredState::ports_of`].
    pub fn plan(&self, key: &PortKey) -> Option<&Arc<ServicePortPlan>> {
        self.ports.get(key)
    }

    /// The port keys of one Service, in plan order (the order its chains are
    /// written in); empty when it has none.
    pub fn ports_of(&self, service: &ObjectKey) -> &[PortKey] {
        self.ports_of_service
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The Services changed since the last [`DesiredState::clear_changed`]:
    /// what a partial sync has to rewrite.
    pub fn changed(&self) -> &BTreeSet<ObjectKey> {
        &self.changed
    }

    /// Whether a partial sync has to rewrite `service`.
    pub fn is_changed(&self, service: &ObjectKey) -> bool {
        self.changed.contains(service)
    }

    /// Forgets the changes, once a sync that wrote them has been applied; until
    /// then they stay, so a failed sync is followed by one that writes them too.
    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// Problems found in the objects recorded since the last call (a port
    /// listed twice), each naming the object and field.
    pub fn take_diagnostics(&mut self) -> Vec<Diagnostic> {
        std::mem::take(&mut self.diagnostics)
    }

    /// Records the Service `key` as it is now (`None`: deleted). Returns whether
    /// this changes what the proxier derives from it.
    pub fn set_service(&mut self, key: &ObjectKey, service: Option<&Service>) -> bool {
        let infos: Vec<Arc<ServicePortInfo>> = match service {
            Some(service) => distinct_service_ports(service, &self.ctx, &mut self.diagnostics),
            None => Vec::new(),
        };
        let old = self.services.get(key).map(Vec::as_slice).unwrap_or_default();
        if old == infos.as_slice() {
            return false;
        }
        if infos.is_empty() {
            self.services.remove(key);
        } else {
            self.services.insert(key.clone(), infos);
        }
        self.changed.insert(key.clone());
        true
    }

    /// Records the EndpointSlice `key` as it is now (`None`: deleted). Slices of
    /// the other family are ignored. Returns whether this changes anything.
    pub fn set_endpoint_slice(&mut self, key: &ObjectKey, slice: Option<&EndpointSlice>) -> bool {
        let family = self.ctx.family();
        let slice = slice.filter(|s| s.address_type.family() == Some(family));
        let old_owner = self.slice_owner.get(key).cloned();
        if let (Some(slice), Some(owner)) = (slice, &old_owner) {
            let unchanged = *owner == slice.service
                && self
                    .slices
                    .get(owner)
                    .and_then(|s| s.get(&key.name))
                    .is_some_and(|old| *old == canonical(slice));
            if unchanged {
                return false;
            }
        }
        if old_owner.is_none() && slice.is_none() {
            return false;
        }
        if let Some(owner) = old_owner {
            if let Some(slices) = self.slices.get_mut(&owner) {
                slices.remove(&key.name);
                if slices.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.slice_owner.remove(key);
            self.changed.insert(owner);
        }
        if let Some(slice) = slice {
            self.slices
                .entry(slice.service.clone())
                .or_default()
                .insert(key.name.clone(), canonical(slice));
            self.slice_owner.insert(key.clone(), slice.service.clone());
            self.changed.insert(slice.service.clone());
        }
        true
    }

    /// Makes the desired state equal to these objects: everything not listed is
    /// deleted. Returns the number of Services whose state changed.
    pub fn replace_state(&mut self, services: &[Service], slices: &[EndpointSlice]) -> usize {
        let before = self.changed.len();
        let wanted: HashMap<&ObjectKey, &Service> = services.iter().map(|s| (&s.key, s)).collect();
        let gone: Vec<ObjectKey> = self
            .services
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect();
        for key in gone {
            self.set_service(&key, None);
        }
        for service in services {
            self.set_service(&service.key, Some(service));
        }
        let wanted: HashMap<&ObjectKey, &EndpointSlice> = slices.iter().map(|s| (&s.key, s)).collect();
        let gone: Vec<ObjectKey> = self
            .slice_owner
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .cloned()
            .collect();
        for key in gone {
            self.set_endpoint_slice(&key, None);
        }
        for slice in slices {
            self.set_endpoint_slice(&slice.key, Some(slice));
        }
        self.changed.len().saturating_sub(before)
    }

    /// Plans the changed Services again, so the work of a sync follows the size
    /// of the change, not of the cluster. Returns, per changed Service in key
    /// order, its previous plans, which a writer compares with the new ones or
    /// deletes the chains of. The changes stay marked (see
    /// [`DesiredState::clear_changed`]).
    pub fn replan_changed(&mut self) -> Vec<Replanned> {
        let mut replanned = Vec::with_capacity(self.changed.len());
        for service in &self.changed {
            let old: Vec<Arc<ServicePortPlan>> = self
                .ports_of_service
                .remove(service)
                .unwrap_or_default()
                .iter()
                .filter_map(|key| self.ports.remove(key))
                .collect();
            let endpoints = match self.slices.get(service) {
                Some(slices) => {
                    endpoints_by_port(service, slices.values(), &self.ctx, self.endpoints.get(service))
                }
                None => BTreeMap::new(),
            };
            let infos = self.services.get(service).map(Vec::as_slice).unwrap_or_default();
            let mut keys = Vec::with_capacity(infos.len());
            for plan in plan_service(infos, &endpoints, &self.ctx) {
                let key = plan.key();
                keys.push(key.clone());
                self.ports.insert(key, Arc::new(plan));
            }
            if endpoints.is_empty() {
                self.endpoints.remove(service);
            } else {
                self.endpoints.insert(service.clone(), endpoints);
            }
            if !keys.is_empty() {
                self.ports_of_service.insert(service.clone(), keys);
            }
            replanned.push(Replanned {
                service: service.clone(),
                old,
            });
        }
        replanned
    }
}

/// A slice in the form compared for changes: endpoints in address order, so a
/// reordering alone is not a change (as upstream's endpoint-slice cache sees it).
fn canonical(slice: &EndpointSlice) -> EndpointSlice {
    let mut slice = slice.clone();
    slice.endpoints.sort_by_key(|endpoint| endpoint.address);
    slice
}
