//! `kiln system check [--repair]`: verify the store (every blob's digest, every name and image).

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_store::Store;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Verify every blob's digest and every name and image; --repair removes what is broken
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Remove corrupt blobs, stray files, and names and images whose blobs are missing or corrupt
    #[arg(long)]
    repair: bool,
}

pub fn run(root: &Path, cmd: SystemCommand) -> Result<()> {
    let SystemCommand::Check(args) = cmd;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let report = store.check(args.repair).context("checking the store")?;
    for p in &report.problems {
        let verb = if report.repaired { "repaired" } else { "problem" };
        println!("{verb}: {p}");
    }
    println!(
        "checked {} blobs, {} images, {} names: {} problems{}",
        report.blobs,
        report.images,
        report.names,
        report.problems.len(),
        if report.repaired && !report.problems.is_empty() { " (repaired)" } else { "" }
    );
    if report.stale_ingest > 0 {
        println!("removed {} stale temp entries from ingest/", report.stale_ingest);
    }
    if !report.problems.is_empty() && !report.repaired {
        bail!("the store has {} problem(s): run `kiln system check --repair` to remove what is broken", report.problems.len());
    }
    Ok(())
}
