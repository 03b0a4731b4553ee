//! `chainsmith completions` and `chainsmith man`: shell completions and
//! manual pages generated from the clap definition, so they cannot drift
//! from the options the binary parses.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

/// The shells a node operator uses (clap_complete also knows elvish and
/// PowerShell; they are left out, chainsmith runs on Linux nodes).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for. Install with e.g. `chainsmith completions
    /// bash > /etc/bash_completion.d/chainsmith`, `chainsmith completions zsh >
    /// "${fpath[1]}/_chainsmith"` or `chainsmith completions fish >
    /// ~/.config/fish/completions/chainsmith.fish`.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page to this directory (chainsmith.1 and one
    /// chainsmith-COMMAND.1 per subcommand) instead of printing chainsmith(1).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for one shell.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "chainsmith", &mut script);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("cannot write to stdout")
}

/// Prints chainsmith(1), or writes every page to `--dir`.
pub fn man(args: &ManArgs, command: clap::Command) -> Result<()> {
    // As `clap_mangen::generate_to` prepares it (subcommands named
    // `chainsmith-compile`, no `help` page), but with the build date on each
    // page: a reproducible build sets it from SOURCE_DATE_EPOCH.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let date = env!("CHAINSMITH_BUILD_DATE").get(..10).unwrap_or_default();
    let page = |command: clap::Command| {
        clap_mangen::Man::new(command)
            .date(date)
            .source(concat!("chainsmith ", env!("CARGO_PKG_VERSION")))
    };
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let mut pending = vec![command];
            while let Some(command) = pending.pop() {
                pending.extend(command.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
                page(command)
                    .generate_to(dir)
                    .with_context(|| format!("cannot write a manual page to {}", dir.display()))?;
            }
            Ok(())
        }
        None => {
            let mut text = Vec::new();
            page(command)
                .render(&mut text)
                .context("cannot render the manual page")?;
            std::io::stdout()
                .lock()
                .write_all(&text)
                .context("cannot write to stdout")
        }
    }
}
