//! The cache as an OCI image layout directory (`--cache-to type=local,dest=DIR`,
//! `--cache-from type=local,src=DIR`): `oci-layout`, `index.json` naming the cache manifest
//! with `org.opencontainers.image.ref.name` = the tag (default `latest`), and
//! `blobs/sha256/<hex>`.
//!
//! Writing keeps the directory's other index entries and blobs (as BuildKit's local cache
//! exporter does), rewrites a blob file only when it is not already exactly the blob (so a
//! damaged file is repaired), and replaces `index.json` last and atomically: a reader sees the
//! old cache or the new one. Reading opens only `index.json` and blob files named by validated
//! digests, and reads at most the sizes the descriptors give.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_store::digest::HashingWriter;
use kiln_store::{Digest, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{invalid, CacheArtifact, CacheSource, Descriptor, TransferError, ARTIFACT_TYPE, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST};

/// The annotation naming an index entry (its tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The tag used when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// Largest `index.json` read.
const MAX_INDEX_BYTES: u64 = 1024 * 1024;
const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

fn blob_file(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// Writes `artifact` (its layer blobs from `store`) into the layout `dir`, under `tag`.
pub fn write(store: &Store, artifact: &CacheArtifact, dir: &Path, tag: &str) -> Result<(), TransferError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| TransferError::io(format!("creating {}", blobs.display()), e))?;
    let layout = dir.join("oci-layout");
    if fs::read(&layout).ok().as_deref() != Some(OCI_LAYOUT.as_bytes()) {
        write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
    }
    for layer in &artifact.layers {
        let dest = blob_file(dir, &layer.digest);
        if !holds_blob(&dest, &layer.digest, layer.size) {
            copy_from_store(store, &layer.digest, &dest)?;
        }
    }
    for (bytes, digest) in [(&artifact.config, &artifact.config_digest), (&artifact.manifest, &artifact.descriptor.digest)] {
        let dest = blob_file(dir, digest);
        if !holds_blob(&dest, digest, bytes.len() as u64) {
            write_atomic(&dest, bytes)?;
        }
    }
    // Other entries stay; the one with our tag is replaced.
    let mut entries = read_index(dir).map(|i| i.manifests).unwrap_or_default();
    entries.retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    let mut ours = artifact.descriptor.clone();
    ours.annotations.insert(REF_NAME.to_string(), tag.to_string());
    entries.push(ours);
    let index = Index { schema_version: 2, media_type: Some(OCI_INDEX.to_string()), manifests: entries };
    let bytes = serde_json::to_vec(&index).map_err(|e| invalid(format!("encoding index.json: {e}")))?;
    write_atomic(&dir.join("index.json"), &bytes)
}

/// Whether `path` is a regular file holding exactly the blob `digest` of `size` bytes.
fn holds_blob(path: &Path, digest: &Digest, size: u64) -> bool {
    let Ok(file) = open_regular(path) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(size) {
        return false;
    }
    let mut hashing = HashingWriter::new(io::sink());
    if io::copy(&mut file.take(size + 1), &mut hashing).is_err() {
        return false;
    }
    let (actual, len, _) = hashing.finish();
    actual == *digest && len == size
}

/// Copies a store blob to `dest` (atomically), checking on the way that it still is the blob.
fn copy_from_store(store: &Store, digest: &Digest, dest: &Path) -> Result<(), TransferError> {
    let dir = dest.parent().ok_or_else(|| invalid(format!("{} has no parent", dest.display())))?;
    let mut src = store.open_blob(digest)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| TransferError::io(format!("creating a temp file in {}", dir.display()), e))?;
    let mut hashing = HashingWriter::new(io::BufWriter::new(tmp));
    io::copy(&mut src, &mut hashing).map_err(|e| TransferError::io(format!("copying blob {digest} to {}", dest.display()), e))?;
    let (actual, _, buffered) = hashing.finish();
    if actual != *digest {
        return Err(StoreError::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() }.into());
    }
    let tmp = buffered.into_inner().map_err(|e| TransferError::io(format!("writing {}", dest.display()), e.into_error()))?;
    tmp.as_file().sync_all().map_err(|e| TransferError::io(format!("syncing {}", dest.display()), e))?;
    tmp.persist(dest).map_err(|e| TransferError::io(format!("writing {}", dest.display()), e.error))?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TransferError> {
    let dir = path.parent().ok_or_else(|| invalid(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| TransferError::io(format!("creating a temp file in {}", dir.display()), e))?;
    tmp.write_all(bytes).map_err(|e| TransferError::io(format!("writing {}", path.display()), e))?;
    tmp.as_file().sync_all().map_err(|e| TransferError::io(format!("syncing {}", path.display()), e))?;
    tmp.persist(path).map_err(|e| TransferError::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}

/// Opens `path` for reading only if it is a regular file (not a FIFO, device or directory).
fn open_regular(path: &Path) -> io::Result<fs::File> {
    let not_file = || io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
    if !fs::metadata(path)?.is_file() {
        return Err(not_file());
    }
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_file());
    }
    Ok(file)
}

