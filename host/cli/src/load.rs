//! `kiln load [-i FILE]`: images from a docker-archive or OCI archive, file or stdin.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::{load, Store};

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin ("-" for stdin)
    #[arg(short = 'i', long = "input")]
    input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    quiet: bool,
}

pub fn run(root: &Path, args: LoadArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let before = store.refs()?;
    let loaded = match args.input.as_deref() {
        Some(p) if p != Path::new("-") => {
            let file = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            load::load_archive(&store, file).with_context(|| format!("loading {}", p.display()))?
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal: use -i FILE or redirect stdin");
            }
            load::load_archive(&store, stdin.lock()).context("loading from stdin")?
        }
    };
    if !args.quiet {
        for img in loaded {
            if img.names.is_empty() {
                println!("Loaded image ID: {}", img.config);
            }
            for n in img.names {
                // As Docker says when a load takes a name from another image.
                if let Some(old) = before.get(&n.to_string()).filter(|d| **d != img.manifest) {
                    let id = store.image(old).map(|i| i.config_digest.to_string()).unwrap_or_else(|_| old.to_string());
                    println!("The image {} already exists, renaming the old one with ID {id} to empty string", n.familiar());
                }
                println!("Loaded image: {}", n.familiar());
            }
        }
    }
    Ok(())
}
