//! Staging: where a build writes its blobs until it succeeds.
//!
//! A [`Staging`] is a private store rooted in a temp dir under the main store's `ingest/` (same
//! filesystem, so committing is a rename per blob). A failed or interrupted build drops it and
//! the main store is exactly as it was; only [`Staging::commit`] moves blobs into place, writes
//! the image and sets its names.

use std::fs;

use crate::digest::Digest;
use crate::error::IoContext;
use crate::image::NewImage;
use crate::index::IndexEntry;
use crate::platform::Platform;
use crate::ingest::sync_dir;
use crate::{Reference, Store, StoreError};

/// A build's private blob area.
pub struct Staging {
    main: Store,
    stage: Store,
    /// Locked for the staging area's life, so garbage collection knows it is not stale.
    _in_use: fs::File,
    _dir: tempfile::TempDir,
}

/// An image whose blobs (manifest, config, layers) are all staged already, as a load has them.
#[derive(Debug, Clone)]
pub struct StagedImage {
    /// The manifest, or a multi-platform image's index.
    pub manifest: Digest,
    /// Config and layer digests (for an index: its platform manifests and their configs and
    /// layers).
    pub blobs: Vec<Digest>,
    pub names: Vec<Reference>,
}

impl Store {
    /// Starts a staging area for one build.
    pub fn staging(&self) -> Result<Staging, StoreError> {
        let ingest = self.root().join("ingest");
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&ingest)
            .ctx(|| format!("creating a staging dir in {}", ingest.display()))?;
        let lock_path = dir.path().join(crate::gc::STAGING_LOCK);
        let in_use = fs::File::create(&lock_path).ctx(|| format!("creating {}", lock_path.display()))?;
        in_use.lock().ctx(|| format!("locking {}", lock_path.display()))?;
        let stage = Store::open(dir.path())?;
        Ok(Staging { main: self.clone(), stage, _in_use: in_use, _dir: dir })
    }
}

impl Staging {
    /// The store that new blobs of this build go to.
    pub fn store(&self) -> &Store {
        &self.stage
    }

    /// The main store (base images come from there).
    pub fn main(&self) -> &Store {
        &self.main
    }

    /// Opens a blob from staging, else from the main store.
    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File, StoreError> {
        if self.stage.has_blob(digest) {
            self.stage.open_blob(digest)
        } else {
            self.main.open_blob(digest)
        }
    }

    /// Moves the image's staged blobs into the main store, records the image, and points
    /// `names` at it. Returns the manifest digest.
    /// Holds the store lock from the first blob moved in to the last name set, so garbage
    /// collection never sees the blobs unreferenced.
    pub fn commit(self, image: NewImage, names: &[Reference]) -> Result<Digest, StoreError> {
        self.commit_with(image, names, &[], |_| Ok(()))
    }

    /// [`Staging::commit`], also moving the blobs in `keep` (layers of a build's other stages)
    /// into the store and running `pin` while the store lock is still held, so that whatever
    /// `pin` records to keep those blobs alive is in place before garbage collection can see
    /// them unreferenced.
    pub fn commit_with(
        self,
        image: NewImage,
        names: &[Reference],
        keep: &[Digest],
        pin: impl FnOnce(&Store) -> Result<(), StoreError>,
    ) -> Result<Digest, StoreError> {
        let lock = self.main.lock()?;
        let layers: Vec<Digest> = image.layers.iter().map(|l| l.digest.clone()).collect();
        self.move_in(&layers)?;
        let kept: Vec<Digest> = keep.iter().filter(|d| self.stage.has_blob(d) || self.main.has_blob(d)).cloned().collect();
        self.move_in(&kept)?;
        let manifest = self.main.write_image(image)?;
        for name in names {
            self.main.set_ref_locked(&lock, name, &manifest)?;
        }
        pin(&self.main)?;
        Ok(manifest)
    }

