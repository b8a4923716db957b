//! Flattening a stack of layers into one root filesystem tar: for `--output type=tar|local`
//! ([`flatten_image`]) and for the read-only view of [`crate::rootfs`] ([`flatten_layers`]).
//!
//! Layers are read top-down; an entry is written unless a higher layer already wrote that
//! path, deleted it (`.wh.NAME`), made its directory opaque (`.wh..wh..opq`), put a
//! non-directory at one of its ancestors, or has a directory there (explicit, or implied by an
//! entry below it) while the entry is not a directory. Whiteouts hide only lower layers, never
//! their own. Entries come out top layer first; tar extractors create missing parents, and a
//! directory's own entry (from whichever layer is highest) still sets its metadata.
//!
//! A hardlink whose target a higher layer replaced or deleted still has the target's old bytes
//! in overlay semantics: the first such link is written as a copy of the hidden target (read
//! again from its layer), and later links to the same target point at that copy. A hardlink to
//! a path its own layer does not hold (a link into a lower layer) is written as it is.
//!
//! Layer tars are hostile input: every entry goes through [`check_entry`] before it is trusted,
//! and a file shorter than its header says is an error.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::digest::Digest;
use crate::layer_verify::check_entry;
use crate::layer_read::open_layer_file;
use crate::{ImageRecord, Store, StoreError};

pub(crate) const WHITEOUT: &str = ".wh.";
pub(crate) const OPAQUE: &str = ".wh..wh..opq";
/// Prefix of aufs bookkeeping entries (`.wh..wh.plnk`, ...): skipped, as Docker does.
const META: &str = ".wh..wh.";

/// Opens a layer blob by digest (a build looks in its staging area, then the main store).
pub type OpenBlob<'a> = &'a dyn Fn(&Digest) -> Result<File, StoreError>;

/// Paths hidden from lower layers by the layers above.
#[derive(Default)]
struct Shadow {
    /// Paths written (directories and others).
    written: HashSet<PathBuf>,
    /// Paths written as non-directories: everything below them is hidden.
    leaves: HashSet<PathBuf>,
    /// Deleted paths (and everything below them).
    deleted: HashSet<PathBuf>,
    /// Opaque directories: their lower children are hidden.
    opaque: HashSet<PathBuf>,
    /// Directories, explicit or implied by an entry below them: a lower non-directory there is hidden.
    dirs: HashSet<PathBuf>,
}

impl Shadow {
    fn hides(&self, path: &Path, is_dir: bool) -> bool {
        if self.written.contains(path) || self.deleted.contains(path) || (!is_dir && self.dirs.contains(path)) {
            return true;
        }
        path.ancestors().skip(1).any(|a| self.leaves.contains(a) || self.deleted.contains(a) || self.opaque.contains(a))
    }

    /// Records that every ancestor of `path` is a directory in this layer.
    fn parents_are_dirs(&mut self, path: &Path) {
        for a in path.ancestors().skip(1) {
            if a.as_os_str().is_empty() || !self.dirs.insert(a.to_path_buf()) {
                break; // Its own ancestors are recorded already.
            }
        }
    }

    fn extend(&mut self, other: Shadow) {
        self.written.extend(other.written);
        self.leaves.extend(other.leaves);
        self.deleted.extend(other.deleted);
        self.opaque.extend(other.opaque);
        self.dirs.extend(other.dirs);
    }
}

/// Drops `.` components (layer paths are checked to hold no `..` or root).
pub(crate) fn normalise(path: &Path) -> PathBuf {
    // Joined with `/` on every host (collecting components would use `\` on Windows).
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .fold(PathBuf::new(), |dir, c| crate::resolve::join_image_path(&dir, c.as_os_str()))
}

pub(crate) fn hostile(e: impl std::fmt::Display) -> StoreError {
    StoreError::HostileLayer(e.to_string())
}

/// What one layer entry means, once checked.
pub(crate) enum Marker {
    /// The root directory itself, or aufs bookkeeping.
    Skip,
    /// `.wh..wh..opq`: the lower contents of this directory are hidden.
    Opaque(PathBuf),
    /// `.wh.NAME`: this path (and what is below it) is deleted from the lower layers.
    Whiteout(PathBuf),
    /// An ordinary entry at this normalised path.
    Entry(PathBuf),
}

/// Checks an entry ([`check_entry`]) and says what it is.
pub(crate) fn classify<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Marker, StoreError> {
    check_entry(entry)?;
    let path = normalise(&entry.path().map_err(hostile)?);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Marker::Skip); // The root directory itself.
    };
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE {
        return Ok(Marker::Opaque(parent));
    }
    if name.starts_with(META) {
        return Ok(Marker::Skip);
    }
    match name.strip_prefix(WHITEOUT) {
        Some("" | "." | "..") => Ok(Marker::Skip),
        Some(hidden) => Ok(Marker::Whiteout(parent.join(hidden))),
        None => Ok(Marker::Entry(path)),
    }
}

