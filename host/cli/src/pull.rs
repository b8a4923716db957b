//! `kiln pull NAME[:TAG|@DIGEST] [-a] [--platform os/arch[/variant]] [-q]`: Docker-like
//! output over [`kiln_registry::pull_image`], with a line per layer ([`crate::progress`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_registry::{PullEvent, PullOptions};
use kiln_store::{Reference, Store};

use crate::progress::Board;

#[derive(Args)]
pub struct PullArgs {
    /// Platform to pull from a multi-platform image: os/arch[/variant] (default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Print only the image's full name
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Pull every tag of the repository
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// kiln's credentials file, read before Docker's config.json (default: $REGISTRY_AUTH_FILE, else ~/.config/kiln/auth.json)
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Image to pull: NAME[:TAG|@DIGEST]
    name: String,
}

pub fn run(root: &Path, args: PullArgs) -> Result<()> {
    let reference: Reference = args.name.parse().with_context(|| format!("image name {:?}", args.name))?;
    let platform = args.platform.as_deref().map(kiln_registry::Platform::parse).transpose()?;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let opts = PullOptions { platform, authfile: args.authfile };
    if !args.all_tags {
        return pull_one(&store, &reference, &opts, args.quiet);
    }
    let last = args.name.rsplit('/').next().unwrap_or_default();
    if last.contains(':') || last.contains('@') {
        bail!("tag can't be used with --all-tags/-a");
    }
    let settings = kiln_registry::Settings::load_default()?;
    let auth = kiln_registry::AuthFiles::locate(opts.authfile.as_deref());
    let client = kiln_registry::connect_with(&reference.domain, &settings, &auth)?;
    let tags = kiln_registry::tags::list_tags(&client, &reference.path).with_context(|| format!("pulling {}", reference.familiar()))?;
    for tag in tags {
        pull_one(&store, &Reference { tag: Some(tag), digest: None, ..reference.clone() }, &opts, args.quiet)?;
    }
    Ok(())
}

fn pull_one(store: &Store, reference: &Reference, opts: &PullOptions, quiet: bool) -> Result<()> {
    let reference = reference.clone();
    if !quiet {
        let what = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        let repo = Reference { tag: None, digest: None, ..reference.clone() }.familiar();
        println!("{what}: Pulling from {repo}");
    }
    let board = Board::new(quiet);
    let events = |e: PullEvent| match e {
        PullEvent::LayerExists(d) => board.add(&d, "Already exists"),
        PullEvent::LayerQueued(d, _) => board.add(&d, "Pulling fs layer"),
        PullEvent::Downloading { layer, have, size } => board.bar(&layer, "Downloading", have, size),
        PullEvent::Verifying(d) => board.status(&d, "Verifying Checksum"),
        PullEvent::Downloaded(d) => board.status(&d, "Download complete"),
        PullEvent::Complete(d) => board.status(&d, "Pull complete"),
    };
    let pulled = kiln_registry::pull_image(store, &reference, opts, &events);
    board.finish();
    let pulled = pulled.with_context(|| format!("pulling {}", reference.familiar()))?;
    let full = match &pulled.name {
        Some(n) => n.to_string(),
        None => Reference { tag: None, ..reference.clone() }.to_string(),
    };
    if !quiet {
        println!("Digest: {}", pulled.digest);
        let shown = pulled.name.as_ref().map_or_else(|| reference.familiar(), Reference::familiar);
        if pulled.changed {
            println!("Status: Downloaded newer image for {shown}");
        } else {
            println!("Status: Image is up to date for {shown}");
        }
    }
    println!("{full}");
    Ok(())
}
