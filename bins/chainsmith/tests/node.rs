//! `chainsmith run` end to end: the real binary runs inside a node's network
//! namespace, pointed at a fake API server (real HTTP list + watch, served
//! from a socket inside that namespace), and programs the namespace's real
//! kernel tables. The assertions are on what users see: which pod answers a
//! real packet, what `/metrics`, `/healthz` and the health check node ports
//! answer, what a real Prometheus scrapes, what the process does on SIGTERM
//! and `--cleanup`.
//!
//! Faults are real too: the API server goes down, forgets its history (`410
//! Gone` forces a relist) and cuts watch connections; iptables-restore is made
//! to fail through a wrapper first on the binary's `PATH`.
//!
//! Runs as root with `CHAINSMITH_KERNEL_TESTS=1` (see `chainsmith-testkit`).

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chainsmith_fakeapi::{FakeApiServer, Outage};
use chainsmith_testkit::{
    EchoServer, ProbeResult, Proto, Topology, kernel_tests_enabled, metric_sample, probe,
};
use serde_json::{Value, json};

const NODE: &str = "node-a";
const POD_PORT: u16 = 8080;
const METRICS_PORT: u16 = 10249;
const HEALTHZ_PORT: u16 = 10256;
/// syncPeriod of the runs: the health timeout is twice this.
const SYNC_PERIOD_SECONDS: u64 = 2;
/// How long a change may take to show in the kernel (generous: CI is busy).
const CONVERGE: Duration = Duration::from_secs(20);
const ANSWER: Duration = Duration::from_secs(2);

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, last))
}

// ---------------------------------------------------------------------------
// Objects

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn node_object(dual_stack: bool, autoscaler_taint: bool) -> Value {
    let mut addresses = vec![json!({"type": "InternalIP", "address": Topology::NODE_IPV4.to_string()})];
    let mut pod_cidrs = vec![json!(Topology::POD_CIDR_IPV4)];
    if dual_stack {
        addresses.push(json!({"type": "InternalIP", "address": Topology::NODE_IPV6.to_string()}));
        pod_cidrs.push(json!(Topology::POD_CIDR_IPV6));
    }
    let taints: Vec<Value> = if autoscaler_taint {
        vec![json!({"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"})]
    } else {
        Vec::new()
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {"podCIDR": pod_cidrs[0].clone(), "podCIDRs": pod_cidrs, "taints": taints},
        "status": {"addresses": addresses},
    })
}

/// A Service in namespace `shop`; `spec` gets clusterIPs and ipFamilies from
/// `clusterIP`.
fn service(name: &str, mut spec: Value) -> Value {
    let ip: IpAddr = spec["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .parse()
        .expect("ip");
    spec["clusterIPs"] = json!([ip.to_string()]);
    spec["ipFamilies"] = json!([if ip.is_ipv6() { "IPv6" } else { "IPv4" }]);
    spec["selector"] = json!({"app": name});
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

fn service_port(proto: Proto, port: u16, node_port: u16) -> Value {
    let mut value =
        json!({"name": "p", "protocol": proto.as_str().to_uppercase(), "port": port, "targetPort": POD_PORT});
    if node_port != 0 {
        value["nodePort"] = json!(node_port);
    }
    value
}

/// The EndpointSlice `<service>-1`: each endpoint is `(address, node)`, ready.
fn slice(service: &str, proto: Proto, endpoints: &[(IpAddr, &str)]) -> Value {
    let ipv6 = endpoints.first().is_some_and(|(ip, _)| ip.is_ipv6());
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"),
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now_rfc3339()},
        },
        "addressType": if ipv6 { "IPv6" } else { "IPv4" },
        "endpoints": endpoints.iter().map(|(ip, node)| json!({
            "addresses": [ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        })).collect::<Vec<_>>(),
        "ports": [{"name": "p", "protocol": proto.as_str().to_uppercase(), "port": POD_PORT}],
    })
}

/// A ServiceCIDR (cluster-scoped).
fn service_cidr(name: &str, cidrs: &[&str]) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": name},
        "spec": {"cidrs": cidrs},
    })
}

// ---------------------------------------------------------------------------
// The node under test

/// A topology, a fake API server serving inside its node namespace, an echo
/// server in every pod and (once spawned) `chainsmith run` in the node.
struct Node {
    // Declared first: stopped before the namespaces go.
    child: Option<Child>,
    api: FakeApiServer,
    _echo: Vec<EchoServer>,
    topology: Topology,
    dir: tempfile::TempDir,
    /// `iptables.minSyncPeriod` in the configuration; `None` leaves it unset.
    min_sync_period: Option<&'static str>,
}

impl Node {
    fn new(pods: &[&str], objects: Vec<Value>) -> Node {
        let topology = Topology::new(pods).expect("topology");
        let listener = topology
            .node
            .enter(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .expect("enter node")
            .expect("bind API server");
        let api = FakeApiServer::start(listener);
        api.apply_many(objects);
        let echo = topology
            .pods
            .iter()
            .map(|pod| EchoServer::start(&pod.netns, &pod.name, POD_PORT).expect("echo server"))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig("default")).expect("kubeconfig");
        std::fs::create_dir(dir.path().join("bin")).expect("wrapper dir");
        Node {
            child: None,
            api,
            _echo: echo,
            topology,
            dir,
            min_sync_period: Some("100ms"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the configuration and starts `chainsmith run` in the node.
    fn spawn(&mut self, dual_stack: bool, extra_args: &[&str]) {
        let cidrs = if dual_stack {
            format!("{},{}", Topology::POD_CIDR_IPV4, Topology::POD_CIDR_IPV6)
        } else {
            Topology::POD_CIDR_IPV4.to_string()
        };
        let min_sync_period = self
            .min_sync_period
            .map(|period| format!("  minSyncPeriod: {period}\n"))
            .unwrap_or_default();
        // conntrack zeros: leave the kernel's (host-wide) table size alone.
        let config = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             hostnameOverride: {NODE}\nclusterCIDR: {cidrs}\n\
             metricsBindAddress: 127.0.0.1:{METRICS_PORT}\nhealthzBindAddress: 0.0.0.0:{HEALTHZ_PORT}\n\
             iptables:\n  syncPeriod: {SYNC_PERIOD_SECONDS}s\n{min_sync_period}\
             nftables:\n  syncPeriod: {SYNC_PERIOD_SECONDS}s\n{min_sync_period}\
             conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n"
        );
        std::fs::write(self.path("proxy.yaml"), config).expect("config");
        let log = std::fs::File::create(self.path("chainsmith.log")).expect("log");
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let config = self.path("proxy.yaml");
        let kubeconfig = self.path("kubeconfig");
        let mut args = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.topology.node.name().to_owned(),
            env!("CARGO_BIN_EXE_chainsmith").to_owned(),
            "run".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--iptables-backend".to_owned(),
            "nft".to_owned(),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let child = Command::new("ip")
            .args(&args)
            .env("PATH", path)
            .env("RUST_LOG", "info")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn chainsmith run");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("chainsmith.log")).unwrap_or_default()
    }

    /// Polls `check` until it returns true; fails with the binary's log.
    fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return;
            }
            if let Some(pid) = self.child.as_ref().map(Child::id)
                && exited(pid)
            {
                panic!("chainsmith exited while waiting for {what}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then the exit status (SIGKILL after 15 s).
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chainsmith did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain HTTP/1.1 GET from inside the node namespace: (status, body).
    fn http_get(&self, address: SocketAddr, path: &str) -> Option<(u16, String, String)> {
        let path = path.to_owned();
        self.topology
            .node
            .enter(move || -> Option<(u16, String, String)> {
                let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).ok()?;
                let mut response = String::new();
                stream.read_to_string(&mut response).ok()?;
                let (head, body) = response.split_once("\r\n\r\n")?;
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                Some((status, head.to_owned(), body.to_owned()))
            })
            .expect("enter node")
    }

    fn metrics(&self) -> String {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT));
        self.http_get(address, "/metrics")
            .map(|(_, _, body)| body)
            .unwrap_or_default()
    }

