//! `kiln builder prune [-a] [--keep-storage SIZE] [-f]`: drops build-cache entries, then
//! collects the layers nothing else keeps. [`cache_transfer`]: the build cache's export and
//! import (`kiln build --cache-to/--cache-from`) and its automatic bound after builds.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kiln_solver::cache::{CacheIndex, PruneMode};
use kiln_store::Store;

use crate::humanize;

pub mod cache_transfer;

#[derive(Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all build cache, not just layers no image uses
    #[arg(short = 'a', long)]
    all: bool,
    /// Keep at most this much cache-only layer data (e.g. 512MB, 10GB), dropping the least
    /// recently used first
    #[arg(long = "keep-storage")]
    keep_storage: Option<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// Parses Docker's sizes ([`kiln_store::parse_size`]).
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    kiln_store::parse_size(text).map_err(anyhow::Error::msg)
}

pub fn run(root: &Path, cmd: BuilderCommand) -> Result<()> {
    let BuilderCommand::Prune(args) = cmd;
    let mode = match (&args.keep_storage, args.all) {
        (Some(_), true) => bail!("--all and --keep-storage cannot be combined"),
        (Some(s), false) => PruneMode::KeepBytes(parse_size(s)?),
        (None, true) => PruneMode::All,
        (None, false) => PruneMode::Unused,
    };
    if !args.force && !crate::fileout::confirm("build cache")? {
        return Ok(());
    }
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let lock = store.lock()?;
    let removed = CacheIndex::new(&store).prune(mode).context("pruning the build cache")?;
    let gc = store.collect_garbage(&lock)?;
    println!("Deleted build cache entries: {removed}");
    println!("Total reclaimed space: {}", humanize::size(gc.reclaimed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").expect("ok"), 1024);
        assert_eq!(parse_size("10GB").expect("ok"), 10 << 30);
        assert_eq!(parse_size("1.5kb").expect("ok"), 1536);
        assert_eq!(parse_size("512M").expect("ok"), 512 << 20);
        for bad in ["", "ten", "5XB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
