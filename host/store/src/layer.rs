//! Layer ingest: an uncompressed tar stream in, a verified gzip blob out.
//!
//! The tar is hostile input (it comes from a guest, an import or a registry): every entry is
//! checked while the stream passes through, by the same verifier as loads and pulls
//! ([`crate::layer_verify`]), and a rejected layer leaves nothing in the store. The host never extracts a
//! layer here; it only reads headers.

use std::io::{self, Read, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use crate::digest::{Digest, HashingWriter};
use crate::ingest::Ingest;
use crate::layer_verify::verify_entries;
use crate::{Store, StoreError};

/// What the store knows about one stored layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the stored (gzip) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the stored blob in bytes.
    pub size: u64,
}

/// Hashes and compresses every byte read through it.
struct Tee<R> {
    inner: R,
    sink: HashingWriter<GzEncoder<Ingest>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Store {
    /// Stores an uncompressed layer tar read from `reader` as a gzip blob, checking every entry.
    /// Returns the stored blob's digest and size and the tar's diff id. On any error the store
    /// is unchanged.
    pub fn ingest_layer(&self, reader: impl Read) -> Result<LayerInfo, StoreError> {
        let ingest = self.ingest()?;
        // Level 1: layers are mostly already-compressed or small; speed matters more here.
        let gz = GzEncoder::new(ingest, Compression::fast());
        let mut tee = Tee { inner: reader, sink: HashingWriter::new(gz) };
        // The same rule as every other layer's (loads, pulls, cache imports): one verifier.
        verify_entries(&mut tee)?;
        // Whatever follows the end-of-archive blocks is part of the blob the digest covers.
        io::copy(&mut tee, &mut io::sink()).map_err(|e| StoreError::io("reading layer stream", e))?;
        let (diff_id, _, gz) = tee.sink.finish();
        let ingest = gz.finish().map_err(|e| StoreError::io("compressing layer", e))?;
        let (digest, size) = ingest.commit(None)?;
        Ok(LayerInfo { digest, diff_id, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;
    use std::fs;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("finish tar")
    }

    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &[u8], ty: EntryType, link: Option<&[u8]>) {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_entry_type(ty);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, io::empty()).expect("append");
    }

    #[test]
    fn good_layer_is_stored_with_matching_diff_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let tar = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, "bin/hello", &b"hello"[..]).expect("append");
            raw_entry(b, b"bin/link", EntryType::Link, Some(b"bin/hello"));
        });
        let info = store.ingest_layer(tar.as_slice()).expect("ingest");
        assert_eq!(info.diff_id, Digest::of(&tar));
        let blob = fs::read(store.blob_path(&info.digest)).expect("blob");
        assert_eq!(Digest::of(&blob), info.digest);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice()).read_to_end(&mut unzipped).expect("gunzip");
        assert_eq!(unzipped, tar);
    }

    #[test]
    fn hostile_layers_are_rejected_and_leave_nothing() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", tar_with(|b| raw_entry(b, b"a/../../etc/passwd", EntryType::Regular, None))),
            ("absolute", tar_with(|b| raw_entry(b, b"/etc/passwd", EntryType::Regular, None))),
            ("hardlink escape", tar_with(|b| raw_entry(b, b"x", EntryType::Link, Some(b"../../etc/shadow")))),
            ("device", tar_with(|b| raw_entry(b, b"dev/sda", EntryType::Block, None))),
            // The rule loads and pulls apply (issue 13): no write through a symlink this layer made.
            (
                "write through own symlink",
                tar_with(|b| {
                    raw_entry(b, b"a", EntryType::Symlink, Some(b"/etc"));
                    raw_entry(b, b"a/passwd", EntryType::Regular, None);
                }),
            ),
            (
                "hardlink through own symlink",
                tar_with(|b| {
                    raw_entry(b, b"a", EntryType::Symlink, Some(b"/etc"));
                    raw_entry(b, b"b", EntryType::Link, Some(b"a/shadow"));
                }),
            ),
            ("garbage", vec![0x55; 1024]),
        ];
        for (what, tar) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let err = store.ingest_layer(tar.as_slice()).expect_err(what);
            assert!(matches!(err, StoreError::HostileLayer(_)), "{what}: {err}");
            assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0, "{what}");
            assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ls").count(), 0, "{what}");
        }
    }

    #[test]
    fn truncated_stream_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let tar = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(4096);
            h.set_cksum();
            b.append_data(&mut h, "big", &vec![7u8; 4096][..]).expect("append");
        });
        assert!(store.ingest_layer(&tar[..1000]).is_err());
        assert_eq!(fs::read_dir(store.blobs_dir()).expect("ls").count(), 0);
    }
}