    fn health(&self, path: &str) -> Option<(u16, Value)> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, HEALTHZ_PORT));
        let (status, _, body) = self.http_get(address, path)?;
        Some((status, serde_json::from_str(&body).ok()?))
    }

    fn pod_ip(&self, pod: &str, ipv6: bool) -> IpAddr {
        self.topology.pod(pod).expect("pod").ip(ipv6)
    }

    fn probe(&self, proto: Proto, ip: IpAddr, port: u16) -> ProbeResult {
        probe(&self.topology.client, proto, ip, port, ANSWER)
    }

    /// The pods that answered `tries` probes.
    fn answering(&self, proto: Proto, ip: IpAddr, port: u16, tries: usize) -> BTreeSet<String> {
        (0..tries)
            .filter_map(|_| self.probe(proto, ip, port).pod().map(str::to_owned))
            .collect()
    }

    /// Waits until exactly `pods` answer `ip:port` (over 12 probes).
    fn wait_for_pods(&self, proto: Proto, ip: IpAddr, port: u16, pods: &[&str]) {
        let want: BTreeSet<String> = pods.iter().map(|p| (*p).to_owned()).collect();
        self.wait_for(&format!("{ip}:{port} answered by {pods:?}"), CONVERGE, || {
            self.answering(proto, ip, port, 12) == want
        });
    }

    /// `nft list table FAMILY kube-proxy`, or `None` when there is no such table.
    fn nft_table(&self, family: &str) -> Option<String> {
        self.topology
            .node
            .run("nft", &["list", "table", family, "kube-proxy"])
            .ok()
    }

    /// `iptables-save` of every table.
    fn rules(&self, ipv6: bool) -> String {
        let save = if ipv6 {
            "ip6tables-nft-save"
        } else {
            "iptables-nft-save"
        };
        self.topology.node.run(save, &[]).expect("iptables-save")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a child process has ended (a zombie not yet waited for counts).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn run_follows_churn_and_survives_api_server_faults() {
    if !kernel_tests_enabled("run_follows_churn_and_survives_api_server_faults") {
        return;
    }
    let pods = ["pod-a", "pod-b", "pod-c"];
    let topology_ips = |node: &Node, names: &[&str]| -> Vec<(IpAddr, &'static str)> {
        names.iter().map(|n| (node.pod_ip(n, false), NODE)).collect()
    };
    let web_ip = v4(10);
    let web = service(
        "web",
        json!({"type": "NodePort", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 30080)]}),
    );
    let mut node = Node::new(&pods, vec![node_object(false, false), web]);
    let ips = topology_ips(&node, &["pod-a"]);
    node.api.apply(slice("web", Proto::Tcp, &ips));
    node.spawn(false, &[]);

    // Start-up: the first sync programs the Service (cluster IP and NodePort).
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.wait_for_pods(Proto::Tcp, IpAddr::V4(Topology::NODE_IPV4), 30080, &["pod-a"]);

    // Churn: endpoints come, go, and run out (REJECT), then come back.
    node.api.apply(slice(
        "web",
        Proto::Tcp,
        &topology_ips(&node, &["pod-a", "pod-b"]),
    ));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a", "pod-b"]);
    node.api
        .apply(slice("web", Proto::Tcp, &topology_ips(&node, &["pod-b"])));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-b"]);
    node.api.delete("EndpointSlice", Some("shop"), "web-1");
    node.wait_for("REJECT once no endpoint is left", CONVERGE, || {
        node.probe(Proto::Tcp, web_ip, 80) == ProbeResult::Refused
    });
    node.api
        .apply(slice("web", Proto::Tcp, &topology_ips(&node, &["pod-c"])));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-c"]);

    // Outage: the rules stay; what changed meanwhile arrives after reconnect.
    node.api.set_outage(true);
    node.api.drop_watches();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        node.answering(Proto::Tcp, web_ip, 80, 6),
        BTreeSet::from(["pod-c".to_owned()])
    );
    let late_ip = v4(11);
    node.api
        .apply(slice("web", Proto::Tcp, &topology_ips(&node, &["pod-a"])));
    node.api.apply(service(
        "late",
        json!({"type": "ClusterIP", "clusterIP": late_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    ));
    node.api
        .apply(slice("late", Proto::Tcp, &topology_ips(&node, &["pod-b"])));
    node.api.set_outage(false);
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.wait_for_pods(Proto::Tcp, late_ip, 80, &["pod-b"]);

    // 410 Gone: the history is compacted while the watches are cut, so the
    // client must relist; a deletion it never saw as an event must still
    // remove the Service's rules.
    node.api.set_outage(true);
    node.api.drop_watches();
    node.api.delete("Service", Some("shop"), "late");
    node.api.delete("EndpointSlice", Some("shop"), "late-1");
    node.api.compact();
    node.api.clear_requests();
    node.api.set_outage(false);
    // Gone from every table: no DNAT (nat) and no REJECT (filter) either.
    node.wait_for("the deleted Service's rules to go", CONVERGE, || {
        !node.rules(false).contains(&late_ip.to_string())
    });
    let requests = node.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true")),
        "the Services were relisted after 410: {requests:#?}"
    );
    assert_eq!(
        node.answering(Proto::Tcp, web_ip, 80, 6),
        BTreeSet::from(["pod-a".to_owned()])
    );

    // Someone flushes the tables (a firewall reload): the canary check
    // notices within a sync period and a full sync puts everything back.
    for table in ["mangle", "nat", "filter"] {
        node.topology
            .node
            .run("iptables-nft", &["-t", table, "-F"])
            .expect("flush");
        node.topology
            .node
            .run("iptables-nft", &["-t", table, "-X"])
            .expect("delete chains");
    }
    assert!(
        node.probe(Proto::Tcp, web_ip, 80).pod().is_none(),
        "the flush broke the Service"
    );
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.wait_for("the drift to be counted", CONVERGE, || {
        metric_sample(&node.metrics(), "chainsmith_drift_detected_total", "IPv4").unwrap_or(0.0) >= 1.0
    });
    let log = node.log();
    let drift_line = log
        .lines()
        .find(|l| l.contains("rules drifted"))
        .unwrap_or_default();
    assert!(
        drift_line.contains("missing_chains=") && !drift_line.contains("missing_chains=0 "),
        "the flush is reported as missing chains:\n{log}"
    );

    let metrics = node.metrics();
    assert!(
        metric_sample(&metrics, "chainsmith_watch_errors_total", "").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    assert!(
        metric_sample(
            &metrics,
            "kubeproxy_network_programming_duration_seconds_count",
            "IPv4"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{metrics}"
    );
    assert!(
        metric_sample(
            &metrics,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "IPv4"
        )
        .unwrap_or(0.0)
            > 1e9
    );
    assert!(
        metric_sample(&metrics, "kubeproxy_sync_proxy_rules_endpoint_changes_total", "").unwrap_or(0.0)
            >= 6.0,
        "{metrics}"
    );
    let log = node.log();
    assert!(
        log.contains("synced") && log.contains("payload_bytes"),
        "one line per sync:\n{log}"
    );

    // SIGTERM: a clean exit that leaves the rules working.
    let status = node.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", node.log());
    assert_eq!(
        node.answering(Proto::Tcp, web_ip, 80, 6),
        BTreeSet::from(["pod-a".to_owned()])
    );

    // --cleanup removes every chain it installed.
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.topology.node.name(),
            env!("CARGO_BIN_EXE_chainsmith"),
        ])
        .args(["run", "--cleanup", "--iptables-backend", "nft"])
        .output()
        .expect("run --cleanup");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rules = node.rules(false);
    assert!(
        !rules.contains("KUBE-SVC-") && !rules.contains("KUBE-SERVICES"),
        "{rules}"
    );
    assert!(node.probe(Proto::Tcp, web_ip, 80).pod().is_none());
}

