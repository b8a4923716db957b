//! Build cache export and import (`kiln build --cache-to` / `--cache-from`).
//!
//! The exported cache is one OCI image manifest, so any OCI tool can store, copy and inspect
//! it (`skopeo inspect oci:DIR` reads it as an image): its layers are the cached layer blobs,
//! byte for byte as the store holds them, and its config is a valid OCI image config (the
//! layers' diff ids) that also carries the cache records in a field of kiln's own,
//! `"kiln.buildcache"`: `{version, records: [{key, layer}]}`, where `layer` indexes the
//! manifest's layers (or is null for a step that produced no layer). The manifest's
//! `artifactType` ([`ARTIFACT_TYPE`]) says what it is. This follows the shape of BuildKit's
//! cache manifest (`application/vnd.buildkit.cacheconfig.v0` config + layers), kept readable
//! by image tools; it is not BuildKit-compatible.
//!
//! [`collect`] makes the artifact from the records of one build's keys ([`ExportMode::Min`]:
//! the layers of the final image; [`ExportMode::Max`]: every stage's layers); [`layout`]
//! writes it as an OCI image layout directory and reads it back. [`import()`] brings the
//! records of any [`CacheSource`] (a layout directory, a registry) into the store: everything
//! it reads is hostile input — documents are size-capped and parsed strictly, every blob is
//! fetched by digest into a private staging area that checks its digest and size, every layer
//! is checked entry by entry and must have the diff id the records claim. A blob that fails is
//! a warning that drops only the records that needed it; the rest are committed (blobs first,
//! then records, under the store lock) and give cache hits to the next build.

mod import;
pub mod layout;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use kiln_store::layer_read::Compression;
use kiln_store::{Digest, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheIndex, CacheKey, Cached};

pub use import::{import, CacheSource, Imported};

/// The manifest's `artifactType`: a kiln build cache.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.buildcache.v1+json";
/// The media type of the manifest (an ordinary OCI image manifest).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of its config (an ordinary OCI image config, plus the records).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

const FORMAT_VERSION: u32 = 1;

/// Largest manifest read from a cache source.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest config read from a cache source (the store reads no larger document).
const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// Most records and layers one cache may hold.
const MAX_RECORDS: usize = 100_000;
const MAX_LAYERS: usize = 10_000;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The cache source holds something that is not a valid kiln build cache.
    #[error("{0}")]
    Invalid(String),
    /// The source could not be read (missing, unreachable, refused).
    #[error("{0}")]
    Source(String),
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransferError {
    pub(crate) fn io(context: impl Into<String>, cause: io::Error) -> Self {
        Self::Io { context: context.into(), cause }
    }
}

fn invalid(why: impl Into<String>) -> TransferError {
    TransferError::Invalid(why.into())
}

