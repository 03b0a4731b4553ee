//! The node proxy behind `chainsmith run`: what replaces kube-proxy on a node.
//!
//! [`run`] watches the API server (Services, EndpointSlices, this node's Node
//! and, in nftables mode, ServiceCIDRs; [`watch`]), hands changes to a sync
//! loop on its own thread ([`inbox`], [`controller`]) that keeps one sync
//! engine per IP family and applies their payloads, and serves `/metrics`
//! ([`metrics`]), `/healthz`, `/livez` and one health server per
//! `healthCheckNodePort` ([`health`]). After syncs that change UDP Services
//! it deletes stale conntrack entries ([`conntrack`]).
//! SIGTERM stops it and leaves the rules in place; [`cleanup`] removes them.
//!
//! Architecture invariant: this crate wires the stages together and owns the
//! node's I/O (API server, HTTP, sysctls, signals); it does not decide rule
//! content (planner), what to write (sync engine) or how to run iptables
//! (applier).

pub mod conntrack;
pub mod controller;
pub mod health;
pub mod host;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod settings;
pub mod watch;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chainsmith_applier::{Applier, ApplyError, Backend, Runner, SystemRunner, Tools};
use chainsmith_k8s::ProxyMode;
use chainsmith_model::{IpFamily, NfacctCounters, NodeObject};
use chainsmith_nft_netlink::NetlinkApplier;
use chainsmith_nftables::TABLE_NAME;
use chainsmith_sync::{NftSyncEngine, SyncEngine};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch as channel;

pub use settings::Settings;

use controller::{FamilyProxier, NFACCT_COUNTERS, SyncLoop, nft_family};
use health::{ProxyHealth, ServiceHealthServers};
use inbox::Inbox;
use metrics::Metrics;
use settings::{HostFacts, ServiceCidrs, address_families, node_config};
use watch::Watchers;

/// Why the node proxy could not start (once running, it does not fail: it
/// logs, counts and retries).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No usable Kubernetes client configuration.
    #[error("Kubernetes client configuration: {0}")]
    ClientConfig(String),
    /// The node name could not be found.
    #[error("node name: {0} (set hostnameOverride or --hostname-override)")]
    NodeName(std::io::Error),
    /// No family has both an address on this node and working iptables tools.
    #[error("no IP family to proxy: {0}")]
    NoFamily(String),
    /// A listening socket could not be opened.
    #[error("cannot listen on {address} for {what}: {source}")]
    Listen {
        /// What the socket is for.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics registry refused a metric (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The iptables tools failed outside a sync.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The node name: `hostnameOverride`, else the host name.
pub fn node_name(settings: &Settings) -> Result<String, NodeError> {
    match &settings.proxy.hostname_override {
        Some(name) => Ok(name.clone()),
        None => host::hostname().map_err(NodeError::NodeName),
    }
}

async fn client(settings: &Settings) -> Result<Client, NodeError> {
    let config = match &settings.proxy.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| NodeError::ClientConfig(format!("{path}: {e}")))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| NodeError::ClientConfig(format!("{path}: {e}")))?
        }
        // In a pod: the service account (a kubeconfig in $KUBECONFIG wins).
        None => kube::Config::infer()
            .await
            .map_err(|e| NodeError::ClientConfig(e.to_string()))?,
    };
    let mut config = config;
    // The watchers back off and retry on their own, and count and log each
    // failure; the client's own retries (15 for a 503, for minutes) would
    // hide an overloaded API server from both.
    config.default_retry = false;
    Client::try_from(config).map_err(|e| NodeError::ClientConfig(e.to_string()))
}