#[test]
fn health_endpoints_follow_local_endpoints_node_state_and_failed_syncs() {
    if !kernel_tests_enabled("health_endpoints_follow_local_endpoints_node_state_and_failed_syncs") {
        return;
    }
    let lb_ip = v4(20);
    let lb = service(
        "lb",
        json!({
            "type": "LoadBalancer", "clusterIP": lb_ip.to_string(),
            "externalTrafficPolicy": "Local", "healthCheckNodePort": 32100,
            "ports": [service_port(Proto::Tcp, 80, 30200)],
        }),
    );
    let mut node = Node::new(&["pod-a", "pod-b"], vec![node_object(false, false), lb]);
    let (a, b) = (node.pod_ip("pod-a", false), node.pod_ip("pod-b", false));
    node.api.apply(slice("lb", Proto::Tcp, &[(a, NODE)]));
    // iptables-restore fails while `fail` exists, hangs while `hang` exists;
    // otherwise the real one runs.
    let real = Command::new("sh")
        .args(["-c", "command -v iptables-nft-restore"])
        .output()
        .expect("sh");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_owned();
    let marker = node.path("fail");
    let hang = node.path("hang");
    let wrapper = format!(
        "#!/bin/sh\nif [ -e '{}' ]; then cat >/dev/null; echo 'injected failure' >&2; exit 1; fi\n\
         if [ -e '{}' ]; then cat >/dev/null; sleep 600; fi\nexec '{real}' \"$@\"\n",
        marker.display(),
        hang.display()
    );
    let wrapper_path = node.path("bin").join("iptables-nft-restore");
    std::fs::write(&wrapper_path, wrapper).expect("wrapper");
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper_path)
        .status()
        .expect("chmod");
    // minSyncPeriod unset: a restore that fails fast must not make the
    // adaptive pacing retry at once.
    node.min_sync_period = None;
    node.spawn(false, &["--command-timeout=2s"]);

    node.wait_for("/healthz 200", CONVERGE, || {
        node.health("/healthz").is_some_and(|(code, _)| code == 200)
    });
    let (_, body) = node.health("/healthz").expect("healthz");
    assert_eq!(body["healthy"], json!(true));
    assert_eq!(body["nodeEligible"], json!(true));
    assert_eq!(body["status"]["IPv4"]["healthy"], json!(true), "{body}");
    node.wait_for_pods(Proto::Tcp, lb_ip, 80, &["pod-a"]);

    // The health check node port: 200 with one local endpoint.
    let check = SocketAddr::from((Topology::NODE_IPV4, 32100));
    node.wait_for("service health 200", CONVERGE, || {
        node.http_get(check, "/").is_some_and(|(code, ..)| code == 200)
    });
    let (_, head, body) = node.http_get(check, "/").expect("service health");
    assert!(
        head.contains("X-Load-Balancing-Endpoint-Weight: 1")
            || head.contains("x-load-balancing-endpoint-weight: 1"),
        "{head}"
    );
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["localEndpoints"], json!(1));
    assert_eq!(body["service"]["name"], json!("lb"));
    // The endpoint moves to another node: no local endpoint, 503.
    node.api.apply(slice("lb", Proto::Tcp, &[(a, "node-b")]));
    node.wait_for("service health 503", CONVERGE, || {
        node.http_get(check, "/").is_some_and(|(code, ..)| code == 503)
    });
    node.api.apply(slice("lb", Proto::Tcp, &[(a, NODE)]));
    node.wait_for("service health 200 again", CONVERGE, || {
        node.http_get(check, "/").is_some_and(|(code, ..)| code == 200)
    });

    // The autoscaler is about to delete the node: /healthz 503, /livez 200.
    node.api.apply(node_object(false, true));
    node.wait_for("/healthz 503 on the taint", CONVERGE, || {
        node.health("/healthz")
            .is_some_and(|(code, body)| code == 503 && body["nodeEligible"] == json!(false))
    });
    assert_eq!(node.health("/livez").map(|(code, _)| code), Some(200));
    node.api.apply(node_object(false, false));
    node.wait_for("/healthz 200 without the taint", CONVERGE, || {
        node.health("/healthz").is_some_and(|(code, _)| code == 200)
    });

    // Syncs fail: the old rules keep working, health goes 503 after twice
    // the sync period, and recovers once restores work again.
    std::fs::write(&marker, "").expect("marker");
    node.api.apply(slice("lb", Proto::Tcp, &[(b, NODE)]));
    node.wait_for("/healthz and /livez 503 while syncs fail", CONVERGE, || {
        node.health("/healthz").is_some_and(|(code, _)| code == 503)
            && node.health("/livez").is_some_and(|(code, _)| code == 503)
    });
    assert_eq!(
        node.answering(Proto::Tcp, lb_ip, 80, 6),
        BTreeSet::from(["pod-a".to_owned()]),
        "previous rules stay"
    );
    let metrics = node.metrics();
    assert!(
        metric_sample(
            &metrics,
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "IPv4"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sample(&metrics, "chainsmith_sync_min_interval_seconds", ""),
        Some(1.0),
        "after a failed sync the wait is the full ceiling"
    );
    std::fs::remove_file(&marker).expect("marker");
    node.wait_for("/healthz 200 after recovery", CONVERGE, || {
        node.health("/healthz").is_some_and(|(code, _)| code == 200)
    });
    node.wait_for_pods(Proto::Tcp, lb_ip, 80, &["pod-b"]);
    assert!(
        node.log().contains("injected failure"),
        "the restore error is logged"
    );

    // iptables-restore hangs: killed after --command-timeout, counted as a
    // failure, the old rules stay; the next syncs catch up once it works.
    let failures_before = metric_sample(
        &node.metrics(),
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
        "IPv4",
    )
    .unwrap_or(0.0);
    std::fs::write(&hang, "").expect("hang marker");
    node.api.apply(slice("lb", Proto::Tcp, &[(a, NODE)]));
    node.wait_for("a hung restore to be killed", CONVERGE, || {
        node.log().contains("still running after 2 s, killed")
    });
    assert!(
        metric_sample(
            &node.metrics(),
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "IPv4"
        )
        .unwrap_or(0.0)
            > failures_before
    );
    assert_eq!(
        node.answering(Proto::Tcp, lb_ip, 80, 6),
        BTreeSet::from(["pod-b".to_owned()]),
        "previous rules stay while restores hang"
    );
    std::fs::remove_file(&hang).expect("hang marker");
    node.wait_for_pods(Proto::Tcp, lb_ip, 80, &["pod-a"]);
}