/// Reads exactly `left` bytes from `inner`: an early end is an error, not a short file.
pub(crate) struct Exact<R> {
    pub(crate) inner: R,
    pub(crate) left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} bytes missing: the tar ends inside a file", self.left)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A regular file (`0`, or `7`, "contiguous", which is read as one).
pub(crate) fn is_regular(kind: tar::EntryType) -> bool {
    matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
}

/// Where an entry of this layer that higher layers hid keeps its bytes.
struct Hidden {
    header: tar::Header,
    link: Option<PathBuf>,
    offset: u64,
    size: u64,
}

/// What this layer's hardlinks may point at.
#[derive(Default)]
struct Links {
    /// Entries higher layers hid (non-directories), by path.
    hidden: HashMap<PathBuf, Rc<Hidden>>,
    /// Entries whose bytes went out under another path.
    alias: HashMap<PathBuf, PathBuf>,
}

enum Source {
    /// Written (by this layer, or by a lower one for a cross-layer link) at this path.
    Out(PathBuf),
    /// Hidden: copy it from the layer.
    Layer(Rc<Hidden>),
}

impl Links {
    fn source(&self, target: &Path) -> Source {
        if let Some(p) = self.alias.get(target) {
            Source::Out(p.clone())
        } else if let Some(h) = self.hidden.get(target) {
            Source::Layer(h.clone())
        } else {
            Source::Out(target.to_path_buf())
        }
    }

    /// A later entry at `path` replaces whatever this layer had there.
    fn replaced(&mut self, path: &Path) {
        self.hidden.remove(path);
        self.alias.remove(path);
    }
}

/// Writes the flattened root filesystem of `image` as one tar to `out`.
pub fn flatten_image<W: Write>(store: &Store, image: &ImageRecord, out: W) -> Result<W, StoreError> {
    flatten_layers(&|d| store.open_blob(d), &image.layers, out)
}

/// Writes the root filesystem that `layers` (bottom first, as in an image) make as one
/// uncompressed tar to `out`, top layer's entries first. `open` opens a layer blob (gzip, zstd
/// or plain tar); it may be called more than once per layer (see the module docs on hardlinks).
pub fn flatten_layers<W: Write>(open: OpenBlob<'_>, layers: &[Digest], out: W) -> Result<W, StoreError> {
    let mut tar = tar::Builder::new(out);
    let mut shadow = Shadow::default();
    for digest in layers.iter().rev() {
        let this_layer = flatten_layer(open, digest, &shadow, &mut tar)?;
        // This layer's whiteouts and entries hide what the layers below hold.
        shadow.extend(this_layer);
    }
    tar.into_inner().map_err(|e| StoreError::io("finishing rootfs tar", e))
}

fn write_err(path: &Path, digest: &Digest, e: io::Error) -> StoreError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => hostile(format!("layer {digest}: {}: {e}", path.display())),
        _ => StoreError::io(format!("copying {} of layer {digest} into a rootfs tar", path.display()), e),
    }
}

/// Writes the entries of one layer that `shadow` does not hide; returns what this layer hides.
fn flatten_layer<W: Write>(open: OpenBlob<'_>, digest: &Digest, shadow: &Shadow, tar: &mut tar::Builder<W>) -> Result<Shadow, StoreError> {
    let stream = open_layer_file(open(digest)?, digest, None)?;
    let mut this_layer = Shadow::default();
    let mut links = Links::default();
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(hostile)? {
        let mut entry = entry.map_err(hostile)?;
        let path = match classify(&entry)? {
            Marker::Skip => continue,
            Marker::Opaque(dir) => {
                this_layer.parents_are_dirs(&dir.join(OPAQUE));
                this_layer.opaque.insert(dir);
                continue;
            }
            Marker::Whiteout(gone) => {
                this_layer.parents_are_dirs(&gone);
                this_layer.deleted.insert(gone);
                continue;
            }
            Marker::Entry(path) => path,
        };
        this_layer.parents_are_dirs(&path);
        let kind = entry.header().entry_type();
        let link = entry.link_name().map_err(hostile)?.map(|l| l.into_owned());
        let target = match (kind.is_hard_link(), &link) {
            (true, Some(t)) => Some(normalise(t)),
            (true, None) => return Err(hostile(format!("hardlink {} without a target", path.display()))),
            _ => None,
        };
        if shadow.hides(&path, kind.is_dir()) {
            if kind.is_dir() {
                continue;
            }
            links.replaced(&path);
            match target.map(|t| links.source(&t)) {
                Some(Source::Out(p)) => {
                    links.alias.insert(path, p);
                }
                Some(Source::Layer(h)) => {
                    links.hidden.insert(path, h);
                }
                None => {
                    let (offset, size) = (entry.raw_file_position(), entry.size());
                    links.hidden.insert(path, Rc::new(Hidden { header: entry.header().clone(), link, offset, size }));
                }
            }
            continue;
        }
        this_layer.written.insert(path.clone());
        if !kind.is_dir() {
            this_layer.leaves.insert(path.clone());
        }
        links.replaced(&path);
        let err = |e| write_err(&path, digest, e);
        let mut header = entry.header().clone();
        if target.is_some() || kind.is_symlink() {
            header.set_size(0); // Links carry no bytes, whatever a header claims.
        }
        match (target, link) {
            (Some(target), _) => match links.source(&target) {
                Source::Out(p) => tar.append_link(&mut header, &path, p).map_err(&err)?,
                Source::Layer(h) => {
                    copy_hidden(open, digest, &h, &path, tar).map_err(&err)?;
                    links.alias.insert(target, path.clone());
                }
            },
            (None, Some(l)) if kind.is_symlink() => tar.append_link(&mut header, &path, l).map_err(&err)?,
            _ => {
                // Streamed: exactly the entry's size (pax-aware), or an error.
                header.set_size(entry.size());
                let left = entry.size();
                tar.append_data(&mut header, &path, Exact { inner: &mut entry, left }).map_err(&err)?;
            }
        }
    }
    Ok(this_layer)
}