/// The sysctls kube-proxy sets at start; failures are logged, not fatal (a
/// containerised proxy often may not write them).
fn apply_sysctls(settings: &Settings, families: &[IpFamily]) {
    let conntrack = settings.proxy.conntrack;
    let write = |path: &str, value: String| {
        if let Err(error) = host::write_sysctl(path, &value) {
            tracing::warn!(sysctl = path, value, %error, "could not set sysctl");
        }
    };
    if let Some(per_core) = conntrack.max_per_core.filter(|n| *n > 0) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
        let wanted = per_core.saturating_mul(cpus).max(conntrack.min.unwrap_or(0));
        let current = host::read_sysctl("net/netfilter/nf_conntrack_max")
            .ok()
            .and_then(|v| v.parse::<u32>().ok());
        // Only ever raised, as upstream does.
        if current.is_some_and(|current| current < wanted) {
            write("net/netfilter/nf_conntrack_max", wanted.to_string());
        }
    }
    let seconds = |ms: u64| (ms / 1000).to_string();
    if let Some(ms) = conntrack.tcp_established_timeout_ms.filter(|ms| *ms > 0) {
        write("net/netfilter/nf_conntrack_tcp_timeout_established", seconds(ms));
    }
    if let Some(ms) = conntrack.tcp_close_wait_timeout_ms.filter(|ms| *ms > 0) {
        write("net/netfilter/nf_conntrack_tcp_timeout_close_wait", seconds(ms));
    }
    if conntrack.tcp_be_liberal {
        write("net/netfilter/nf_conntrack_tcp_be_liberal", "1".into());
    }
    if let Some(ms) = conntrack.udp_timeout_ms.filter(|ms| *ms > 0) {
        write("net/netfilter/nf_conntrack_udp_timeout", seconds(ms));
    }
    if let Some(ms) = conntrack.udp_stream_timeout_ms.filter(|ms| *ms > 0) {
        write("net/netfilter/nf_conntrack_udp_timeout_stream", seconds(ms));
    }
    // Localhost NodePorts are DNATed to pods, which the kernel only routes
    // with route_localnet (iptables mode only: nftables mode has none).
    if settings.proxy.mode == ProxyMode::Iptables
        && settings.proxy.localhost_node_ports
        && families.contains(&IpFamily::V4)
    {
        write("net/ipv4/conf/all/route_localnet", "1".into());
    }
}

/// The host settings `run` makes at start (the sysctls), then nothing else:
/// for a privileged init container, so that the long-running proxy needs no
/// write access to `/proc/sys`. Returns the families whose tools work.
pub fn prepare_node(settings: &Settings) -> Result<Vec<IpFamily>, NodeError> {
    let interfaces = host::interface_addresses().unwrap_or_else(|error| {
        tracing::warn!(%error, "could not read interface addresses");
        Vec::new()
    });
    let families: Vec<IpFamily> = match settings.proxy.mode {
        ProxyMode::Iptables => {
            let backend = settings.backend.or_else(kubelets_backend);
            address_families(None, &interfaces)
                .into_iter()
                .filter(|family| Tools::detect(&settings.runner(), *family, backend).is_ok())
                .collect()
        }
        ProxyMode::Nftables => address_families(None, &interfaces),
    };
    if families.is_empty() {
        return Err(NodeError::NoFamily(match settings.proxy.mode {
            ProxyMode::Iptables => "no address family with an address and working iptables tools".into(),
            ProxyMode::Nftables => "no address family with an address".into(),
        }));
    }
    apply_sysctls(settings, &families);
    Ok(families)
}

/// Without `--iptables-backend`: the backend the kubelet uses, if the node
/// tells; else the image's default `iptables`.
fn kubelets_backend() -> Option<Backend> {
    let found = chainsmith_applier::backend_in_use(&SystemRunner::default());
    if let Some(backend) = found {
        tracing::info!(
            backend = backend.as_str(),
            "using the iptables backend the node's rules are in"
        );
    }
    found
}

/// Removes everything kube-proxy's iptables and nftables modes install
/// (`kube-proxy --cleanup`): the iptables chains and jumps for every family
/// whose tools work, and table `kube-proxy` in families `ip` and `ip6`.
/// Returns the iptables chains deleted.
pub fn cleanup(backend: Option<Backend>) -> Result<usize, NodeError> {
    let deleted = cleanup_iptables(backend)?;
    delete_nft_tables(&SystemRunner::default());
    Ok(deleted)
}

