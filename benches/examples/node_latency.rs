//! Event -> rules in the kernel, end to end: the real `chainsmith run` in a
//! node namespace, a fake API server holding a large cluster, and a client
//! whose real packets tell when a change took effect. Each round moves the
//! one endpoint of the probed Service to the other pod and times from the
//! API server's change to the first connection answered by the new pod. Also
//! reports the binary's resident memory once the cluster is programmed.
//! Needs root and a release build of the binary.
//!
//! `cargo build --release -p chainsmith && cargo run --release -p chainsmith-benches --example node_latency -- 10000 10 40`

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chainsmith_fakeapi::FakeApiServer;
use chainsmith_testkit::{EchoServer, Proto, Topology, probe_here};
use serde_json::{Value, json};

const POD_PORT: u16 = 8080;
const PROBED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn service(name: &str, cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "load"},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "p", "protocol": "TCP", "port": 80, "targetPort": POD_PORT}]},
    })
}

fn slice(service: &str, addresses: &[String]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "load",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": addresses.iter().map(|a| json!({
            "addresses": [a], "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": "node-a",
        })).collect::<Vec<_>>(),
        "ports": [{"name": "p", "protocol": "TCP", "port": POD_PORT}],
    })
}

/// The cluster: the probed Service (one endpoint, `pod`) and `services - 1`
/// others whose cluster IPs and endpoints no packet is ever sent to.
fn cluster(services: usize, endpoints: usize, pod: IpAddr) -> Vec<Value> {
    let mut objects = vec![
        service("probed", &PROBED.to_string()),
        slice("probed", &[pod.to_string()]),
    ];
    for i in 1..services {
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let addresses: Vec<String> = (0..endpoints)
            .map(|e| {
                let n = i * endpoints + e;
                format!("10.{}.{}.{}", 128 + n / 62_500, n / 250 % 250, n % 250 + 1)
            })
            .collect();
        objects.push(service(&name, &ip));
        objects.push(slice(&name, &addresses));
    }
    objects
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn resident_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether the process has ended (a zombie not yet waited for counts).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, endpoints, rounds) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(10),
        args.get(2).copied().unwrap_or(40),
    );
    let binary = std::env::var("CHAINSMITH_BIN").unwrap_or_else(|_| "target/release/chainsmith".into());
    let mut out = std::io::stdout().lock();

    let topology = Topology::new(&["pod-a", "pod-b"])?;
    let pods = [topology.pod("pod-a")?.ip(false), topology.pod("pod-b")?.ip(false)];
    let _echo: Vec<EchoServer> = topology
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

    let dir = std::env::temp_dir().join(format!("chainsmith-latency-{}", std::process::id()));
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
    let log = std::fs::File::create(dir.join("chainsmith.log"))?;
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            topology.node.name(),
            &binary,
            "run",
            "--iptables-backend",
            "nft",
        ])
        .arg(format!("--config={}", dir.join("proxy.yaml").display()))
        .arg(format!("--kubeconfig={}", dir.join("kubeconfig").display()))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pid = child.id();

    // Answered by `pod`: the rules for the current endpoint are in the kernel.
    let answered_by = |pod: &str, timeout: Duration| -> Option<Duration> {
        let pod = pod.to_owned();
        topology
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
    };
    let Some(first) = answered_by("pod-a", Duration::from_secs(900)) else {
        let _ = child.kill();
        return Err(format!(
            "the first sync never answered; see {}",
            dir.join("chainsmith.log").display()
        )
        .into());
    };
    writeln!(
        out,
        "{services} services x {endpoints} endpoints: first sync answered after {:.1} s; RSS {} MiB (peak {} MiB)",
        first.as_secs_f64(),
        resident_kib(pid, "VmRSS:") / 1024,
        resident_kib(pid, "VmHWM:") / 1024,
    )?;

    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Spaced beyond minSyncPeriod (1 s), so each change syncs at once.
        std::thread::sleep(Duration::from_millis(1100));
        let target = (round + 1) % 2;
        let changed = Instant::now();
        api.apply(slice("probed", &[pods[target].to_string()]));
        let name = ["pod-a", "pod-b"][target];
        match answered_by(name, Duration::from_secs(30)) {
            Some(_) => latencies.push(changed.elapsed().as_secs_f64() * 1000.0),
            None => {
                let _ = child.kill();
                return Err(format!("round {round}: {name} never answered").into());
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    writeln!(
        out,
        "event -> rules in the kernel over {rounds} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS {} MiB",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        resident_kib(pid, "VmRSS:") / 1024,
    )?;
    let log = std::fs::read_to_string(dir.join("chainsmith.log"))?;
    let mut partial: Vec<f64> = log
        .lines()
        .filter(|l| l.contains(" synced") && l.contains("partial"))
        .filter_map(|l| {
            l.split("duration_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    partial.sort_by(f64::total_cmp);
    if !partial.is_empty() {
        writeln!(
            out,
            "of which the sync itself (plan, write, iptables-restore): p50 {:.1} ms, p99 {:.1} ms over {} partial syncs",
            percentile(&partial, 50.0),
            percentile(&partial, 99.0),
            partial.len()
        )?;
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
