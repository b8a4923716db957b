//! What a stage's root filesystem looks like, from its layers' tar headers alone: enough to
//! resolve a COPY or WORKDIR destination the way BuildKit does it in the mounted rootfs
//! (symlinks in the path followed inside the root, an existing directory receives files) and
//! to read `/etc/passwd` and `/etc/group` for USER and `--chown` names, without booting a
//! guest or unpacking anything.
//!
//! Each layer is scanned once per build ([`LayerIndex`], cached by digest in [`Indexes`]); a
//! [`View`] stacks them with the OCI whiteout rules. Layer tars are hostile: paths are only
//! keys here, never opened on the host, and symlink resolution is bounded.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use kiln_store::resolve::{resolve_in_root, Entry};
use kiln_store::{Digest, LayerInfo, Staging};

use crate::BuildError;

/// Files whose contents a scan keeps (small, and needed to resolve user names).
const KEPT_FILES: [&str; 2] = ["etc/passwd", "etc/group"];
/// Cap on a kept file.
const KEPT_MAX: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One path's metadata in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Symlink target as written.
    pub link: Option<PathBuf>,
}

impl Meta {
    fn implicit_dir() -> Self {
        Self { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, link: None }
    }
}

/// The headers of one layer.
#[derive(Debug, Default)]
pub struct LayerIndex {
    entries: HashMap<PathBuf, Meta>,
    deleted: HashSet<PathBuf>,
    opaque: HashSet<PathBuf>,
    kept: HashMap<PathBuf, Vec<u8>>,
}

/// A tar member path as a clean relative path (no `.`; `..` refused).
fn clean_member(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("layer entry {} climbs out of the root", p.display()))),
        }
    }
    Ok(out)
}

impl LayerIndex {
    /// Scans an uncompressed layer tar.
    pub fn scan(reader: impl Read) -> io::Result<Self> {
        let mut idx = Self::default();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = clean_member(&entry.path()?)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if name == ".wh..wh..opq" {
                idx.opaque.insert(parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                idx.deleted.insert(parent.join(hidden));
                continue;
            }
            let h = entry.header();
            let kind = match h.entry_type() {
                t if t.is_dir() => Kind::Dir,
                t if t.is_file() || t.is_hard_link() => Kind::File,
                t if t.is_symlink() => Kind::Symlink,
                _ => Kind::Other,
            };
            let link = if kind == Kind::Symlink { entry.link_name()?.map(|l| l.into_owned()) } else { None };
            // Blank numeric fields occur in real layers (tar writers that leave them empty);
            // extractors read them as 0, and so does this view.
            let meta = Meta { kind, mode: h.mode().unwrap_or(0o755) & 0o7777, uid: h.uid().unwrap_or(0), gid: h.gid().unwrap_or(0), link };
            if kind == Kind::File && KEPT_FILES.iter().any(|k| Path::new(k) == path) && entry.header().entry_size()? <= KEPT_MAX {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                idx.kept.insert(path.clone(), data);
            }
            for a in path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
                idx.entries.entry(a.to_path_buf()).or_insert_with(Meta::implicit_dir);
            }
            idx.entries.insert(path, meta);
        }
        Ok(idx)
    }

    /// What this layer says about `path`: Some(Some) it has it, Some(None) it hides it (and
    /// everything below is hidden from lower layers), None it says nothing.
    fn says(&self, path: &Path) -> Option<Option<&Meta>> {
        if let Some(m) = self.entries.get(path) {
            return Some(Some(m));
        }
        if self.deleted.contains(path) {
            return Some(None);
        }
        for a in path.ancestors().skip(1) {
            if self.deleted.contains(a) || self.opaque.contains(a) || self.entries.get(a).is_some_and(|m| m.kind != Kind::Dir) {
                return Some(None);
            }
        }
        None
    }
}

/// Layer indexes of one build, by layer digest.
#[derive(Default)]
pub struct Indexes(HashMap<Digest, Arc<LayerIndex>>);

impl Indexes {
    /// The view of `layers` (bottom first), scanning the layers not seen yet.
    pub fn view(&mut self, staging: &Staging, layers: &[LayerInfo]) -> Result<View, BuildError> {
        let mut stack = Vec::new();
        for l in layers.iter().rev() {
            if !self.0.contains_key(&l.digest) {
                let stream = kiln_store::layer_read::open_layer_file(staging.open_blob(&l.digest)?, &l.digest, None)?;
                let idx = LayerIndex::scan(stream).map_err(|e| BuildError::Invalid(format!("reading layer {}: {e}", l.digest)))?;
                self.0.insert(l.digest.clone(), Arc::new(idx));
            }
            stack.push(self.0[&l.digest].clone());
        }
        Ok(View { top_first: stack })
    }
}

/// A stack of layers, top first.
pub struct View {
    top_first: Vec<Arc<LayerIndex>>,
}

