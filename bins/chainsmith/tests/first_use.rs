//! What a first-time user ran into (issue 14, item 10), through the real
//! binary: each test is one of the reported problems, run as the user ran it.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `tests/data/first-use`: a node whose settings draw a planner warning and a
/// cluster with a bad field, headless, ExternalName, other-proxy and
/// IPv6-only Services.
fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/first-use")
}

/// Runs `chainsmith ARGS` in the data directory (diagnostics name files
/// relatively).
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(args)
        .current_dir(data())
        .output()
        .expect("run chainsmith")
}

/// stdout and stderr of a run that must succeed.
fn ok(args: &[&str]) -> (String, String) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chainsmith {args:?} failed: {stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// stderr of a run that must fail with exit status 2 (trouble).
fn refused(args: &[&str]) -> String {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "chainsmith {args:?}: {stderr}");
    stderr
}

#[test]
fn every_diagnostic_is_printed_once() {
    let base = ["--node", "node.yaml", "cluster.yaml"];
    let commands: [&[&str]; 6] = [
        &["compile"],
        &["compile", "--mode", "nftables"],
        &["explain", "shop/web"],
        &["explain", "--mode", "nftables", "shop/web"],
        &[
            "trace",
            "--src",
            "10.244.0.9",
            "--dst",
            "10.96.0.50",
            "--dport",
            "80",
        ],
        &[
            "trace",
            "--mode",
            "nftables",
            "--src",
            "10.244.0.9",
            "--dst",
            "10.96.0.50",
            "--dport",
            "80",
        ],
    ];
    for command in commands {
        let mut args = command.to_vec();
        // The Service to explain comes last.
        let at = if command[0] == "explain" {
            args.len() - 1
        } else {
            args.len()
        };
        args.splice(at..at, base);
        let (_, stderr) = ok(&args);
        let lines: Vec<&str> = stderr.lines().collect();
        for line in &lines {
            assert_eq!(
                lines.iter().filter(|l| *l == line).count(),
                1,
                "chainsmith {args:?} printed {line:?} more than once:\n{stderr}"
            );
        }
        // Both kinds are there: the manifest's and the node's.
        assert!(stderr.contains("spec.externalIPs[1]"), "{args:?}: {stderr}");
        assert!(stderr.contains("nodePortAddresses"), "{args:?}: {stderr}");
    }
}

#[test]
fn explain_says_why_a_service_gets_no_rules() {
    let cases = [
        ("shop/db", "it is headless (spec.clusterIP is None or empty)"),
        ("shop/payments", "it is an ExternalName Service"),
        (
            "shop/mesh",
            "service.kubernetes.io/service-proxy-name: another proxy programs it",
        ),
        (
            "shop/web6",
            "it has no IPv4 cluster IP (it is IPv6 only: fd00:10:96::50)",
        ),
        (
            "shop/stats",
            "spec.ports[0].protocol: unknown protocol \"HTTP\" (port skipped) (cluster.yaml:",
        ),
    ];
    for (service, why) in cases {
        for mode in ["iptables", "nftables"] {
            let (stdout, _) = ok(&[
                "explain",
                "--mode",
                mode,
                "--node",
                "node.yaml",
                "cluster.yaml",
                service,
            ]);
            assert!(
                stdout.starts_with(&format!(
                    "Service {service}: nothing is programmed for it on this node\n"
                )),
                "{service}: {stdout}"
            );
            assert!(stdout.contains(why), "{service}: {stdout}");
        }
    }
    // Where the reason comes from the manifest, it says where.
    let (stdout, _) = ok(&["explain", "--node", "node.yaml", "cluster.yaml", "shop/db"]);
    assert!(stdout.contains("(cluster.yaml:4"), "{stdout}");
    // A Service the manifests do not hold is still an error.
    let stderr = refused(&["explain", "--node", "node.yaml", "cluster.yaml", "shop/nope"]);
    assert!(
        stderr.ends_with("error: no Service shop/nope in the manifests\n"),
        "{stderr}"
    );
}

#[test]
fn an_external_name_service_is_called_that() {
    let (_, stderr) = ok(&["compile", "--node", "node.yaml", "cluster.yaml"]);
    assert!(
        stderr.contains(
            "Service shop/payments: spec.type: ExternalName Services are not proxied (Service skipped)"
        ),
        "{stderr}"
    );
}

