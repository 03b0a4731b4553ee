//! The hand-off between the watchers and the sync loop. A watcher only takes a
//! short lock to record the latest state of an object, so it never waits for
//! iptables-restore; the sync loop (a thread of its own) takes everything
//! recorded since its last sync in one go. Bursts coalesce: ten updates of one
//! Service between two syncs are one change.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use chainsmith_model::{EndpointSlice, IpNet, NodeObject, ObjectKey, Service};

/// What changed since the last sync: the latest state of each object (`None`
/// = deleted or unusable).
#[derive(Debug, Default)]
pub struct Changes {
    /// Services by key.
    pub services: HashMap<ObjectKey, Option<Service>>,
    /// EndpointSlices by key.
    pub slices: HashMap<ObjectKey, Option<EndpointSlice>>,
    /// This node's Node object, when it changed (`Some(None)`: deleted).
    pub node: Option<Option<NodeObject>>,
    /// The CIDRs of each changed ServiceCIDR object, by name (`None`: deleted).
    pub service_cidrs: HashMap<String, Option<Vec<IpNet>>>,
    /// `endpoints.kubernetes.io/last-change-trigger-time` of the changed slices.
    pub trigger_times: Vec<SystemTime>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.slices.is_empty()
            && self.node.is_none()
            && self.service_cidrs.is_empty()
    }
}

/// A resource whose initial list the first sync waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `v1/Service`.
    Services,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlices,
    /// This node's `v1/Node`.
    Node,
    /// `networking.k8s.io/v1/ServiceCIDR` (nftables mode only; never holds
    /// back the first sync for long: see `watch`).
    ServiceCidrs,
}

impl Resource {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Node => "nodes",
            Resource::ServiceCidrs => "servicecidrs",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Waiting {
    changes: Changes,
    listed: [bool; 4],
    shutdown: bool,
}

/// Why the sync loop woke up.
#[derive(Debug)]
pub struct Wakeup {
    /// What changed (may be empty on a periodic wakeup).
    pub changes: Changes,
    /// `syncPeriod` has passed since the last sync started (or this is the
    /// first): time to check the canaries and resync.
    pub periodic: bool,
}

/// When the sync loop may run: at most once per minimum interval and at least
/// once per `max_interval` (kube-proxy's bounded-frequency runner).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// How soon after a sync the next may start.
    pub min_interval: MinInterval,
    /// `syncPeriod`.
    pub max_interval: Duration,
}

/// The least time between the starts of two syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinInterval {
    /// `minSyncPeriod` as set: kube-proxy's rule exactly.
    Fixed(Duration),
    /// `minSyncPeriod` left unset: [`ADAPTIVE_FACTOR`] times what the last
    /// sync took, never more than `ceiling` (kube-proxy's default). A sync's
    /// cost is set by the size of the tables, not by how much changed (every
    /// nf_tables commit that adds a jump revalidates the whole table), so
    /// batching is what bounds the CPU; scaling the wait with that cost keeps
    /// syncing to at most half of one core under any churn, a change's wait
    /// within three syncs' time, and small clusters' changes in milliseconds
    /// instead of up to a second.
    Adaptive {
        /// The longest wait.
        ceiling: Duration,
    },
}

/// An adaptive interval is this many times the last sync's duration.
pub const ADAPTIVE_FACTOR: u32 = 2;

/// When the last sync started and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct LastSync {
    /// Its start.
    pub start: Instant,
    /// Its wall-clock duration (every family, conntrack cleanup included).
    pub duration: Duration,
    /// A family's restore failed.
    pub failed: bool,
}

impl Pacing {
    /// The least time from `last`'s start to the next sync's.
    pub fn interval_after(&self, last: LastSync) -> Duration {
        match self.min_interval {
            MinInterval::Fixed(interval) => interval,
            // A failing restore fails fast: scaled by its duration, the
            // retries would spin.
            MinInterval::Adaptive { ceiling } if last.failed => ceiling,
            MinInterval::Adaptive { ceiling } => (last.duration * ADAPTIVE_FACTOR).min(ceiling),
        }
    }
}

/// Shared by the watchers (writers) and the sync loop (reader).
#[derive(Debug, Default)]
pub struct Inbox {
    waiting: Mutex<Waiting>,
    wake: Condvar,
}

impl Inbox {
    /// An empty inbox, waiting for every initial list.
    pub fn new() -> Inbox {
        Inbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records changes; returns the number of Service and EndpointSlice
    /// changes now waiting.
    pub fn record(&self, record: impl FnOnce(&mut Changes)) -> (usize, usize) {
        let mut waiting = self.lock();
        record(&mut waiting.changes);
        let pending = (waiting.changes.services.len(), waiting.changes.slices.len());
        drop(waiting);
        self.wake.notify_one();
        pending
    }

    /// The initial list of `resource` is complete.
    pub fn listed(&self, resource: Resource) {
        self.lock().listed[resource.index()] = true;
        self.wake.notify_one();
    }

    /// Whether every initial list is complete.
    pub fn all_listed(&self) -> bool {
        self.lock().listed.iter().all(|l| *l)
    }

    /// Asks the sync loop to stop.
    pub fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wake.notify_all();
    }

