//! The [`Store`] handle: opening the root, reading and writing blobs, the writer lock.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::IoContext;
use crate::ingest::Ingest;
use crate::StoreError;

/// Largest JSON document (manifest, config, index) the store will read into memory.
pub const MAX_JSON_BYTES: u64 = 8 * 1024 * 1024;

/// An opened store. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while a process changes the store's names; released on drop.
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("ingest"), root.join("images")] {
            fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        let meta = fs::metadata(&root).ctx(|| format!("reading {}", root.display()))?;
        if !meta.is_dir() {
            return Err(StoreError::BadRoot(root, "not a directory".into()));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Where the image markers live (`images/<manifest hex>`, see [`crate::catalog`]).
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        File::open(self.blob_path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.to_string()),
            _ => StoreError::io(format!("opening blob {digest}"), e),
        })
    }

    /// Reads a small blob (JSON) whole, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let file = self.open_blob(digest)?;
        // Sized up front: one read per small document instead of a growing buffer's several.
        let len = file.metadata().map(|m| m.len().min(MAX_JSON_BYTES + 1)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(len as usize + 1);
        file.take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .ctx(|| format!("reading blob {digest}"))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(StoreError::Corrupt { what: "document", digest: digest.to_string(), why: "larger than 8 MiB".into() });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch { expected: digest.to_string(), actual: actual.to_string() });
        }
        Ok(bytes)
    }

    /// Starts writing a new blob.
    pub fn ingest(&self) -> Result<Ingest, StoreError> {
        Ingest::new(&self.root.join("ingest"), &self.blobs_dir())
    }

    /// Stores `bytes` as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let mut ing = self.ingest()?;
        ing.write_all(bytes).ctx(|| "writing a blob".into())?;
        Ok(ing.commit(None)?.0)
    }

    /// Takes the store's writer lock (blocking until other kiln processes release it).
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        file.lock().ctx(|| format!("locking {}", path.display()))?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.write_blob(b"{}").expect("write");
        assert_eq!(d, Digest::of(b"{}"));
        assert_eq!(store.read_blob(&d).expect("read"), b"{}");
        // A corrupted blob is detected on read.
        fs::write(store.blob_path(&d), b"{ }").expect("corrupt");
        assert!(matches!(store.read_blob(&d), Err(StoreError::DigestMismatch { .. })));
    }

    #[test]
    fn failed_or_abandoned_ingest_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut ing = store.ingest().expect("ingest");
        ing.write_all(b"some bytes").expect("write");
        let wrong = Digest::of(b"other bytes");
        assert!(matches!(ing.commit(Some(&wrong)), Err(StoreError::DigestMismatch { .. })));
        let mut ing = store.ingest().expect("ingest");
        ing.write_all(b"abandoned").expect("write");
        drop(ing);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 0);
        assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0);
    }
}
