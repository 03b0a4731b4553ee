//! The applier against real iptables in network namespaces the tests create,
//! on the nf_tables and the legacy backend.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chainsmith_applier::{
    Applier, ApplyError, Backend, CommandOutput, NetnsRunner, Runner, Tools, backend_in_use,
};
use chainsmith_iptables::BUILTIN_JUMPS;
use chainsmith_model::{
    AddressType, ClusterIps, Endpoint, EndpointPort, EndpointSlice, IpFamily, LocalTrafficDetector,
    NodeConfig, ObjectKey, Protocol, Service, ServicePort,
};
use chainsmith_sync::{PartialSyncMode, SyncEngine};
use chainsmith_testkit::{Netns, kernel_tests_enabled};

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))),
        local_traffic_detector: LocalTrafficDetector::ClusterCidr("192.0.2.0/24".parse().expect("cidr")),
        ..NodeConfig::default()
    }
}

fn service(i: u8) -> (Service, EndpointSlice) {
    let key = ObjectKey::new("ns", format!("svc{i}"));
    let mut service = Service::new(key.clone());
    service.cluster_ips = ClusterIps {
        v4: Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))),
        v6: None,
    };
    service.ports.push(ServicePort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: 0,
    });
    let slice = EndpointSlice {
        key: ObjectKey::new("ns", format!("svc{i}-a")),
        service: key,
        address_type: AddressType::Ipv4,
        ports: vec![EndpointPort {
            name: "http".into(),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        endpoints: vec![Endpoint::ready(IpAddr::V4(Ipv4Addr::new(
            192,
            0,
            2,
            10u8.wrapping_add(i),
        )))],
    };
    (service, slice)
}

fn applier(netns: &Netns, backend: Backend) -> Applier {
    let runner = NetnsRunner::new(netns.name());
    let tools = Tools::detect(&runner, IpFamily::V4, Some(backend)).expect("tools");
    Applier::new(tools, Box::new(runner))
}

/// The first sync of a small cluster, as the node binary will do it.
/// `iptables-save -t TABLE` without its `# Generated ... on <time>` lines, which
/// differ whenever two dumps straddle a second.
fn saved_rules(applier: &Applier, table: &str) -> String {
    let dump = applier.save_table(table).expect("iptables-save");
    dump.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn first_sync(applier: &Applier) -> SyncEngine {
    let mut config = node();
    config.iptables_has_random_fully = applier.tools().random_fully;
    let available = applier.ensure_nfacct(&["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"]);
    config.nfacct.ct_state_invalid_dropped_pkts = available[0].1;
    config.nfacct.localhost_nps_accepted_pkts = available[1].1;
    let mut engine = SyncEngine::new(config, PartialSyncMode::Minimal);
    let (services, slices): (Vec<_>, Vec<_>) = (1..=3).map(service).unzip();
    engine.replace_state(&services, &slices);
    let payload = engine.sync(0, false).payload.to_vec();
    applier.apply(&payload).expect("first sync");
    engine.commit(true);
    applier.ensure_jumps(&BUILTIN_JUMPS).expect("jumps");
    applier.ensure_canaries().expect("canaries");
    engine
}

#[test]
fn applies_payloads_jumps_and_canaries_idempotently() {
    if !kernel_tests_enabled("applies_payloads_jumps_and_canaries_idempotently") {
        return;
    }
    for backend in [Backend::NfTables, Backend::Legacy] {
        let netns = Netns::new("applier").expect("netns");
        let applier = applier(&netns, backend);
        assert_eq!(applier.tools().backend, backend);
        first_sync(&applier);
        assert_eq!(
            applier.ensure_jumps(&BUILTIN_JUMPS).expect("again"),
            0,
            "{backend:?}: jumps are only inserted once"
        );
        // As after a restart: the counters exist and rules use them.
        assert!(
            applier
                .ensure_nfacct(&["ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"])
                .iter()
                .all(|(_, exists)| *exists),
            "{backend:?}: existing nfacct counters are found again"
        );
        assert!(
            applier
                .save_table("filter")
                .expect("save")
                .contains("--nfacct-name")
        );
        let filter = applier.save_table("filter").expect("save");
        // Each jump is inserted at the top, so the last inserted comes first.
        let input: Vec<&str> = filter.lines().filter(|l| l.starts_with("-A INPUT ")).collect();
        let order: Vec<&str> = input.iter().filter_map(|l| l.split("-j ").nth(1)).collect();
        assert_eq!(
            order,
            [
                "KUBE-FIREWALL",
                "KUBE-PROXY-FIREWALL",
                "KUBE-NODEPORTS",
                "KUBE-EXTERNAL-SERVICES"
            ],
            "{backend:?}"
        );
        let nat = applier.save_table("nat").expect("save");
        assert!(
            nat.contains(
                "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            ),
            "{nat}"
        );
        assert_eq!(
            nat.matches("-j KUBE-SEP-").count(),
            3,
            "{backend:?}: three endpoints"
        );
        for table in ["mangle", "nat", "filter"] {
            assert!(applier.canary_present(table).expect("canary"));
        }
        netns
            .run(
                applier.tools().iptables(),
                &["-t", "mangle", "-X", "KUBE-PROXY-CANARY"],
            )
            .expect("delete canary");
        assert!(
            !applier.canary_present("mangle").expect("canary"),
            "{backend:?}: a deleted canary is noticed"
        );
    }
}

#[test]
fn a_refused_payload_names_its_line_and_keeps_the_previous_rules() {
    if !kernel_tests_enabled("a_refused_payload_names_its_line_and_keeps_the_previous_rules") {
        return;
    }
    for backend in [Backend::NfTables, Backend::Legacy] {
        let netns = Netns::new("refused").expect("netns");
        let applier = applier(&netns, backend);
        first_sync(&applier);
        let before = saved_rules(&applier, "nat");
        let bad = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m tcp -p tcp -d 198.51.100.9 --dport 80 -j KUBE-SVC-DOESNOTEXIST00\nCOMMIT\n";
        let error = applier.apply(bad.as_bytes()).expect_err("must be refused");
        let ApplyError::Restore { line, message, .. } = &error else {
            panic!("{error}")
        };
        assert!(line.is_some(), "{backend:?}: the failing line is named: {error}");
        assert!(!message.is_empty());
        assert_eq!(
            saved_rules(&applier, "nat"),
            before,
            "{backend:?}: nothing of the refused table applied"
        );
    }
}

#[test]
fn cleanup_removes_everything_it_installed() {
    if !kernel_tests_enabled("cleanup_removes_everything_it_installed") {
        return;
    }
    for backend in [Backend::NfTables, Backend::Legacy] {
        let netns = Netns::new("cleanup").expect("netns");
        let applier = applier(&netns, backend);
        first_sync(&applier);
        let deleted = applier.cleanup().expect("cleanup");
        assert!(deleted >= 14, "{backend:?}: {deleted}");
        for table in ["filter", "nat", "mangle"] {
            let left: Vec<String> = applier
                .existing_chains(table)
                .expect("chains")
                .into_iter()
                .filter(|c| c.starts_with("KUBE-"))
                .collect();
            // Only kubelet's KUBE-FIREWALL stays, as with kube-proxy --cleanup.
            assert!(
                left.iter().all(|c| c == "KUBE-FIREWALL"),
                "{backend:?} {table}: {left:?}"
            );
        }
        let filter = applier.save_table("filter").expect("save");
        assert!(
            !filter.contains("KUBE-SERVICES") && !filter.contains("KUBE-NODEPORTS"),
            "{filter}"
        );
    }
}

/// A full sync split into batches leaves exactly what one restore leaves.
#[test]
fn batched_full_sync_equals_one_restore() {
    if !kernel_tests_enabled("batched_full_sync_equals_one_restore") {
        return;
    }
    let (services, slices): (Vec<_>, Vec<_>) = (1..=200).map(|i| service(i as u8)).unzip();
    let mut tables = Vec::new();
    for batched in [true, false] {
        let netns = Netns::new("batch").expect("netns");
        let applier = applier(&netns, Backend::NfTables);
        let mut config = node();
        config.nfacct = Default::default();
        let mut engine = SyncEngine::new(config, PartialSyncMode::Minimal);
        engine.replace_state(&services, &slices);
        let payload = engine.sync(0, true).payload.to_vec();
        let report = if batched {
            applier.apply_full(&payload)
        } else {
            applier.apply(&payload)
        }
        .expect("apply");
        if batched {
            assert!(report.restores > 1, "{report:?}");
        }
        tables.push((saved_rules(&applier, "filter"), saved_rules(&applier, "nat")));
    }
    assert_eq!(tables[0], tables[1]);
}

/// Without `--iptables-backend`, the proxy writes where the kubelet does: its
/// chains in mangle decide, else the backend with more rules, else nothing.
#[test]
fn finds_the_backend_the_kubelet_writes_with() {
    if !kernel_tests_enabled("finds_the_backend_the_kubelet_writes_with") {
        return;
    }
    let netns = Netns::new("backend").expect("netns");
    let runner = NetnsRunner::new(netns.name());
    assert_eq!(backend_in_use(&runner), None, "an empty node tells nothing");

    netns
        .run("iptables-legacy", &["-t", "mangle", "-N", "KUBE-KUBELET-CANARY"])
        .expect("legacy chain");
    assert_eq!(backend_in_use(&runner), Some(Backend::Legacy));

    // The kubelet's chains in both: the rules decide.
    netns
        .run("ip6tables-nft", &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"])
        .expect("nft chain");
    assert_eq!(backend_in_use(&runner), None, "a tie, and no rules either");
    netns
        .run(
            "iptables-nft",
            &["-A", "INPUT", "-s", "192.0.2.1", "-j", "ACCEPT"],
        )
        .expect("nft rule");
    assert_eq!(backend_in_use(&runner), Some(Backend::NfTables));

    // No kubelet at all: a CNI plugin's rules alone.
    let plain = Netns::new("backend").expect("netns");
    let runner = NetnsRunner::new(plain.name());
    plain
        .run(
            "iptables-legacy",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "192.0.2.0/24",
                "-j",
                "MASQUERADE",
            ],
        )
        .expect("legacy rule");
    assert_eq!(backend_in_use(&runner), Some(Backend::Legacy));
}

/// Runs commands in a namespace with the xtables lock at `lock` instead of
/// the host's /run/xtables.lock, so that holding it stalls nothing else.
struct PrivateLockRunner {
    inner: NetnsRunner,
    lock: String,
}

impl Runner for PrivateLockRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
        let lock = format!("XTABLES_LOCKFILE={}", self.lock);
        let mut full = vec![lock.as_str(), program];
        full.extend_from_slice(args);
        self.inner.run("env", &full, stdin)
    }
}

/// Another process holds the xtables lock (legacy backend): the restore gives
/// up after 5 s with iptables' own message and changes nothing; once the lock
/// is free the same payload applies.
#[test]
fn a_held_xtables_lock_fails_the_restore_after_five_seconds() {
    if !kernel_tests_enabled("a_held_xtables_lock_fails_the_restore_after_five_seconds") {
        return;
    }
    let netns = Netns::new("lock").expect("netns");
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join("xtables.lock").display().to_string();
    let runner = PrivateLockRunner {
        inner: NetnsRunner::new(netns.name()),
        lock: lock.clone(),
    };
    let tools = Tools::detect(&runner, IpFamily::V4, Some(Backend::Legacy)).expect("tools");
    let applier = Applier::new(tools, Box::new(runner));
    let payload = b"*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n";

    let mut holder = std::process::Command::new("flock")
        .args(["--no-fork", lock.as_str(), "sleep", "30"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let error = applier.apply(payload).expect_err("the lock is held");
    let waited = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(20),
        "gave up after {waited:?}"
    );
    assert!(error.to_string().contains("xtables lock"), "{error}");
    assert!(!saved_rules(&applier, "nat").contains("KUBE-SERVICES"));

    applier.apply(payload).expect("the lock is free");
    assert!(saved_rules(&applier, "nat").contains(":KUBE-SERVICES"));
}

/// An iptables-restore that never returns is killed after the runner's
/// timeout, with everything it started; the error says so.
#[test]
fn a_hung_restore_is_killed_after_the_timeout() {
    if !kernel_tests_enabled("a_hung_restore_is_killed_after_the_timeout") {
        return;
    }
    let netns = Netns::new("hang").expect("netns");
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("hung-restore-ran");
    // A restore that reads its payload, leaves a child behind and sleeps.
    let script = format!(
        "cat >/dev/null; (sleep 300; echo leaked) & touch '{}'; sleep 300",
        marker.display()
    );
    struct HangingRestore {
        inner: NetnsRunner,
        script: String,
    }
    impl Runner for HangingRestore {
        fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<CommandOutput> {
            if program.ends_with("-restore") {
                self.inner.run("sh", &["-c", &self.script], stdin)
            } else {
                self.inner.run(program, args, stdin)
            }
        }
    }
    let runner = HangingRestore {
        inner: NetnsRunner::new(netns.name()).with_timeout(Duration::from_secs(1)),
        script,
    };
    let tools = Tools::detect(&runner, IpFamily::V4, Some(Backend::NfTables)).expect("tools");
    let applier = Applier::new(tools, Box::new(runner));
    let started = Instant::now();
    let error = applier
        .apply(b"*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n")
        .expect_err("killed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(marker.exists(), "the hanging restore ran");
    assert!(
        error.to_string().contains("still running after 1 s, killed"),
        "{error}"
    );
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 300"])
        .output()
        .expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "the restore's children were killed too: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}
