//! The layering of the workspace, checked rather than hoped for.
//!
//! Data flows one way: Kubernetes objects -> model -> plan (decisions) ->
//! layout (rules) -> restore or nft text -> kernel. The crates that compute
//! (model, naming, iptables, nftables, planner, layout, nft-layout, restore,
//! sync, tracer, nft-tracer) are
//! pure: no async runtime, no Kubernetes client, no HTTP, no metrics registry,
//! no randomness, no processes, files or clocks. Only the translation crate
//! and the node crate know `k8s-openapi`; only the applier (iptables-restore),
//! the nft-netlink applier (nf_tables over netlink), the node crate and the
//! binary touch the world.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Workspace crates each crate may depend on (normal dependencies).
///
/// The seam between decisions and rules: the planner decides (and knows no
/// rule vocabulary), a layout turns decisions into rules of the iptables
/// vocabulary, the renderer spells them. A new layout is a module of
/// `chainsmith-layout`; nftables mode is `chainsmith-nft-layout`, beside it,
/// reading the same plans and writing the nftables vocabulary
/// (`chainsmith-nftables`), which knows nothing of iptables or the planner.
/// The tracer, applier and test kit share the vocabulary, the fixed chain
/// layout and the reading of iptables text (`chainsmith-iptables`) without the
/// planner; the tracer needs nothing of the renderer.
const LAYERS: &[(&str, &[&str])] = &[
    ("chainsmith-model", &[]),
    ("chainsmith-naming", &[]),
    ("chainsmith-iptables", &["chainsmith-model"]),
    ("chainsmith-nftables", &[]),
    ("chainsmith-changes", &["chainsmith-model", "chainsmith-planner"]),
    ("chainsmith-k8s", &["chainsmith-model"]),
    ("chainsmith-planner", &["chainsmith-model", "chainsmith-naming"]),
    (
        "chainsmith-layout",
        &[
            "chainsmith-iptables",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-planner",
        ],
    ),
    (
        "chainsmith-nft-layout",
        &[
            "chainsmith-changes",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-nftables",
            "chainsmith-planner",
        ],
    ),
    (
        "chainsmith-restore",
        &[
            "chainsmith-changes",
            "chainsmith-iptables",
            "chainsmith-layout",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-planner",
        ],
    ),
    (
        "chainsmith-sync",
        &[
            "chainsmith-changes",
            "chainsmith-iptables",
            "chainsmith-layout",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-nft-layout",
            "chainsmith-nftables",
            "chainsmith-planner",
            "chainsmith-restore",
        ],
    ),
    ("chainsmith-tracer", &["chainsmith-iptables", "chainsmith-model"]),
    // nftables mode's tracer reads tables of the nftables vocabulary, and
    // like the iptables tracer nothing of how they were generated.
    (
        "chainsmith-nft-tracer",
        &["chainsmith-model", "chainsmith-nftables"],
    ),
    (
        "chainsmith-applier",
        &[
            "chainsmith-iptables",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-restore",
        ],
    ),
    (
        "chainsmith-node",
        &[
            "chainsmith-applier",
            "chainsmith-iptables",
            "chainsmith-k8s",
            "chainsmith-layout",
            "chainsmith-model",
            "chainsmith-naming",
            "chainsmith-nft-netlink",
            "chainsmith-nftables",
            "chainsmith-planner",
            "chainsmith-sync",
            "chainsmith-tracer",
        ],
    ),
    // nftables mode's edge: applies transactions of the nftables vocabulary
    // over netlink (I/O, so not pure), knowing nothing of how they were made.
    (
        "chainsmith-nft-netlink",
        &["chainsmith-model", "chainsmith-nftables"],
    ),
    // Test support: the fake API server stands alone, the kernel test kit
    // only knows the iptables and nftables vocabularies.
    ("chainsmith-fakeapi", &[]),
    (
        "chainsmith-testkit",
        &["chainsmith-iptables", "chainsmith-nftables"],
    ),
];

