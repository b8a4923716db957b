//! `kiln push NAME[:TAG]`: Docker-like output over [`kiln_registry::push`].
//! `KILN_PUSH_CHUNK_SIZE` (bytes) sets the size above which blobs go up in chunks.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_registry::PushEvent;
use kiln_store::{Reference, Store};

#[derive(Args)]
pub struct PushArgs {
    /// Print only the manifest digest
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Image to push: NAME[:TAG] (the registry is the name's domain)
    name: String,
}

pub fn run(root: &Path, args: PushArgs) -> Result<()> {
    let reference: Reference = args.name.parse().with_context(|| format!("image name {:?}", args.name))?;
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let settings = kiln_registry::Settings::load_default()?;
    let client = kiln_registry::connect(&reference.domain, &settings)?;
    let quiet = args.quiet;
    if !quiet {
        println!("The push refers to repository [{}]", reference.repository());
    }
    let events = move |e: PushEvent| {
        if quiet {
            return;
        }
        match e {
            PushEvent::Exists(d) => println!("{}: Layer already exists", d.short()),
            PushEvent::Mounted(d, from) => println!("{}: Mounted from {from}", d.short()),
            PushEvent::Pushed(d) => println!("{}: Pushed", d.short()),
        }
    };
    let mut opts = kiln_registry::PushOptions::default();
    if let Some(v) = std::env::var("KILN_PUSH_CHUNK_SIZE").ok().filter(|v| !v.is_empty()) {
        opts.chunk_size = v.parse().with_context(|| format!("KILN_PUSH_CHUNK_SIZE={v:?}: expected a number of bytes"))?;
    }
    let pushed = kiln_registry::push(&store, &client, &reference, &opts, &events).with_context(|| format!("pushing {}", reference.familiar()))?;
    if quiet {
        println!("{}", pushed.digest);
    } else {
        println!("{}: digest: {} size: {}", pushed.tag, pushed.digest, pushed.size);
    }
    Ok(())
}
