//! A read-only view of the root filesystem a stack of layers makes (or of one tar archive):
//! what the build engine reads for `COPY --from=<stage|image>` and `ADD archive.tar.gz`.
//!
//! [`RootFs::from_layers`] flattens the layers once ([`flatten_layers`], the one implementation
//! of whiteouts, opaque directories and shadowing) into an uncompressed tar in an anonymous
//! temp file (under `$TMPDIR`, or a directory given to [`RootFs::from_layers_in`]; unnamed, so
//! gone with the view), then indexes it: path -> [`Node`], with the offset of each regular
//! file's bytes. Nothing from a layer ever touches the host
//! filesystem by its path; paths are resolved inside the index the way
//! `openat2(RESOLVE_IN_ROOT)` would, with at most [`MAX_SYMLINK_HOPS`] symlinks followed.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::flatten::{flatten_layers, hostile, is_regular, normalise, OpenBlob};
use crate::resolve::{resolve_in_root, Entry};
use crate::{Digest, StoreError};

pub use crate::resolve::MAX_SYMLINK_HOPS;


/// What an entry of the view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    /// A hardlink to a regular file: [`Node::link`] is the other path, and the node's metadata,
    /// size and bytes are its target's (one inode). A hardlink to a symlink or a fifo is indexed
    /// as a copy of that node instead.
    Hardlink,
    /// Device nodes: never in a stored layer (ingest refuses them), listed for completeness.
    Char,
    Block,
    Fifo,
}

/// One entry of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Relative and normalised, no leading `/`; `""` is the root.
    pub path: PathBuf,
    pub kind: NodeKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
    /// Bytes of a regular file (or a hardlink's target); 0 for everything else.
    pub size: u64,
    /// A symlink's target as written, or a hardlink's target path (relative to the root).
    pub link: Option<PathBuf>,
    /// Offset of the bytes in the flattened tar: regular files, and hardlinks to them.
    data: Option<u64>,
}

impl Node {
    fn dir(path: PathBuf) -> Self {
        Node { path, kind: NodeKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, link: None, data: None }
    }

    /// Whether [`RootFs::open`] reads bytes from it: a regular file, or a hardlink to one
    /// (false for a hardlink whose target is not in the view).
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }
}

/// The nodes of a view and, per directory, its children's names.
#[derive(Default)]
struct Tree {
    nodes: HashMap<PathBuf, Node>,
    kids: HashMap<PathBuf, BTreeSet<OsString>>,
}

impl Tree {
    /// Makes `dir` and its missing ancestors directories (implicit: 0o755, root-owned).
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        for a in dir.ancestors() {
            match self.nodes.get(a) {
                Some(n) if n.kind == NodeKind::Dir => break,
                Some(_) => return Err(hostile(format!("{} is below {}, which is not a directory", dir.display(), a.display()))),
                None => missing.push(a.to_path_buf()),
            }
        }
        for a in missing.into_iter().rev() {
            self.add_kid(&a);
            self.nodes.insert(a.clone(), Node::dir(a));
        }
        Ok(())
    }

    fn add_kid(&mut self, path: &Path) {
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            self.kids.entry(parent.to_path_buf()).or_default().insert(name.to_os_string());
        }
    }

    /// Adds or replaces a node; a later entry at a path replaces an earlier one, but a
    /// directory that has children stays one.
    fn insert(&mut self, node: Node) -> Result<(), StoreError> {
        let Some(parent) = node.path.parent() else {
            return Ok(()); // The root stays the implicit directory.
        };
        self.ensure_dir(parent)?;
        if node.kind != NodeKind::Dir {
            if self.kids.get(&node.path).is_some_and(|k| !k.is_empty()) {
                return Err(hostile(format!("{} replaces a directory that is not empty", node.path.display())));
            }
            self.kids.remove(&node.path);
        }
        self.add_kid(&node.path);
        self.nodes.insert(node.path.clone(), node);
        Ok(())
    }

    /// Points a hardlink node at its target's bytes; false if the target is not (yet) a node.
    fn link(&self, node: &mut Node) -> bool {
        let Some(target) = node.link.as_ref().and_then(|t| self.nodes.get(t)) else {
            return false;
        };
        match target.kind {
            NodeKind::Dir => return false,
            NodeKind::File | NodeKind::Hardlink if target.data.is_none() => return false,
            NodeKind::File | NodeKind::Hardlink => (node.size, node.data) = (target.size, target.data),
            NodeKind::Symlink | NodeKind::Char | NodeKind::Block | NodeKind::Fifo => {
                (node.kind, node.link) = (target.kind, target.link.clone());
            }
        }
        (node.mode, node.uid, node.gid, node.mtime) = (target.mode, target.uid, target.gid, target.mtime);
        true
    }
}

