//! `kiln history IMAGE` (and `kiln image history`): one row per history entry, newest first.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::image::History;
use kiln_store::Store;

use crate::humanize;

#[derive(Args)]
pub struct HistoryArgs {
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Only show image ids
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Print sizes and dates in machine-readable form
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// For a multi-platform image: the history of this platform's image (default: this
    /// machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Image (name, id or digest)
    image: String,
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let cut: String = s.chars().take(n.saturating_sub(3)).collect();
    format!("{cut}...")
}

pub fn run(root: &Path, args: HistoryArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let (_, digest) = store.lookup(&args.image)?;
    let platform = args.platform.as_deref().map(kiln_store::Platform::parse).transpose()?;
    let img = store.image_for(&digest, platform.as_ref()).with_context(|| format!("reading image {}", args.image))?;
    // As Docker: a single-platform image of another platform than asked is an error.
    if let Some(p) = &platform {
        kiln_store::index::check_platform(&img, p).map_err(|_| {
            anyhow::anyhow!("image {} is {}/{}, not {p}", args.image, img.config.os, img.config.architecture)
        })?;
    }
    let sizes: Vec<u64> = img.manifest.layers().iter().map(|l| l.size()).collect();
    // Images without history get one synthetic entry per layer.
    let history: Vec<History> = if img.config.history.is_empty() {
        sizes.iter().map(|_| History::default()).collect()
    } else {
        img.config.history.clone()
    };
    let mut rows = Vec::new();
    let mut layer = 0;
    for h in &history {
        let size = if h.empty_layer {
            0
        } else {
            let s = sizes.get(layer).copied().unwrap_or(0);
            layer += 1;
            s
        };
        rows.push((h, size));
    }
    let id = if args.no_trunc { img.config_digest.to_string() } else { img.config_digest.short().to_string() };
    crate::stdout::write_with(|w| {
    if !args.quiet {
        writeln!(w, "{:<14}  {:<20}  {:<45}  {:<8}  COMMENT", "IMAGE", "CREATED", "CREATED BY", "SIZE")?;
    }
    for (i, (h, size)) in rows.iter().rev().enumerate() {
        let row_id = if i == 0 { id.clone() } else { "<missing>".into() };
        if args.quiet {
            writeln!(w, "{row_id}")?;
            continue;
        }
        let by = h.created_by.clone().unwrap_or_default().replace('\n', " ");
        let by = if args.no_trunc { by } else { truncate(&by, 45) };
        let (created, size) = if args.human {
            (humanize::ago(h.created.as_deref()), humanize::size(*size))
        } else {
            (h.created.clone().unwrap_or_default(), size.to_string())
        };
        writeln!(w, "{row_id:<14}  {created:<20}  {by:<45}  {size:<8}  {}", h.comment.clone().unwrap_or_default())?;
    }
    Ok(())
    })
}
