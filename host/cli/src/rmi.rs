//! `kiln rmi` / `kiln image rm`: untag or delete images, Docker's rules and output.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::catalog::RemoveEvent;
use kiln_store::Store;

#[derive(Args)]
pub struct RmiArgs {
    /// Delete an image by id even when several repositories name it
    #[arg(short = 'f', long)]
    force: bool,
    /// Images (names, ids or digests)
    #[arg(required = true)]
    images: Vec<String>,
}

/// Removes each image in turn; all are tried, the first failure is reported.
pub fn run(root: &Path, args: RmiArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let mut first_err = None;
    let containers = kiln_runtime::container::Containers::new(root).list()?;
    for image in &args.images {
        // Docker's rule: an image a container was made from is not removed without -f (and
        // with -f its blobs stay, pinned, for the container).
        // A multi-platform image is in use when any of its platform images is.
        let manifests: Vec<String> = match store.lookup(image).and_then(|(_, d)| store.entry(&d).map(|e| (d, e))) {
            Ok((_, kiln_store::ImageEntry::Index(index))) => std::iter::once(&index.digest).chain(index.entries.iter().map(|e| &e.manifest)).map(|d| d.to_string()).collect(),
            Ok((d, _)) => vec![d.to_string()],
            Err(_) => vec![],
        };
        let user = containers.iter().find(|c| manifests.contains(&c.config.image_digest));
        if let (Some(c), false) = (user, args.force) {
            let e = anyhow::anyhow!("conflict: unable to remove {image:?} (must force): container {} is using it", c.short_id());
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                eprintln!("kiln: also failed: {e}");
            }
            continue;
        }
        match store.remove_image(image, args.force) {
            Ok(events) => {
                for e in events {
                    match e {
                        RemoveEvent::Untagged(r) => println!("Untagged: {}", r.familiar()),
                        RemoveEvent::Deleted(d) => println!("Deleted: {d}"),
                    }
                }
            }
            Err(e) if first_err.is_none() => first_err = Some(e.into()),
            Err(e) => eprintln!("kiln: also failed: {e}"),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