const PURE: &[&str] = &[
    "chainsmith-model",
    "chainsmith-naming",
    "chainsmith-changes",
    "chainsmith-iptables",
    "chainsmith-nftables",
    "chainsmith-planner",
    "chainsmith-layout",
    "chainsmith-nft-layout",
    "chainsmith-restore",
    "chainsmith-sync",
    "chainsmith-tracer",
    "chainsmith-nft-tracer",
];

/// External crates no pure crate may pull in, even indirectly.
const FORBIDDEN_IN_PURE: &[&str] = &[
    "tokio",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "hyper",
    "prometheus",
    "rand",
    "serde-saphyr",
];

/// External crates the translation layer and the benches must not pull in.
const FORBIDDEN_IN_TRANSLATION: &[&str] = &[
    "tokio",
    "kube",
    "kube-client",
    "kube-runtime",
    "hyper",
    "prometheus",
    "rand",
];

struct Metadata {
    names: BTreeMap<String, String>,
    members: BTreeSet<String>,
    deps: BTreeMap<String, Vec<String>>,
    manifests: BTreeMap<String, PathBuf>,
}

fn metadata() -> Metadata {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).expect("metadata json");
    let mut names = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for package in json["packages"].as_array().expect("packages") {
        let id = package["id"].as_str().expect("id").to_string();
        names.insert(id.clone(), package["name"].as_str().expect("name").to_string());
        manifests.insert(
            id,
            PathBuf::from(package["manifest_path"].as_str().expect("manifest")),
        );
    }
    let members = json["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    let mut deps = BTreeMap::new();
    for node in json["resolve"]["nodes"].as_array().expect("resolve") {
        let normal: Vec<String> = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|kind| kind["kind"].is_null())
            })
            .filter_map(|dep| dep["pkg"].as_str().map(String::from))
            .collect();
        deps.insert(node["id"].as_str().expect("id").to_string(), normal);
    }
    Metadata {
        names,
        members,
        deps,
        manifests,
    }
}

impl Metadata {
    fn id_of(&self, name: &str) -> String {
        self.members
            .iter()
            .find(|id| self.names[*id] == name)
            .unwrap_or_else(|| panic!("no member {name}"))
            .clone()
    }