#[test]
fn compile_notes_services_of_the_other_family() {
    for mode in ["iptables", "nftables"] {
        let (stdout, stderr) = ok(&["compile", "--mode", mode, "--node", "node.yaml", "cluster.yaml"]);
        assert!(
            stderr.contains(
                "note: Service shop/web6: spec.clusterIPs: IPv6 only (fd00:10:96::50): no IPv4 rules for \
                 it (an IPv6 proxier programs it)\n"
            ),
            "{mode}: {stderr}"
        );
        assert!(!stdout.contains("shop/web6"), "{mode}");
    }
    // Dual-stack Services have rules in both families: no note.
    let dual = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../snapshots/fixtures/dual-stack.yaml");
    let (_, stderr) = ok(&["compile", dual.to_str().unwrap()]);
    assert!(!stderr.contains("spec.clusterIPs"), "{stderr}");
}

#[test]
fn trace_affinity_must_name_a_list_the_rules_use() {
    let trace = ["trace", "--node", "node.yaml", "cluster.yaml"];
    let packet = ["--src", "10.244.0.9", "--dst", "10.96.0.50", "--dport", "80"];
    let cases = [
        (
            "iptables",
            "KUBE-SEP-34ZZ2QFGO32YYXXO",
            "-m recent lists (2 in all: KUBE-SEP-34ZZ2QFGO32YYXXO, KUBE-SEP-6VCK77QPODAJLWFH)",
        ),
        (
            "nftables",
            "affinity-FDH7QP7U-shop/web/tcp/http__10.244.1.5/8080",
            "affinity sets (2 in all: affinity-FDH7QP7U-shop/web/tcp/http__10.244.1.5/8080, \
             affinity-NEDU63VM-shop/web/tcp/http__10.244.2.6/8080)",
        ),
    ];
    for (mode, list, known) in cases {
        let with = |affinity: &str| -> Vec<String> {
            let mut args: Vec<String> = trace.iter().chain(&packet).map(ToString::to_string).collect();
            args.extend(["--mode", mode, "--affinity", affinity].map(String::from));
            args
        };
        let args = with(list);
        let (stdout, _) = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            stdout.contains(&format!("Verdict: sent to 10.244.1.5:8080, the client's address is kept, session affinity recorded in {list}")),
            "{mode}: {stdout}"
        );
        // A typo, or another set of the table (the cluster-IP set), is refused.
        for bogus in ["KUBE-SEP-NOSUCHCHAIN00000", "cluster-ips"] {
            let args = with(bogus);
            let stderr = refused(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                stderr.contains(&format!(
                    "error: --affinity {bogus}: no such name among the rules' {known}"
                )),
                "{mode}: {stderr}"
            );
        }
    }
    // Rules without session affinity say so.
    let stderr = refused(&[
        "trace",
        "--example",
        "seed",
        "--src",
        "10.0.0.9",
        "--dst",
        "10.0.0.1",
        "--dport",
        "80",
        "--affinity",
        "KUBE-SEP-X",
    ]);
    assert!(
        stderr.contains(
            "error: --affinity KUBE-SEP-X: these rules have no session affinity (no -m recent lists)"
        ),
        "{stderr}"
    );
}

/// Counts agree with their nouns: `1 rule missing`, never `1 rules`.
fn assert_no_bad_plural(text: &str) {
    for noun in [
        "rules",
        "chains",
        "objects",
        "values",
        "states",
        "lines",
        "operations",
        "bytes",
    ] {
        assert!(!text.contains(&format!(" 1 {noun}")), "\"1 {noun}\" in:\n{text}");
    }
}