/// Which records `--cache-to` exports (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// The steps whose layers the final image has (and the steps that made no layer).
    #[default]
    Min,
    /// Every layer step of the build, intermediate stages included.
    Max,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self { media_type: media_type.to_string(), digest, size, artifact_type: None, annotations: BTreeMap::new() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheConfig {
    architecture: String,
    os: String,
    rootfs: ConfigRootFs,
    /// kiln's own field: the records.
    #[serde(rename = "kiln.buildcache")]
    cache: CacheSection,
}

#[derive(Debug, Serialize, Deserialize)]
struct ConfigRootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<Digest>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheSection {
    version: u32,
    records: Vec<WireRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireRecord {
    key: String,
    /// Index into the manifest's layers; `None`: the step made no layer.
    layer: Option<usize>,
}

/// A build cache ready to be written somewhere: its manifest and config documents and the
/// store's layer blobs they list.
#[derive(Debug, Clone)]
pub struct CacheArtifact {
    pub manifest: Vec<u8>,
    /// The manifest's descriptor (with [`ARTIFACT_TYPE`]), as an index lists it.
    pub descriptor: Descriptor,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    /// The layers, in manifest order; their blobs are in the store.
    pub layers: Vec<Descriptor>,
    /// How many cache records it carries.
    pub records: usize,
}

impl CacheArtifact {
    /// Bytes of its layers.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// The OCI media type of a stored layer blob, judged by its first bytes.
fn layer_media_type(store: &Store, digest: &Digest) -> Result<&'static str, TransferError> {
    Ok(store.layer_compression(digest)?.oci_media_type())
}

/// Makes the cache artifact of one build: the records of `keys` (a build's
/// [`crate::BuildOutcome::cache_keys`]) that the store still has, chosen by `mode`
/// (`image`: the build's manifest digest, whose layers [`ExportMode::Min`] keeps).
pub fn collect(store: &Store, keys: &[crate::CacheKey], mode: ExportMode, image: &Digest) -> Result<CacheArtifact, TransferError> {
    // A multi-platform build's image is an index: the layers of all its platforms count.
    let final_layers: BTreeSet<Digest> = store.platform_images(image)?.into_iter().flat_map(|i| i.layers).collect();
    let cache = CacheIndex::new(store);
    let mut seen = BTreeSet::new();
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut diff_ids = Vec::new();
    let mut records = Vec::new();
    for key in keys {
        if !seen.insert(key.as_str().to_string()) {
            continue;
        }
        let layer = match cache.peek(key) {
            None => continue,
            Some(Cached::Empty) => None,
            Some(Cached::Layer(l)) if mode == ExportMode::Min && !final_layers.contains(&l.digest) => continue,
            Some(Cached::Layer(l)) => Some(match layers.iter().position(|d| d.digest == l.digest) {
                Some(i) => i,
                None => {
                    layers.push(Descriptor::new(layer_media_type(store, &l.digest)?, l.digest.clone(), l.size));
                    diff_ids.push(l.diff_id.clone());
                    layers.len() - 1
                }
            }),
        };
        records.push(WireRecord { key: key.as_str().to_string(), layer });
    }
    let config = CacheConfig {
        architecture: kiln_runtime::emulate::host_arch().to_string(),
        os: "linux".to_string(),
        rootfs: ConfigRootFs { kind: "layers".to_string(), diff_ids },
        cache: CacheSection { version: FORMAT_VERSION, records },
    };
    let record_count = config.cache.records.len();
    let config_bytes = serde_json::to_vec(&config).map_err(|e| invalid(format!("encoding the cache config: {e}")))?;
    let config_digest = Digest::of(&config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        config: Descriptor::new(OCI_CONFIG, config_digest.clone(), config_bytes.len() as u64),
        layers: layers.clone(),
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(format!("encoding the cache manifest: {e}")))?;
    let mut descriptor = Descriptor::new(OCI_MANIFEST, Digest::of(&manifest_bytes), manifest_bytes.len() as u64);
    descriptor.artifact_type = Some(ARTIFACT_TYPE.to_string());
    Ok(CacheArtifact { manifest: manifest_bytes, descriptor, config: config_bytes, config_digest, layers, records: record_count })
}

/// A cache manifest, checked: what [`import()`] fetches next.
#[derive(Debug)]
struct ParsedManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn parse_manifest(bytes: &[u8]) -> Result<ParsedManifest, TransferError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!("the cache manifest is larger than {} MiB", MAX_MANIFEST_BYTES >> 20)));
    }
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| invalid(format!("the cache manifest is not valid: {e}")))?;
    if m.schema_version != 2 || m.media_type.as_deref().is_some_and(|t| t != OCI_MANIFEST) {
        return Err(invalid("the cache manifest is not an OCI image manifest"));
    }
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        let what = m.artifact_type.as_deref().unwrap_or("an image");
        return Err(invalid(format!("not a kiln build cache (artifact type {ARTIFACT_TYPE}) but {what}")));
    }
    if m.config.media_type != OCI_CONFIG || m.config.size > MAX_CONFIG_BYTES {
        return Err(invalid(format!("the cache config is a {:?} of {} bytes", m.config.media_type, m.config.size)));
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(invalid(format!("the cache lists {} layers (at most {MAX_LAYERS})", m.layers.len())));
    }
    for l in &m.layers {
        if Compression::from_media_type(&l.media_type).is_none() {
            return Err(invalid(format!("layer {} has media type {:?}, not a layer's", l.digest, l.media_type)));
        }
    }
    Ok(ParsedManifest { config: m.config, layers: m.layers })
}

/// One imported record: the key and the index of its layer in the manifest.
type ImportRecord = (CacheKey, Option<usize>);

/// Parses a cache config; returns its records (first of each key) and the layers' diff ids.
fn parse_config(bytes: &[u8], manifest: &ParsedManifest) -> Result<(Vec<ImportRecord>, Vec<Digest>), TransferError> {
    let config: CacheConfig = serde_json::from_slice(bytes).map_err(|e| invalid(format!("the cache config is not valid: {e}")))?;
    if config.cache.version != FORMAT_VERSION {
        return Err(invalid(format!("the cache has format version {} (this kiln reads {FORMAT_VERSION})", config.cache.version)));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(format!(
            "the cache config lists {} diff ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    if config.cache.records.len() > MAX_RECORDS {
        return Err(invalid(format!("the cache holds {} records (at most {MAX_RECORDS})", config.cache.records.len())));
    }
    let mut seen = BTreeSet::new();
    let mut records = Vec::new();
    for r in config.cache.records {
        let key = CacheKey::from_hex(&r.key).ok_or_else(|| invalid(format!("cache record key {:?} is not a kiln cache key", r.key)))?;
        if r.layer.is_some_and(|i| i >= manifest.layers.len()) {
            return Err(invalid(format!("cache record {} names layer {:?} of {}", r.key, r.layer, manifest.layers.len())));
        }
        if seen.insert(r.key) {
            records.push((key, r.layer));
        }
    }
    Ok((records, config.rootfs.diff_ids))
}