    fn transitive(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(next) = stack.pop() {
            for dep in self.deps.get(&next).into_iter().flatten() {
                if seen.insert(self.names[dep].clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        seen
    }
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let meta = metadata();
    for (name, allowed) in LAYERS {
        let id = meta.id_of(name);
        let internal: BTreeSet<&str> = meta.deps[&id]
            .iter()
            .map(|dep| meta.names[dep].as_str())
            .filter(|dep| dep.starts_with("chainsmith"))
            .collect();
        let extra: Vec<&&str> = internal.iter().filter(|dep| !allowed.contains(dep)).collect();
        assert!(extra.is_empty(), "{name} must not depend on {extra:?}");
    }
    // A new crate has to say where it stands.
    for member in &meta.members {
        let name = meta.names[member].as_str();
        let placed = LAYERS.iter().any(|(layer, _)| *layer == name);
        assert!(
            placed || ["chainsmith", "chainsmith-benches"].contains(&name),
            "{name} is missing from LAYERS"
        );
    }
}

#[test]
fn pure_crates_pull_in_no_runtime_client_or_io_crates() {
    let meta = metadata();
    for name in PURE {
        let found: Vec<String> = meta
            .transitive(&meta.id_of(name))
            .into_iter()
            .filter(|d| FORBIDDEN_IN_PURE.contains(&d.as_str()))
            .collect();
        assert!(found.is_empty(), "{name} pulls in {found:?}");
    }
    for name in ["chainsmith-k8s", "chainsmith-benches"] {
        let found: Vec<String> = meta
            .transitive(&meta.id_of(name))
            .into_iter()
            .filter(|d| FORBIDDEN_IN_TRANSLATION.contains(&d.as_str()))
            .collect();
        assert!(found.is_empty(), "{name} pulls in {found:?}");
    }
}

/// The library code of pure crates (test modules aside) touches no files,
/// processes, clocks, threads, environment or sockets.
#[test]
fn pure_sources_have_no_side_effects() {
    const BANNED: &[&str] = &[
        "std::fs",
        "std::process",
        "Instant",
        "SystemTime",
        "std::thread",
        "std::env",
        "TcpStream",
        "UdpSocket",
        "tokio",
        "println!",
        "eprintln!",
    ];
    let meta = metadata();
    let mut checked = 0;
    for name in PURE.iter().chain(&["chainsmith-k8s"]) {
        let dir = meta.manifests[&meta.id_of(name)]
            .parent()
            .expect("crate dir")
            .join("src");
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).expect("source");
            let library = text.split("#[cfg(test)]").next().unwrap_or_default();
            for banned in BANNED {
                assert!(!library.contains(banned), "{} uses {banned}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} files checked");
}

/// Processes are started in one place only, the applier's runner, always as a
/// program with an argument vector: no shell ever parses input the cluster
/// controls (a Service name, a comment). Test support may start processes.
#[test]
fn only_the_applier_runner_starts_processes_and_never_a_shell() {
    const TEST_SUPPORT: [&str; 2] = ["chainsmith-testkit", "chainsmith-fakeapi"];
    let meta = metadata();
    let runner = meta.manifests[&meta.id_of("chainsmith-applier")]
        .parent()
        .expect("crate dir")
        .join("src/runner.rs");
    let mut spawners = Vec::new();
    for id in &meta.members {
        let name = meta.names[id].as_str();
        if TEST_SUPPORT.contains(&name) || name == "chainsmith-benches" {
            continue;
        }
        let dir = meta.manifests[id].parent().expect("crate dir").join("src");
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).expect("source");
            let library = text.split("#[cfg(test)]").next().unwrap_or_default();
            // `-c` is also an iptables option (counters) a reader parses; it
            // names a shell's command string only where processes start.
            let starts_processes = library.contains("Command::new") || library.contains("Runner");
            for shell in ["\"sh\"", "\"/bin/sh\"", "\"bash\"", "\"-c\""] {
                if shell == "\"-c\"" && !starts_processes {
                    continue;
                }
                assert!(
                    !library.contains(shell),
                    "{} names a shell ({shell})",
                    file.display()
                );
            }
            if library.contains("Command::new") {
                spawners.push(file);
            }
        }
    }
    assert_eq!(
        spawners,
        [runner],
        "only the applier's runner may start processes"
    );
}

/// The planner decides and names no rule: no argument, target or fixed
/// chain appears in its sources (layouts own those).
#[test]
fn planner_writes_no_rule_text() {
    const RULE_TEXT: &[&str] = &[
        "\"-j",
        "\"-m ",
        "--comment",
        "\"-A ",
        "\"KUBE-",
        "fixed::",
        "Arg::",
    ];
    let meta = metadata();
    let dir = meta.manifests[&meta.id_of("chainsmith-planner")]
        .parent()
        .expect("crate dir")
        .join("src");
    let files = rust_files(&dir);
    assert!(files.len() >= 4, "planner sources not found in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        for word in RULE_TEXT {
            assert!(
                !library.contains(word),
                "{} writes rule text ({word})",
                file.display()
            );
        }
    }
}

/// Every crate root opens with a doc comment saying what the crate owns.
#[test]
fn every_crate_root_starts_with_a_doc_comment() {
    let meta = metadata();
    for id in &meta.members {
        let dir = meta.manifests[id].parent().expect("crate dir").to_path_buf();
        let roots: Vec<PathBuf> = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|p| dir.join(p))
            .filter(|p| p.exists())
            .collect();
        for root in roots {
            let text = std::fs::read_to_string(&root).expect("root");
            assert!(
                text.starts_with("//!"),
                "{} does not start with a //! doc comment",
                root.display()
            );
        }
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
