//! `chainsmith`: kube-proxy (iptables and nftables modes) as a declarative
//! rule compiler.
//!
//! This crate is glue at the edge of the world: it reads files, parses
//! arguments, prints, and drives the library crates (`chainsmith-k8s` to read
//! manifests, `chainsmith-planner` and `chainsmith-restore` to compile,
//! `chainsmith-sync` to replay syncs, `chainsmith-node` to run on a node). Subcommands live in their own modules;
//! errors are `anyhow` here and typed everywhere below.

mod compile;
mod diff;
mod explain;
mod generate;
mod input;
mod metrics;
mod narrate;
mod narrate_nft;
mod nft;
mod replay;
mod run;
mod trace;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// The same allocator the benchmarks measure with (see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where a first-time user starts: the examples are built into the binary.
const EXAMPLES_HELP: &str = "Bundled examples (no files needed): `chainsmith compile` compiles an \
     everyday cluster for an IPv4 node; `--example seed` on compile, trace and explain is the 2018 \
     walk-through this project started from (LoadBalancer default/sleep, best with `--layout v1.10`), \
     e.g. `chainsmith explain --layout v1.10 --example seed default/sleep`.";

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-03T12:00:00Z)`.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHAINSMITH_GIT_COMMIT"),
    ", built ",
    env!("CHAINSMITH_BUILD_DATE"),
    ")"
);

/// kube-proxy (iptables and nftables modes) as a declarative rule compiler.
#[derive(Debug, Parser)]
#[command(name = "chainsmith", version = VERSION, about, long_about = None, after_help = EXAMPLES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what a node's first full sync writes: iptables-restore input
    /// (*filter then *nat), or with --mode nftables the `nft -f` transaction.
    Compile(compile::CompileArgs),
    /// Run one sync per cluster state, as a long-running proxier would, and
    /// write each payload (and its rule metrics) to a directory.
    Replay(replay::ReplayArgs),
    /// Follow one packet through the rules, as the kernel would, and say why it
    /// goes where it goes.
    Trace(trace::TraceArgs),
    /// Every entry point of one Service (cluster IP, NodePort, load-balancer
    /// and external IPs) and what each does for pods, the node and outsiders.
    Explain(explain::ExplainArgs),
    /// Compare the rules the kernel holds (a dump, or live) with the rules a
    /// cluster state should produce, or (--from OLD --to NEW) show per Service
    /// the rules a manifest change adds and removes; exit status 1 when they
    /// differ.
    Diff(diff::DiffArgs),
    /// Run on a node in place of kube-proxy: watch the API server, keep the
    /// rules in the kernel right, serve metrics and health.
    Run(Box<run::RunArgs>),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(generate::CompletionsArgs),
    /// Print the manual page, chainsmith(1), as roff (`chainsmith man | man -l -`),
    /// or write every page to a directory.
    Man(generate::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Exit status as diff(1): 0 fine, 1 a difference found, 2 trouble.
    let result = match cli.command {
        Command::Compile(args) => compile::run(&args).map(|()| false),
        Command::Replay(args) => replay::run(&args).map(|()| false),
        Command::Trace(args) => trace::run(&args).map(|()| false),
        Command::Explain(args) => explain::run(&args).map(|()| false),
        Command::Diff(args) => diff::run(&args),
        Command::Run(args) => run::run(&args).map(|()| false),
        Command::Completions(args) => generate::completions(&args, Cli::command()).map(|()| false),
        Command::Man(args) => generate::man(&args, Cli::command()).map(|()| false),
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(error) => {
            input::report_error(&error);
            ExitCode::from(2)
        }
    }
}
