//! `kiln images` / `kiln image ls`: the images in the store, Docker's columns and flags.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_store::catalog::ImageSummary;
use kiln_store::Store;
use serde_json::json;

use crate::humanize;

#[derive(Args)]
pub struct ImagesArgs {
    /// Show all images (intermediate ones too)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only show image ids
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter: dangling=true|false, reference=PATTERN (may be repeated)
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
    /// Show each multi-platform image's platforms under it (as `docker images --tree`)
    #[arg(long)]
    tree: bool,
    /// Output format: table (default) or json (one object per line)
    #[arg(long, default_value = "table")]
    format: String,
    /// Only images of this repository[:tag]
    repository: Option<String>,
}

/// `*` and `?` globbing, as `--filter reference=` uses.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

struct Row {
    repo: String,
    tag: String,
    id: String,
    digest: String,
    created: Option<String>,
    size: u64,
    /// A multi-platform image's platforms: (platform, image id, size).
    platforms: Vec<(String, String, u64)>,
}

fn short_or_full(d: &kiln_store::Digest, no_trunc: bool) -> String {
    if no_trunc {
        d.to_string()
    } else {
        d.short().to_string()
    }
}

/// Each platform of a multi-platform image, with its id and size.
fn platforms_of(store: &Store, s: &ImageSummary, no_trunc: bool) -> Vec<(String, String, u64)> {
    let Some(index) = &s.index else { return Vec::new() };
    index
        .entries
        .iter()
        .map(|e| match store.image(&e.manifest) {
            Ok(img) => (e.platform.to_string(), short_or_full(&img.config_digest, no_trunc), img.manifest.layers().iter().map(|l| l.size()).sum()),
            Err(_) => (e.platform.to_string(), "<unreadable>".into(), 0),
        })
        .collect()
}

fn rows(store: &Store, s: &ImageSummary, no_trunc: bool) -> Vec<Row> {
    let id = short_or_full(s.id(), no_trunc);
    let platforms = platforms_of(store, s, no_trunc);
    let base = |repo: String, tag: String| Row {
        repo,
        tag,
        id: id.clone(),
        digest: s.digest().to_string(),
        created: s.record.config.created.clone(),
        size: s.size,
        platforms: platforms.clone(),
    };
    if s.names.is_empty() {
        return vec![base("<none>".into(), "<none>".into())];
    }
    s.names
        .iter()
        .map(|n| {
            let f = n.familiar();
            let (repo, tag) = match n.tag.as_deref() {
                Some(t) => (f.strip_suffix(&format!(":{t}")).unwrap_or(&f).to_string(), t.to_string()),
                None => (f, "<none>".into()),
            };
            base(repo, tag)
        })
        .collect()
}

