//! `ReceiveTar`: extracting a layer or context tar into a directory, safely.
//!
//! Preserves mode, owner, mtime, symlinks, hard links (within the destination), fifos, device
//! nodes and `SCHILY.xattr.*` PAX records. OCI whiteouts become overlayfs whiteouts: `.wh.NAME`
//! a 0:0 character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
//! directory, so the result can serve as an overlay lower dir. Entries that are absolute, use
//! `..`, or would resolve through a symlink out of the destination are refused (see
//! [`crate::safepath`]); nothing is ever written outside `dest`.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use tar::EntryType;

use crate::error::{Context, Error, Result};
use crate::fsat;
use crate::safepath::{cname, display, normalize, open_dir_beneath, open_root, proc_path};
use crate::xattr;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";

/// Metadata of one entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extracts the tar read from `reader` into `dest` (created if absent) and returns the number of
/// entries. Reads `reader` to its end even after the archive's end-of-archive marker.
pub fn receive_tar(mut reader: impl Read, dest: &Path) -> Result<u64> {
    std::fs::create_dir_all(dest).ctx(|| format!("mkdir -p {}", dest.display()))?;
    let root = open_root(dest).ctx(|| format!("open {}", dest.display()))?;
    let mut ex = Extractor {
        root,
        dest: dest.display().to_string(),
        dirs: Vec::new(),
        cache: None,
        entries: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive.entries().ctx(|| "read tar stream".to_string())?;
        for entry in entries {
            let entry = entry.ctx(|| format!("read tar stream (after {} entries)", ex.entries))?;
            ex.extract(entry)?;
        }
    }
    ex.finish_dirs()?;
    // Trailing zero blocks/padding: consume them so the stream ends cleanly on both sides.
    io::copy(&mut reader, &mut io::sink()).ctx(|| "read tar stream trailer".to_string())?;
    Ok(ex.entries)
}

struct Extractor {
    root: OwnedFd,
    dest: String,
    /// Directories whose mtime is set at the end (creating children changes it).
    dirs: Vec<(Vec<Vec<u8>>, i64)>,
    /// The last parent directory opened, by components.
    cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    entries: u64,
}

fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    // Blank numeric fields are read as 0, as Go's archive/tar (which wrote most layers) does.
    let mut m = Meta {
        mode: h.mode().unwrap_or(0o644) & 0o7777,
        uid: h.uid().unwrap_or(0) as u32,
        gid: h.gid().unwrap_or(0) as u32,
        mtime: h.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            };
            match key {
                b"uid" => m.uid = num().map_or(m.uid, |v| v as u32),
                b"gid" => m.gid = num().map_or(m.gid, |v| v as u32),
                b"mtime" => m.mtime = num().unwrap_or(m.mtime),
                // overlayfs's own attributes only come from the whiteout markers, never from
                // the archive: a layer must not be able to plant redirects or opaque flags.
                k if k.starts_with(b"SCHILY.xattr.trusted.overlay.") => {}
                k if k.starts_with(b"SCHILY.xattr.") => {
                    m.xattrs
                        .push((k[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()));
                }
                _ => {}
            }
        }
    }
    Ok(m)
}

impl Extractor {
    fn extract<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let name = entry.path_bytes().into_owned();
        let parts = normalize(&name).map_err(Error::msg)?;
        let shown = display(&parts);
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.entries += 1;
        let Some((base, parent)) = parts.split_last() else {
            return Ok(()); // `./`: the destination itself, which the host created.
        };
        let meta = meta_of(&mut entry).ctx(|| format!("read tar header of {shown}"))?;
        let dir = self
            .parent_dir(parent)
            .ctx(|| format!("open parent of {shown} in {}", self.dest))?;
        let cbase = cname(base).ctx(|| format!("tar entry {shown}"))?;

        if base.as_slice() == OPAQUE_MARKER {
            return xattr::fset(dir.as_fd(), OPAQUE_XATTR, b"y")
                .ctx(|| format!("set {} on {}", "trusted.overlay.opaque", display(parent)));
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            let chidden = cname(hidden).ctx(|| format!("whiteout {shown}"))?;
            if hidden.is_empty() {
                return Err(Error::msg(format!(
                    "tar entry {shown}: empty whiteout name"
                )));
            }
            self.remove_existing(&dir, &chidden, false)
                .ctx(|| format!("remove {} for whiteout", display(parent)))?;
            return fsat::mknod(dir.as_fd(), &chidden, libc::S_IFCHR, 0)
                .ctx(|| format!("mknod whiteout for {shown}"));
        }

