//! `kiln inspect NAME...` (and `kiln image inspect`, `kiln container inspect`): Docker-shaped
//! JSON about containers (looked up first, as Docker does) and images.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use kiln_store::catalog::ImageSummary;
use kiln_store::Store;
use serde_json::{json, Value};

#[derive(Args)]
pub struct InspectArgs {
    /// For a multi-platform image: show the image of this platform (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Containers or images (names, ids or digests)
    #[arg(required = true)]
    images: Vec<String>,
}

/// The summary of `s`'s image for `platform`: a multi-platform image's entry for it, as an
/// image of its own (a single-platform image must be of that platform).
pub fn for_platform(store: &Store, s: &ImageSummary, platform: &kiln_store::Platform) -> Result<ImageSummary> {
    let record = store.image_for(s.digest(), Some(platform))?;
    let have = kiln_store::Platform { os: record.config.os.clone(), architecture: record.config.architecture.clone(), variant: None };
    if !platform.matches(&have) && !have.matches(platform) {
        anyhow::bail!("image {} is {have}, not {platform}", s.digest().short());
    }
    let size = record.manifest.layers().iter().map(|l| l.size()).sum();
    Ok(ImageSummary { record, index: None, names: s.names.clone(), has_children: s.has_children, size })
}

/// The JSON `docker image inspect` prints for one image.
pub fn describe(s: &ImageSummary) -> Value {
    let r = &s.record;
    let c = &r.config.config;
    let repo_digests: Vec<String> = s
        .names
        .iter()
        .map(|n| {
            let f = n.familiar();
            let repo = n.tag.as_deref().and_then(|t| f.strip_suffix(&format!(":{t}"))).unwrap_or(&f).to_string();
            format!("{repo}@{}", s.digest())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut config = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut config {
        for key in ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels"] {
            m.entry(key).or_insert(match key {
                "WorkingDir" | "User" => json!(""),
                _ => Value::Null,
            });
        }
    }
    let (descriptor, manifests) = match &s.index {
        Some(index) => (
            json!({ "mediaType": kiln_store::index::OCI_INDEX, "digest": index.digest.to_string(), "size": index.size }),
            json!(index.entries.iter().map(|e| json!({
                "Descriptor": { "mediaType": kiln_store::index::OCI_MANIFEST, "digest": e.manifest.to_string(), "size": e.size, "platform": e.platform },
                "Platform": e.platform.to_string(),
            })).collect::<Vec<_>>()),
        ),
        None => (
            json!({
                "mediaType": r.manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into()),
                "digest": r.manifest_digest.to_string(),
                "size": r.manifest_size,
            }),
            Value::Null,
        ),
    };
    let mut out = json!({
        "Id": s.id().to_string(),
        "RepoTags": s.names.iter().filter(|n| n.tag.is_some()).map(|n| n.familiar()).collect::<Vec<_>>(),
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": r.config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": r.config.created.clone().unwrap_or_default(),
        "Author": r.config.extra.get("author").cloned().unwrap_or(json!("")),
        "Config": config,
        "Architecture": r.config.architecture,
        "Variant": r.config.extra.get("variant").cloned().unwrap_or(Value::Null),
        "Os": r.config.os,
        "Size": s.size,
        "RootFS": {
            "Type": r.config.rootfs.kind,
            "Layers": r.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "Descriptor": descriptor,
    });
    if let (Value::Object(m), Value::Array(_)) = (&mut out, &manifests) {
        m.insert("Manifests".into(), manifests);
    }
    out
}

pub fn run(root: &Path, args: InspectArgs) -> Result<()> {
    let store = Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    let all = store.list_images().context("listing images")?;
    let platform = args.platform.as_deref().map(kiln_store::Platform::parse).transpose()?;
    // As Docker: what was found is printed, then the first image that was not is the error.
    let mut out = Vec::new();
    let mut first_err = None;
    let containers = kiln_runtime::container::Containers::new(root);
    for name in &args.images {
        if let Ok(c) = containers.get(name) {
            out.push(crate::container::inspect::describe(&c));
            continue;
        }
        let found = store.lookup(name).map_err(anyhow::Error::from).and_then(|(_, digest)| {
            let s = all.iter().find(|s| *s.digest() == digest).with_context(|| format!("no such image: {name}"))?;
            match &platform {
                Some(p) => for_platform(&store, s, p),
                None => Ok(s.clone()),
            }
        });
        match found {
            Ok(s) => out.push(describe(&s)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let text = serde_json::to_string_pretty(&Value::Array(out))?;
    crate::stdout::write_with(|w| writeln!(w, "{text}"))?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
