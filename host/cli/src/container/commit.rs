//! `kiln commit [-a AUTHOR] [-m MSG] [-c 'CMD ...'] [-p] CONTAINER [NAME[:TAG]]`: the
//! container's changes become one new layer on its image. A running container's writable
//! layer is saved first, through its control socket.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_runtime::container::commit::{commit, CommitOptions};
use kiln_runtime::container::control::{request, ControlRequest};
use kiln_runtime::container::Containers;
use kiln_store::{Reference, Store};

#[derive(Args)]
pub struct CommitArgs {
    /// Author of the new image
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Commit message (the history entry's comment)
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, ...); repeatable
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Pause the container while committing (kiln saves a running container's layer as it is; accepted for Docker's habits)
    #[arg(short = 'p', long, default_value_t = true)]
    pause: bool,
    container: String,
    /// Name for the new image
    name: Option<String>,
}

pub fn run(root: &Path, args: CommitArgs) -> Result<()> {
    let _ = args.pause;
    let names: Vec<Reference> = match &args.name {
        Some(n) => {
            let r: Reference = n.parse().with_context(|| format!("image name {n:?}"))?;
            if r.digest.is_some() {
                bail!("image name {n:?}: a committed image cannot be named by digest");
            }
            vec![r]
        }
        None => vec![],
    };
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let containers = Containers::new(root);
    let c = containers.get(&args.container)?;
    let digest: kiln_store::Digest = c.config.image_digest.parse()?;
    let image = store.image(&digest).with_context(|| format!("the image of container {} is gone from the store", args.container))?;
    let mut config = image.config.config.clone();
    crate::import::apply_changes(&mut config, &args.changes)?;
    if c.is_running() {
        request(&c.dir, &ControlRequest::Save).context("saving the running container's changes")?;
    }
    let manifest = commit(&store, &c, &image, CommitOptions { config, author: args.author, message: args.message, names })?;
    println!("{}", store.image(&manifest)?.config_digest);
    Ok(())
}
