//! Checking a layer blob that is stored as it came (a load keeps layers byte-identical, so
//! digests match what the archive's writer recorded): uncompressed, gzip or zstd.
//!
//! One pass over the blob computes its digest and size, decompresses it, computes the diff id
//! of the tar inside and checks every entry: everything [`crate::layer`] rejects (`..`,
//! absolute paths, hardlinks out of the layer, device nodes, unknown types), and also entries
//! that pass through a symlink the same layer created (`a -> /etc`, then `a/passwd`). The host
//! never extracts the layer; it only reads headers.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use std::path::Component;

use tar::EntryType;

use crate::digest::{Digest, HashingWriter};
use crate::layer_read::TarStream;
use crate::StoreError;

pub use crate::layer_read::Compression;

/// What checking a layer blob found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLayer {
    /// Digest and size of the blob as given.
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub compression: Compression,
}

/// Hashes and counts what is read through it.
struct Hashing<R> {
    inner: R,
    hash: HashingWriter<io::Sink>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Self { inner, hash: HashingWriter::new(io::sink()) }
    }

    fn digest(self) -> (Digest, u64, R) {
        let (digest, len, _) = self.hash.finish();
        (digest, len, self.inner)
    }
}

fn hostile(why: impl Into<String>) -> StoreError {
    StoreError::HostileLayer(why.into())
}

/// Checks that a path from a layer stays inside the layer.
pub fn check_member_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("path {} contains '..'", path.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("absolute path {}", path.display()))
            }
        }
    }
    Ok(())
}

pub(crate) fn check_entry<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(), StoreError> {
    let hostile = StoreError::HostileLayer;
    let path = entry.path().map_err(|e| hostile(format!("unreadable path: {e}")))?;
    check_member_path(&path).map_err(hostile)?;
    match entry.header().entry_type() {
        EntryType::Regular | EntryType::Continuous | EntryType::Directory | EntryType::Symlink | EntryType::Fifo => {}
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| hostile(format!("unreadable link target of {}: {e}", path.display())))?
                .ok_or_else(|| hostile(format!("hardlink {} without a target", path.display())))?;
            check_member_path(&target).map_err(|why| hostile(format!("hardlink {}: {why}", path.display())))?;
        }
        EntryType::Char | EntryType::Block => {
            return Err(hostile(format!("device node {} is not allowed in a layer", path.display())))
        }
        other => return Err(hostile(format!("entry {} has unsupported type {other:?}", path.display()))),
    }
    Ok(())
}

/// Rejects entries that would be written through a symlink this layer made.
struct SymlinkGuard {
    links: BTreeSet<PathBuf>,
}

impl SymlinkGuard {
    fn check(&mut self, path: &Path, kind: EntryType, link: Option<&Path>) -> Result<(), StoreError> {
        let norm = |p: &Path| -> PathBuf { p.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect() };
        let path = norm(path);
        for candidate in [Some(path.as_path()), link].into_iter().flatten() {
            let candidate = norm(candidate);
            for ancestor in candidate.ancestors().skip(1) {
                if self.links.contains(ancestor) {
                    return Err(hostile(format!("{} goes through the symlink {}", candidate.display(), ancestor.display())));
                }
            }
            if kind != EntryType::Link {
                break; // Only a hardlink's target is a path inside the layer.
            }
        }
        if kind == EntryType::Symlink {
            self.links.insert(path);
        } else {
            self.links.remove(&path);
        }
        Ok(())
    }
}

/// A read error as a rejection: a bound that was hit ([`crate::expansion`], a guest's write
/// budget: `FileTooLarge`) says so itself; anything else is what `what` says.
fn read_error(what: &str, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        return hostile(e.to_string());
    }
    hostile(format!("{what}: {e}"))
}

/// Checks every entry of a plain tar stream: the one rule for every layer, whatever its source.
pub(crate) fn verify_entries(reader: impl Read) -> Result<(), StoreError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| read_error("not a tar stream", e))?;
    let mut guard = SymlinkGuard { links: BTreeSet::new() };
    for entry in entries {
        let entry = entry.map_err(|e| read_error("corrupt tar stream", e))?;
        check_entry(&entry)?;
        let path = entry.path().map_err(|e| hostile(format!("unreadable path: {e}")))?.into_owned();
        let link = match entry.header().entry_type() {
            EntryType::Link => entry.link_name().ok().flatten().map(|l| l.into_owned()),
            _ => None,
        };
        guard.check(&path, entry.header().entry_type(), link.as_deref())?;
    }
    Ok(())
}

