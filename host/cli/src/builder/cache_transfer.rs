//! `kiln build --cache-to` / `--cache-from` (BuildKit's `type=local|registry` specs) and the
//! automatic bound on the build cache after a build.
//!
//! The cache's format and every check on an import are [`kiln_solver::cache_transfer`]'s;
//! this module parses the specs (a bad one is an error before anything runs), moves the
//! artifact through a layout directory or a registry, and reports. As in BuildKit, a cache
//! source that is missing, unreachable or corrupt is a warning and the build goes on without
//! it; a failed export is an error unless the spec says `ignore-error=true`.
//!
//! The bound: after a successful build, when the layers only the build cache keeps (no image
//! uses them) exceed `KILN_CACHE_MAX` (a size such as `5GB`; `0` = unbounded; default: 10% of
//! the store's filesystem, at most 10 GiB), the least recently used entries are dropped until
//! they fit and the freed blobs are collected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_registry::artifact::{push_blob, push_manifest, BlobData};
use kiln_solver::cache::CacheIndex;
use kiln_solver::cache_transfer::{self as transfer, layout, CacheSource, ExportMode, TransferError};
use kiln_solver::BuildOutcome;
use kiln_store::{Digest, Reference, Store};

use crate::humanize;

/// Where `--cache-to` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Local { dest: PathBuf, tag: String, mode: ExportMode, ignore_error: bool },
    Registry { reference: Reference, mode: ExportMode, ignore_error: bool },
}

/// Where `--cache-from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Local { src: PathBuf, tag: Option<String> },
    Registry { reference: Reference },
}

/// `key=value,...` into a map; a bare `NAME` (no `=`) is `type=registry,ref=NAME`.
fn fields<'a>(flag: &str, spec: &'a str, known: &[&str]) -> Result<BTreeMap<&'a str, &'a str>> {
    let mut out = BTreeMap::new();
    if !spec.contains('=') && !spec.trim().is_empty() {
        out.insert("type", "registry");
        out.insert("ref", spec.trim());
        return Ok(out);
    }
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            bail!("invalid {flag} {spec:?}: {field:?} is not KEY=VALUE");
        };
        if !known.contains(&k) {
            bail!("invalid {flag} {spec:?}: unknown field {k:?} (kiln knows {})", known.join(", "));
        }
        if out.insert(k, v).is_some() {
            bail!("invalid {flag} {spec:?}: {k} is given twice");
        }
    }
    Ok(out)
}

fn flag_bool(flag: &str, spec: &str, key: &str, value: Option<&&str>) -> Result<bool> {
    match value.copied() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => bail!("invalid {flag} {spec:?}: {key}={other:?} (expected true or false)"),
    }
}

fn path_field(flag: &str, spec: &str, key: &str, value: Option<&&str>) -> Result<PathBuf> {
    match value.copied() {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => bail!("invalid {flag} {spec:?}: type=local needs {key}=DIR"),
    }
}

fn reference_field(flag: &str, spec: &str, value: Option<&&str>) -> Result<Reference> {
    let Some(text) = value.copied().filter(|v| !v.is_empty()) else {
        bail!("invalid {flag} {spec:?}: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]");
    };
    text.parse::<Reference>().with_context(|| format!("invalid {flag} {spec:?}: ref {text:?}"))
}

/// `oci-mediatypes` and `image-manifest`: BuildKit options whose `true` is what kiln always
/// writes (an OCI image manifest).
fn always_true(flag: &str, spec: &str, f: &BTreeMap<&str, &str>) -> Result<()> {
    for key in ["oci-mediatypes", "image-manifest"] {
        if f.get(key).is_some_and(|v| *v != "true") {
            bail!("invalid {flag} {spec:?}: kiln always writes an OCI image manifest ({key}=true)");
        }
    }
    Ok(())
}

fn check_tag(flag: &str, spec: &str, tag: &str) -> Result<()> {
    let ok = !tag.is_empty() && tag.len() <= 128 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("invalid {flag} {spec:?}: tag {tag:?} is not a valid tag");
    }
    Ok(())
}

