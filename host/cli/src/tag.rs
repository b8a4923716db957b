//! `kiln tag SOURCE TARGET`: another name for an image.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::Store;

#[derive(Args)]
pub struct TagArgs {
    /// Image to name (name, id or digest)
    source: String,
    /// New name: [host[:port]/]repository[:tag]
    target: String,
}

pub fn run(root: &Path, args: TagArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    store.tag(&args.source, &args.target)?;
    Ok(())
}
