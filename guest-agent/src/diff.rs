//! `Diff`: turning an overlay upper dir into an OCI layer tar.
//!
//! Walks the tree depth-first in byte order of names, so the same tree always gives the same
//! tar. Overlayfs whiteouts (0:0 character devices) become empty `.wh.NAME` files; opaque
//! directories (`trusted.overlay.opaque=y`) get a `DIR/.wh..wh..opq` entry right after them.
//! The second and later paths of a multiply-linked inode become hard-link entries. xattrs are
//! kept as `SCHILY.xattr.*` PAX records, except overlayfs's own `trusted.overlay.*`.
//!
//! Given the overlay's lower dirs, a directory that is in the upper dir only because it was
//! copied up (a mount point or a temporary file was created and removed below it) and equals
//! the lower's directory (mode, owner, mtime, xattrs) is left out unless something below it
//! changed, so such a step's layer carries no unchanged parents, as Docker's do not.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{Context, Error, Result};
use crate::xattr;

/// Writes the layer tar of `upper` into `out`; returns the number of tar entries written.
/// With `clamp_mtime`, entries newer than it are dated `clamp_mtime` (SOURCE_DATE_EPOCH).
pub fn write_diff(
    upper: &Path,
    lowers: &[PathBuf],
    out: impl Write,
    clamp_mtime: Option<i64>,
) -> Result<u64> {
    let meta = fs::symlink_metadata(upper).ctx(|| format!("lstat {}", upper.display()))?;
    if !meta.is_dir() {
        return Err(Error::msg(format!(
            "diff: {} is not a directory",
            upper.display()
        )));
    }
    let mut w = Walker {
        builder: tar::Builder::new(out),
        links: HashMap::new(),
        entries: 0,
        clamp_mtime,
        lowers,
        pending: Vec::new(),
    };
    w.walk_dir(upper, b"")?;
    w.builder
        .finish()
        .ctx(|| "write end of layer tar".to_string())?;
    Ok(w.entries)
}

struct Walker<'a, W: Write> {
    builder: tar::Builder<W>,
    /// (dev, ino) of multiply-linked files already written, with their tar path.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
    clamp_mtime: Option<i64>,
    lowers: &'a [PathBuf],
    /// Unchanged directories on the current path, written only if something below them is.
    pending: Vec<(PathBuf, Vec<u8>, Metadata)>,
}

