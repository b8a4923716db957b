//! `kiln push NAME[:TAG]`: Docker-like output over [`kiln_registry::push`], with a line per
//! layer ([`crate::progress`]).
//! `KILN_PUSH_CHUNK_SIZE` (bytes) sets the size above which blobs go up in chunks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_registry::PushEvent;
use kiln_store::{Reference, Store};

use crate::progress::Board;

#[derive(Args)]
pub struct PushArgs {
    /// Print only the manifest digest
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Push every tag of the repository that the store has
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// kiln's credentials file, read before Docker's config.json (default: $REGISTRY_AUTH_FILE, else ~/.config/kiln/auth.json)
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Image to push: NAME[:TAG] (the registry is the name's domain)
    name: String,
}

pub fn run(root: &Path, args: PushArgs) -> Result<()> {
    let reference: Reference = args.name.parse().with_context(|| format!("image name {:?}", args.name))?;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let settings = kiln_registry::Settings::load_default()?;
    let auth = kiln_registry::AuthFiles::locate(args.authfile.as_deref());
    let client = kiln_registry::connect_with(&reference.domain, &settings, &auth)?;
    let quiet = args.quiet;
    if !quiet {
        println!("The push refers to repository [{}]", reference.repository());
    }
    let mut opts = kiln_registry::PushOptions::default();
    if let Some(v) = std::env::var("KILN_PUSH_CHUNK_SIZE").ok().filter(|v| !v.is_empty()) {
        opts.chunk_size = v.parse().with_context(|| format!("KILN_PUSH_CHUNK_SIZE={v:?}: expected a number of bytes"))?;
    }
    let targets = if args.all_tags {
        let last = args.name.rsplit('/').next().unwrap_or_default();
        if last.contains(':') || last.contains('@') {
            bail!("tag can't be used with --all-tags/-a");
        }
        let repo = reference.repository();
        let mut names: Vec<Reference> = store.refs()?.keys().filter_map(|n| n.parse::<Reference>().ok()).filter(|r| r.repository() == repo).collect();
        names.sort_by(|a, b| a.tag.cmp(&b.tag));
        if names.is_empty() {
            bail!("no tags of {} in the store", reference.familiar());
        }
        names
    } else {
        vec![reference]
    };
    for target in targets {
        let board = Board::new(quiet);
        let events = |e: PushEvent| match e {
            PushEvent::Preparing(d) => board.add(&d, "Preparing"),
            PushEvent::Pushing { blob, sent, size } => board.bar(&blob, "Pushing", sent, size),
            PushEvent::Exists(d) => board.status(&d, "Layer already exists"),
            PushEvent::Mounted(d, from) => board.status(&d, &format!("Mounted from {from}")),
            PushEvent::Pushed(d) => board.status(&d, "Pushed"),
        };
        let pushed = kiln_registry::push(&store, &client, &target, &opts, &events);
        board.finish();
        let pushed = pushed.with_context(|| format!("pushing {}", target.familiar()))?;
        if quiet {
            println!("{}", pushed.digest);
        } else {
            println!("{}: digest: {} size: {}", pushed.tag, pushed.digest, pushed.size);
        }
    }
    Ok(())
}
