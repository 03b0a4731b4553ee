//! The manifests in `deploy/`, as an operator applies them: each kustomization
//! is rendered by the real kustomize (`kubectl kustomize`), every object must
//! read into its Kubernetes type without losing a field (a misspelt key is
//! dropped by the type, so the round trip differs), and the DaemonSet must hold
//! what a node proxy needs and no more. The init container's command is then
//! run for real, in a network namespace, against the ConfigMap it mounts.
//! (That the ClusterRole grants exactly what the binary asks the API server for
//! is checked by the node tests, which see every request.)

// Test helpers outside #[test] functions may panic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use chainsmith_testkit::{Netns, kernel_tests_enabled};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Resident memory measured at 10k Services x 10 endpoints, at its peak during
/// the first full sync (README, "Performance"); the limit must leave room.
const MEASURED_PEAK_RSS_MIB: u64 = 238;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl kustomize DIR`, split into its objects.
fn render(kustomization: &str) -> Vec<Value> {
    let dir = repo().join(kustomization);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl (its kustomize renders deploy/) is needed: {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
    text.split("\n---\n")
        .map(|doc| {
            serde_saphyr::from_str::<Value>(doc)
                .unwrap_or_else(|e| panic!("{kustomization}: kustomize printed bad YAML: {e}\n{doc}"))
        })
        .collect()
}

/// The one object of `kind` (and `name`), read into its type; the type must
/// hold every field the manifest gives.
fn object<T: DeserializeOwned + serde::Serialize>(objects: &[Value], kind: &str, name: &str) -> T {
    let matching: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(matching.len(), 1, "one {kind} {name}, found {}", matching.len());
    let typed: T = serde_json::from_value(matching[0].clone())
        .unwrap_or_else(|e| panic!("{kind} {name} does not read as a {kind}: {e}"));
    let round_trip = serde_json::to_value(&typed).expect("serialise");
    if &round_trip != matching[0] {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("serialise");
        let (given, read) = (pretty(matching[0]), pretty(&round_trip));
        let diff = similar::TextDiff::from_lines(&given, &read);
        panic!(
            "{kind} {name}: a field is misspelt or misplaced (- as written, + as the type read it):\n{}",
            diff.unified_diff().context_radius(2)
        );
    }
    typed
}

fn every_object_is_typed(objects: &[Value]) {
    for o in objects {
        let name = o["metadata"]["name"].as_str().expect("every object is named");
        match o["kind"].as_str().expect("every object has a kind") {
            "DaemonSet" => drop(object::<DaemonSet>(objects, "DaemonSet", name)),
            "ServiceAccount" => drop(object::<ServiceAccount>(objects, "ServiceAccount", name)),
            "ClusterRole" => drop(object::<ClusterRole>(objects, "ClusterRole", name)),
            "ClusterRoleBinding" => drop(object::<ClusterRoleBinding>(objects, "ClusterRoleBinding", name)),
            "ConfigMap" => drop(object::<ConfigMap>(objects, "ConfigMap", name)),
            other => panic!("unexpected kind {other} in deploy/"),
        }
    }
}

fn mebibytes(quantity: &Quantity) -> u64 {
    let text = quantity.0.as_str();
    let (number, scale) = [("Gi", 1024), ("Mi", 1)]
        .into_iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, scale)))
        .unwrap_or_else(|| panic!("memory {text:?}: write it in Mi or Gi"));
    number.parse::<u64>().expect("a whole number") * scale
}

fn capabilities(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let caps = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap_or_default();
    (
        caps.add.unwrap_or_default().into_iter().collect(),
        caps.drop.unwrap_or_default().into_iter().collect(),
    )
}

fn privileged(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// What every flavour's DaemonSet must be: kube-proxy's place on the node,
/// one privileged init step, an unprivileged proxy.
/// `xtables_lock`: iptables mode shares the node's xtables lock; nftables
/// mode writes over netlink and must not hold it.
fn check_daemonset(ds: &DaemonSet, service_account: &str, config_map: &str, xtables_lock: bool) {
    let spec = &ds.spec;
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true), "the rules are the node's own");
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some(service_account));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.is_none() && t.operator.as_deref() == Some("Exists")),
        "tolerates every taint, as kube-proxy does: {tolerations:?}"
    );
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the selector {selector:?} matches the pods' labels {labels:?}"
    );

    let [proxy] = pod.containers.as_slice() else {
        panic!("one container")
    };
    assert!(!privileged(proxy), "the long-running proxy is not privileged");
    let security = proxy.security_context.as_ref().expect("securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let (added, dropped) = capabilities(proxy);
    assert_eq!(dropped, BTreeSet::from(["ALL".to_owned()]));
    assert_eq!(
        added,
        ["NET_ADMIN", "NET_RAW", "SYS_RESOURCE"].map(String::from).into(),
        "netlink, raw sockets, oom_score_adj: nothing else"
    );
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("an HTTP probe");
        (get.path.unwrap_or_default(), get.port)
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        probe_path(&proxy.liveness_probe),
        ("/livez".to_owned(), IntOrString::Int(10256))
    );
    assert_eq!(
        probe_path(&proxy.readiness_probe),
        ("/healthz".to_owned(), IntOrString::Int(10256))
    );
    let resources = proxy.resources.as_ref().expect("resources");
    let limit = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .expect("a memory limit");
    let request = resources
        .requests
        .as_ref()
        .and_then(|r| r.get("memory"))
        .expect("a memory request");
    assert!(
        mebibytes(limit) >= MEASURED_PEAK_RSS_MIB * 3 / 2,
        "memory limit {limit:?} leaves half the measured peak ({MEASURED_PEAK_RSS_MIB} MiB) again as room"
    );
    assert!(mebibytes(request) <= mebibytes(limit));
    assert!(
        resources.limits.as_ref().is_some_and(|l| !l.contains_key("cpu")),
        "no CPU limit: throttling delays rule updates"
    );

    let mounts: BTreeSet<(String, bool)> = proxy
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.mount_path, m.read_only.unwrap_or(false)))
        .collect();
    assert_eq!(
        mounts.contains(&("/run/xtables.lock".to_owned(), false)),
        xtables_lock,
        "{mounts:?}"
    );
    assert!(mounts.contains(&("/lib/modules".to_owned(), true)), "{mounts:?}");
    let volumes = pod.volumes.clone().unwrap_or_default();
    let host_path = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.clone())
            .map(|h| h.path)
    };
    assert_eq!(
        host_path("xtables-lock").as_deref(),
        xtables_lock.then_some("/run/xtables.lock")
    );
    assert_eq!(host_path("lib-modules").as_deref(), Some("/lib/modules"));
    let config_volume = volumes
        .iter()
        .find(|v| v.name == "config")
        .and_then(|v| v.config_map.clone())
        .expect("a config volume");
    assert_eq!(config_volume.name, config_map);

    let init = pod.init_containers.clone().unwrap_or_default();
    let [prepare] = init.as_slice() else {
        panic!("one init container")
    };
    assert!(privileged(prepare), "only the sysctl step is privileged");
    let prepare_args = prepare.command.clone().unwrap_or_default();
    let proxy_args = proxy.command.clone().unwrap_or_default();
    assert!(prepare_args.contains(&"--prepare-node".to_owned()));
    let common = |args: &[String]| -> Vec<String> {
        args.iter()
            .filter(|a| !matches!(a.as_str(), "--prepare-node" | "--log-json"))
            .cloned()
            .collect()
    };
    assert_eq!(
        common(&prepare_args),
        common(&proxy_args),
        "the init step prepares the node for exactly the proxy's configuration"
    );
}

fn config_map_data(objects: &[Value], name: &str, key: &str) -> String {
    let config_map: ConfigMap = object(objects, "ConfigMap", name);
    config_map
        .data
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"))
}

/// Runs the init container's command in a fresh network namespace, with the
/// mounted file at `config_path` holding `config`: it must accept the
/// configuration and make the node's settings (`route_localnet` only for
/// localhost NodePorts, which nftables mode does not have).
fn run_init_container(ds: &DaemonSet, config_path: &str, config: &str, localhost_node_ports: bool) {
    let netns = Netns::new("deploy").expect("netns");
    // An address, so that the node has an IPv4 family to prepare.
    netns
        .run(
            "ip",
            &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
        )
        .expect("veth");
    netns
        .run("ip", &["addr", "add", "192.0.2.10/24", "dev", "eth0"])
        .expect("addr");
    netns.run("ip", &["link", "set", "eth0", "up"]).expect("up");
    assert_eq!(
        netns
            .run("cat", &["/proc/sys/net/ipv4/conf/all/route_localnet"])
            .expect("read"),
        "0\n"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.conf");
    std::fs::write(&file, config).expect("write config");
    let pod = ds.spec.template.spec.as_ref().expect("pod spec");
    let command = pod.init_containers.as_ref().expect("init")[0]
        .command
        .clone()
        .expect("command");
    assert_eq!(command[0], "/usr/local/bin/chainsmith", "the image's binary");
    let args: Vec<String> = command[1..]
        .iter()
        .map(|arg| {
            arg.replace(config_path, &file.display().to_string())
                .replace("$(NODE_NAME)", "node-1")
        })
        .collect();
    let mut full = vec!["netns", "exec", netns.name(), env!("CARGO_BIN_EXE_chainsmith")];
    full.extend(args.iter().map(String::as_str));
    let output = Command::new("ip").args(&full).output().expect("run chainsmith");
    assert!(
        output.status.success(),
        "the init container's command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sysctl = |path: &str| {
        netns
            .run("cat", &[&format!("/proc/sys/{path}")])
            .expect("read sysctl")
            .trim()
            .to_owned()
    };
    assert_eq!(
        sysctl("net/ipv4/conf/all/route_localnet"),
        if localhost_node_ports { "1" } else { "0" },
        "localhost NodePorts"
    );
    assert_eq!(
        sysctl("net/netfilter/nf_conntrack_tcp_timeout_established"),
        "86400"
    );
    assert_eq!(
        sysctl("net/netfilter/nf_conntrack_tcp_timeout_close_wait"),
        "3600"
    );
}

#[test]
fn base_objects_are_valid_and_least_privileged() {
    let objects = render("deploy/base");
    every_object_is_typed(&objects);
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ])
    );
    let ds: DaemonSet = object(&objects, "DaemonSet", "chainsmith");
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    check_daemonset(&ds, "chainsmith", "chainsmith", true);

    let binding: ClusterRoleBinding = object(&objects, "ClusterRoleBinding", "chainsmith");
    assert_eq!(binding.role_ref.name, "chainsmith");
    let subject = &binding.subjects.as_deref().expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "chainsmith", Some("kube-system"))
    );
    let role: ClusterRole = object(&objects, "ClusterRole", "chainsmith");
    for rule in role.rules.unwrap_or_default() {
        let writes: Vec<&String> = rule
            .verbs
            .iter()
            .filter(|v| !matches!(v.as_str(), "get" | "list" | "watch"))
            .collect();
        let groups = rule.api_groups.unwrap_or_default();
        let resources = rule.resources.unwrap_or_default();
        assert!(
            writes.is_empty()
                || (groups == ["events.k8s.io"] && resources == ["events"] && writes == ["create"]),
            "read-only, but for creating events: {groups:?} {resources:?} {writes:?}"
        );
        assert!(!rule.verbs.iter().any(|v| v == "*"), "no wildcard verbs");
        assert!(!resources.iter().any(|r| r == "*"), "no wildcard resources");
    }
}

#[test]
fn the_replace_kube_proxy_overlay_keeps_kube_proxys_label_and_config() {
    let objects = render("deploy/overlays/replace-kube-proxy");
    every_object_is_typed(&objects);
    assert!(
        !objects.iter().any(|o| o["kind"] == "ConfigMap"),
        "kubeadm's kube-proxy ConfigMap is used, not a second one"
    );
    let ds: DaemonSet = object(&objects, "DaemonSet", "chainsmith");
    check_daemonset(&ds, "chainsmith", "kube-proxy", true);
    let spec = &ds.spec;
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert_eq!(selector.get("k8s-app").map(String::as_str), Some("kube-proxy"));
    let command = spec.template.spec.as_ref().expect("pod").containers[0]
        .command
        .clone()
        .expect("command");
    assert!(
        command.contains(&"--config=/var/lib/kube-proxy/config.conf".to_owned()),
        "{command:?}"
    );
}

#[test]
fn the_init_container_accepts_the_base_configuration() {
    if !kernel_tests_enabled("the_init_container_accepts_the_base_configuration") {
        return;
    }
    let objects = render("deploy/base");
    let ds: DaemonSet = object(&objects, "DaemonSet", "chainsmith");
    let config = config_map_data(&objects, "chainsmith", "config.conf");
    run_init_container(&ds, "/etc/chainsmith/config.conf", &config, true);
}

#[test]
fn the_init_container_accepts_kubeadms_kube_proxy_configuration() {
    if !kernel_tests_enabled("the_init_container_accepts_kubeadms_kube_proxy_configuration") {
        return;
    }
    let objects = render("deploy/overlays/replace-kube-proxy");
    let ds: DaemonSet = object(&objects, "DaemonSet", "chainsmith");
    // The ConfigMap `kubeadm init` creates (v1.33).
    let text =
        std::fs::read_to_string(repo().join("bins/chainsmith/tests/data/kubeadm-kube-proxy-configmap.yaml"))
            .expect("fixture");
    let kubeadm: ConfigMap = serde_saphyr::from_str(&text).expect("the fixture is a ConfigMap");
    let config = kubeadm.data.expect("data")["config.conf"].clone();
    run_init_container(&ds, "/var/lib/kube-proxy/config.conf", &config, true);
}

#[test]
fn the_nftables_overlay_runs_kube_proxys_nftables_mode_without_the_xtables_lock() {
    let objects = render("deploy/overlays/nftables");
    every_object_is_typed(&objects);
    let ds: DaemonSet = object(&objects, "DaemonSet", "chainsmith");
    check_daemonset(&ds, "chainsmith", "chainsmith", false);
    let config = config_map_data(&objects, "chainsmith", "config.conf");
    assert!(config.contains("\nmode: nftables\n"), "{config}");
    if kernel_tests_enabled("the_nftables_overlay_runs_kube_proxys_nftables_mode_without_the_xtables_lock") {
        run_init_container(&ds, "/etc/chainsmith/config.conf", &config, false);
    }
}