impl CacheTo {
    /// Parses `type=local,dest=DIR` / `type=registry,ref=REF` with `mode=min|max`,
    /// `ignore-error=true|false` (and `tag=` for a layout), or a bare `REF`.
    pub fn parse(spec: &str) -> Result<Self> {
        let flag = "--cache-to";
        let known = ["type", "dest", "ref", "mode", "tag", "ignore-error", "oci-mediatypes", "image-manifest"];
        let f = fields(flag, spec, &known)?;
        always_true(flag, spec, &f)?;
        let mode = match f.get("mode").copied() {
            None | Some("min") => ExportMode::Min,
            Some("max") => ExportMode::Max,
            Some(other) => bail!("invalid {flag} {spec:?}: mode={other:?} (expected min or max)"),
        };
        let ignore_error = flag_bool(flag, spec, "ignore-error", f.get("ignore-error"))?;
        match f.get("type").copied() {
            Some("local") => {
                if f.contains_key("ref") {
                    bail!("invalid {flag} {spec:?}: type=local takes dest=, not ref=");
                }
                let tag = f.get("tag").copied().unwrap_or(layout::DEFAULT_TAG).to_string();
                check_tag(flag, spec, &tag)?;
                Ok(Self::Local { dest: path_field(flag, spec, "dest", f.get("dest"))?, tag, mode, ignore_error })
            }
            Some("registry") => {
                if f.contains_key("dest") || f.contains_key("tag") {
                    bail!("invalid {flag} {spec:?}: type=registry takes ref=REF[:TAG] only");
                }
                let reference = reference_field(flag, spec, f.get("ref"))?;
                if reference.digest.is_some() {
                    bail!("invalid {flag} {spec:?}: the cache is pushed to a tag, not a digest");
                }
                Ok(Self::Registry { reference, mode, ignore_error })
            }
            Some(other) => bail!("invalid {flag} {spec:?}: type={other:?} is not supported (kiln exports type=local and type=registry)"),
            None => bail!("invalid {flag} {spec:?}: type= is required (type=local,dest=DIR or type=registry,ref=REF)"),
        }
    }
}

impl CacheFrom {
    /// Parses `type=local,src=DIR[,tag=T]` / `type=registry,ref=REF`, or a bare `REF`.
    pub fn parse(spec: &str) -> Result<Self> {
        let flag = "--cache-from";
        let f = fields(flag, spec, &["type", "src", "ref", "tag"])?;
        match f.get("type").copied() {
            Some("local") => {
                if f.contains_key("ref") {
                    bail!("invalid {flag} {spec:?}: type=local takes src=, not ref=");
                }
                let tag = f.get("tag").map(|t| t.to_string());
                if let Some(t) = &tag {
                    check_tag(flag, spec, t)?;
                }
                Ok(Self::Local { src: path_field(flag, spec, "src", f.get("src"))?, tag })
            }
            Some("registry") => {
                if f.contains_key("src") || f.contains_key("tag") {
                    bail!("invalid {flag} {spec:?}: type=registry takes ref=REF[:TAG|@DIGEST] only");
                }
                Ok(Self::Registry { reference: reference_field(flag, spec, f.get("ref"))? })
            }
            Some(other) => bail!("invalid {flag} {spec:?}: type={other:?} is not supported (kiln imports type=local and type=registry)"),
            None => bail!("invalid {flag} {spec:?}: type= is required (type=local,src=DIR or type=registry,ref=REF)"),
        }
    }
}

/// A registry repository holding a cache.
struct RegistrySource {
    client: kiln_registry::Client,
    reference: Reference,
}

impl RegistrySource {
    fn scope(&self) -> String {
        format!("repository:{}:pull", self.reference.path)
    }
}

fn source_error(e: kiln_registry::RegistryError) -> TransferError {
    TransferError::Source(e.to_string())
}

impl CacheSource for RegistrySource {
    fn name(&self) -> String {
        format!("registry cache {}", self.reference)
    }

    fn manifest(&self) -> Result<Vec<u8>, TransferError> {
        let r = &self.reference;
        let wanted = match (&r.digest, &r.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => layout::DEFAULT_TAG.to_string(),
        };
        let (bytes, _, _) = kiln_registry::pull::fetch_manifest(&self.client, &r.path, &wanted, &self.scope()).map_err(source_error)?;
        Ok(bytes)
    }

    fn fetch(&self, digest: &Digest, size: u64, into: &Store) -> Result<(), TransferError> {
        kiln_registry::pull::fetch_blob(&self.client, &self.reference.path, digest, size, &self.scope(), into, &|_| {}).map_err(|e| match e {
            kiln_registry::RegistryError::Invalid(why) => TransferError::Invalid(why),
            other => source_error(other),
        })
    }
}

