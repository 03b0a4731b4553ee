//! Health: kube-proxy's `/healthz` and `/livez`, and one HTTP server per
//! `healthCheckNodePort` for cloud load balancers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chainsmith_model::{IpFamily, ObjectKey};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::{HttpResponse, response, serve};
use crate::metrics::Metrics;

/// Per family: when rules were last applied, and the oldest change waiting.
#[derive(Debug, Clone, Copy, Default)]
struct FamilyHealth {
    last_updated: Option<SystemTime>,
    queued: Option<SystemTime>,
}

/// kube-proxy's health: a family is unhealthy when a change has waited longer
/// than the timeout (twice the sync period) without being applied.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    families: Mutex<BTreeMap<IpFamily, FamilyHealth>>,
    node_eligible: Mutex<bool>,
}

fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(since.as_secs()).unwrap_or(0))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let nanos = k8s_openapi::jiff::SignedDuration::new(0, i32::try_from(since.subsec_nanos()).unwrap_or(0));
    timestamp.checked_add(nanos).unwrap_or(timestamp).to_string()
}

impl ProxyHealth {
    /// Health for these families; a change counts as late after `timeout`.
    pub fn new(families: &[IpFamily], timeout: Duration, start: SystemTime) -> ProxyHealth {
        // Until the first sync, the start counts as a queued change.
        let state = FamilyHealth {
            last_updated: None,
            queued: Some(start),
        };
        ProxyHealth {
            timeout,
            families: Mutex::new(families.iter().map(|f| (*f, state)).collect()),
            node_eligible: Mutex::new(false),
        }
    }

    /// A change is waiting for `family` (the oldest waiting one counts).
    pub fn queued(&self, family: IpFamily, now: SystemTime) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = families.get_mut(&family) {
            state.queued.get_or_insert(now);
        }
    }

    /// Rules were applied for `family`: nothing waits any more.
    pub fn updated(&self, family: IpFamily, now: SystemTime) {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = families.get_mut(&family) {
            state.last_updated = Some(now);
            state.queued = None;
        }
    }

    /// Whether the Node may receive load-balancer traffic (known, not being
    /// deleted, not tainted for deletion by the autoscaler).
    pub fn set_node_eligible(&self, eligible: bool) {
        *self.node_eligible.lock().unwrap_or_else(PoisonError::into_inner) = eligible;
    }

    /// Every family is healthy at `now`.
    pub fn healthy(&self, now: SystemTime) -> bool {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        families.values().all(|state| self.family_healthy(state, now))
    }

    fn family_healthy(&self, state: &FamilyHealth, now: SystemTime) -> bool {
        state
            .queued
            .is_none_or(|queued| now.duration_since(queued).unwrap_or_default() <= self.timeout)
    }

    /// The `/healthz` (or, with `livez`, `/livez`) answer: status and JSON body.
    pub fn answer(&self, livez: bool, now: SystemTime) -> (u16, String) {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let healthy = families.values().all(|state| self.family_healthy(state, now));
        let eligible = *self.node_eligible.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = families.values().filter_map(|s| s.last_updated).max();
        let last_updated = if healthy { Some(now) } else { newest };
        let mut status = serde_json::Map::new();
        for (family, state) in families.iter() {
            status.insert(
                family.as_str().to_string(),
                serde_json::json!({
                    "lastUpdated": state.last_updated.map(rfc3339).unwrap_or_default(),
                    "healthy": self.family_healthy(state, now),
                }),
            );
        }
        let mut body = serde_json::json!({
            "lastUpdated": last_updated.map(rfc3339).unwrap_or_default(),
            "currentTime": rfc3339(now),
            "healthy": healthy,
            "status": status,
        });
        let ok = if livez {
            healthy
        } else {
            body["nodeEligible"] = serde_json::Value::Bool(eligible);
            healthy && eligible
        };
        (if ok { 200 } else { 503 }, body.to_string())
    }
}

const JSON_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
];

fn json_response(status: u16, body: String, extra: Option<(&str, String)>) -> HttpResponse {
    let mut headers: Vec<(&str, String)> = JSON_HEADERS.iter().map(|(k, v)| (*k, v.to_string())).collect();
    headers.extend(extra);
    response(status, &headers, body)
}

/// Serves `/healthz` and `/livez` until `stop`.
pub async fn serve_proxy_health(
    listener: TcpListener,
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    serve(
        listener,
        move |request| {
            let path = request.uri().path();
            let livez = match path {
                "/livez" => true,
                "/healthz" => false,
                _ => return response(404, &[], "404 page not found\n"),
            };
            let (status, body) = health.answer(livez, SystemTime::now());
            metrics.health_answer(livez, status);
            json_response(status, body, None)
        },
        stop,
    )
    .await;
}

/// What one health-check node port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The Service.
    pub service: ObjectKey,
    /// Distinct IPs of this node's ready endpoints of the Service.
    pub local_endpoints: usize,
}