impl View {
    /// Metadata of a clean relative path (the root is always a directory).
    pub fn lookup(&self, path: &Path) -> Option<Meta> {
        if path.as_os_str().is_empty() {
            return Some(Meta::implicit_dir());
        }
        for layer in &self.top_first {
            if let Some(said) = layer.says(path) {
                return said.cloned();
            }
        }
        None
    }

    /// Resolves `path` inside the root as openat2(RESOLVE_IN_ROOT) would: `..` stops at the
    /// root, absolute symlink targets start at the root, intermediate symlinks are followed
    /// (the last one only if `follow_last`). Returns the resolved relative path, which may not
    /// exist, and its metadata.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<(PathBuf, Option<Meta>), BuildError> {
        let look = |p: &Path| match self.lookup(p) {
            Some(Meta { kind: Kind::Dir, .. }) => Entry::Dir,
            Some(Meta { kind: Kind::Symlink, link, .. }) => Entry::Symlink(link.unwrap_or_default()),
            Some(_) => Entry::Other,
            None => Entry::Missing,
        };
        let resolved = resolve_in_root(path, follow_last, look).map_err(|e| BuildError::Invalid(e.to_string()))?;
        let meta = self.lookup(&resolved.path);
        Ok((resolved.path, meta))
    }

    /// Contents of a small file kept by the scans (`/etc/passwd`, `/etc/group`), following
    /// symlinks to it.
    pub fn kept_file(&self, path: &str) -> Result<Option<Vec<u8>>, BuildError> {
        let (resolved, meta) = self.resolve(path, true)?;
        if meta.map(|m| m.kind) != Some(Kind::File) {
            return Ok(None);
        }
        for layer in &self.top_first {
            if let Some(data) = layer.kept.get(&resolved) {
                return Ok(Some(data.clone()));
            }
            if layer.says(&resolved).is_some() {
                return Ok(None);
            }
        }
        Ok(None)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &str)]) -> LayerIndex {
        // (path, "dir" | "file:CONTENT" | "link:TARGET" | "wh")
        let mut b = tar::Builder::new(Vec::new());
        for (path, what) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(0);
            if path.starts_with("etc") {
                // Real layers carry blank numeric fields too: read as 0.
                h.as_old_mut().uid = [0; 8];
            } else {
                h.set_uid(0);
            }
            h.set_gid(0);
            h.set_mtime(0);
            if *what == "dir" {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, path, io::empty()).expect("dir");
            } else if let Some(c) = what.strip_prefix("file:") {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, path, c.as_bytes()).expect("file");
            } else if let Some(t) = what.strip_prefix("link:") {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, path, t).expect("link");
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, io::empty()).expect("whiteout");
            }
        }
        LayerIndex::scan(b.into_inner().expect("tar").as_slice()).expect("scan")
    }

    fn view(layers: Vec<LayerIndex>) -> View {
        View { top_first: layers.into_iter().rev().map(Arc::new).collect() }
    }

    #[test]
    fn resolution_follows_symlinks_inside_the_root() {
        let v = view(vec![
            layer(&[("etc/passwd", "file:root:x:0:0::/:/bin/sh\n"), ("run", "dir"), ("var/run", "link:/run"), ("up", "link:../../../etc")]),
            layer(&[("etc/group", "file:root:x:0:\n"), ("loop", "link:loop2"), ("loop2", "link:loop")]),
        ]);
        assert_eq!(v.resolve("/var/run/x", true).expect("resolve").0, PathBuf::from("run/x"));
        assert_eq!(v.resolve("/var/run", false).expect("resolve").0, PathBuf::from("var/run"));
        assert_eq!(v.resolve("/up/passwd", true).expect("resolve").0, PathBuf::from("etc/passwd"));
        assert_eq!(v.resolve("/../../etc", true).expect("resolve").1.map(|m| m.kind), Some(Kind::Dir));
        assert!(v.resolve("/loop/x", true).is_err());
        assert_eq!(v.kept_file("/up/passwd").expect("read").as_deref(), Some(&b"root:x:0:0::/:/bin/sh\n"[..]));
        assert!(v.kept_file("/etc/group").expect("read").is_some());
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let v = view(vec![
            layer(&[("a/x", "file:1"), ("b/y", "file:2"), ("c", "dir"), ("etc/passwd", "file:p")]),
            layer(&[("a/.wh.x", "wh"), ("b/.wh..wh..opq", "wh"), ("b/z", "file:3"), ("c", "file:now a file"), ("etc/.wh.passwd", "wh")]),
        ]);
        assert_eq!(v.lookup(Path::new("a/x")), None);
        assert_eq!(v.lookup(Path::new("a")).map(|m| m.kind), Some(Kind::Dir));
        assert_eq!(v.lookup(Path::new("b/y")), None);
        assert!(v.lookup(Path::new("b/z")).is_some());
        assert_eq!(v.lookup(Path::new("c")).map(|m| m.kind), Some(Kind::File));
        assert_eq!(v.kept_file("/etc/passwd").expect("read"), None);
    }
}