    /// A multi-platform [`Staging::commit_with`]: writes one image per platform and an index
    /// of them, records the index as the image and points `names` at it, all under the store
    /// lock. Returns the index digest and the platform manifests' digests (in `images`' order).
    pub fn commit_index_with(
        self,
        images: Vec<(Platform, NewImage)>,
        names: &[Reference],
        keep: &[Digest],
        pin: impl FnOnce(&Store) -> Result<(), StoreError>,
    ) -> Result<(Digest, Vec<Digest>), StoreError> {
        let lock = self.main.lock()?;
        let kept: Vec<Digest> = keep.iter().filter(|d| self.stage.has_blob(d) || self.main.has_blob(d)).cloned().collect();
        self.move_in(&kept)?;
        let mut entries = Vec::new();
        for (platform, image) in images {
            let layers: Vec<Digest> = image.layers.iter().map(|l| l.digest.clone()).collect();
            self.move_in(&layers)?;
            let manifest = self.main.write_image_unrecorded(image)?;
            let size = self.main.image(&manifest)?.manifest_size;
            entries.push(IndexEntry { manifest, size, platform });
        }
        let index = self.main.write_index(&entries)?;
        for name in names {
            self.main.set_ref_locked(&lock, name, &index)?;
        }
        pin(&self.main)?;
        Ok((index, entries.into_iter().map(|e| e.manifest).collect()))
    }

    /// Moves fully staged images into the store, checks they read back, records them and sets
    /// their names, all under the store lock. Returns the images' manifest digests.
    pub fn commit_staged(self, images: &[StagedImage]) -> Result<Vec<Digest>, StoreError> {
        let lock = self.main.lock()?;
        for img in images {
            let all: Vec<Digest> = img.blobs.iter().chain(std::iter::once(&img.manifest)).cloned().collect();
            self.move_in(&all)?;
            // Reads back whole: a multi-platform image's every platform image too.
            if let crate::ImageEntry::Index(index) = self.main.entry(&img.manifest)? {
                for e in &index.entries {
                    self.main.image(&e.manifest)?;
                }
            }
            self.main.record_image(&img.manifest)?;
        }
        for img in images {
            for name in &img.names {
                self.main.set_ref_locked(&lock, name, &img.manifest)?;
            }
        }
        Ok(images.iter().map(|i| i.manifest.clone()).collect())
    }

    /// Renames staged blobs into the main store (those it lacks), then syncs its directory.
    fn move_in(&self, digests: &[Digest]) -> Result<(), StoreError> {
        for digest in digests {
            if self.main.has_blob(digest) {
                continue;
            }
            let staged = self.stage.blob_path(digest);
            if !staged.is_file() {
                return Err(StoreError::MissingBlob(digest.to_string()));
            }
            fs::rename(&staged, self.main.blob_path(digest)).ctx(|| format!("moving blob {digest} into the store"))?;
        }
        sync_dir(&self.main.blobs_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::RunConfig;

    fn one_file_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"x"[..]).expect("append");
        b.into_inner().expect("tar")
    }

    #[test]
    fn dropped_staging_leaves_the_store_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let staging = store.staging().expect("staging");
        staging.store().ingest_layer(one_file_tar().as_slice()).expect("layer");
        drop(staging);
        assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 0);
        assert!(store.refs().expect("refs").is_empty());
    }

    #[test]
    fn commit_moves_layers_and_names_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let staging = store.staging().expect("staging");
        let layer = staging.store().ingest_layer(one_file_tar().as_slice()).expect("layer");
        let image = NewImage {
            layers: vec![layer.clone()],
            config: RunConfig::default(),
            history: vec![],
            created: "2026-01-01T00:00:00Z".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            author: None,
            variant: None,
        };
        let name: Reference = "a/b:c".parse().expect("ref");
        let digest = staging.commit(image, std::slice::from_ref(&name)).expect("commit");
        assert!(store.has_blob(&layer.digest));
        let (_, img) = store.image_by_name("a/b:c").expect("image");
        assert_eq!(img.manifest_digest, digest);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 0);
    }
}
