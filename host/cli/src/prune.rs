//! `kiln image prune [-a] [-f]`: delete dangling (or all) images and collect their blobs.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::Store;

use crate::humanize;

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images not used by a container, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// Manifest digests of the images that containers (running or not) were made from.
pub fn images_in_use(root: &Path) -> Result<std::collections::BTreeSet<kiln_store::Digest>> {
    let mut used = std::collections::BTreeSet::new();
    for c in kiln_runtime::container::Containers::new(root).list()? {
        if let Ok(d) = c.config.image_digest.parse() {
            used.insert(d);
        }
    }
    Ok(used)
}

pub fn run(root: &Path, args: PruneArgs) -> Result<()> {
    if !args.force && !crate::fileout::confirm(if args.all { "all images" } else { "all dangling images" })? {
        return Ok(());
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let report = store.prune_sparing(args.all, &images_in_use(root)?)?;
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
