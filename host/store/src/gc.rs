//! Garbage collection and pruning: removing blobs no image needs, images nobody names, and
//! temp files that crashed writers left in `ingest/`.
//!
//! Collection runs under the store lock, and every writer that makes blobs part of an image
//! (staging commits, loads) holds the same lock from moving blobs in until the image is
//! recorded, so a blob is never collected between arriving and being referenced. A blob that
//! any remaining image references is never removed; when an image cannot be read the
//! collection stops rather than guess what it references.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::error::IoContext;
use crate::ingest::sync_dir;
use crate::store::StoreLock;
use crate::{Store, StoreError};

/// Temp entries in `ingest/` older than this are leftovers of a dead writer.
pub const STALE_INGEST_AGE: Duration = Duration::from_secs(3600);

/// The name of the lock file a live staging area holds (see [`crate::Staging`]).
pub(crate) const STAGING_LOCK: &str = "in-use.lock";

/// What a collection removed.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Blobs removed, with their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Stale temp entries removed from `ingest/`.
    pub stale_ingest: usize,
    /// Bytes freed (blobs and stale temp files).
    pub reclaimed: u64,
}

/// What a prune removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Image ids (config digests) deleted, with the names they had.
    pub deleted: Vec<(Digest, Vec<String>)>,
    pub gc: GcReport,
}

fn size_of_tree(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map(|rd| rd.flatten().map(|e| size_of_tree(&e.path())).sum()).unwrap_or(0)
}