#[test]
fn prometheus_scrapes_the_sync_metrics() {
    if !kernel_tests_enabled("prometheus_scrapes_the_sync_metrics") {
        return;
    }
    let web_ip = v4(30);
    let web = service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    );
    let mut node = Node::new(&["pod-a"], vec![node_object(false, false), web]);
    let a = node.pod_ip("pod-a", false);
    node.api.apply(slice("web", Proto::Tcp, &[(a, NODE)]));
    // What kube-proxy left for a Service deleted since it stopped: chainsmith
    // takes the same chains over, so its first full sync must remove it.
    let leftover = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAALEFTOVERAAAA - [0:0]\n\
        -A KUBE-SERVICES -d 198.51.100.99/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAAALEFTOVERAAAA\n\
        -A KUBE-SVC-AAAALEFTOVERAAAA -p tcp -j DNAT --to-destination 192.0.2.99:80\nCOMMIT\n";
    node.topology
        .node
        .run_with_input("iptables-nft-restore", &["--noflush"], leftover.as_bytes())
        .expect("kube-proxy's leftovers");
    node.spawn(false, &[]);
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    let rules = node.rules(false);
    assert!(
        !rules.contains("LEFTOVER"),
        "a leftover chain survived the first sync:\n{rules}"
    );
    // The slice changed before the proxy started: as upstream, that is not
    // programming latency (it would report the downtime). A change now is.
    let programmed = |node: &Node| {
        metric_sample(
            &node.metrics(),
            "kubeproxy_network_programming_duration_seconds_count",
            "IPv4",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(programmed(&node), 0.0, "{}", node.metrics());
    node.api.apply(slice("web", Proto::Tcp, &[(a, NODE)]));
    node.wait_for("the change's programming latency", CONVERGE, || {
        programmed(&node) >= 1.0
    });
    // A set minSyncPeriod is kept as it is, however cheap the syncs.
    assert_eq!(
        metric_sample(&node.metrics(), "chainsmith_sync_min_interval_seconds", ""),
        Some(0.1)
    );

    // promtool: the exposition parses; lint findings only on names upstream
    // kube-proxy fixed (gauges named *_total), never on chainsmith's own.
    let scrape = node.metrics();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let code = checked.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "promtool failed ({code:?}): {findings}"
    );
    const UPSTREAM_NAMES: [&str; 2] = [
        "kubeproxy_sync_proxy_rules_iptables_total",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    ];
    for line in findings.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            UPSTREAM_NAMES.iter().any(|name| line.contains(name)),
            "promtool finding: {line}\n{findings}"
        );
    }

    // A real Prometheus, in the node namespace, scraping every second.
    let config = format!(
        "scrape_configs:\n  - job_name: chainsmith\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{METRICS_PORT}']\n"
    );
    std::fs::write(node.path("prometheus.yml"), config).expect("config");
    let prometheus_log = std::fs::File::create(node.path("prometheus.log")).expect("log");
    let mut prometheus = Command::new("ip")
        .args(["netns", "exec", node.topology.node.name(), "prometheus"])
        .arg(format!("--config.file={}", node.path("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", node.path("tsdb").display()))
        .arg("--web.listen-address=127.0.0.1:19090")
        .stdout(prometheus_log.try_clone().expect("log"))
        .stderr(prometheus_log)
        .spawn()
        .expect("prometheus");
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, 19090));
    let query = |expr: &str| -> Option<Vec<(Value, f64)>> {
        let (code, _, body) = node.http_get(api, &format!("/api/v1/query?query={}", percent_encode(expr)))?;
        let body: Value = serde_json::from_str(&body).ok()?;
        if code != 200 {
            return None;
        }
        let results = body["data"]["result"].as_array()?;
        Some(
            results
                .iter()
                .filter_map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
                .collect(),
        )
    };
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let up = query("up").unwrap_or_default();
        let last = query("kubeproxy_sync_proxy_rules_last_timestamp_seconds").unwrap_or_default();
        let syncs = query("kubeproxy_sync_proxy_rules_duration_seconds_count").unwrap_or_default();
        if up.iter().any(|(_, v)| *v == 1.0) && !last.is_empty() && !syncs.is_empty() {
            seen = Some((last, syncs));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The Grafana dashboard's queries, on this Prometheus and these metrics:
    // each must be accepted and show data.
    let mut empty = Vec::new();
    if seen.is_some() {
        // Rates need two samples in their window.
        std::thread::sleep(Duration::from_secs(3));
        for (panel, expr) in dashboard_queries() {
            let result = query(&expr).unwrap_or_else(|| panic!("Prometheus refused panel {panel:?}: {expr}"));
            if result.is_empty() {
                empty.push(panel);
            }
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(empty.is_empty(), "dashboard panels without data: {empty:?}");
    let Some((last, syncs)) = seen else {
        panic!(
            "Prometheus never saw the sync metrics; its log:\n{}",
            std::fs::read_to_string(node.path("prometheus.log")).unwrap_or_default()
        );
    };
    assert_eq!(last[0].0["ip_family"], json!("IPv4"));
    assert!(last[0].1 > 1e9, "a Unix time: {last:?}");
    assert!(syncs[0].1 >= 1.0, "{syncs:?}");

    // kube-proxy's "Starting" event on the Node, which `kubectl describe
    // node` shows.
    let events = node.api.list("Event");
    assert!(
        events.iter().any(|e| e["reason"] == "Starting"
            && e["regarding"]["kind"] == "Node"
            && e["regarding"]["name"] == NODE),
        "{events:#?}"
    );
    // deploy/'s ClusterRole grants exactly what this run asked for; only
    // nftables mode reads ServiceCIDRs (upstream's iptables proxier ignores
    // them), and its test checks that permission.
    assert_cluster_role_matches_requests(&node.api.requests(), &["servicecidrs"]);
}

/// Every query of deploy/monitoring/grafana-dashboard.json with its panel's
/// title, Grafana's variables set as a person first opening it would have them.
fn dashboard_queries() -> Vec<(String, String)> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$job", "chainsmith")
                .replace("$node", ".*")
                .replace("$instance", ".*");
            queries.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    assert!(queries.len() > 10, "{queries:?}");
    queries
}

/// A URL query value: everything but unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// RBAC's view of one API request: (API group, resource, verb).
fn rbac_request(request: &str) -> Option<(String, String, String)> {
    let (method, target) = request.split_once(' ')?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (*resource, false),
        [resource, _name] => (*resource, true),
        _ => return None,
    };
    let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, named, watch) {
        ("GET", true, _) => "get",
        ("GET", false, true) => "watch",
        ("GET", false, false) => "list",
        ("POST", false, _) => "create",
        (other, _, _) => return Some((group.into(), resource.into(), other.to_lowercase())),
    };
    Some((group.into(), resource.into(), verb.into()))
}