/// Deletes table `kube-proxy` in families `ip` and `ip6` (`nft delete
/// table`), as kube-proxy's nftables `CleanupLeftovers`; a table that does
/// not exist is not an error. Best effort: failures are logged. Returns the
/// tables deleted.
pub fn delete_nft_tables(runner: &dyn Runner) -> usize {
    let mut deleted = 0;
    for family in [IpFamily::V4, IpFamily::V6] {
        let family = nft_family(family);
        match runner.run("nft", &["delete", "table", family.as_str(), TABLE_NAME], None) {
            Ok(output) if output.success() => {
                tracing::info!(family = family.as_str(), "deleted nftables table {TABLE_NAME}");
                deleted += 1;
            }
            Ok(output) if output.stderr.contains("No such file or directory") => {}
            Ok(output) => tracing::warn!(
                family = family.as_str(),
                error = output.stderr.trim(),
                "could not delete nftables table {TABLE_NAME}"
            ),
            Err(error) => {
                tracing::info!(%error, "nft not available; no nftables table to delete");
                break;
            }
        }
    }
    deleted
}

/// Removes everything kube-proxy's iptables mode installs, for every family
/// whose tools work. Returns the chains deleted.
pub fn cleanup_iptables(backend: Option<Backend>) -> Result<usize, NodeError> {
    let mut deleted = 0;
    let mut errors = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let tools = match Tools::detect(&SystemRunner::default(), family, backend) {
            Ok(tools) => tools,
            Err(error) => {
                tracing::info!(family = family.as_str(), %error, "no tools for this family; nothing to clean");
                continue;
            }
        };
        match Applier::new(tools, Box::new(SystemRunner::default())).cleanup() {
            Ok(n) => deleted += n,
            Err(error) => errors.push(error),
        }
    }
    match errors.into_iter().next() {
        Some(error) => Err(error.into()),
        None => Ok(deleted),
    }
}

fn wildcard(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

async fn listen(what: &'static str, address: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Listen {
            what,
            address,
            source,
        })
}