fn connect(reference: &Reference) -> Result<kiln_registry::Client, kiln_registry::RegistryError> {
    let settings = kiln_registry::Settings::load_default()?;
    kiln_registry::connect(&reference.domain, &settings)
}

/// Imports every `--cache-from` source into the store. Never fails: a source that cannot be
/// used is a warning, as in BuildKit.
pub fn import_all(store: &Store, sources: &[CacheFrom], quiet: bool) {
    for from in sources {
        let result = match from {
            CacheFrom::Local { src, tag } => {
                let source = layout::LocalLayout::new(src, tag.clone());
                (source.name(), transfer::import(store, &source))
            }
            CacheFrom::Registry { reference } => match connect(reference) {
                Ok(client) => {
                    let source = RegistrySource { client, reference: reference.clone() };
                    (source.name(), transfer::import(store, &source))
                }
                Err(e) => (format!("registry cache {reference}"), Err(source_error(e))),
            },
        };
        match result {
            (name, Ok(report)) => {
                for w in &report.warnings {
                    eprintln!("warning: {w}");
                }
                if !quiet {
                    eprintln!(
                        "#cache imported {} records from {name} ({} already here; {} layers, {} fetched)",
                        report.added,
                        report.present,
                        report.fetched,
                        humanize::size(report.bytes)
                    );
                }
            }
            (name, Err(e)) => eprintln!("warning: {name} not imported: {e}"),
        }
    }
}

/// Exports this build's cache to every `--cache-to` target. A failure is an error unless the
/// target says `ignore-error=true` (then a warning).
pub fn export_all(store: &Store, targets: &[CacheTo], outcome: &BuildOutcome, quiet: bool) -> Result<()> {
    for to in targets {
        let (mode, ignore_error, name) = match to {
            CacheTo::Local { dest, mode, ignore_error, .. } => (*mode, *ignore_error, dest.display().to_string()),
            CacheTo::Registry { reference, mode, ignore_error } => (*mode, *ignore_error, reference.to_string()),
        };
        match export_one(store, to, mode, outcome) {
            Ok(art) => {
                if !quiet {
                    let layers = art.layers.len();
                    eprintln!("#cache exported {} records ({layers} layers, {}) to {name}", art.records, humanize::size(art.layer_bytes()));
                }
            }
            Err(e) if ignore_error => eprintln!("warning: exporting the build cache to {name} failed (ignore-error=true): {e:#}"),
            Err(e) => return Err(e.context(format!("the image was built ({}), but exporting the build cache to {name} failed", outcome.config))),
        }
    }
    Ok(())
}

fn export_one(store: &Store, to: &CacheTo, mode: ExportMode, outcome: &BuildOutcome) -> Result<transfer::CacheArtifact> {
    let art = transfer::collect(store, &outcome.cache_keys, mode, &outcome.manifest).context("collecting the build cache")?;
    match to {
        CacheTo::Local { dest, tag, .. } => layout::write(store, &art, dest, tag)?,
        CacheTo::Registry { reference, .. } => {
            let client = connect(reference)?;
            let path = &reference.path;
            let tag = reference.tag.as_deref().unwrap_or(layout::DEFAULT_TAG);
            for layer in &art.layers {
                push_blob(&client, path, &layer.digest, BlobData::File(&store.blob_path(&layer.digest)))?;
            }
            push_blob(&client, path, &art.config_digest, BlobData::Bytes(&art.config))?;
            push_manifest(&client, path, tag, &art.manifest, transfer::OCI_MANIFEST)?;
        }
    }
    Ok(art)
}

/// Default bound: 10% of the store's filesystem, at most this.
const DEFAULT_CACHE_MAX: u64 = 10 << 30;

/// The cache bound `KILN_CACHE_MAX` asks for: `Some(Some(bytes))`, `Some(None)` for `0`
/// (unbounded), `None` when unset (the default applies). A bad value is an error.
pub fn cache_max_from_env() -> Result<Option<Option<u64>>> {
    match std::env::var("KILN_CACHE_MAX") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => {
            let bytes = super::parse_size(&v).with_context(|| format!("KILN_CACHE_MAX={v:?}"))?;
            Ok(Some((bytes > 0).then_some(bytes)))
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("KILN_CACHE_MAX: {e}"),
    }
}