pub fn run(root: &Path, args: ImagesArgs) -> Result<()> {
    let mut dangling = None;
    let mut patterns = Vec::new();
    let mut labels: Vec<(String, Option<String>)> = Vec::new();
    let mut before_since: Vec<(bool, String)> = Vec::new();
    for f in &args.filters {
        match f.split_once('=') {
            Some(("dangling", v)) => match v {
                "true" | "1" => dangling = Some(true),
                "false" | "0" => dangling = Some(false),
                _ => bail!("invalid filter {f:?}: dangling takes true or false"),
            },
            Some(("reference", p)) => patterns.push(p.to_string()),
            Some(("label", l)) => match l.split_once('=') {
                Some((k, v)) => labels.push((k.to_string(), Some(v.to_string()))),
                None => labels.push((l.to_string(), None)),
            },
            Some(("before", i)) => before_since.push((true, i.to_string())),
            Some(("since", i)) => before_since.push((false, i.to_string())),
            _ => bail!("invalid filter {f:?}: kiln supports dangling=, reference=, label=, before= and since="),
        }
    }
    if let Some(r) = &args.repository {
        patterns.push(if r.contains(':') { r.clone() } else { format!("{r}:*") });
    }
    let json = match args.format.as_str() {
        "table" => false,
        "json" | "{{json .}}" => true,
        other => bail!("unsupported --format {other:?}: use table or json"),
    };
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let images = store.list_images().context("listing images")?;
    let created = |s: &ImageSummary| s.record.config.created.as_deref().and_then(humanize::parse_rfc3339);
    // before=/since= as (is_before, reference time).
    let mut bounds = Vec::new();
    for (is_before, image) in &before_since {
        let (_, digest) = store.lookup(image).with_context(|| format!("filter {}={image}", if *is_before { "before" } else { "since" }))?;
        let t = images.iter().find(|s| *s.digest() == digest).and_then(created);
        bounds.push((*is_before, t.with_context(|| format!("image {image} has no creation time"))?));
    }
    let mut out = Vec::new();
    for s in &images {
        let keep = match dangling {
            Some(want) => s.dangling() == want,
            None => args.all || !s.names.is_empty() || !s.has_children,
        };
        let labelled = labels.iter().all(|(k, v)| {
            let have = s.record.config.config.labels.as_ref().and_then(|l| l.get(k));
            have.is_some() && (v.is_none() || have == v.as_ref())
        });
        let in_time = bounds.iter().all(|(is_before, t)| match created(s) {
            Some(c) if *is_before => c < *t,
            Some(c) => c > *t,
            None => false,
        });
        if !keep || !labelled || !in_time {
            continue;
        }
        for row in rows(&store, s, args.no_trunc) {
            let full = format!("{}:{}", row.repo, row.tag);
            let matches = patterns.is_empty()
                || patterns.iter().any(|p| glob(p.as_bytes(), full.as_bytes()) || glob(p.as_bytes(), row.repo.as_bytes()));
            if matches {
                out.push(row);
            }
        }
    }
    crate::stdout::write_with(|w| write_rows(w, &args, json, &out))
}

fn write_rows(w: &mut dyn Write, args: &ImagesArgs, json: bool, out: &[Row]) -> std::io::Result<()> {
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in out.iter().filter(|r| seen.insert(r.id.clone())) {
            writeln!(w, "{}", r.id)?;
        }
        return Ok(());
    }
    if json {
        for r in out {
            let v = json!({
                "Containers": "N/A",
                "CreatedAt": r.created.clone().unwrap_or_default(),
                "CreatedSince": humanize::ago(r.created.as_deref()),
                "Digest": r.digest,
                "ID": r.id,
                "Repository": r.repo,
                "Tag": r.tag,
                "Size": humanize::size(r.size),
                "Platforms": r.platforms.iter().map(|(p, _, _)| p.as_str()).collect::<Vec<_>>(),
            });
            writeln!(w, "{v}")?;
        }
        return Ok(());
    }
    if args.tree {
        writeln!(w, "{:<56}  {:<14}  SIZE", "IMAGE", "ID")?;
        for r in out {
            let name = if r.tag == "<none>" { r.repo.clone() } else { format!("{}:{}", r.repo, r.tag) };
            writeln!(w, "{name:<56}  {:<14}  {}", r.id, humanize::size(r.size))?;
            for (i, (platform, id, size)) in r.platforms.iter().enumerate() {
                let branch = if i + 1 == r.platforms.len() { "└─" } else { "├─" };
                writeln!(w, "{:<56}  {id:<14}  {}", format!("{branch} {platform}"), humanize::size(*size))?;
            }
        }
        return Ok(());
    }
    let digest_col = if args.digests { format!("{:<72}  ", "DIGEST") } else { String::new() };
    writeln!(w, "{:<40}  {:<15}  {digest_col}{:<14}  {:<24}  SIZE", "REPOSITORY", "TAG", "IMAGE ID", "CREATED")?;
    for r in out {
        let digest_col = if args.digests { format!("{:<72}  ", r.digest) } else { String::new() };
        writeln!(
            w,
            "{:<40}  {:<15}  {digest_col}{:<14}  {:<24}  {}",
            r.repo,
            r.tag,
            r.id,
            humanize::ago(r.created.as_deref()),
            humanize::size(r.size)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globbing() {
        assert!(glob(b"busy*", b"busybox"));
        assert!(glob(b"busybox:1.?", b"busybox:1.2"));
        assert!(!glob(b"busy", b"busybox"));
        assert!(glob(b"*", b""));
    }
}