        match kind {
            EntryType::Directory => {
                let keep = self
                    .remove_existing(&dir, &cbase, true)
                    .ctx(|| format!("replace {shown}"))?;
                if !keep {
                    fsat::mkdir(dir.as_fd(), &cbase, 0o700).ctx(|| format!("mkdir {shown}"))?;
                }
                self.apply_owner_mode_xattrs(&dir, &cbase, base, &meta)
                    .ctx(|| format!("set metadata of {shown}"))?;
                self.dirs.push((parts.clone(), meta.mtime));
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove_existing(&dir, &cbase, false)
                    .ctx(|| format!("replace {shown}"))?;
                let mut file =
                    fsat::create_file(dir.as_fd(), &cbase).ctx(|| format!("create {shown}"))?;
                io::copy(&mut entry, &mut file).ctx(|| format!("write {shown}"))?;
                drop(file);
                self.apply_owner_mode_xattrs(&dir, &cbase, base, &meta)
                    .ctx(|| format!("set metadata of {shown}"))?;
                fsat::set_mtime(dir.as_fd(), &cbase, meta.mtime)
                    .ctx(|| format!("set mtime of {shown}"))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::msg(format!("symlink {shown} has no target")))?;
                let ctarget = CString::new(target.into_owned())
                    .map_err(|_| Error::msg(format!("symlink {shown}: NUL in target")))?;
                self.remove_existing(&dir, &cbase, false)
                    .ctx(|| format!("replace {shown}"))?;
                fsat::symlink(&ctarget, dir.as_fd(), &cbase).ctx(|| format!("symlink {shown}"))?;
                fsat::lchown(dir.as_fd(), &cbase, meta.uid, meta.gid)
                    .ctx(|| format!("lchown {shown}"))?;
                self.set_xattrs(&dir, base, &meta)
                    .ctx(|| format!("set xattrs of {shown}"))?;
                fsat::set_mtime(dir.as_fd(), &cbase, meta.mtime)
                    .ctx(|| format!("set mtime of {shown}"))
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::msg(format!("hard link {shown} has no target")))?;
                let tparts = normalize(&target)
                    .map_err(|e| Error::msg(format!("hard link {shown}: {e}")))?;
                let Some((tbase, tparent)) = tparts.split_last() else {
                    return Err(Error::msg(format!(
                        "hard link {shown} points at the archive root"
                    )));
                };
                if tparts == parts {
                    return Ok(());
                }
                let tdir = open_dir_beneath(&self.root, tparent)
                    .ctx(|| format!("open parent of link target {}", display(&tparts)))?;
                let ctbase = cname(tbase).ctx(|| format!("hard link {shown}"))?;
                self.remove_existing(&dir, &cbase, false)
                    .ctx(|| format!("replace {shown}"))?;
                fsat::link(tdir.as_fd(), &ctbase, dir.as_fd(), &cbase)
                    .ctx(|| format!("link {shown} to {}", display(&tparts)))
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ftype, dev) = match kind {
                    EntryType::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let t = if kind == EntryType::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (t, libc::makedev(major, minor))
                    }
                };
                self.remove_existing(&dir, &cbase, false)
                    .ctx(|| format!("replace {shown}"))?;
                fsat::mknod(dir.as_fd(), &cbase, ftype | 0o600, dev)
                    .ctx(|| format!("mknod {shown}"))?;
                self.apply_owner_mode_xattrs(&dir, &cbase, base, &meta)
                    .ctx(|| format!("set metadata of {shown}"))?;
                fsat::set_mtime(dir.as_fd(), &cbase, meta.mtime)
                    .ctx(|| format!("set mtime of {shown}"))
            }
            other => {
                crate::log::debug!("skipping tar entry {shown} of unsupported type {other:?}");
                Ok(())
            }
        }
    }

    /// Opens (creating missing directories, mode 0755) the parent directory `parent`.
    fn parent_dir(&mut self, parent: &[Vec<u8>]) -> io::Result<OwnedFd> {
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == parent {
                return fd.try_clone();
            }
        }
        let mut fd = self.root.try_clone()?;
        for i in 0..parent.len() {
            fd = match open_dir_beneath(&self.root, &parent[..=i]) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cname(&parent[i])?;
                    match fsat::mkdir(fd.as_fd(), &c, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    open_dir_beneath(&self.root, &parent[..=i])?
                }
                Err(e) => return Err(e),
            };
        }
        self.cache = Some((parent.to_vec(), fd.try_clone()?));
        Ok(fd)
    }

    /// Removes whatever is at `name` unless it is a directory and `keep_dir` is set. Returns
    /// whether an existing directory was kept.
    fn remove_existing(
        &mut self,
        dir: &OwnedFd,
        name: &CString,
        keep_dir: bool,
    ) -> io::Result<bool> {
        let Some(st) = fsat::lstat(dir.as_fd(), name)? else {
            return Ok(false);
        };
        if !fsat::is_dir(&st) {
            fsat::unlink(dir.as_fd(), name, false)?;
            return Ok(false);
        }
        if keep_dir {
            return Ok(true);
        }
        // Replacing a directory: the cached parent may live inside it.
        self.cache = None;
        match fsat::unlink(dir.as_fd(), name, true) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                std::fs::remove_dir_all(proc_path(dir, name.as_bytes()))
            }
            other => other,
        }?;
        Ok(false)
    }

    fn apply_owner_mode_xattrs(
        &self,
        dir: &OwnedFd,
        cname: &CString,
        base: &[u8],
        meta: &Meta,
    ) -> io::Result<()> {
        // chown first: it clears set-id bits and file capabilities, which chmod/xattrs restore.
        fsat::lchown(dir.as_fd(), cname, meta.uid, meta.gid)?;
        fsat::chmod(dir.as_fd(), cname, meta.mode)?;
        self.set_xattrs(dir, base, meta)
    }

    fn set_xattrs(&self, dir: &OwnedFd, base: &[u8], meta: &Meta) -> io::Result<()> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let path = proc_path(dir, base);
        for (name, value) in &meta.xattrs {
            match xattr::set(&path, name, value) {
                Ok(()) => {}
                // e.g. user.* on a tmpfs of an older kernel: the file is still usable.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    crate::log::info!(
                        "xattr {} not supported here; skipped",
                        String::from_utf8_lossy(name)
                    );
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("lsetxattr {}: {e}", String::from_utf8_lossy(name)),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Sets directory mtimes, deepest last-created first, once all children exist.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (parts, mtime) in dirs.iter().rev() {
            let Some((base, parent)) = parts.split_last() else {
                continue;
            };
            let dir = open_dir_beneath(&self.root, parent)
                .ctx(|| format!("open parent of {}", display(parts)))?;
            let c = cname(base).ctx(|| display(parts))?;
            fsat::set_mtime(dir.as_fd(), &c, *mtime)
                .ctx(|| format!("set mtime of {}", display(parts)))?;
        }
        Ok(())
    }
}
