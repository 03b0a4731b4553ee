//! The real `chainsmith run` in a node network namespace, against a fake API
//! server holding a large synthetic cluster, with a client namespace whose real
//! packets tell when a change reached the kernel. Shared by the `node_latency`
//! and `soak` examples.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chainsmith_fakeapi::FakeApiServer;
use chainsmith_testkit::{EchoServer, Proto, Topology, probe_here};
use serde_json::{Value, json};

pub const POD_PORT: u16 = 8080;
/// The one Service packets are sent to; its endpoint is a real pod.
pub const PROBED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

pub fn service(name: &str, cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "load"},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "p", "protocol": "TCP", "port": 80, "targetPort": POD_PORT}]},
    })
}

/// Now, as the EndpointSlice controller writes a trigger time.
fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// The EndpointSlice `<service>-1`, its trigger time now (so the proxy
/// measures network programming latency from it).
pub fn slice(service: &str, addresses: &[String]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "load",
                     "labels": {"kubernetes.io/service-name": service},
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": now_rfc3339()}},
        "addressType": "IPv4",
        "endpoints": addresses.iter().map(|a| json!({
            "addresses": [a], "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-a",
        })).collect::<Vec<_>>(),
        "ports": [{"name": "p", "protocol": "TCP", "port": POD_PORT}],
    })
}

/// Endpoint address number `n` of the synthetic Services: never sent a packet.
pub fn endpoint_address(n: usize) -> String {
    format!("10.{}.{}.{}", 128 + n / 62_500 % 128, n / 250 % 250, n % 250 + 1)
}

/// The synthetic Service `svc-<i>` (i >= 1).
pub fn synthetic_service(i: usize) -> Value {
    service(&format!("svc-{i}"), &format!("10.96.{}.{}", i / 250, i % 250 + 1))
}

