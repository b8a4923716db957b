//! `kiln save`: images to one tar archive (docker-archive by default, `--format oci` for a pure
//! OCI layout), written atomically (temp file + rename) or streamed to stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::{archive, Store};

use crate::fileout;

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file instead of stdout ("-" for stdout)
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Archive format: docker (OCI layout + manifest.json, as docker save writes) or oci
    #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
    format: String,
    /// Images to save
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn run(root: &Path, args: SaveArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let format = if args.format == "oci" { archive::Format::Oci } else { archive::Format::Docker };
    let mut images = Vec::new();
    let refs = store.refs()?;
    for name in &args.images {
        // A name is saved under itself; an id under the image's first name.
        let (found, digest) = store.lookup(name)?;
        let reference = match found {
            Some(r) => r,
            None => refs
                .iter()
                .find(|(_, d)| **d == digest)
                .map(|(n, _)| n.parse())
                .transpose()?
                .with_context(|| format!("image {name} has no name: tag it first (kiln tag {name} NAME)"))?,
        };
        images.push((reference, store.entry(&digest)?));
    }
    fileout::write(args.output.as_deref(), "refusing to write an archive to a terminal: use -o FILE or redirect stdout", |w| {
        archive::write_archive_as(&store, &images, format, w)?;
        Ok(())
    })
}
