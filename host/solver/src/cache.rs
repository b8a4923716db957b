//! The build cache: step key -> the layer that step produced.
//!
//! A key chains the parent step's key with the instruction and everything it reads: for COPY
//! the diff id of the layer the context yields, for RUN the argv, environment and working
//! directory, for FROM the base image's manifest digest. A hit is reused only while its layer
//! blob is still in the store; anything else is a miss, never an error.
//!
//! Entries live in `<store>/pins/build-cache/<key>` (one small JSON file each, written
//! atomically), recorded only after a build committed its image, so a failed build adds
//! nothing. Living under the store's pins keeps their layers alive through `image prune` and
//! `rmi`, as Docker keeps its build cache apart from images; [`CacheIndex::prune`]
//! (`kiln builder prune`) drops entries, and the next collection frees their layers. A hit
//! refreshes its entry's mtime, so pruning by age drops the least recently used first.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use kiln_store::{Digest, LayerInfo, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A step's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// The first key of a build: what it starts from.
    pub fn base(base: &str) -> Self {
        Self::derive(None, &["FROM", base])
    }

    /// The key of a step after `parent`, from the instruction's parts.
    pub fn child(&self, parts: &[&str]) -> Self {
        Self::derive(Some(self), parts)
    }

    fn derive(parent: Option<&CacheKey>, parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        h.update(b"kiln-cache-v1\0");
        if let Some(p) = parent {
            h.update(p.0.as_bytes());
        }
        // Length-prefixed parts: ("ab","c") and ("a","bc") must not collide.
        for part in parts {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Self(hex_string(&h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// None: the step produced no layer (an empty diff).
    layer: Option<StoredLayer>,
}

#[derive(Serialize, Deserialize)]
struct StoredLayer {
    digest: Digest,
    diff_id: Digest,
    size: u64,
}

/// What a cache hit yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Layer(LayerInfo),
    Empty,
}

/// The cache index of one store.
pub struct CacheIndex {
    dir: PathBuf,
    store: Store,
}

impl CacheIndex {
    pub fn new(store: &Store) -> Self {
        Self { dir: store.pins_dir().join("build-cache"), store: store.clone() }
    }

    /// The cached result of `key`, if present and its layer blob still exists.
    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        let path = self.dir.join(key.as_str());
        let bytes = fs::read(&path).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        // Least-recently-used order for pruning; a failure only makes the entry look older.
        let _ = fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        match record.layer {
            None => Some(Cached::Empty),
            Some(l) if self.store.has_blob(&l.digest) => {
                Some(Cached::Layer(LayerInfo { digest: l.digest, diff_id: l.diff_id, size: l.size }))
            }
            Some(_) => None,
        }
    }

    /// Records `key`'s result. Failures are reported but a build never fails on them.
    pub fn put(&self, key: &CacheKey, result: &Cached) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let layer = match result {
            Cached::Empty => None,
            Cached::Layer(l) => Some(StoredLayer { digest: l.digest.clone(), diff_id: l.diff_id.clone(), size: l.size }),
        };
        let bytes = serde_json::to_vec(&Record { layer }).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.dir.join(key.as_str())).map_err(|e| e.error)?;
        Ok(())
    }
}

/// What [`CacheIndex::prune`] drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMode {
    /// Entries whose layer no image uses (the space a prune can actually free).
    Unused,
    /// Every entry.
    All,
    /// Least recently used unused entries until the layers only the cache holds total at
    /// most this many bytes.
    KeepBytes(u64),
}

impl CacheIndex {
    /// Drops cache entries; returns how many. The caller collects the freed blobs.
    pub fn prune(&self, mode: PruneMode) -> std::io::Result<usize> {
        let mut used_by_images = std::collections::BTreeSet::new();
        for digest in self.store.image_digests().map_err(std::io::Error::other)? {
            if let Ok(img) = self.store.image(&digest) {
                used_by_images.extend(img.layers);
            }
        }
        let mut entries = Vec::new();
        let Ok(dir) = fs::read_dir(&self.dir) else { return Ok(0) };
        for entry in dir.flatten() {
            let path = entry.path();
            let mtime = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            let layer = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok()).and_then(|r| r.layer);
            let cache_only = layer.as_ref().is_some_and(|l| !used_by_images.contains(&l.digest));
            let size = if cache_only { layer.map_or(0, |l| l.size) } else { 0 };
            entries.push((mtime, path, cache_only, size));
        }
        entries.sort_by_key(|e| e.0);
        let mut held: u64 = entries.iter().map(|e| e.3).sum();
        let mut removed = 0;
        for (_, path, cache_only, size) in entries {
            let drop = match mode {
                PruneMode::All => true,
                PruneMode::Unused => cache_only,
                PruneMode::KeepBytes(limit) => cache_only && held > limit,
            };
            if drop {
                fs::remove_file(&path)?;
                held = held.saturating_sub(size);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_and_do_not_collide() {
        let base = CacheKey::base("scratch");
        assert_eq!(base, CacheKey::base("scratch"));
        assert_ne!(base, CacheKey::base("sha256:x"));
        let a = base.child(&["RUN", "ab", "c"]);
        let b = base.child(&["RUN", "a", "bc"]);
        assert_ne!(a, b);
        assert_ne!(a.child(&["RUN", "x"]), b.child(&["RUN", "x"]));
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn hits_need_their_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cache = CacheIndex::new(&store);
        let key = CacheKey::base("scratch").child(&["RUN", "true"]);
        assert_eq!(cache.get(&key), None);
        cache.put(&key, &Cached::Empty).expect("put");
        assert_eq!(cache.get(&key), Some(Cached::Empty));
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        tar.append_data(&mut h, "f", &b"x"[..]).expect("append");
        let layer = store.ingest_layer(tar.into_inner().expect("tar").as_slice()).expect("layer");
        let key2 = key.child(&["COPY", "f"]);
        cache.put(&key2, &Cached::Layer(layer.clone())).expect("put");
        assert_eq!(cache.get(&key2), Some(Cached::Layer(layer.clone())));
        fs::remove_file(store.blob_path(&layer.digest)).expect("rm");
        assert_eq!(cache.get(&key2), None, "a record whose blob is gone is a miss");
        fs::write(store.pins_dir().join("build-cache").join(key.as_str()), b"garbage").expect("corrupt");
        assert_eq!(cache.get(&key), None, "a corrupt record is a miss");
    }
}