/// Writes the hidden entry `h` of layer `digest` at `path`, its bytes read again from the layer.
fn copy_hidden<W: Write>(open: OpenBlob<'_>, digest: &Digest, h: &Hidden, path: &Path, tar: &mut tar::Builder<W>) -> io::Result<()> {
    let mut header = h.header.clone();
    let kind = header.entry_type();
    if kind.is_symlink() {
        header.set_size(0);
        return tar.append_link(&mut header, path, h.link.as_deref().unwrap_or(Path::new("")));
    }
    if !is_regular(kind) || h.size == 0 {
        header.set_size(0);
        return tar.append_data(&mut header, path, io::empty());
    }
    let mut stream = open_layer_file(open(digest).map_err(io::Error::other)?, digest, None).map_err(io::Error::other)?;
    io::copy(&mut Exact { inner: &mut stream, left: h.offset }, &mut io::sink())?;
    header.set_size(h.size);
    tar.append_data(&mut header, path, Exact { inner: stream, left: h.size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use crate::image::{NewImage, RunConfig};

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, c.as_bytes()).expect("file");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, io::empty()).expect("dir");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_opaque_dirs_and_replacements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let l0 = layer(&[("etc/", None), ("etc/a", Some("a0")), ("etc/gone", Some("g")), ("opq/", None), ("opq/old", Some("o")), ("x/", None), ("x/y", Some("y"))]);
        let l1 = layer(&[("etc/a", Some("a1")), ("etc/.wh.gone", Some("")), ("opq/", None), ("opq/.wh..wh..opq", Some("")), ("opq/new", Some("n")), ("x", Some("now a file"))]);
        let layers = [l0, l1].iter().map(|l| store.ingest_layer(l.as_slice()).expect("layer")).collect();
        let digest = store
            .write_image(NewImage { layers, config: RunConfig::default(), history: vec![], created: "2026-01-01T00:00:00Z".into(), architecture: "amd64".into(), os: "linux".into(), author: None, variant: None })
            .expect("image");
        let image = store.image(&digest).expect("read");
        let tar = flatten_image(&store, &image, Vec::new()).expect("flatten");
        let mut got = Vec::new();
        for e in tar::Archive::new(tar.as_slice()).entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut s = String::new();
            e.read_to_string(&mut s).expect("read");
            got.push(format!("{}={s}", e.path().expect("path").display()));
        }
        got.sort();
        assert_eq!(got, vec!["etc/a=a1", "etc=", "opq/new=n", "opq=", "x=now a file"]);
    }

    #[test]
    fn hardlinks_to_hidden_targets_become_copies() {
        let link = |b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, target).expect("link");
        };
        let mut l0 = tar::Builder::new(layer(&[("a", Some("old")), ("d", Some("dd"))]));
        // `layer` finished its tar: drop the end-of-archive blocks before adding to it.
        let bytes = l0.get_mut();
        bytes.truncate(bytes.len() - 1024);
        link(&mut l0, "b", "a");
        link(&mut l0, "c", "a");
        link(&mut l0, "e", "d");
        let l0 = l0.into_inner().expect("tar");
        let l1 = layer(&[("a", Some("new")), (".wh.d", Some(""))]);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let layers: Vec<Digest> = [l0, l1].iter().map(|l| store.ingest_layer(l.as_slice()).expect("layer").digest).collect();
        let tar = flatten_layers(&|d| store.open_blob(d), &layers, Vec::new()).expect("flatten");
        let mut got = Vec::new();
        for e in tar::Archive::new(tar.as_slice()).entries().expect("entries") {
            let mut e = e.expect("entry");
            let mut s = String::new();
            e.read_to_string(&mut s).expect("read");
            let link = e.link_name().expect("link").map(|l| format!(" -> {}", l.display())).unwrap_or_default();
            got.push(format!("{}={s}{link}", e.path().expect("path").display()));
        }
        assert_eq!(got, ["a=new", "b=old", "c= -> b", "e=dd"]);
    }
}
