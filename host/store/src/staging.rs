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
use crate::ingest::sync_dir;
use crate::{Reference, Store, StoreError};

/// A build's private blob area.
pub struct Staging {
    main: Store,
    stage: Store,
    _dir: tempfile::TempDir,
}

impl Store {
    /// Starts a staging area for one build.
    pub fn staging(&self) -> Result<Staging, StoreError> {
        let ingest = self.root().join("ingest");
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&ingest)
            .ctx(|| format!("creating a staging dir in {}", ingest.display()))?;
        let stage = Store::open(dir.path())?;
        Ok(Staging { main: self.clone(), stage, _dir: dir })
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
    pub fn commit(self, image: NewImage, names: &[Reference]) -> Result<Digest, StoreError> {
        let blobs = self.main.blobs_dir();
        for layer in &image.layers {
            let staged = self.stage.blob_path(&layer.digest);
            if self.main.has_blob(&layer.digest) {
                continue;
            }
            if !staged.is_file() {
                return Err(StoreError::MissingBlob(layer.digest.to_string()));
            }
            fs::rename(&staged, self.main.blob_path(&layer.digest))
                .ctx(|| format!("moving layer {} into the store", layer.digest))?;
        }
        sync_dir(&blobs)?;
        let manifest = self.main.write_image(image)?;
        for name in names {
            self.main.set_ref(name, &manifest)?;
        }
        Ok(manifest)
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
        };
        let name: Reference = "a/b:c".parse().expect("ref");
        let digest = staging.commit(image, std::slice::from_ref(&name)).expect("commit");
        assert!(store.has_blob(&layer.digest));
        let (_, img) = store.image_by_name("a/b:c").expect("image");
        assert_eq!(img.manifest_digest, digest);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 0);
    }
}