/// The body upstream's service health servers answer with (tab-indented, no
/// trailing newline).
pub fn service_health_body(health: &ServiceHealth, proxy_healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
        serde_json::Value::String(health.service.namespace.clone()),
        serde_json::Value::String(health.service.name.clone()),
        health.local_endpoints,
        proxy_healthy
    )
}

/// The HTTP servers of every `healthCheckNodePort`, kept in step with the
/// Services after each sync.
pub struct ServiceHealthServers {
    health: Arc<ProxyHealth>,
    bind: std::net::IpAddr,
    servers: BTreeMap<u16, (Arc<Mutex<ServiceHealth>>, watch::Sender<bool>)>,
}

impl ServiceHealthServers {
    /// Servers listening on `bind` (the wildcard address serves every local one).
    pub fn new(health: Arc<ProxyHealth>, bind: std::net::IpAddr) -> ServiceHealthServers {
        ServiceHealthServers {
            health,
            bind,
            servers: BTreeMap::new(),
        }
    }

    /// Starts servers for new ports, stops those of ports no longer wanted and
    /// updates the counts of the others. Returns the ports that could not be
    /// opened, with the error.
    pub async fn sync(&mut self, wanted: BTreeMap<u16, ServiceHealth>) -> Vec<(u16, std::io::Error)> {
        let gone: Vec<u16> = self
            .servers
            .keys()
            .filter(|port| !wanted.contains_key(port))
            .copied()
            .collect();
        for port in gone {
            if let Some((_, stop)) = self.servers.remove(&port) {
                let _ = stop.send(true);
            }
        }
        let mut failures = Vec::new();
        for (port, state) in wanted {
            if let Some((current, _)) = self.servers.get(&port) {
                *current.lock().unwrap_or_else(PoisonError::into_inner) = state;
                continue;
            }
            let listener = match TcpListener::bind(SocketAddr::new(self.bind, port)).await {
                Ok(listener) => listener,
                Err(error) => {
                    failures.push((port, error));
                    continue;
                }
            };
            let current = Arc::new(Mutex::new(state));
            let (stop, stopped) = watch::channel(false);
            let (shared, health) = (current.clone(), self.health.clone());
            tokio::spawn(serve(
                listener,
                move |_request| {
                    let state = shared.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    let healthy = health.healthy(SystemTime::now());
                    let status = if state.local_endpoints > 0 && healthy {
                        200
                    } else {
                        503
                    };
                    let weight = (
                        "X-Load-Balancing-Endpoint-Weight",
                        state.local_endpoints.to_string(),
                    );
                    json_response(status, service_health_body(&state, healthy), Some(weight))
                },
                stopped,
            ));
            self.servers.insert(port, (current, stop));
        }
        failures
    }

    /// Stops every server.
    pub fn stop(&mut self) {
        for (_, (_, stop)) in std::mem::take(&mut self.servers) {
            let _ = stop.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_waiting_longer_than_the_timeout_is_unhealthy() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let health = ProxyHealth::new(&[IpFamily::V4, IpFamily::V6], Duration::from_secs(60), start);
        health.set_node_eligible(true);
        assert_eq!(
            health.answer(false, start + Duration::from_secs(30)).0,
            200,
            "not late yet"
        );
        assert_eq!(
            health.answer(false, start + Duration::from_secs(61)).0,
            503,
            "first sync late"
        );
        health.updated(IpFamily::V4, start + Duration::from_secs(62));
        health.updated(IpFamily::V6, start + Duration::from_secs(62));
        assert_eq!(health.answer(false, start + Duration::from_secs(63)).0, 200);
        health.queued(IpFamily::V6, start + Duration::from_secs(70));
        health.queued(IpFamily::V6, start + Duration::from_secs(120));
        let (code, body) = health.answer(false, start + Duration::from_secs(131));
        assert_eq!(code, 503, "the oldest waiting change counts: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["status"]["IPv6"]["healthy"], false);
        assert_eq!(json["status"]["IPv4"]["healthy"], true);
        assert_eq!(json["nodeEligible"], true);
        health.set_node_eligible(false);
        health.updated(IpFamily::V6, start + Duration::from_secs(140));
        assert_eq!(
            health.answer(false, start + Duration::from_secs(141)).0,
            503,
            "node not eligible"
        );
        let (code, body) = health.answer(true, start + Duration::from_secs(141));
        assert_eq!(code, 200, "livez ignores eligibility");
        assert!(!body.contains("nodeEligible"));
    }

    #[test]
    fn service_health_body_is_upstreams() {
        let body = service_health_body(
            &ServiceHealth {
                service: ObjectKey::new("ns2", "svc2"),
                local_endpoints: 2,
            },
            true,
        );
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns2\",\n\t\t\"name\": \"svc2\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
    }
}