fn sorted_children(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ctx(|| format!("read dir {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .ctx(|| format!("read dir {}", dir.display()))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn header_for(meta: &Metadata, kind: EntryType, clamp_mtime: Option<i64>) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    let mtime = match clamp_mtime {
        Some(c) => meta.mtime().min(c),
        None => meta.mtime(),
    };
    h.set_mtime(mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// PAX xattr records for `path`, without overlayfs's private ones.
fn xattr_records(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in xattr::list(path).ctx(|| format!("llistxattr {}", path.display()))? {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let Ok(text) = String::from_utf8(name.clone()) else {
            continue;
        };
        if let Some(value) =
            xattr::get(path, &name).ctx(|| format!("lgetxattr {text} of {}", path.display()))?
        {
            out.push((format!("SCHILY.xattr.{text}"), value));
        }
    }
    Ok(out)
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> Result<bool> {
    let v = xattr::get(path, b"trusted.overlay.opaque")
        .ctx(|| format!("lgetxattr trusted.overlay.opaque of {}", path.display()))?;
    Ok(v.as_deref() == Some(b"y"))
}

impl<W: Write> Walker<'_, W> {
    fn walk_dir(&mut self, dir: &Path, prefix: &[u8]) -> Result<()> {
        for path in sorted_children(dir)? {
            let name = path
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let rel = [prefix, &name].concat();
            let meta = fs::symlink_metadata(&path).ctx(|| format!("lstat {}", path.display()))?;
            if meta.is_dir() && self.unchanged_dir(&path, &rel, &meta)? {
                let depth = self.pending.len();
                self.pending.push((path.clone(), rel.clone(), meta));
                self.walk_dir(&path, &[&rel[..], b"/"].concat())?;
                // Nothing below it was written: leave it out.
                self.pending.truncate(depth);
                continue;
            }
            self.flush_pending()?;
            self.write_entry(&path, &rel, &meta, prefix, &name)?;
            if meta.is_dir() {
                self.walk_dir(&path, &[&rel[..], b"/"].concat())?;
            }
        }
        Ok(())
    }

    /// Writes the unchanged parents of the entry about to be written.
    fn flush_pending(&mut self) -> Result<()> {
        for (path, rel, meta) in std::mem::take(&mut self.pending) {
            let (prefix, name) = match rel.iter().rposition(|b| *b == b'/') {
                Some(i) => (rel[..=i].to_vec(), rel[i + 1..].to_vec()),
                None => (Vec::new(), rel.clone()),
            };
            self.write_entry(&path, &rel, &meta, &prefix, &name)?;
        }
        Ok(())
    }

    /// Whether directory `path` (at `rel` in the tree) is a copy-up that changed nothing: not
    /// opaque, and the directory the lowers show at `rel` has the same mode, owner, mtime and
    /// xattrs. (A directory that replaced something else in the upper dir is opaque, and
    /// [`lower_dir`] follows no symlink, so `rel` cannot name an unrelated lower directory.)
    fn unchanged_dir(&self, path: &Path, rel: &[u8], meta: &Metadata) -> Result<bool> {
        if self.lowers.is_empty() || is_opaque(path)? {
            return Ok(false);
        }
        let Some(lower) = lower_dir(self.lowers, rel) else {
            return Ok(false);
        };
        let lower_meta = fs::symlink_metadata(&lower).ctx(|| format!("lstat {}", lower.display()))?;
        let same = lower_meta.mode() == meta.mode()
            && lower_meta.uid() == meta.uid()
            && lower_meta.gid() == meta.gid()
            && lower_meta.mtime() == meta.mtime()
            && lower_meta.mtime_nsec() == meta.mtime_nsec();
        Ok(same && xattr_records(&lower)? == xattr_records(path)?)
    }

    fn write_entry(
        &mut self,
        path: &Path,
        rel_bytes: &[u8],
        meta: &Metadata,
        prefix: &[u8],
        name: &[u8],
    ) -> Result<()> {
        let ft = meta.file_type();
        let what = || format!("write tar entry for {}", path.display());
        let rel = Path::new(OsStr::from_bytes(rel_bytes));
        if ft.is_socket() {
            // Sockets have no place in an image layer (Docker skips them too).
            crate::log::debug!("diff: skipping socket {}", path.display());
            return Ok(());
        }
        if is_whiteout(meta) {
            let mut h = header_for(meta, EntryType::Regular, self.clamp_mtime);
            let wh = [prefix, b".wh.", name].concat();
            self.builder
                .append_data(&mut h, OsStr::from_bytes(&wh), io::empty())
                .ctx(what)?;
            self.entries += 1;
            return Ok(());
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let mut h = header_for(meta, EntryType::Link, self.clamp_mtime);
                let first = first.clone();
                self.builder.append_link(&mut h, rel, first).ctx(what)?;
                self.entries += 1;
                return Ok(());
            }
            self.links.insert(key, rel.to_path_buf());
        }
        let pax = xattr_records(path)?;
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .ctx(what)?;
        }
        if ft.is_dir() {
            let mut h = header_for(meta, EntryType::Directory, self.clamp_mtime);
            let dir_path = [rel_bytes, b"/"].concat();
            self.builder
                .append_data(&mut h, OsStr::from_bytes(&dir_path), io::empty())
                .ctx(what)?;
            self.entries += 1;
            if is_opaque(path)? {
                let mut h = header_for(meta, EntryType::Regular, self.clamp_mtime);
                h.set_mode(0o644);
                let marker = [rel_bytes, b"/.wh..wh..opq"].concat();
                self.builder
                    .append_data(&mut h, OsStr::from_bytes(&marker), io::empty())
                    .ctx(what)?;
                self.entries += 1;
            }
        } else if ft.is_file() {
            let mut h = header_for(meta, EntryType::Regular, self.clamp_mtime);
            h.set_size(meta.len());
            let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
            // A file that changes size while being read would corrupt the tar: take exactly
            // the announced length and fail if it is not there.
            let mut data = io::Read::take(file, meta.len());
            let mut counted = CountingReader {
                inner: &mut data,
                n: 0,
            };
            self.builder
                .append_data(&mut h, rel, &mut counted)
                .ctx(what)?;
            if counted.n != meta.len() {
                return Err(Error::msg(format!(
                    "diff: {} shrank while being read",
                    path.display()
                )));
            }
            self.entries += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).ctx(|| format!("readlink {}", path.display()))?;
            let mut h = header_for(meta, EntryType::Symlink, self.clamp_mtime);
            self.builder.append_link(&mut h, rel, target).ctx(what)?;
            self.entries += 1;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = header_for(meta, kind, self.clamp_mtime);
            if kind != EntryType::Fifo {
                h.set_device_major(libc::major(meta.rdev())).ctx(what)?;
                h.set_device_minor(libc::minor(meta.rdev())).ctx(what)?;
            }
            self.builder
                .append_data(&mut h, rel, io::empty())
                .ctx(what)?;
            self.entries += 1;
        }
        Ok(())
    }
}

/// The directory the overlay of `lowers` (topmost first) shows at `rel`, if it is one.
///
/// Walks component by component with lstat, so no symlink is followed: a component that is
/// not a directory (a symlink, a file, a whiteout) hides the lowers below it, as does an
/// opaque directory.
fn lower_dir(lowers: &[PathBuf], rel: &[u8]) -> Option<PathBuf> {
    let comps: Vec<&[u8]> = rel.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
    for lower in lowers {
        let mut path = lower.clone();
        let mut opaque_above = false;
        let mut missing = false;
        for comp in &comps {
            path.push(OsStr::from_bytes(comp));
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => opaque_above |= is_opaque(&path).unwrap_or(true),
                Ok(_) => return None,
                Err(_) => {
                    missing = true;
                    break;
                }
            }
        }
        if !missing {
            return Some(path);
        }
        if opaque_above {
            // An opaque directory on the way hides the deeper lowers.
            return None;
        }
    }
    None
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