/// Reads a whole small file, refusing one larger than `max` bytes.
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, TransferError> {
    let file = open_regular(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => TransferError::Source(format!("{} does not exist", path.display())),
        _ => TransferError::io(format!("opening {}", path.display()), e),
    })?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| TransferError::io(format!("reading {}", path.display()), e))?;
    if bytes.len() as u64 > max {
        return Err(invalid(format!("{} is larger than {max} bytes", path.display())));
    }
    Ok(bytes)
}

fn read_index(dir: &Path) -> Result<Index, TransferError> {
    let path = dir.join("index.json");
    let bytes = read_capped(&path, MAX_INDEX_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{} is not a valid OCI index: {e}", path.display())))
}

/// A layout directory as a cache source.
pub struct LocalLayout {
    dir: PathBuf,
    tag: Option<String>,
}

impl LocalLayout {
    /// The cache in `dir` tagged `tag` (default: the one tagged `latest`, or the only entry).
    pub fn new(dir: impl Into<PathBuf>, tag: Option<String>) -> Self {
        Self { dir: dir.into(), tag }
    }

    /// The index entry to import.
    fn choose(&self, index: &Index) -> Result<Descriptor, TransferError> {
        let want = self.tag.as_deref().unwrap_or(DEFAULT_TAG);
        let manifests: Vec<&Descriptor> = index.manifests.iter().filter(|d| d.media_type == OCI_MANIFEST).collect();
        if let Some(d) = manifests.iter().rev().find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(want)) {
            return Ok((*d).clone());
        }
        if self.tag.is_none() {
            let ours: Vec<&Descriptor> = manifests.iter().copied().filter(|d| d.artifact_type.as_deref() == Some(ARTIFACT_TYPE)).collect();
            match (ours.as_slice(), manifests.as_slice()) {
                ([one], _) | ([], [one]) => return Ok((*one).clone()),
                _ => {}
            }
        }
        Err(invalid(format!("{} holds no build cache tagged {want:?}", self.dir.display())))
    }
}

impl CacheSource for LocalLayout {
    fn name(&self) -> String {
        format!("local cache {}", self.dir.display())
    }

    fn manifest(&self) -> Result<Vec<u8>, TransferError> {
        if !self.dir.is_dir() {
            return Err(TransferError::Source(format!("{} is not a directory", self.dir.display())));
        }
        let desc = self.choose(&read_index(&self.dir)?)?;
        if desc.size > MAX_MANIFEST_BYTES {
            return Err(invalid(format!("the cache manifest {} is larger than {} MiB", desc.digest, MAX_MANIFEST_BYTES >> 20)));
        }
        let bytes = read_capped(&blob_file(&self.dir, &desc.digest), desc.size)?;
        if bytes.len() as u64 != desc.size || Digest::of(&bytes) != desc.digest {
            return Err(invalid(format!("the cache manifest blob {} does not match its digest or size", desc.digest)));
        }
        Ok(bytes)
    }

    fn fetch(&self, digest: &Digest, size: u64, into: &Store) -> Result<(), TransferError> {
        let path = blob_file(&self.dir, digest);
        let file = open_regular(&path).map_err(|e| TransferError::io(format!("opening {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| TransferError::io(format!("reading {}", path.display()), e))?.len();
        if len != size {
            return Err(invalid(format!("{} has {len} bytes, the cache says {size}", path.display())));
        }
        let mut ingest = into.ingest()?;
        io::copy(&mut file.take(size + 1), &mut ingest).map_err(|e| TransferError::io(format!("copying {}", path.display()), e))?;
        match ingest.commit(Some(digest)) {
            Ok(_) => Ok(()),
            Err(StoreError::DigestMismatch { actual, .. }) => Err(invalid(format!("{} has content {actual}, not {digest}", path.display()))),
            Err(e) => Err(e.into()),
        }
    }
}