/// Runs the node proxy until SIGTERM or SIGINT.
pub async fn run(mut settings: Settings) -> Result<(), NodeError> {
    let started = SystemTime::now();
    settings.backend = settings.backend.or_else(kubelets_backend);
    let settings = Arc::new(settings);
    let node_name = node_name(&settings)?;
    let client = client(&settings).await?;
    if let Some(score) = settings.proxy.oom_score_adj
        && let Err(error) = host::set_oom_score_adj(score)
    {
        tracing::warn!(score, %error, "could not set oom_score_adj");
    }

    let node = match Api::<core::Node>::all(client.clone()).get_opt(&node_name).await {
        Ok(found) => found.and_then(|node| chainsmith_k8s::node_from_k8s(&node, &mut Vec::new())),
        Err(error) => {
            tracing::warn!(node = node_name, %error, "could not read the Node; using interface addresses");
            None
        }
    };
    tokio::spawn(record_start(client.clone(), node_name.clone()));
    let interfaces = host::interface_addresses().unwrap_or_else(|error| {
        tracing::warn!(%error, "could not read interface addresses");
        Vec::new()
    });
    let mode = settings.proxy.mode;
    let mut families = Vec::new();
    let mut skipped = Vec::new();
    match mode {
        ProxyMode::Iptables => {
            // A node switching from nftables mode: its table goes, as kube-proxy does.
            delete_nft_tables(&settings.runner());
            iptables_proxiers(
                &settings,
                &node_name,
                node.as_ref(),
                &interfaces,
                &mut families,
                &mut skipped,
            );
        }
        ProxyMode::Nftables => {
            // A node switching from iptables mode: its chains and jumps go.
            match cleanup_iptables(settings.backend) {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(chains_deleted = deleted, "removed iptables-mode leftovers"),
                Err(error) => tracing::warn!(%error, "could not remove iptables-mode leftovers"),
            }
            for family in address_families(node.as_ref(), &interfaces) {
                let opened = NetlinkApplier::new().and_then(|n| n.with_timeout(settings.command_timeout));
                let netlink = match opened {
                    Ok(netlink) => netlink,
                    Err(error) => {
                        tracing::warn!(family = family.as_str(), %error, "no nf_tables netlink socket; family not proxied");
                        skipped.push(format!("{}: {error}", family.as_str()));
                        continue;
                    }
                };
                tracing::info!(family = family.as_str(), mode = mode.as_str(), "proxying");
                // The ServiceCIDRs' first list reaches the engine before the
                // first sync (the sync loop waits for it).
                let config = node_config(
                    &settings,
                    family,
                    &node_name,
                    node.as_ref(),
                    &interfaces,
                    &[],
                    HostFacts::default(),
                );
                let mut engine = NftSyncEngine::new(config);
                engine.set_full_sync_period(settings.full_sync_period_ms);
                for diagnostic in engine
                    .context()
                    .diagnostics()
                    .iter()
                    .chain(engine.nft_context().diagnostics())
                {
                    tracing::warn!(family = family.as_str(), %diagnostic, "node setting");
                }
                families.push(FamilyProxier::nftables(
                    family,
                    engine,
                    netlink,
                    &settings.runner(),
                ));
            }
        }
    }
    if families.is_empty() {
        let why = if skipped.is_empty() {
            "the node has no address".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(NodeError::NoFamily(why));
    }
    let family_list: Vec<IpFamily> = families.iter().map(|f| f.family).collect();
    apply_sysctls(&settings, &family_list);

    let metrics = Arc::new(Metrics::for_mode(mode)?);
    metrics.start_families(&family_list);
    let health_timeout = Duration::from_millis(settings.proxy.sync_period_ms.saturating_mul(2));
    let health = Arc::new(ProxyHealth::new(&family_list, health_timeout, SystemTime::now()));
    health.set_node_eligible(node.as_ref().is_some_and(eligible));
    let inbox = Arc::new(Inbox::new());
    let (stop, stopped) = channel::channel(false);

    let metrics_listener = listen("metrics", settings.proxy.metrics_bind_address).await?;
    let health_listener = listen("health", settings.proxy.healthz_bind_address).await?;
    let served_metrics = metrics.clone();
    tokio::spawn(http::serve(
        metrics_listener,
        move |request| match request.uri().path() {
            "/metrics" => http::response(
                200,
                &[("Content-Type", "text/plain; version=0.0.4; charset=utf-8".into())],
                served_metrics.encode(),
            ),
            _ => http::response(404, &[], "404 page not found\n"),
        },
        stopped.clone(),
    ));
    tokio::spawn(health::serve_proxy_health(
        health_listener,
        health.clone(),
        metrics.clone(),
        stopped.clone(),
    ));
    let (service_health, mut wanted_health) = channel::channel(BTreeMap::new());
    let mut servers = ServiceHealthServers::new(health.clone(), wildcard(family_list[0]));
    let mut servers_stopped = stopped.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = wanted_health.changed() => {
                    if changed.is_err() { break }
                    let wanted = wanted_health.borrow_and_update().clone();
                    for (port, error) in servers.sync(wanted).await {
                        tracing::error!(port, %error, "cannot serve the health check node port");
                    }
                }
                _ = servers_stopped.changed() => break,
            }
        }
        servers.stop();
    });
    tracing::info!(
        node = node_name,
        metrics = %settings.proxy.metrics_bind_address,
        healthz = %settings.proxy.healthz_bind_address,
        "serving"
    );

    let sync_loop = SyncLoop {
        settings: settings.clone(),
        node_name: node_name.clone(),
        families,
        inbox: inbox.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        service_health,
        runner: Box::new(settings.runner()),
        interfaces,
        node,
        service_cidrs: ServiceCidrs::default(),
        started,
    };
    let syncer = std::thread::Builder::new()
        .name("sync".into())
        .spawn(move || sync_loop.run())
        .map_err(|e| NodeError::ClientConfig(format!("cannot start the sync thread: {e}")))?;
    let watchers = Arc::new(Watchers {
        inbox: inbox.clone(),
        metrics,
        health,
        families: family_list,
        service_cidrs: mode == ProxyMode::Nftables,
    });
    let watching = tokio::spawn(async move { watchers.run(client, &node_name).await });

    wait_for_signal().await;
    tracing::info!("stopping: rules stay in place");
    watching.abort();
    inbox.shut_down();
    let _ = stop.send(true);
    // A restore in progress finishes (each table commits atomically anyway).
    let _ = tokio::task::spawn_blocking(move || syncer.join()).await;
    Ok(())
}

