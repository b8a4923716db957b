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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

    /// A key from its text (64 lowercase hex digits, as [`CacheKey::as_str`] gives it), for
    /// keys that come from an imported cache: anything else is refused, so a key is always
    /// safe as a file name.
    pub fn from_hex(text: &str) -> Option<Self> {
        let ok = text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(text.to_string()))
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest record file read: records are a few hundred bytes; anything bigger is not one.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// Reads one record file; `None` when it is missing, too large or not a record.
fn read_record(path: &std::path::Path) -> Option<Record> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path).ok()?.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
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

    /// The cached result of `key`, if present and its layer blob still exists. A hit counts
    /// as a use: it becomes the most recently used entry.
    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        let hit = self.peek(key)?;
        // Least-recently-used order for pruning; a failure only makes the entry look older.
        let path = self.dir.join(key.as_str());
        let _ = fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(hit)
    }

    /// [`CacheIndex::get`] without counting as a use (for exporting and importing the cache).
    pub fn peek(&self, key: &CacheKey) -> Option<Cached> {
        let record = read_record(&self.dir.join(key.as_str()))?;
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
    ///
    /// Sizes count each cache-only layer once, however many entries name it; with
    /// [`PruneMode::KeepBytes`] entries go oldest first until the layers the remaining entries
    /// alone hold fit in the limit.
    pub fn prune(&self, mode: PruneMode) -> std::io::Result<usize> {
        let used_by_images = self.image_layers()?;
        let mut entries = Vec::new();
        let Ok(dir) = fs::read_dir(&self.dir) else { return Ok(0) };
        for entry in dir.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let mtime = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
            let layer = read_record(&path).and_then(|r| r.layer);
            // A layer whose blob is gone holds no bytes (and the record gives no hits).
            let cache_only = layer.filter(|l| !used_by_images.contains(&l.digest)).map(|l| {
                let size = if self.store.has_blob(&l.digest) { l.size } else { 0 };
                (l.digest, size)
            });
            entries.push((mtime, path, cache_only));
        }
        entries.sort_by_key(|e| e.0);
        // Entries naming each cache-only layer, and the bytes of those layers.
        let mut holders: std::collections::BTreeMap<Digest, (usize, u64)> = std::collections::BTreeMap::new();
        for (_, _, layer) in &entries {
            if let Some((digest, size)) = layer {
                holders.entry(digest.clone()).or_insert((0, *size)).0 += 1;
            }
        }
        let mut held: u64 = holders.values().map(|(_, size)| size).sum();
        let mut removed = 0;
        for (_, path, cache_only) in entries {
            let drop = match mode {
                PruneMode::All => true,
                PruneMode::Unused => cache_only.is_some(),
                PruneMode::KeepBytes(limit) => cache_only.is_some() && held > limit,
            };
            if !drop {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Another kiln pruned it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            removed += 1;
            if let Some((digest, _)) = cache_only {
                if let Some(h) = holders.get_mut(&digest) {
                    h.0 -= 1;
                    if h.0 == 0 {
                        held = held.saturating_sub(h.1);
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Bytes of the layers only the cache keeps (no image uses them), each counted once.
    pub fn cache_only_bytes(&self) -> std::io::Result<u64> {
        let used_by_images = self.image_layers()?;
        let mut layers = std::collections::BTreeMap::new();
        let Ok(dir) = fs::read_dir(&self.dir) else { return Ok(0) };
        for entry in dir.flatten() {
            if let Some(l) = read_record(&entry.path()).and_then(|r| r.layer) {
                if !used_by_images.contains(&l.digest) && self.store.has_blob(&l.digest) {
                    layers.insert(l.digest, l.size);
                }
            }
        }
        Ok(layers.values().sum())
    }

    /// Keeps the cache within `limit` bytes of cache-only layers, as after every build: when
    /// it holds more, drops the least recently used entries ([`PruneMode::KeepBytes`]) and
    /// collects the blobs nothing keeps any more. Returns how many entries went and the bytes
    /// reclaimed, or `None` when the cache was within the limit.
    pub fn bound(&self, limit: u64) -> Result<Option<(usize, u64)>, kiln_store::StoreError> {
        let io = |what: &str, e: std::io::Error| kiln_store::StoreError::io(format!("{what} the build cache"), e);
        if self.cache_only_bytes().map_err(|e| io("measuring", e))? <= limit {
            return Ok(None);
        }
        let lock = self.store.lock()?;
        let removed = self.prune(PruneMode::KeepBytes(limit)).map_err(|e| io("pruning", e))?;
        if removed == 0 {
            return Ok(None);
        }
        let gc = self.store.collect_garbage(&lock)?;
        Ok(Some((removed, gc.reclaimed)))
    }

    /// Layers some image in the store uses.
    fn image_layers(&self) -> std::io::Result<std::collections::BTreeSet<Digest>> {
        let mut used = std::collections::BTreeSet::new();
        for digest in self.store.image_digests().map_err(std::io::Error::other)? {
            // Every platform image of a multi-platform image uses its layers too.
            for img in self.store.platform_images(&digest).unwrap_or_default() {
                used.extend(img.layers);
            }
        }
        Ok(used)
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

    #[test]
    fn bound_drops_least_recently_used_cache_only_layers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cache = CacheIndex::new(&store);
        let layer = |name: &str, len: usize| {
            // Incompressible-ish content so sizes differ as asked.
            let data: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8 ^ name.as_bytes()[0]).collect();
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).expect("append");
            store.ingest_layer(tar.into_inner().expect("tar").as_slice()).expect("layer")
        };
        let (old, new, used) = (layer("old", 50_000), layer("new", 20_000), layer("used", 10_000));
        store
            .write_image(kiln_store::NewImage {
                layers: vec![used.clone()],
                config: kiln_store::image::RunConfig::default(),
                history: vec![],
                created: "2026-01-01T00:00:00Z".into(),
                architecture: "amd64".into(),
                os: "linux".into(),
            author: None,
            variant: None,
            })
            .expect("image");
        let base = CacheKey::base("scratch");
        let keys: Vec<CacheKey> = (0..4).map(|i| base.child(&["RUN", &i.to_string()])).collect();
        for (key, l) in keys.iter().zip([&old, &old, &new, &used]) {
            cache.put(key, &Cached::Layer(l.clone())).expect("put");
        }
        let age = |key: &CacheKey, secs: u64| {
            let path = store.pins_dir().join("build-cache").join(key.as_str());
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
            fs::File::options().write(true).open(path).and_then(|f| f.set_modified(when)).expect("mtime");
        };
        age(&keys[0], 300);
        age(&keys[1], 200);
        age(&keys[2], 100);
        // Two entries share the old layer: it counts once; the image's layer not at all.
        assert_eq!(cache.cache_only_bytes().expect("bytes"), old.size + new.size);
        assert_eq!(cache.bound(old.size + new.size).expect("bound"), None, "within the limit: nothing happens");
        let (removed, reclaimed) = cache.bound(new.size).expect("bound").expect("over the limit");
        assert_eq!(removed, 2, "both entries of the oldest layer go, nothing newer");
        assert!(reclaimed >= old.size, "{reclaimed}");
        assert!(!store.has_blob(&old.digest) && store.has_blob(&new.digest) && store.has_blob(&used.digest));
        assert_eq!(cache.peek(&keys[2]), Some(Cached::Layer(new.clone())));
        assert_eq!(cache.peek(&keys[3]), Some(Cached::Layer(used.clone())), "an image's layer is never bounded away");
        assert_eq!(cache.cache_only_bytes().expect("bytes"), new.size);
    }
}