/// The default bound for a store at `root`: 10% of its filesystem, at most 10 GiB.
fn default_cache_max(root: &Path) -> u64 {
    filesystem_bytes(root).map_or(DEFAULT_CACHE_MAX, |total| (total / 10).min(DEFAULT_CACHE_MAX))
}

/// Size of the filesystem holding `path`.
fn filesystem_bytes(path: &Path) -> Option<u64> {
    kiln_sys::fs::space(path).ok().map(|s| s.total)
}

/// Keeps the build cache within its bound (see the module docs). Problems are warnings: the
/// build itself succeeded.
pub fn enforce_bound(store: &Store, requested: Option<Option<u64>>, quiet: bool) {
    let limit = match requested {
        Some(None) => return,
        Some(Some(bytes)) => bytes,
        None => default_cache_max(store.root()),
    };
    match CacheIndex::new(store).bound(limit) {
        Ok(None) => {}
        Ok(Some((removed, reclaimed))) => {
            if !quiet {
                eprintln!(
                    "#cache over its bound of {} (KILN_CACHE_MAX): dropped {removed} least recently used entries, reclaimed {}",
                    humanize::size(limit),
                    humanize::size(reclaimed)
                );
            }
        }
        Err(e) => eprintln!("warning: keeping the build cache within {}: {e}", humanize::size(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_to_specs() {
        let local = CacheTo::parse("type=local,dest=/tmp/c,mode=max").expect("local");
        assert_eq!(local, CacheTo::Local { dest: "/tmp/c".into(), tag: "latest".into(), mode: ExportMode::Max, ignore_error: false });
        let reg = CacheTo::parse("type=registry,ref=localhost:5000/app:cache,ignore-error=true,image-manifest=true").expect("registry");
        let CacheTo::Registry { reference, mode, ignore_error } = reg else { panic!("not registry") };
        assert_eq!((reference.domain.as_str(), reference.path.as_str(), reference.tag.as_deref()), ("localhost:5000", "app", Some("cache")));
        assert_eq!((mode, ignore_error), (ExportMode::Min, true));
        assert!(matches!(CacheTo::parse("localhost:5000/app:cache"), Ok(CacheTo::Registry { .. })), "a bare name is a registry ref");
        for (bad, needle) in [
            ("type=local", "dest=DIR"),
            ("type=local,dest=", "dest=DIR"),
            ("type=s3,bucket=x", "unknown field"),
            ("type=gha", "not supported"),
            ("dest=/tmp/x", "type= is required"),
            ("type=local,dest=/x,mode=all", "mode="),
            ("type=local,dest=/x,dest=/y", "twice"),
            ("type=local,dest=/x,ignore-error=yes", "true or false"),
            ("type=registry", "ref="),
            ("type=registry,ref=UPPER/case", "ref"),
            ("type=registry,ref=a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000", "digest"),
            ("type=local,dest=/x,tag=a/b", "tag"),
            ("type=local,dest=/x,oci-mediatypes=false", "OCI image manifest"),
            ("type=local,dest", "KEY=VALUE"),
        ] {
            let err = format!("{:#}", CacheTo::parse(bad).expect_err(bad));
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn cache_from_specs() {
        assert_eq!(CacheFrom::parse("type=local,src=/c").expect("local"), CacheFrom::Local { src: "/c".into(), tag: None });
        assert_eq!(CacheFrom::parse("type=local,src=/c,tag=v1").expect("tag"), CacheFrom::Local { src: "/c".into(), tag: Some("v1".into()) });
        assert!(matches!(CacheFrom::parse("type=registry,ref=localhost:5000/app:cache"), Ok(CacheFrom::Registry { .. })));
        assert!(matches!(CacheFrom::parse("app:cache"), Ok(CacheFrom::Registry { .. })));
        for (bad, needle) in [("type=local", "src=DIR"), ("type=local,src=/c,mode=max", "unknown field"), ("type=inline", "not supported"), ("", "KEY=VALUE")] {
            let err = format!("{:#}", CacheFrom::parse(bad).expect_err(bad));
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn default_bound_is_a_tenth_of_the_filesystem_at_most_10_gib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let total = filesystem_bytes(dir.path()).expect("statvfs");
        assert!(total > 0);
        assert_eq!(default_cache_max(dir.path()), (total / 10).min(10 << 30));
        assert_eq!(default_cache_max(Path::new("/nonexistent/kiln")), 10 << 30);
    }
}