/// Every request the binary made is allowed by deploy/base/rbac.yaml's
/// ClusterRole, and every permission there was used: least privilege in
/// both directions. `other_mode` names the resources only the other proxy
/// mode reads: this run must not have asked for them, and their permissions
/// are the only ones it may leave unused.
fn assert_cluster_role_matches_requests(requests: &[String], other_mode: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/rbac.yaml");
    let role = text
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("YAML"))
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                for verb in strings("verbs") {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let mut used = BTreeSet::new();
    for request in requests {
        // Discovery paths every authenticated client may read.
        if ["GET /version", "GET /api?", "GET /apis?"]
            .iter()
            .any(|p| request.starts_with(p))
        {
            continue;
        }
        let needed = rbac_request(request).unwrap_or_else(|| panic!("not an API request: {request}"));
        assert!(
            granted.contains(&needed),
            "{request} needs {needed:?}, which the ClusterRole lacks"
        );
        assert!(
            !other_mode.contains(&needed.1.as_str()),
            "{request}: this proxy mode does not read {}",
            needed.1
        );
        used.insert(needed);
    }
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|(_, resource, _)| !other_mode.contains(&resource.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "the ClusterRole grants what the binary never uses: {unused:?}"
    );
}

#[test]
fn dual_stack_and_stale_udp_conntrack_entries() {
    if kernel_tests_enabled("dual_stack_and_stale_udp_conntrack_entries") {
        dual_stack_and_udp_cleanup(&[]);
    }
}

/// nftables mode in both families: tables `ip kube-proxy` and `ip6
/// kube-proxy`, each synced by its own engine over the same kind of socket.
#[test]
fn dual_stack_and_stale_udp_conntrack_entries_in_nftables_mode() {
    if kernel_tests_enabled("dual_stack_and_stale_udp_conntrack_entries_in_nftables_mode") {
        dual_stack_and_udp_cleanup(&["--proxy-mode", "nftables"]);
    }
}

