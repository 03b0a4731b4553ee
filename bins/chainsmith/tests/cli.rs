//! The command line itself, through the real binary: shell completions, the
//! manual pages and the top-level help, all generated from the one clap
//! definition.

// Test helpers outside #[test] functions may panic and print too.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

const SUBCOMMANDS: [&str; 8] = [
    "compile",
    "replay",
    "trace",
    "explain",
    "diff",
    "run",
    "completions",
    "man",
];

/// stdout of `chainsmith ARGS`, which must succeed.
fn chainsmith(args: &[&str]) -> String {
    String::from_utf8(common::chainsmith_in_fixtures(args).stdout).expect("UTF-8")
}

/// Runs `program ARGS` with `input` on stdin; `None` when it is not installed.
fn pipe(program: &str, args: &[&str], input: &str) -> Option<std::process::Output> {
    let mut child = Command::new(program)
        .args(args)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn bash_completion_registers_and_knows_every_subcommand() {
    let script = chainsmith(&["completions", "bash"]);
    for subcommand in SUBCOMMANDS {
        assert!(
            script.contains(subcommand),
            "the bash script does not mention {subcommand}"
        );
    }
    // Options and their values are completed too.
    for word in ["--example", "--mode", "nftables", "seed", "--partial-sync"] {
        assert!(script.contains(word), "the bash script does not mention {word}");
    }
    // Sourced by bash, it registers a completion function for chainsmith.
    let output = pipe(
        "bash",
        &["-c", "source /dev/stdin && complete -p chainsmith"],
        &script,
    )
    .expect("bash is installed");
    assert!(
        output.status.success(),
        "bash refused the script: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("-F _chainsmith chainsmith"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let zsh = chainsmith(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef chainsmith"), "{}", &zsh[..80]);
    let fish = chainsmith(&["completions", "fish"]);
    assert!(fish.contains("complete -c chainsmith"));
    for subcommand in SUBCOMMANDS {
        assert!(zsh.contains(&format!("'{subcommand}:")), "zsh: {subcommand}");
        assert!(
            fish.contains(&format!("-a \"{subcommand}\"")),
            "fish: {subcommand}"
        );
    }
}

#[test]
fn other_shells_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_chainsmith"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("possible values: bash, zsh, fish"), "{stderr}");
}

#[test]
fn man_page_is_roff_with_every_subcommand() {
    let page = chainsmith(&["man"]);
    let title = page.lines().find(|l| l.starts_with(".TH ")).expect("a .TH line");
    assert!(title.starts_with(".TH chainsmith 1 "), "{title}");
    assert!(page.contains(".SH NAME\n") && page.contains(".SH SYNOPSIS\n"));
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("chainsmith\\-{subcommand}(1)")),
            "the page does not list {subcommand}"
        );
    }
    // groff reads it without a warning (-ww: all warnings, -z: no output).
    if let Some(checked) = pipe("groff", &["-man", "-Tutf8", "-ww", "-z"], &page) {
        assert!(checked.status.success());
        assert_eq!(String::from_utf8_lossy(&checked.stderr), "", "groff warnings");
    }
    // And man shows it, section by section.
    if let Some(shown) = pipe("man", &["-l", "-"], &page) {
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.status.success(),
            "{}",
            String::from_utf8_lossy(&shown.stderr)
        );
        for section in ["NAME", "SYNOPSIS", "SUBCOMMANDS"] {
            assert!(text.contains(section), "{text}");
        }
    }
}

#[test]
fn man_dir_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    chainsmith(&["man", "--dir", dir.path().to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("chainsmith-{s}.1"))
        .chain(["chainsmith.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    let replay = std::fs::read_to_string(dir.path().join("chainsmith-replay.1")).unwrap();
    assert!(replay.contains(".TH chainsmith-replay 1 "), "{}", &replay[..200]);
    assert!(replay.contains("\\-\\-partial\\-sync"));
}

#[test]
fn top_level_help_describes_what_there_is_now() {
    let help = chainsmith(&["--help"]);
    assert!(!help.contains("later"), "{help}");
    assert!(help.contains("nftables"), "{help}");
    assert!(help.contains("--example seed"), "{help}");
}

#[test]
fn the_backend_default_is_described_one_way() {
    let described = |args: &[&str], flag: &str| -> String {
        let help = chainsmith(args);
        let start = help.find(flag).unwrap_or_else(|| panic!("{flag} in {help}"));
        let rest = &help[start..];
        let from = rest.find("by default").expect("the default is described");
        let to = rest[from..].find("`iptables` is").expect("to the last fallback");
        rest[from..from + to]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let diff = described(&["diff", "--help"], "--backend");
    let run = described(&["run", "--help"], "--iptables-backend");
    assert_eq!(diff, run);
    assert!(
        diff.contains("KUBE-KUBELET-CANARY") && diff.contains("more rules"),
        "{diff}"
    );
}
