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
use std::path::Path;
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

impl Store {
    /// Every blob some image references: manifests, configs, layers.
    pub fn live_blobs(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let mut live = BTreeSet::new();
        for digest in self.image_digests()? {
            let img = self.image(&digest).map_err(|e| {
                StoreError::Conflict(format!("image {digest} is unreadable ({e}); run `kiln system check`"))
            })?;
            live.insert(digest);
            live.insert(img.config_digest);
            live.extend(img.layers);
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
        let lock = self.lock()?;
        let mut report = PruneReport::default();
        loop {
            let images = self.list_images()?;
            let doomed: Vec<_> = images.iter().filter(|s| all || s.dangling()).collect();
            if doomed.is_empty() {
                break;
            }
            let mut refs = self.refs()?;
            for s in &doomed {
                refs.retain(|_, d| *d != s.record.manifest_digest);
            }
            self.write_refs(&refs)?;
            for s in doomed {
                self.forget_image(&lock, &s.record.manifest_digest)?;
                let names = s.names.iter().map(|n| n.familiar()).collect();
                report.deleted.push((s.record.config_digest.clone(), names));
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