fn dual_stack_and_udp_cleanup(mode_args: &[&str]) {
    let nftables = mode_args.contains(&"nftables");
    let dns_ip = v4(40);
    let web6 = v6(0x10);
    let dns = service(
        "dns",
        json!({"type": "ClusterIP", "clusterIP": dns_ip.to_string(), "ports": [service_port(Proto::Udp, 53, 0)]}),
    );
    let web = service(
        "web6",
        json!({"type": "ClusterIP", "clusterIP": web6.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    );
    let mut node = Node::new(&["pod-a", "pod-b"], vec![node_object(true, false), dns, web]);
    let (a, b) = (node.pod_ip("pod-a", false), node.pod_ip("pod-b", false));
    node.api.apply(slice("dns", Proto::Udp, &[(a, NODE)]));
    node.api
        .apply(slice("web6", Proto::Tcp, &[(node.pod_ip("pod-b", true), NODE)]));
    // kubeadm's ConfigMap leaves minSyncPeriod at 0s: paced by the syncs' cost.
    node.min_sync_period = None;
    node.spawn(true, mode_args);

    // Both families are proxied.
    node.wait_for_pods(Proto::Tcp, web6, 80, &["pod-b"]);
    node.wait_for_pods(Proto::Udp, dns_ip, 53, &["pod-a"]);
    if nftables {
        let (ip, ip6) = (node.nft_table("ip"), node.nft_table("ip6"));
        assert!(
            ip.as_deref().is_some_and(|t| t.contains(&dns_ip.to_string())),
            "{ip:?}"
        );
        assert!(
            ip6.as_deref().is_some_and(|t| t.contains(&web6.to_string())),
            "{ip6:?}"
        );
        assert!(!node.rules(false).contains("KUBE-"), "{}", node.rules(false));
    }
    let metrics = node.metrics();
    assert!(
        metric_sample(
            &metrics,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "IPv6"
        )
        .is_some(),
        "{metrics}"
    );

    // One client "connection" (fixed source port) to the UDP Service.
    let client = SocketAddr::from((Topology::CLIENT_IPV4, 40053));
    let exchange = || -> Option<String> {
        node.topology
            .client
            .enter(move || {
                let socket = UdpSocket::bind(client).ok()?;
                socket.set_read_timeout(Some(Duration::from_millis(700))).ok()?;
                socket.connect(SocketAddr::new(dns_ip, 53)).ok()?;
                socket.send(b"q").ok()?;
                let mut buffer = [0u8; 256];
                let n = socket.recv(&mut buffer).ok()?;
                String::from_utf8_lossy(&buffer[..n])
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .ok()
            .flatten()
    };
    assert_eq!(exchange().as_deref(), Some("pod-a"));
    // pod-a stops being an endpoint but keeps answering: only deleting the
    // conntrack entry sends this client's next datagram to pod-b.
    node.api.apply(slice("dns", Proto::Udp, &[(b, NODE)]));
    node.wait_for("the client's flow to move to pod-b", CONVERGE, || {
        exchange().as_deref() == Some("pod-b")
    });
    // Counted once the cleanup pass that deleted it ends.
    node.wait_for("the deletion to be counted", CONVERGE, || {
        metric_sample(
            &node.metrics(),
            "chainsmith_conntrack_entries_deleted_total",
            "IPv4",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    if nftables {
        return;
    }
    // Unset minSyncPeriod: the wait scales with these small syncs' cost
    // instead of kube-proxy's fixed 1 s.
    assert!(node.log().contains("minSyncPeriod not set"), "{}", node.log());
    node.wait_for("the adaptive wait to fall below 1 s", CONVERGE, || {
        let wait =
            metric_sample(&node.metrics(), "chainsmith_sync_min_interval_seconds", "").unwrap_or(f64::NAN);
        wait > 0.0 && wait < 1.0
    });
}

/// Faults from the API side: 503s and garbage instead of watch events, then
/// objects far beyond the usual (a Service with 10,000 ports, an EndpointSlice
/// with 1,000 endpoints). Each is logged and counted, and nothing already in
/// the kernel is lost.
#[test]
fn api_errors_garbage_and_oversized_objects() {
    if !kernel_tests_enabled("api_errors_garbage_and_oversized_objects") {
        return;
    }
    let web_ip = v4(50);
    let web = service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    );
    let mut node = Node::new(&["pod-a", "pod-b"], vec![node_object(false, false), web]);
    let (a, b) = (node.pod_ip("pod-a", false), node.pod_ip("pod-b", false));
    node.api.apply(slice("web", Proto::Tcp, &[(a, NODE)]));
    node.spawn(false, &[]);
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);

    let watch_errors = |node: &Node| -> f64 {
        ["services", "endpointslices", "nodes"]
            .iter()
            .filter_map(|r| {
                metric_sample(
                    &node.metrics(),
                    "chainsmith_watch_errors_total",
                    &format!("resource=\"{r}\""),
                )
            })
            .sum()
    };
    // 503s (which kube's client retries on its own) and then garbage for
    // the watches' answers: logged, counted, the rules keep working.
    for fault in ["503", "garbage"] {
        let before = watch_errors(&node);
        match fault {
            "503" => node.api.set_outage_mode(Some(Outage::Error503)),
            _ => node.api.set_garbage(true),
        }
        node.api.drop_watches();
        node.wait_for(&format!("watch errors counted ({fault})"), CONVERGE, || {
            watch_errors(&node) > before
        });
        assert_eq!(
            node.answering(Proto::Tcp, web_ip, 80, 4),
            BTreeSet::from(["pod-a".to_owned()]),
            "the rules stay through {fault}"
        );
        node.api.set_outage_mode(None);
        node.api.set_garbage(false);
    }
    assert!(
        node.log().contains("watch failed; retrying with backoff"),
        "{}",
        node.log()
    );
    node.api.apply(slice("web", Proto::Tcp, &[(b, NODE)]));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-b"]);

    // A Service with 10,000 ports, all to pod-a, and one whose slice holds
    // 1,000 endpoints (never probed: its addresses are not reachable).
    let many_ip = v4(51);
    let ports: Vec<Value> = (0..10_000u16)
        .map(|i| json!({"name": format!("p{i}"), "protocol": "TCP", "port": 20_000 + i, "targetPort": POD_PORT}))
        .collect();
    node.api.apply(service(
        "many-ports",
        json!({"type": "ClusterIP", "clusterIP": many_ip.to_string(), "ports": ports}),
    ));
    let mut many_slice = slice("many-ports", Proto::Tcp, &[(a, NODE)]);
    many_slice["ports"] = (0..10_000u16)
        .map(|i| json!({"name": format!("p{i}"), "protocol": "TCP", "port": POD_PORT}))
        .collect();
    node.api.apply(many_slice);
    let wide_ip = v4(52);
    node.api.apply(service(
        "wide",
        json!({"type": "ClusterIP", "clusterIP": wide_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    ));
    let wide_endpoints: Vec<(IpAddr, &str)> = (0..1000u32)
        .map(|i| {
            (
                IpAddr::V4(Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250 + 1) as u8)),
                "node-b",
            )
        })
        .collect();
    node.api.apply(slice("wide", Proto::Tcp, &wide_endpoints));

    for port in [20_000, 24_999, 29_999] {
        node.wait_for_pods(Proto::Tcp, many_ip, port, &["pod-a"]);
    }
    let rules = node.rules(false);
    let wide_jumps = rules
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-") && l.contains("-j KUBE-SEP-"))
        .filter(|l| !l.contains("many-ports"))
        .count();
    assert!(wide_jumps >= 1000, "{wide_jumps} endpoint jumps");
    // Beyond 1,000 endpoints kube-proxy leaves out the per-endpoint comments.
    assert!(!rules.contains("shop/wide:p ->"), "large-cluster mode");
    let nat_rules = metric_sample(
        &node.metrics(),
        "kubeproxy_sync_proxy_rules_iptables_total",
        "table=\"nat\"",
    )
    .unwrap_or(0.0);
    assert!(nat_rules > 30_000.0, "{nat_rules} nat rules");
    assert_eq!(
        node.answering(Proto::Tcp, web_ip, 80, 4),
        BTreeSet::from(["pod-b".to_owned()]),
        "the other Services still work"
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// nftables mode end to end: `--proxy-mode nftables` over a file that says
/// iptables; the table follows churn, carries kube-proxy's nftables metric
/// names, is rebuilt after someone deletes or edits it, stays on SIGTERM and goes with
/// `--cleanup`; iptables-mode leftovers go at start.
#[test]
fn nftables_mode_follows_churn_and_repairs_the_table() {
    if !kernel_tests_enabled("nftables_mode_follows_churn_and_repairs_the_table") {
        return;
    }
    let pods = ["pod-a", "pod-b", "pod-c"];
    let ips = |node: &Node, names: &[&str]| -> Vec<(IpAddr, &'static str)> {
        names.iter().map(|n| (node.pod_ip(n, false), NODE)).collect()
    };
    let web_ip = v4(20);
    let web = service(
        "web",
        json!({"type": "NodePort", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 30080)]}),
    );
    let mut node = Node::new(&pods, vec![node_object(false, false), web]);
    node.api.apply(slice("web", Proto::Tcp, &ips(&node, &["pod-a"])));
    // What an iptables-mode kube-proxy left behind.
    node.topology
        .node
        .run("iptables-nft", &["-t", "nat", "-N", "KUBE-SERVICES"])
        .expect("leftover chain");
    node.spawn(false, &["--proxy-mode", "nftables"]);

    // Start-up: the first sync programs the Service; the leftovers are gone.
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.wait_for_pods(Proto::Tcp, IpAddr::V4(Topology::NODE_IPV4), 30080, &["pod-a"]);
    assert!(node.nft_table("ip").is_some());
    let rules = node.rules(false);
    assert!(!rules.contains("KUBE-"), "{rules}");

    // Churn: the endpoints change; the old endpoint chains are deleted later.
    node.api
        .apply(slice("web", Proto::Tcp, &ips(&node, &["pod-b", "pod-c"])));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-b", "pod-c"]);
    let old_chain = format!("shop/web/tcp/p__{}/", node.pod_ip("pod-a", false));
    node.wait_for("the stale endpoint chain deleted", CONVERGE, || {
        !node.nft_table("ip").unwrap_or_default().contains(&old_chain)
    });

    // kube-proxy's nftables-mode metrics, none of iptables mode's.
    node.wait_for("nftables-mode metrics", CONVERGE, || {
        let text = node.metrics();
        [
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family=\"IPv4\"} 0",
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total{ip_family=\"IPv4\"} 0",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
        ]
        .iter()
        .all(|needle| text.contains(needle))
    });
    let text = node.metrics();
    assert!(!text.contains("kubeproxy_sync_proxy_rules_iptables"), "{text}");
    assert_eq!(node.health("/healthz").map(|(code, _)| code), Some(200));
    // Periodic checks ran and found the table as applied.
    std::thread::sleep(Duration::from_secs(SYNC_PERIOD_SECONDS + 1));
    assert!(!node.log().contains("drifted"), "{}", node.log());

    // Someone points a rule of their own at pod-b's endpoint chain: once it
    // is stale, its deletion is refused (the chain is in use), logged and
    // counted, and retried until that rule is gone.
    let b_chain = format!("shop/web/tcp/p__{}/", node.pod_ip("pod-b", false));
    let listing = node.nft_table("ip").expect("table");
    let b_chain = listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("chain "))
        .map(|rest| rest.trim_end_matches(" {").trim_matches('"'))
        .find(|name| name.starts_with("endpoint-") && name.contains(&b_chain))
        .expect("pod-b's endpoint chain")
        .to_owned();
    let nft = |args: &[&str]| node.topology.node.run("nft", args).expect("nft");
    nft(&["add", "chain", "ip", "kube-proxy", "outside"]);
    nft(&["add", "rule", "ip", "kube-proxy", "outside", "jump", &b_chain]);
    node.api.apply(slice("web", Proto::Tcp, &ips(&node, &["pod-c"])));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-c"]);
    node.wait_for("a refused cleanup counted", CONVERGE, || {
        metric_sample(
            &node.metrics(),
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total",
            "IPv4",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert!(
        node.log().contains("could not delete stale chains"),
        "{}",
        node.log()
    );
    nft(&["delete", "chain", "ip", "kube-proxy", "outside"]);
    node.wait_for("the stale chain deleted once free", CONVERGE, || {
        !node.nft_table("ip").unwrap_or_default().contains(&b_chain)
    });

    // Someone deletes the table: the next periodic check notices and the
    // full sync rebuilds it.
    node.topology
        .node
        .run("nft", &["delete", "table", "ip", "kube-proxy"])
        .expect("nft delete table");
    node.wait_for("the table back", CONVERGE, || node.nft_table("ip").is_some());
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-c"]);
    assert!(node.log().contains("drifted"), "{}", node.log());
    assert!(
        metric_sample(&node.metrics(), "chainsmith_drift_detected_total", "IPv4").unwrap_or(0.0) >= 1.0,
        "{}",
        node.metrics()
    );

    // Someone empties the Service's chain: an edit, not a deletion, noticed
    // by the same check (someone else committed) and repaired.
    let drifts = node.log().matches("drifted").count();
    let listing = node.nft_table("ip").expect("table");
    let service_chain = listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix("chain "))
        .map(|rest| rest.trim_end_matches(" {").trim_matches('"'))
        .find(|name| name.starts_with("service-") && name.contains("shop/web/tcp/p"))
        .expect("web's service chain")
        .to_owned();
    nft(&["flush", "chain", "ip", "kube-proxy", &service_chain]);
    node.wait_for("the edit repaired", CONVERGE, || {
        node.log().matches("drifted").count() > drifts
            && node
                .nft_table("ip")
                .unwrap_or_default()
                .split(&format!("chain {service_chain} {{"))
                .nth(1)
                .is_some_and(|rest| rest.split('}').next().unwrap_or_default().contains("goto"))
    });
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-c"]);

    // SIGTERM: the table stays and keeps answering.
    let status = node.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", node.log());
    assert!(node.nft_table("ip").is_some());
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-c"]);

    // A restart after the endpoints changed meanwhile: the table read at
    // start lets the first syncs delete the earlier run's stale chains.
    node.api.apply(slice("web", Proto::Tcp, &ips(&node, &["pod-a"])));
    node.spawn(false, &["--proxy-mode", "nftables"]);
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    let stale = format!("shop/web/tcp/p__{}/", node.pod_ip("pod-c", false));
    node.wait_for("the earlier run's stale chains deleted", CONVERGE, || {
        !node.nft_table("ip").unwrap_or_default().contains(&stale)
    });
    assert!(
        node.log().contains("found an existing kube-proxy table"),
        "{}",
        node.log()
    );
    let status = node.terminate();
    assert!(status.success(), "exit status {status}; log:\n{}", node.log());

    // --cleanup removes it.
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.topology.node.name(),
            env!("CARGO_BIN_EXE_chainsmith"),
        ])
        .args(["run", "--cleanup", "--iptables-backend", "nft"])
        .output()
        .expect("run --cleanup");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(node.nft_table("ip").is_none());
    assert!(node.probe(Proto::Tcp, web_ip, 80).pod().is_none());
}

/// The `cluster-ips-check` rule that drops traffic to unallocated Service
/// addresses, as `nft list table` shows it.
fn unallocated_drop_rule(table: &str) -> Option<String> {
    table
        .lines()
        .map(str::trim)
        .find(|line| line.contains("Drop traffic to unallocated ClusterIPs"))
        .map(str::to_owned)
}

/// The packets the uplink namespace has seen for `ip`: what the node did not
/// drop goes out on its default route, to the uplink.
fn count_at_uplink(node: &Node, ip: IpAddr) -> u64 {
    let chain = node
        .topology
        .uplink
        .run("nft", &["list", "chain", "ip", "seen", "in"])
        .expect("nft list chain");
    let line = chain
        .lines()
        .find(|line| line.contains(&ip.to_string()))
        .unwrap_or_else(|| panic!("no counter for {ip}:\n{chain}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "packets")
        .unwrap_or_else(|| panic!("{line}"));
    words[at + 1].parse().expect("packet count")
}

/// nftables mode reads the cluster's ServiceCIDR objects: the first sync
/// already drops traffic to their unallocated addresses (the rule holds the
/// table's family only), the rule follows every change of the objects (an
/// invalid CIDR is named in a warning and left out), and with the last object
/// gone the traffic is forwarded again. Real packets show where the drop
/// happens; the periodic check finds the kernel's table as applied throughout.
#[test]
fn nftables_mode_follows_service_cidrs() {
    if !kernel_tests_enabled("nftables_mode_follows_service_cidrs") {
        return;
    }
    let web_ip = v4(20);
    let unallocated = v4(30);
    let web = service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    );
    let kubernetes = service_cidr("kubernetes", &["198.51.100.0/26", "2001:db8:3::/112"]);
    let mut node = Node::new(&["pod-a"], vec![node_object(false, false), web, kubernetes]);
    let a = node.pod_ip("pod-a", false);
    node.api.apply(slice("web", Proto::Tcp, &[(a, NODE)]));
    let uplink = |args: &[&str]| {
        node.topology.uplink.run("nft", args).expect("nft in the uplink");
    };
    uplink(&["add", "table", "ip", "seen"]);
    uplink(&[
        "add",
        "chain",
        "ip",
        "seen",
        "in",
        "{",
        "type",
        "filter",
        "hook",
        "prerouting",
        "priority",
        "0",
        ";",
        "}",
    ]);
    uplink(&[
        "add",
        "rule",
        "ip",
        "seen",
        "in",
        "ip",
        "daddr",
        &unallocated.to_string(),
        "counter",
    ]);
    // The ServiceCIDRs are listed last, long after the rest.
    node.api.set_delay("ServiceCIDR", Duration::from_secs(3));
    node.spawn(false, &["--proxy-mode", "nftables"]);
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.api.set_delay("ServiceCIDR", Duration::ZERO);

    // The first sync waited for the ServiceCIDRs' list: the union reached the
    // engine before it, so it needed no second full sync.
    let log = node.log();
    let changed = log.find("Service CIDRs changed").expect("the union logged");
    let first_sync = log.find(" synced ").expect("a sync logged");
    assert!(changed < first_sync, "{log}");
    let table = node.nft_table("ip").expect("table");
    assert_eq!(
        unallocated_drop_rule(&table).as_deref(),
        Some("ip daddr 198.51.100.0/26 drop comment \"Drop traffic to unallocated ClusterIPs\""),
        "{table}"
    );
    assert!(node.nft_table("ip6").is_none(), "an IPv4 node: no ip6 table");
    // An unallocated address in the range goes nowhere: the node drops it.
    assert_eq!(node.probe(Proto::Tcp, unallocated, 80), ProbeResult::Timeout);
    assert_eq!(count_at_uplink(&node, unallocated), 0);
    // The Service itself still answers, and a wrong port of it is rejected.
    assert_eq!(node.probe(Proto::Tcp, web_ip, 81), ProbeResult::Refused);
    assert_eq!(node.answering(Proto::Tcp, web_ip, 80, 3).len(), 1);

    // A ServiceCIDR grows: the rule follows.
    node.api.apply(service_cidr(
        "kubernetes",
        &["198.51.100.0/26", "198.51.100.96/27", "2001:db8:3::/112"],
    ));
    let follows = |node: &Node, want: &str| {
        node.wait_for(&format!("the drop rule to read {want}"), CONVERGE, || {
            unallocated_drop_rule(&node.nft_table("ip").unwrap_or_default())
                .is_some_and(|rule| rule.starts_with(&format!("ip daddr {want} drop")))
        });
    };
    follows(&node, "{ 198.51.100.0/26, 198.51.100.96/27 }");
    // A second object, one of its CIDRs invalid: named, ignored, the rest used.
    node.api
        .apply(service_cidr("extra", &["198.51.100.160/27", "198.51.100.0/33"]));
    follows(&node, "{ 198.51.100.0/26, 198.51.100.96/27, 198.51.100.160/27 }");
    let warning = "ServiceCIDR extra: spec.cidrs[1]: invalid CIDR \"198.51.100.0/33\" (ignored)";
    assert!(node.log().contains(warning), "{}", node.log());
    // The first object goes: its ranges are no longer dropped.
    node.api.delete("ServiceCIDR", None, "kubernetes");
    follows(&node, "198.51.100.160/27");
    node.wait_for("the unallocated address forwarded again", CONVERGE, || {
        let _ = node.probe(Proto::Tcp, unallocated, 80);
        count_at_uplink(&node, unallocated) > 0
    });
    // The last one goes: no drop rule at all.
    node.api.delete("ServiceCIDR", None, "extra");
    node.wait_for("the drop rule gone", CONVERGE, || {
        node.nft_table("ip").is_some_and(|table| {
            table.contains("cluster-ips-check") && unallocated_drop_rule(&table).is_none()
        })
    });
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    // The periodic checks compared the kernel's table with what was applied.
    std::thread::sleep(Duration::from_secs(SYNC_PERIOD_SECONDS + 1));
    assert!(!node.log().contains("drifted"), "{}", node.log());
    assert_eq!(
        metric_sample(
            &node.metrics(),
            "chainsmith_watch_errors_total",
            "resource=\"servicecidrs\""
        ),
        Some(0.0)
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
    // deploy/'s ClusterRole grants exactly what this run asked for.
    assert_cluster_role_matches_requests(&node.api.requests(), &[]);
}

/// An API server without ServiceCIDRs (before Kubernetes 1.33): the node in
/// nftables mode says so once, counts no watch error, syncs and follows churn
/// as usual without the drop rule, and once the API server serves them (an
/// upgrade) reads them without a restart.
#[test]
fn nftables_mode_without_service_cidrs_in_the_api_syncs_normally() {
    if !kernel_tests_enabled("nftables_mode_without_service_cidrs_in_the_api_syncs_normally") {
        return;
    }
    let web_ip = v4(21);
    let web = service(
        "web",
        json!({"type": "ClusterIP", "clusterIP": web_ip.to_string(), "ports": [service_port(Proto::Tcp, 80, 0)]}),
    );
    let kubernetes = service_cidr("kubernetes", &["198.51.100.0/26"]);
    let mut node = Node::new(
        &["pod-a", "pod-b"],
        vec![node_object(false, false), web, kubernetes],
    );
    node.api.set_served("ServiceCIDR", false);
    let (a, b) = (node.pod_ip("pod-a", false), node.pod_ip("pod-b", false));
    node.api.apply(slice("web", Proto::Tcp, &[(a, NODE)]));
    node.spawn(false, &["--proxy-mode", "nftables"]);

    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-a"]);
    node.api.apply(slice("web", Proto::Tcp, &[(b, NODE)]));
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-b"]);
    let table = node.nft_table("ip").expect("table");
    assert!(table.contains("cluster-ips-check"), "{table}");
    assert_eq!(unallocated_drop_rule(&table), None, "{table}");
    // The watcher keeps asking (an upgrade is picked up), quietly.
    let lists = |node: &Node| {
        node.api
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /apis/networking.k8s.io/v1/servicecidrs?"))
            .count()
    };
    node.wait_for("the ServiceCIDR list retried", CONVERGE, || lists(&node) >= 3);
    let warning = "ServiceCIDRs are not served by this API server";
    assert_eq!(node.log().matches(warning).count(), 1, "{}", node.log());
    assert_eq!(
        metric_sample(
            &node.metrics(),
            "chainsmith_watch_errors_total",
            "resource=\"servicecidrs\""
        ),
        Some(0.0)
    );
    assert!(!node.log().contains("watch failed"), "{}", node.log());
    assert_eq!(node.health("/healthz").map(|(code, _)| code), Some(200));

    // The API server is upgraded: the next retry lists the ServiceCIDR
    // (its backoff is at most 30 s, as client-go's).
    node.api.set_served("ServiceCIDR", true);
    node.wait_for("the drop rule after the upgrade", Duration::from_secs(90), || {
        unallocated_drop_rule(&node.nft_table("ip").unwrap_or_default())
            .is_some_and(|rule| rule.starts_with("ip daddr 198.51.100.0/26 drop"))
    });
    node.wait_for_pods(Proto::Tcp, web_ip, 80, &["pod-b"]);
    assert_eq!(node.log().matches(warning).count(), 1, "{}", node.log());
    assert!(!node.log().contains("panicked"), "{}", node.log());
}