#[test]
fn one_is_singular() {
    // The compiled rules less one rule of one endpoint chain (and without the
    // jumps a node has in its built-in chains, so several chains differ).
    let (compiled, _) = ok(&["compile", "--node", "node.yaml", "cluster.yaml"]);
    let dump: String = compiled
        .lines()
        .filter(|l| !(l.starts_with("-A KUBE-SEP-34ZZ2QFGO32YYXXO ") && l.contains(" DNAT ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dump.txt");
    std::fs::write(&path, dump).unwrap();
    let output = run(&[
        "diff",
        "--node",
        "node.yaml",
        "cluster.yaml",
        "--rules",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("nat KUBE-SEP-34ZZ2QFGO32YYXXO: changed: 1 rule missing, 0 rules extra\n"),
        "{text}"
    );
    assert!(
        text.contains(" chains differ (- should be there, + should not)\n"),
        "{text}"
    );
    assert_no_bad_plural(&text);
    let stderr = refused(&[
        "replay",
        "--node",
        "node.yaml",
        "--out",
        dir.path().to_str().unwrap(),
        "--clock",
        "0",
        "cluster.yaml",
        "cluster.yaml",
    ]);
    assert!(
        stderr.contains("error: --clock has 1 value for 2 states"),
        "{stderr}"
    );
}

/// The file names in a directory, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn replay_out_holds_only_this_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine\n").unwrap();
    let replay = |extra: &[&'static str]| -> (String, String) {
        let mut args = vec!["replay", "--node", "node.yaml", "--out", out_arg];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let (_, stderr) = replay(&["cluster.yaml", "cluster.yaml", "cluster.yaml"]);
    assert!(!stderr.contains("removed"), "{stderr}");
    assert_eq!(listing(&out).len(), 7);
    // A shorter run in the other mode: none of the first run's syncs are left.
    let (_, stderr) = replay(&["--mode", "nftables", "cluster.yaml"]);
    assert!(
        stderr.contains(&format!(
            "note: removed 6 files an earlier replay wrote to {out_arg}\n"
        )),
        "{stderr}"
    );
    assert_eq!(listing(&out), ["01.metrics", "01.nft", "notes.txt"]);
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine\n");
}

#[test]
fn replay_reads_every_state_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Service\nmetadata: {name: [a\n").unwrap();
    let out = dir.path().join("out");
    let out_arg = out.to_str().unwrap();
    let args = [
        "replay",
        "--node",
        "node.yaml",
        "--out",
        out_arg,
        "cluster.yaml",
        bad.to_str().unwrap(),
    ];
    let stderr = refused(&args);
    assert!(
        stderr.contains(&format!("error: {}:2:", bad.display())),
        "{stderr}"
    );
    assert!(
        !out.join("01.iptables").exists(),
        "sync 01 was written before the bad state was read"
    );
    // An earlier run's output is left as it was.
    ok(&["replay", "--node", "node.yaml", "--out", out_arg, "cluster.yaml"]);
    let before = listing(&out);
    refused(&args);
    assert_eq!(listing(&out), before);
}

#[test]
fn explain_speaks_json_too() {
    for mode in ["iptables", "nftables"] {
        let base = [
            "explain",
            "--mode",
            mode,
            "--node",
            "node.yaml",
            "cluster.yaml",
            "shop/web",
        ];
        let (text, _) = ok(&base);
        let (json, _) = ok(&[&base[..], &["--output", "json"]].concat());
        let answer: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(answer["service"], "shop/web");
        assert_eq!(answer["mode"], mode);
        assert_eq!(answer["programmed"], true);
        let ports = answer["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        let port = &ports[0];
        assert_eq!(
            (port["port"].as_u64(), port["protocol"].as_str()),
            (Some(80), Some("TCP"))
        );
        assert_eq!(port["external_traffic_policy"], "Cluster");
        let endpoints: Vec<&str> = port["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"].as_str().unwrap())
            .collect();
        assert_eq!(endpoints, ["10.244.1.5:8080", "10.244.2.6:8080"]);
        let entries = port["entry_points"].as_array().unwrap();
        let kinds: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["kind"].as_str().unwrap(), e["address"].as_str().unwrap()))
            .collect();
        // The refused external IP (203.0.113.300) is not among them.
        assert_eq!(
            kinds,
            [("cluster IP", "10.96.0.50"), ("external IP", "203.0.113.7")]
        );
        // Every sample packet: the sentence the text prints, and its outcomes.
        for entry in entries {
            for case in entry["from"].as_array().unwrap() {
                let line = format!(
                    "    from {} ({}): {}\n",
                    case["sender"].as_str().unwrap(),
                    case["src"].as_str().unwrap(),
                    case["summary"].as_str().unwrap()
                );
                assert!(text.contains(&line), "{mode}: {line:?} not in\n{text}");
                let outcomes = case["outcomes"].as_array().unwrap();
                let total: f64 = outcomes.iter().map(|o| o["probability"].as_f64().unwrap()).sum();
                assert!((total - 1.0).abs() < 1e-9, "{mode}: {case}");
                assert!(outcomes.iter().all(|o| o.get("path").is_none()));
            }
        }
        // A Service that gets no rules says why, in JSON as well.
        let (json, _) = ok(&[
            "explain",
            "--mode",
            mode,
            "--output",
            "json",
            "--node",
            "node.yaml",
            "cluster.yaml",
            "shop/db",
        ]);
        let answer: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(answer["programmed"], false);
        assert_eq!(answer["ports"].as_array().unwrap().len(), 0);
        assert!(
            answer["why_not_programmed"][0]
                .as_str()
                .unwrap()
                .starts_with("it is headless"),
            "{answer}"
        );
    }
}

#[test]
fn warnings_name_the_fields_line() {
    let (_, stderr) = ok(&["compile", "--node", "node.yaml", "cluster.yaml"]);
    // The Service starts at line 4; its bad external IP is on line 14.
    assert!(
        stderr.contains(
            "warning: cluster.yaml:14: Service shop/web: spec.externalIPs[1]: invalid IP address \
             \"203.0.113.300\" (skipped)\n"
        ),
        "{stderr}"
    );
    // A note about a skipped object stays on the object.
    assert!(
        stderr.contains("note: cluster.yaml:41: Service shop/db: spec.clusterIP: headless"),
        "{stderr}"
    );
}
