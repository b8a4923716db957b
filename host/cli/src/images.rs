//! `kiln images`: the named images in the store.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::{Reference, Store};

#[derive(Args)]
pub struct ImagesArgs {
    /// Only show image ids
    #[arg(short = 'q', long)]
    quiet: bool,
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{bytes}B") } else { format!("{v:.3}{}", units[i]).replace(".000", "") }
}

pub fn run(root: &Path, args: ImagesArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let refs = store.refs()?;
    if !args.quiet {
        println!("{:<40} {:<15} {:<14} {:<22} SIZE", "REPOSITORY", "TAG", "IMAGE ID", "CREATED");
    }
    for (name, digest) in refs {
        let img = store.image(&digest).with_context(|| format!("reading image {name}"))?;
        if args.quiet {
            println!("{}", img.config_digest.short());
            continue;
        }
        let reference: Reference = name.parse()?;
        let familiar = reference.familiar();
        let (repo, tag) = familiar.rsplit_once(':').unwrap_or((familiar.as_str(), "<none>"));
        let size: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
        let created = img.config.created.clone().unwrap_or_default();
        println!("{repo:<40} {tag:<15} {:<14} {created:<22} {}", img.config_digest.short(), human_size(size));
    }
    Ok(())
}
