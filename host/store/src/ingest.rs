//! Writing a blob: temp file in `ingest/`, hashed while written, fsync'd, verified, renamed.
//!
//! Dropping an [`Ingest`] without committing removes its temp file, so an error or an early
//! return leaves nothing behind; a crash leaves only a stray temp file that no reader looks at.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::digest::{Digest, HashingWriter};
use crate::error::IoContext;
use crate::StoreError;

/// A blob being written. Implements [`Write`]; finish with [`Ingest::commit`].
pub struct Ingest {
    writer: HashingWriter<io::BufWriter<NamedTempFile>>,
    blobs_dir: PathBuf,
}

impl Ingest {
    pub(crate) fn new(ingest_dir: &Path, blobs_dir: &Path) -> Result<Self, StoreError> {
        let tmp = NamedTempFile::new_in(ingest_dir)
            .ctx(|| format!("creating a temp file in {}", ingest_dir.display()))?;
        Ok(Self {
            writer: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, tmp)),
            blobs_dir: blobs_dir.to_path_buf(),
        })
    }

    /// Makes the blob visible under its digest. With `expected`, a mismatch is an error and
    /// nothing is stored. Returns the digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let (digest, size, buffered) = self.writer.finish();
        if let Some(want) = expected {
            if *want != digest {
                return Err(StoreError::DigestMismatch { expected: want.to_string(), actual: digest.to_string() });
            }
        }
        let tmp = buffered.into_inner().map_err(|e| StoreError::io("flushing a blob", e.into_error()))?;
        let dest = self.blobs_dir.join(digest.hex());
        if dest.exists() {
            return Ok((digest, size)); // Same content already stored; the temp file is dropped.
        }
        tmp.as_file().sync_all().ctx(|| "syncing a blob".into())?;
        tmp.persist(&dest).map_err(|e| StoreError::io(format!("storing blob {digest}"), e.error))?;
        sync_dir(&self.blobs_dir)?;
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// fsyncs a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    kiln_sys::fs::sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))
}

/// Writes `bytes` to `path` atomically (temp file in the same dir, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| StoreError::io(format!("{} has no parent", path.display()), io::ErrorKind::InvalidInput.into()))?;
    let mut tmp = NamedTempFile::new_in(dir).ctx(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes).ctx(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().ctx(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).map_err(|e| StoreError::io(format!("replacing {}", path.display()), e.error))?;
    sync_dir(dir)?;
    // Readers never see a partial file; a leftover temp file is harmless.
    let _ = fs::metadata(path);
    Ok(())
}
