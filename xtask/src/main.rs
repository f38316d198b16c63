//! `cargo xtask`: the project's entry points. Each task first installs what it needs (skipping
//! what is already there), so the README's two commands work on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "firstcome project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the project needs (idempotent).
    Setup,
    /// The main job: the local server with a fresh demo campaign (release build).
    Run {
        /// Extra arguments for firstcome-local, e.g. `-- --addr 127.0.0.1:9000`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Every test: formatting, then the whole workspace's tests.
    Test,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Run { args } => {
            setup()?;
            let mut cmd = cargo();
            cmd.args(["run", "--release", "-p", "firstcome-local", "--", "--demo"]).args(args);
            run(&mut cmd)
        }
        Task::Test => {
            setup()?;
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args(["test", "--workspace", "--locked"]))
        }
    }
}

/// Everything beyond a Rust toolchain that the tasks need. Each step checks before installing.
fn setup() -> anyhow::Result<()> {
    if !Command::new("rustfmt").arg("--version").output().is_ok_and(|o| o.status.success()) {
        run(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask> {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_owned()
}
