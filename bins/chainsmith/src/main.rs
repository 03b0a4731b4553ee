//! `chainsmith`: kube-proxy's iptables mode as a declarative rule compiler.
//!
//! This crate is glue at the edge of the world: it reads files, parses
//! arguments, prints, and drives the library crates (`chainsmith-k8s` to read
//! manifests, `chainsmith-planner` and `chainsmith-restore` to compile,
//! `chainsmith-sync` to replay syncs). Subcommands live in their own modules;
//! errors are `anyhow` here and typed everywhere below.

mod compile;
mod input;
mod metrics;
mod replay;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The same allocator the benchmarks measure with (see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kube-proxy's iptables mode as a declarative rule compiler.
#[derive(Debug, Parser)]
#[command(name = "chainsmith", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the full-sync iptables-restore input (*filter then *nat) for a node.
    Compile(compile::CompileArgs),
    /// Run one sync per cluster state, as a long-running proxier would, and
    /// write each payload (and its rule metrics) to a directory.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(args) => compile::run(&args),
        Command::Replay(args) => replay::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            input::report_error(&error);
            ExitCode::FAILURE
        }
    }
}