/// The root filesystem of a stack of layers, read-only.
pub struct RootFs {
    /// The flattened tar.
    file: File,
    tree: Tree,
}

/// A path as a key of the view: no leading `/`, no `.`.
fn key(path: &Path) -> PathBuf {
    normalise(path.strip_prefix("/").unwrap_or(path))
}

impl RootFs {
    /// Flattens `layers` (bottom first, as in an image; `open` opens a blob, e.g.
    /// [`crate::Staging::open_blob`]) into a temp file and indexes it.
    pub fn from_layers(open: OpenBlob<'_>, layers: &[Digest]) -> Result<RootFs, StoreError> {
        let tmp = tempfile::tempfile().map_err(|e| StoreError::io("creating a temp file for a root filesystem", e))?;
        Self::flatten_into(open, layers, tmp)
    }

    /// As [`RootFs::from_layers`], with the temp file in `dir` (e.g. the store's `ingest/`, on
    /// the store's disk: `$TMPDIR` may be a small tmpfs, and a view is as big as the image).
    pub fn from_layers_in(open: OpenBlob<'_>, layers: &[Digest], dir: &Path) -> Result<RootFs, StoreError> {
        let tmp = tempfile::tempfile_in(dir).map_err(|e| StoreError::io(format!("creating a temp file in {}", dir.display()), e))?;
        Self::flatten_into(open, layers, tmp)
    }

    /// Indexes an uncompressed tar that is not a layer stack (`ADD archive.tar`): entries are
    /// checked as layer entries are; whiteout names get no special meaning beyond that.
    pub fn from_tar(file: File) -> Result<RootFs, StoreError> {
        let tree = index(&file)?;
        Ok(RootFs { file, tree })
    }

    fn flatten_into(open: OpenBlob<'_>, layers: &[Digest], tmp: File) -> Result<RootFs, StoreError> {
        let out = flatten_layers(open, layers, BufWriter::new(tmp))?;
        let file = out.into_inner().map_err(|e| StoreError::io("writing a root filesystem tar", e.into_error()))?;
        let tree = index(&file)?;
        Ok(RootFs { file, tree })
    }

    /// Resolves `path` (absolute or relative, as written in a Dockerfile) inside the view the way
    /// `openat2(RESOLVE_IN_ROOT)` would: `..` never climbs above the root, absolute symlink
    /// targets are relative to the view's root, every intermediate symlink is followed and the
    /// last component only if `follow_last` (a trailing `/` makes it followed). Ok(None) when a
    /// component is absent, a non-directory is used as a directory, or a symlink is empty; an
    /// error after [`MAX_SYMLINK_HOPS`] symlinks. Returns the key for [`RootFs::node`].
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Option<PathBuf>, StoreError> {
        let look = |p: &Path| match self.tree.nodes.get(p) {
            Some(n) if n.kind == NodeKind::Dir => Entry::Dir,
            Some(n) if n.kind == NodeKind::Symlink => Entry::Symlink(n.link.clone().unwrap_or_default()),
            Some(_) => Entry::Other,
            None => Entry::Missing,
        };
        let r = resolve_in_root(path, follow_last, look)
            .map_err(|e| StoreError::io(format!("resolving {path} in an image"), io::Error::other(e.to_string())))?;
        let exists = r.path.as_os_str().is_empty() || self.tree.nodes.contains_key(&r.path);
        Ok((r.parents_exist && exists).then_some(r.path))
    }

    /// The node at a resolved path (a leading `/` is allowed; nothing else is resolved).
    pub fn node(&self, resolved: &Path) -> Option<&Node> {
        self.tree.nodes.get(&key(resolved))
    }