/// The cluster: the probed Service (one endpoint, `pod`) and `services - 1`
/// others whose cluster IPs and endpoints no packet is ever sent to.
pub fn cluster(services: usize, endpoints: usize, pod: IpAddr) -> Vec<Value> {
    let mut objects = vec![
        service("probed", &PROBED.to_string()),
        slice("probed", &[pod.to_string()]),
    ];
    for i in 1..services {
        let addresses: Vec<String> = (0..endpoints)
            .map(|e| endpoint_address(i * endpoints + e))
            .collect();
        objects.push(synthetic_service(i));
        objects.push(slice(&format!("svc-{i}"), &addresses));
    }
    objects
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and the maximum of `samples`; `None` when there are none.
pub fn p50_p99_max(mut samples: Vec<f64>) -> Option<(f64, f64, f64)> {
    samples.sort_by(f64::total_cmp);
    let max = *samples.last()?;
    Some((percentile(&samples, 50.0), percentile(&samples, 99.0), max))
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn resident_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether the process has ended (a zombie not yet waited for counts).
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// `(table chain, its rules)` for every chain, sorted.
pub type Tables = Vec<(String, Vec<String>)>;

/// The node, its pods, the API server and (once started) the proxy.
pub struct NodeUnderTest {
    /// kube-proxy's nftables mode (`--proxy-mode nftables`) instead of iptables.
    pub nftables: bool,
    pub topology: Topology,
    pub api: FakeApiServer,
    pub pods: [IpAddr; 2],
    _echo: Vec<EchoServer>,
    pub dir: PathBuf,
    binary: String,
    child: Option<Child>,
}

impl NodeUnderTest {
    /// The namespaces, echo servers in two pods, and the API server holding
    /// the cluster; the proxy is not started yet.
    pub fn new(
        services: usize,
        endpoints: usize,
        label: &str,
    ) -> Result<NodeUnderTest, Box<dyn std::error::Error>> {
        let topology = Topology::new(&["pod-a", "pod-b"])?;
        let pods = [topology.pod("pod-a")?.ip(false), topology.pod("pod-b")?.ip(false)];
        let echo: Vec<EchoServer> = topology
            .pods
            .iter()
            .map(|p| EchoServer::start(&p.netns, &p.name, POD_PORT))
            .collect::<Result<_, _>>()?;
        let listener = topology
            .node
            .enter(|| std::net::TcpListener::bind("127.0.0.1:0"))??;
        let api = FakeApiServer::start(listener);
        api.apply(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a"},
            "spec": {"podCIDR": Topology::POD_CIDR_IPV4},
            "status": {"addresses": [{"type": "InternalIP", "address": Topology::NODE_IPV4.to_string()}]},
        }));
        api.apply_many(cluster(services, endpoints, pods[0]));
        let dir = std::env::temp_dir().join(format!("chainsmith-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("kubeconfig"), api.kubeconfig("default"))?;
        std::fs::write(
            dir.join("proxy.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: node-a\n\
                 clusterCIDR: {}\nconntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n",
                Topology::POD_CIDR_IPV4
            ),
        )?;
        let binary = std::env::var("CHAINSMITH_BIN").unwrap_or_else(|_| "target/release/chainsmith".into());
        Ok(NodeUnderTest {
            nftables: false,
            topology,
            api,
            pods,
            _echo: echo,
            dir,
            binary,
            child: None,
        })
    }

    /// Sets `minSyncPeriod` (e.g. `"250ms"`) of both modes for the next start.
    pub fn set_min_sync_period(&self, period: &str) -> std::io::Result<()> {
        let path = self.dir.join("proxy.yaml");
        let config = std::fs::read_to_string(&path)?;
        std::fs::write(
            path,
            format!("{config}iptables:\n  minSyncPeriod: {period}\nnftables:\n  minSyncPeriod: {period}\n"),
        )
    }

    /// The `duration_ms` of every logged sync of `kind` (`full`, `partial`).
    pub fn logged_sync_durations(&self, kind: &str) -> Vec<f64> {
        let kind = format!("kind=\"{kind}\"");
        self.log()
            .lines()
            .filter(|line| line.contains(" synced "))
            .filter(|line| line.contains(&kind))
            .filter_map(|line| {
                line.split("duration_ms=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Starts `chainsmith run` (iptables mode on the nf_tables backend, or
    /// nftables mode), its log appended to `chainsmith.log`.
    pub fn start_proxy(&mut self) -> Result<u32, Box<dyn std::error::Error>> {
        let mode = if self.nftables { "nftables" } else { "iptables" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("chainsmith.log"))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.topology.node.name(),
                &self.binary,
                "run",
                "--iptables-backend",
                "nft",
                "--proxy-mode",
                mode,
            ])
            .arg(format!("--config={}", self.dir.join("proxy.yaml").display()))
            .arg(format!("--kubeconfig={}", self.dir.join("kubeconfig").display()))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// SIGTERM, and wait for the proxy to end.
    pub fn stop_proxy(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chainsmith.log")).unwrap_or_default()
    }

    /// How long until the probed Service is answered by `pod`; `None` after
    /// `timeout` or if the proxy (`pid`) ended.
    pub fn answered_by(&self, pod: &str, pid: u32, timeout: Duration) -> Option<Duration> {
        let pod = pod.to_owned();
        self.topology
            .client
            .enter(move || {
                let start = Instant::now();
                while start.elapsed() < timeout && !exited(pid) {
                    let result = probe_here(
                        Proto::Tcp,
                        None,
                        IpAddr::V4(PROBED),
                        80,
                        Duration::from_millis(200),
                    );
                    if result.pod() == Some(pod.as_str()) {
                        return Some(start.elapsed());
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                None
            })
            .ok()
            .flatten()
    }

    /// The proxy's `/metrics`, fetched inside the node namespace.
    pub fn metrics(&self) -> String {
        self.topology
            .node
            .enter(|| -> std::io::Result<String> {
                let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 10249));
                let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            })
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// The node's rules, one `(object, lines)` per chain (or set), sorted:
    /// iptables mode's nat and filter tables as `iptables-save` shows them,
    /// without its volatile lines; nftables mode's `kube-proxy` table as the
    /// kernel lists it, in one spelling, without element comments (like
    /// upstream, a sync never rewrites an element whose value is unchanged).
    pub fn tables(&self) -> Result<Tables, Box<dyn std::error::Error>> {
        if self.nftables {
            return self.nft_table();
        }
        let mut chains: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for table in ["filter", "nat"] {
            let dump = self.topology.node.run("iptables-nft-save", &["-t", table])?;
            for line in dump.lines() {
                if let Some(declared) = line.strip_prefix(':') {
                    let name = declared.split(' ').next().unwrap_or_default();
                    chains.entry(format!("{table} {name}")).or_default();
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let name = rule.split(' ').next().unwrap_or_default();
                    chains
                        .entry(format!("{table} {name}"))
                        .or_default()
                        .push(line.to_owned());
                }
            }
        }
        Ok(chains.into_iter().collect())
    }
}

impl NodeUnderTest {
    fn nft_table(&self) -> Result<Tables, Box<dyn std::error::Error>> {
        use chainsmith_nftables::{Family, Op, read_listing};
        let text = self
            .topology
            .node
            .run("nft", &["list", "table", "ip", "kube-proxy"])?;
        let listing = read_listing(&text)?;
        let table = listing.table(Family::Ip).ok_or("no table ip kube-proxy")?;
        let mut objects: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for op in table.canonical().to_ops() {
            let (object, op) = match op {
                Op::AddElement { set, mut element } => {
                    element.comment = None;
                    (format!("set {set}"), Op::AddElement { set, element })
                }
                Op::AddRule { ref chain, .. } => (format!("chain {chain}"), op),
                Op::AddChain(ref spec) => (format!("chain {}", spec.name), op),
                Op::AddSet(ref spec) => (format!("set {}", spec.name), op),
                op => (String::from("table"), op),
            };
            let mut line = String::new();
            op.write(Family::Ip, &mut line);
            objects.entry(object).or_default().push(line);
        }
        Ok(objects.into_iter().collect())
    }
}

impl Drop for NodeUnderTest {
    fn drop(&mut self) {
        self.stop_proxy();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A quantile of a Prometheus histogram, as `histogram_quantile` computes it
/// (linear within the bucket).
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            return Some(
                previous.0 + (le - previous.0) * (rank - previous.1) / (count - previous.1).max(1.0),
            );
        }
        previous = (le, count);
    }
    None
}
