//! `kiln image prune [-a] [-f]`: delete dangling (or all) images and collect their blobs.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::Store;

use crate::humanize;

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images, not just dangling ones (kiln has no containers that could use them)
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

pub fn run(root: &Path, args: PruneArgs) -> Result<()> {
    if !args.force && !crate::fileout::confirm(if args.all { "all images" } else { "all dangling images" })? {
        return Ok(());
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let report = store.prune(args.all)?;
    if !report.deleted.is_empty() {
        println!("Deleted Images:");
        for (id, names) in &report.deleted {
            for n in names {
                println!("untagged: {n}");
            }
            println!("deleted: {id}");
        }
        for (d, _) in report.gc.removed.iter().filter(|(d, _)| !report.deleted.iter().any(|(id, _)| id == d)) {
            println!("deleted: {d}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", humanize::size(report.gc.reclaimed));
    Ok(())
}