/// Reads a layer blob through: its digest, size and diff id, every entry checked.
pub fn check_layer(reader: impl Read) -> Result<CheckedLayer, StoreError> {
    let mut raw = BufReader::with_capacity(256 * 1024, Hashing::new(reader));
    let head = raw.fill_buf().map_err(|e| StoreError::io("reading a layer", e))?;
    let compression = Compression::sniff(head);
    // An uncompressed layer's diff id is its digest: hash it once, not twice.
    let diff_id = if compression == Compression::None {
        verify_entries(&mut raw)?;
        None
    } else {
        let mut plain = Hashing::new(TarStream::new(compression, &mut raw)?);
        verify_entries(&mut plain)?;
        // Whatever follows the end-of-archive blocks is part of the tar the diff id covers.
        io::copy(&mut plain, &mut io::sink()).map_err(|e| read_error("corrupt layer stream", e))?;
        Some(plain.digest().0)
    };
    // Trailing bytes (after the tar's end, or after a compressed stream) belong to the digest.
    io::copy(&mut raw, &mut io::sink()).map_err(|e| StoreError::io("reading a layer", e))?;
    let (digest, size, _) = raw.into_inner().digest();
    let diff_id = diff_id.unwrap_or_else(|| digest.clone());
    Ok(CheckedLayer { digest, size, diff_id, compression })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, ty: EntryType, link: Option<&str>, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).expect("link");
        }
        h.set_path(name).expect("path");
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    #[test]
    fn plain_and_gzip_layers_keep_their_digests() {
        let tar = tar_of(|b| {
            entry(b, "bin/sh", EntryType::Symlink, Some("/bin/busybox"), b"");
            entry(b, "etc/hosts", EntryType::Regular, None, b"127.0.0.1 localhost\n");
        });
        let plain = check_layer(tar.as_slice()).expect("plain");
        assert_eq!((plain.digest.clone(), plain.diff_id.clone()), (Digest::of(&tar), Digest::of(&tar)));
        assert_eq!(plain.compression, Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let c = check_layer(gz.as_slice()).expect("gzip");
        assert_eq!((c.digest, c.size, c.diff_id, c.compression), (Digest::of(&gz), gz.len() as u64, Digest::of(&tar), Compression::Gzip));
    }

    #[test]
    fn zstd_layers_are_read() {
        let tar = tar_of(|b| entry(b, "f", EntryType::Regular, None, b"zstd"));
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("l.tar"), dir.path().join("l.tar.zst"));
        std::fs::write(&src, &tar).expect("write");
        let ok = std::process::Command::new("zstd").arg("-q").arg(&src).arg("-o").arg(&dst).status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("zstd(1) not available: skipping");
            return;
        }
        let zst = std::fs::read(&dst).expect("read");
        let c = check_layer(zst.as_slice()).expect("zstd layer");
        assert_eq!((c.digest, c.diff_id, c.compression), (Digest::of(&zst), Digest::of(&tar), Compression::Zstd));
        assert!(check_layer(&zst[..zst.len() - 6]).is_err(), "truncated zstd");
    }

    #[test]
    fn escapes_through_symlinks_are_rejected() {
        let through = tar_of(|b| {
            entry(b, "a", EntryType::Symlink, Some("/etc"), b"");
            entry(b, "a/passwd", EntryType::Regular, None, b"x");
        });
        assert!(matches!(check_layer(through.as_slice()), Err(StoreError::HostileLayer(_))));
        let hardlink = tar_of(|b| {
            entry(b, "a", EntryType::Symlink, Some("/etc"), b"");
            entry(b, "b", EntryType::Link, Some("a/shadow"), b"");
        });
        assert!(matches!(check_layer(hardlink.as_slice()), Err(StoreError::HostileLayer(_))));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&through).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert!(check_layer(&gz[..gz.len() / 2]).is_err(), "truncated gzip");
    }
}