/// iptables mode's proxier of every family whose tools work (`skipped`: why
/// the others are not).
fn iptables_proxiers(
    settings: &Settings,
    node_name: &str,
    node: Option<&NodeObject>,
    interfaces: &[chainsmith_model::InterfaceAddress],
    families: &mut Vec<FamilyProxier>,
    skipped: &mut Vec<String>,
) {
    let nfacct = nfacct_counters(settings.backend);
    for family in address_families(node, interfaces) {
        let tools = match Tools::detect(&settings.runner(), family, settings.backend) {
            Ok(tools) => tools,
            Err(error) => {
                tracing::warn!(family = family.as_str(), %error, "iptables tools do not work; family not proxied");
                skipped.push(format!("{}: {error}", family.as_str()));
                continue;
            }
        };
        let tcp_be_liberal =
            host::read_sysctl("net/netfilter/nf_conntrack_tcp_be_liberal").is_ok_and(|v| v != "0");
        let facts = HostFacts {
            random_fully: tools.random_fully,
            tcp_be_liberal,
            nfacct,
        };
        tracing::info!(
            family = family.as_str(),
            backend = tools.backend.as_str(),
            version = tools.version,
            "proxying"
        );
        let config = node_config(settings, family, node_name, node, interfaces, &[], facts);
        let mut engine = SyncEngine::new(config, settings.partial_sync);
        engine.set_full_sync_period(settings.full_sync_period_ms);
        let applier = Applier::new(tools, Box::new(settings.runner()));
        families.push(FamilyProxier::new(family, engine, applier, facts));
    }
}

/// A `Starting` event on the Node, as kube-proxy records, so that `kubectl
/// describe node` shows when the proxy (re)started. Best effort: the proxy
/// works without it.
async fn record_start(client: Client, node_name: String) {
    let reporter = Reporter {
        controller: "chainsmith".into(),
        instance: Some(node_name.clone()),
    };
    // kube-proxy's node reference: cluster-scoped, the name as its UID.
    let node = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node_name.clone()),
        uid: Some(node_name),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Starting".into(),
        note: Some(format!("chainsmith {} started", env!("CARGO_PKG_VERSION"))),
        action: "StartKubeProxy".into(),
        secondary: None,
    };
    if let Err(error) = Recorder::new(client, reporter).publish(&event, &node).await {
        tracing::warn!(%error, "could not record the Starting event on the Node");
    }
}

fn eligible(node: &NodeObject) -> bool {
    !node.deleting && !node.to_be_deleted_by_autoscaler
}

/// Creates the nfacct counters; the rules name only those that exist.
fn nfacct_counters(backend: Option<Backend>) -> NfacctCounters {
    let Ok(tools) = Tools::detect(&SystemRunner::default(), IpFamily::V4, backend) else {
        return NfacctCounters::default();
    };
    let created = Applier::new(tools, Box::new(SystemRunner::default())).ensure_nfacct(&NFACCT_COUNTERS);
    let exists = |name: &str| created.iter().any(|(n, ok)| n == name && *ok);
    let counters = NfacctCounters {
        ct_state_invalid_dropped_pkts: exists(NFACCT_COUNTERS[0]),
        localhost_nps_accepted_pkts: exists(NFACCT_COUNTERS[1]),
    };
    if !counters.ct_state_invalid_dropped_pkts {
        tracing::info!(
            "nfacct counters unavailable (nfacct not installed or not permitted); rules will not count"
        );
    }
    counters
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the proxy runs until killed.
            std::future::pending::<()>().await;
        }
    }
}