/// Whether a staging dir is still held by a live kiln process.
fn staging_in_use(dir: &Path) -> bool {
    match File::open(dir.join(STAGING_LOCK)) {
        Ok(f) => match f.try_lock() {
            Ok(()) => false,
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// Largest pin file read; a larger one is skipped (pins are small lists of digests).
const MAX_PIN_FILE: u64 = 1024 * 1024;

/// Every `sha256:<64 hex>` in `text`.
fn digests_in(text: &str) -> impl Iterator<Item = Digest> + '_ {
    text.match_indices("sha256:").filter_map(|(i, _)| text.get(i..i + 71).and_then(|d| d.parse().ok()))
}

impl Store {
    /// Where other parts of kiln pin blobs (e.g. the build cache): every file below it keeps
    /// alive each blob whose digest it mentions. The store does not interpret the files.
    pub fn pins_dir(&self) -> PathBuf {
        self.root().join("pins")
    }

    /// Blobs pinned by files under [`Store::pins_dir`] (two levels deep).
    pub fn pinned_blobs(&self) -> BTreeSet<Digest> {
        let mut pinned = BTreeSet::new();
        let mut dirs = vec![(self.pins_dir(), 0)];
        while let Some((dir, depth)) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() && depth < 2 {
                    dirs.push((entry.path(), depth + 1));
                } else if meta.is_file() && meta.len() <= MAX_PIN_FILE {
                    if let Ok(text) = fs::read_to_string(entry.path()) {
                        pinned.extend(digests_in(&text));
                    }
                }
            }
        }
        pinned
    }

    /// Every blob some image references (manifests, configs, layers) or a pin keeps.
    pub fn live_blobs(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let mut live = self.pinned_blobs();
        for digest in self.image_digests()? {
            let unreadable = |e: StoreError| StoreError::Conflict(format!("image {digest} is unreadable ({e}); run `kiln system check`"));
            let manifests = self.platform_images(&digest).map_err(unreadable)?;
            live.insert(digest);
            for img in manifests {
                live.insert(img.manifest_digest);
                live.insert(img.config_digest);
                live.extend(img.layers);
            }
        }
        Ok(live)
    }

    /// Removes blobs no image references and stale `ingest/` entries. Needs the store lock.
    pub fn collect_garbage(&self, _lock: &StoreLock) -> Result<GcReport, StoreError> {
        let live = self.live_blobs()?;
        let mut report = GcReport::default();
        let blobs = self.blobs_dir();
        for entry in fs::read_dir(&blobs).ctx(|| format!("listing {}", blobs.display()))? {
            let entry = entry.ctx(|| format!("listing {}", blobs.display()))?;
            let Ok(digest) = format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>() else {
                continue; // Not a blob name: left for `system check` to report.
            };
            if live.contains(&digest) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).ctx(|| format!("removing blob {digest}"))?;
            report.reclaimed += size;
            report.removed.push((digest, size));
        }
        if !report.removed.is_empty() {
            sync_dir(&blobs)?;
        }
        let (n, bytes) = self.clean_stale_ingest(STALE_INGEST_AGE)?;
        report.stale_ingest = n;
        report.reclaimed += bytes;
        report.removed.sort();
        Ok(report)
    }

    /// Removes entries of `ingest/` untouched for `age` whose writer is gone.
    pub(crate) fn clean_stale_ingest(&self, age: Duration) -> Result<(usize, u64), StoreError> {
        let dir = self.root().join("ingest");
        let now = SystemTime::now();
        let (mut count, mut bytes) = (0, 0);
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let Ok(meta) = entry.metadata() else { continue };
            let old = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|a| a >= age);
            if !old {
                continue;
            }
            let path = entry.path();
            let size = size_of_tree(&path);
            let removed = if meta.is_dir() {
                !staging_in_use(&path) && fs::remove_dir_all(&path).is_ok()
            } else {
                fs::remove_file(&path).is_ok()
            };
            if removed {
                count += 1;
                bytes += size;
            }
        }
        Ok((count, bytes))
    }

    /// `image prune`: deletes dangling images (unnamed, nobody's parent, repeatedly, so unnamed
    /// chains go too), or with `all` every image, then collects garbage.
    pub fn prune(&self, all: bool) -> Result<PruneReport, StoreError> {
        self.prune_sparing(all, &BTreeSet::new())
    }

    /// [`Store::prune`], sparing the images (manifest digests) in `in_use` (those containers
    /// run: the store knows nothing of containers, its caller does).
    pub fn prune_sparing(&self, all: bool, in_use: &BTreeSet<Digest>) -> Result<PruneReport, StoreError> {
        let lock = self.lock()?;
        let mut report = PruneReport::default();
        loop {
            let images = self.list_images()?;
            let doomed: Vec<_> = images.iter().filter(|s| (all || s.dangling()) && !s.manifests().iter().any(|m| in_use.contains(m))).collect();
            if doomed.is_empty() {
                break;
            }
            let mut refs = self.refs()?;
            for s in &doomed {
                refs.retain(|_, d| d != s.digest());
            }
            self.write_refs(&refs)?;
            for s in doomed {
                self.forget_image(&lock, s.digest())?;
                let names = s.names.iter().map(|n| n.familiar()).collect();
                report.deleted.push((s.id().clone(), names));
            }
        }
        report.gc = self.collect_garbage(&lock)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::make_image;

    #[test]
    fn prune_removes_dangling_images_and_only_unreferenced_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let kept = make_image(&store, &["a", "shared"], Some("kept"));
        let dangling = make_image(&store, &["shared", "b"], None);
        let stray = store.write_blob(b"not referenced").expect("blob");
        let report = store.prune(false).expect("prune");
        assert_eq!(report.deleted.len(), 1);
        assert!(!store.has_blob(&dangling) && !store.has_blob(&stray));
        let kept_img = store.image(&kept).expect("kept image intact");
        for l in &kept_img.layers {
            assert!(store.has_blob(l), "a shared layer must survive");
        }
        assert!(report.gc.reclaimed > 0);
        // -a deletes named images too (kiln has no containers that could be using them).
        let report = store.prune(true).expect("prune -a");
        assert_eq!(report.deleted[0].1, vec!["kept:latest".to_string()]);
        assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0);
    }

    #[test]
    fn pinned_blobs_survive_collection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let kept = store.write_blob(b"pinned").expect("blob");
        let gone = store.write_blob(b"loose").expect("blob");
        let pins = store.pins_dir().join("build-cache");
        fs::create_dir_all(&pins).expect("mkdir");
        fs::write(pins.join("k1"), format!(r#"{{"layer":{{"digest":"{kept}","size":6}}}}"#)).expect("pin");
        fs::write(pins.join("junk"), "sha256:not-a-digest sha256:").expect("junk");
        let lock = store.lock().expect("lock");
        let report = store.collect_garbage(&lock).expect("gc");
        assert!(store.has_blob(&kept), "a pinned blob must stay");
        assert!(!store.has_blob(&gone), "an unpinned, unreferenced blob goes");
        assert_eq!(report.removed.len(), 1);
    }

    #[test]
    fn stale_ingest_goes_but_live_staging_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let staging = store.staging().expect("staging");
        fs::write(dir.path().join("ingest/.tmpdead"), b"leftover").expect("write");
        fs::create_dir(dir.path().join("ingest/build-dead")).expect("mkdir");
        let (n, _) = store.clean_stale_ingest(Duration::ZERO).expect("clean");
        assert_eq!(n, 2);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 1, "the live staging dir stays");
        drop(staging);
    }
}