    /// Direct children of a directory (a resolved path), sorted by name; empty if it is not one.
    pub fn children(&self, dir: &Path) -> Vec<&Node> {
        let dir = key(dir);
        let Some(names) = self.tree.kids.get(&dir) else {
            return Vec::new();
        };
        names.iter().filter_map(|n| self.tree.nodes.get(&crate::resolve::join_image_path(&dir, n))).collect()
    }

    /// A reader of a regular file's bytes (a hardlink reads its target's bytes). An error for
    /// anything without bytes (see [`Node::has_data`]).
    pub fn open(&self, node: &Node) -> Result<impl Read + '_, StoreError> {
        let start = node.data.ok_or_else(|| StoreError::Unsupported(format!("{} is not a regular file", node.path.display())))?;
        let end = start.checked_add(node.size).ok_or_else(|| hostile(format!("{}: size out of range", node.path.display())))?;
        Ok(Slice { file: &self.file, pos: start, end })
    }

    /// Reads a small file by path (following symlinks), refusing (an error) more than `limit`
    /// bytes; Ok(None) if absent or not a regular file.
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(node) = self.resolve(path, true)?.and_then(|p| self.tree.nodes.get(&p)) else {
            return Ok(None);
        };
        if node.data.is_none() {
            return Ok(None);
        }
        if node.size > limit {
            return Err(StoreError::Unsupported(format!("{path} in the image is {} bytes, more than the {limit} read", node.size)));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(node.size).unwrap_or(0));
        self.open(node)?.read_to_end(&mut bytes).map_err(|e| StoreError::io(format!("reading {path} in an image"), e))?;
        Ok(Some(bytes))
    }
}

/// Pushes the components of `path` onto `todo` so that the first is popped first; a trailing
/// `/` becomes a last `.` (the name before it must then be a directory, or a symlink to one).
/// A byte range of the flattened tar, read with `pread` (readers of one view are independent).
struct Slice<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = kiln_sys::fs::read_at(self.file, &mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the flattened tar ends inside a file"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Indexes a flattened tar (written by [`flatten_layers`], so its paths are checked already).
fn index(mut file: &File) -> Result<Tree, StoreError> {
    let read_err = |e: io::Error| StoreError::io("reading a flattened root filesystem", e);
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut tree = Tree::default();
    tree.nodes.insert(PathBuf::new(), Node::dir(PathBuf::new()));
    // Hardlinks whose target comes later in the tar (a link into a lower layer).
    let mut later = Vec::new();
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries_with_seek().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = key(&entry.path().map_err(read_err)?);
        if path.as_os_str().is_empty() {
            continue;
        }
        let header = entry.header();
        let field = |e: io::Error| hostile(format!("{}: {e}", path.display()));
        let kind = match header.entry_type() {
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Link => NodeKind::Hardlink,
            tar::EntryType::Char => NodeKind::Char,
            tar::EntryType::Block => NodeKind::Block,
            tar::EntryType::Fifo => NodeKind::Fifo,
            k if is_regular(k) => NodeKind::File,
            other => return Err(hostile(format!("{} has unsupported type {other:?}", path.display()))),
        };
        let link = match kind {
            NodeKind::Symlink => entry.link_name().map_err(field)?.map(|l| l.into_owned()),
            NodeKind::Hardlink => entry.link_name().map_err(field)?.map(|l| key(&l)),
            _ => None,
        };
        let is_file = kind == NodeKind::File;
        let (mode, uid) = (header.mode().map_err(field)? & 0o7777, header.uid().map_err(field)?);
        let (gid, mtime) = (header.gid().map_err(field)?, header.mtime().map_err(field)?);
        let mut node = Node {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            size: if is_file { entry.size() } else { 0 },
            link,
            data: is_file.then(|| entry.raw_file_position()),
        };
        if kind == NodeKind::Hardlink && !tree.link(&mut node) {
            later.push(node.path.clone());
        }
        tree.insert(node)?;
    }
    for path in later {
        if let Some(mut node) = tree.nodes.get(&path).cloned() {
            if tree.link(&mut node) {
                tree.nodes.insert(path, node);
            }
        }
    }
    Ok(tree)
}

#[cfg(test)]
mod tests;