    /// Blocks until the sync loop should run; `None` once shut down. The
    /// first wakeup waits for every initial list.
    pub fn next(&self, pacing: Pacing, last: Option<LastSync>) -> Option<Wakeup> {
        let mut waiting = self.lock();
        loop {
            if waiting.shutdown {
                return None;
            }
            let now = Instant::now();
            let ready = waiting.listed.iter().all(|l| *l);
            let earliest = last.map_or(now, |l| l.start + pacing.interval_after(l));
            let periodic_at = last.map_or(now, |l| l.start + pacing.max_interval);
            let has_changes = !waiting.changes.is_empty();
            if ready && (now >= periodic_at || (has_changes && now >= earliest)) {
                return Some(Wakeup {
                    changes: std::mem::take(&mut waiting.changes),
                    periodic: now >= periodic_at,
                });
            }
            let until = match (ready, has_changes) {
                (false, _) => now + Duration::from_secs(1),
                (true, true) => earliest.min(periodic_at),
                (true, false) => periodic_at,
            };
            waiting = self
                .wake
                .wait_timeout(waiting, until.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACING: Pacing = Pacing {
        min_interval: MinInterval::Fixed(Duration::from_millis(200)),
        max_interval: Duration::from_secs(5),
    };

    fn list_all(inbox: &Inbox) {
        for resource in [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Node,
            Resource::ServiceCidrs,
        ] {
            inbox.listed(resource);
        }
    }

    #[test]
    fn the_first_sync_waits_for_every_list() {
        let inbox = std::sync::Arc::new(Inbox::new());
        let lister = inbox.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            lister.record(|c| {
                c.services.insert(ObjectKey::new("ns", "a"), None);
            });
            std::thread::sleep(Duration::from_millis(50));
            list_all(&lister);
        });
        let started = Instant::now();
        let wakeup = inbox.next(PACING, None).expect("not shut down");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(wakeup.periodic, "the first sync is a periodic one");
        assert_eq!(wakeup.changes.services.len(), 1);
        handle.join().expect("thread");
    }

    #[test]
    fn changes_wait_for_the_minimum_interval_and_coalesce() {
        let inbox = Inbox::new();
        list_all(&inbox);
        let last = synced_now(Duration::from_millis(1));
        for name in ["a", "b", "a"] {
            inbox.record(|c| {
                c.services.insert(ObjectKey::new("ns", name), None);
            });
        }
        let wakeup = inbox.next(PACING, Some(last)).expect("not shut down");
        assert!(last.start.elapsed() >= Duration::from_millis(200));
        assert!(!wakeup.periodic);
        assert_eq!(wakeup.changes.services.len(), 2, "three updates of two Services");
    }

    #[test]
    fn a_service_cidr_change_alone_wakes_the_sync_loop() {
        let inbox = Inbox::new();
        list_all(&inbox);
        let last = synced_now(Duration::from_millis(1));
        inbox.record(|c| {
            c.service_cidrs.insert("kubernetes".into(), None);
        });
        let wakeup = inbox.next(PACING, Some(last)).expect("not shut down");
        assert!(!wakeup.periodic, "woken by the change, not by syncPeriod");
        assert_eq!(wakeup.changes.service_cidrs.len(), 1);
    }

    #[test]
    fn no_changes_wakes_at_the_maximum_interval() {
        let inbox = Inbox::new();
        list_all(&inbox);
        let pacing = Pacing {
            min_interval: MinInterval::Fixed(Duration::from_millis(10)),
            max_interval: Duration::from_millis(150),
        };
        let last = synced_now(Duration::from_millis(1));
        let wakeup = inbox.next(pacing, Some(last)).expect("not shut down");
        assert!(last.start.elapsed() >= pacing.max_interval);
        assert!(wakeup.periodic && wakeup.changes.is_empty());
    }

    fn synced_now(duration: Duration) -> LastSync {
        LastSync {
            start: Instant::now(),
            duration,
            failed: false,
        }
    }

    fn record_one(inbox: &Inbox) {
        inbox.record(|c| {
            c.services.insert(ObjectKey::new("ns", "a"), None);
        });
    }

    const ADAPTIVE: Pacing = Pacing {
        min_interval: MinInterval::Adaptive {
            ceiling: Duration::from_millis(400),
        },
        max_interval: Duration::from_secs(5),
    };

    #[test]
    fn adaptive_pacing_waits_twice_the_last_sync() {
        let inbox = Inbox::new();
        list_all(&inbox);
        let last = synced_now(Duration::from_millis(60));
        record_one(&inbox);
        inbox.next(ADAPTIVE, Some(last)).expect("not shut down");
        let waited = last.start.elapsed();
        assert!(waited >= Duration::from_millis(120), "{waited:?}");
        assert!(waited < Duration::from_millis(400), "{waited:?}");
    }

    #[test]
    fn adaptive_pacing_never_waits_longer_than_the_ceiling() {
        let inbox = Inbox::new();
        list_all(&inbox);
        let last = synced_now(Duration::from_secs(20));
        assert_eq!(ADAPTIVE.interval_after(last), Duration::from_millis(400));
        record_one(&inbox);
        inbox.next(ADAPTIVE, Some(last)).expect("not shut down");
        let waited = last.start.elapsed();
        assert!(waited >= Duration::from_millis(400), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_failed_sync_waits_the_ceiling_however_fast_it_failed() {
        let last = LastSync {
            failed: true,
            ..synced_now(Duration::from_millis(2))
        };
        assert_eq!(ADAPTIVE.interval_after(last), Duration::from_millis(400));
        assert_eq!(PACING.interval_after(last), Duration::from_millis(200));
    }

    #[test]
    fn a_set_minimum_is_kept_however_cheap_the_sync() {
        let last = synced_now(Duration::from_micros(10));
        assert_eq!(PACING.interval_after(last), Duration::from_millis(200));
        assert_eq!(ADAPTIVE.interval_after(last), Duration::from_micros(20));
    }

    #[test]
    fn shutdown_ends_the_wait() {
        let inbox = std::sync::Arc::new(Inbox::new());
        let stopper = inbox.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            stopper.shut_down();
        });
        assert!(inbox.next(PACING, None).is_none());
        handle.join().expect("thread");
    }
}
