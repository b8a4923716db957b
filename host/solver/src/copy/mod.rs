//! COPY and ADD, done on the host: the chosen sources become one layer tar, without a guest.
//!
//! BuildKit's rules, which differ from the classic builder in places:
//! - sources are resolved inside their tree ([`SourceFs`]): the context (files become root's)
//!   or another stage/image (files keep their owner); `..` never climbs out; wildcards match
//!   per path component as Go's `filepath.Match`;
//! - the destination is joined to WORKDIR and resolved in the stage's own filesystem
//!   ([`crate::fsview::View`]): symlinks in it are followed inside the root, an existing
//!   directory receives files, a trailing `/` or several sources make it a directory, missing
//!   parents are created (mode 0755, owned by `--chown`'s owner);
//! - a copied directory's contents go into the destination; the destination directory takes
//!   the source directory's metadata only when it did not exist;
//! - `--chmod` applies to every copied entry, `--chown` to every entry including created parents.
//!
//! Entries are dated no later than SOURCE_DATE_EPOCH when it is set.

pub mod mode;
pub mod source;
mod stagefs;

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use kiln_frontend::command::chown::Owner;
use kiln_frontend::command::Chmod;
use kiln_frontend::dockerignore::{has_wildcards, path_match, Dockerignore};

use crate::fsview::{Kind, View};
pub use source::{ContextFs, SourceFs, SrcMeta};
pub use stagefs::StageFs;

/// Cleans `p` as a path rooted at `/`: no `..` above the root, no `.`, no empty parts.
pub fn clean_rooted(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// One source of a COPY.
pub enum Src<'a> {
    Path(&'a str),
    /// A heredoc (`COPY <<EOF /dst`): a file named `name`.
    Inline { name: &'a str, data: &'a [u8] },
}

/// What one COPY copies, and how.
pub struct CopySpec<'a> {
    pub srcs: Vec<Src<'a>>,
    pub dst: &'a str,
    pub workdir: &'a str,
    pub chmod: Option<&'a Chmod>,
    /// `--chown`, resolved.
    pub owner: Option<Owner>,
    /// No entry is dated later than this (SOURCE_DATE_EPOCH), when set.
    pub clamp_mtime: Option<i64>,
    /// `--parents`: keep each source's path below the destination.
    pub parents: bool,
    /// `--exclude` patterns, matched below each source.
    pub exclude: Option<&'a Dockerignore>,
    /// Date of created entries (heredoc files, created parents).
    pub now: u64,
}

impl<'a> CopySpec<'a> {
    /// The same options, without sources (to copy other sources with them).
    pub fn clone_with_srcs(&self) -> CopySpec<'a> {
        CopySpec {
            srcs: Vec::new(),
            dst: self.dst,
            workdir: self.workdir,
            chmod: self.chmod,
            owner: self.owner,
            clamp_mtime: self.clamp_mtime,
            parents: self.parents,
            exclude: self.exclude,
            now: self.now,
        }
    }
}

/// Where entries land.
pub enum Dest<'a> {
    /// The destination as written, nothing looked up: for a cache key that does not need the
    /// stage's filesystem.
    Literal,
    /// Resolved in the stage's filesystem.
    In(&'a View),
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A resolved source: its path in the source tree and what it is.
struct Found {
    rel: PathBuf,
    meta: SrcMeta,
}

/// Expands one source path (wildcards per component) to the entries it names.
fn expand(src: &dyn SourceFs, path: &str) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    if has_wildcards(path) {
        let pattern = clean_rooted(path);
        let mut candidates = vec![PathBuf::new()];
        for comp in pattern.iter() {
            let comp = comp.to_string_lossy();
            let mut next = Vec::new();
            for dir in &candidates {
                if has_wildcards(&comp) {
                    if src.meta(dir).map(|m| m.kind == Kind::Dir).unwrap_or(false) {
                        for name in src.list(dir)? {
                            let name = name.to_string_lossy().into_owned();
                            if path_match(&comp, &name).map_err(|e| err(format!("{path}: {e}")))? {
                                next.push(dir.join(name));
                            }
                        }
                    }
                } else {
                    next.push(dir.join(comp.as_ref()));
                }
            }
            candidates = next;
        }
        for c in candidates {
            if let Some(rel) = src.resolve(&c.to_string_lossy())? {
                if !src.excluded(&rel) {
                    let meta = src.meta(&rel)?;
                    out.push(Found { rel, meta });
                }
            }
        }
        if out.is_empty() {
            return Err(err(format!("{path}: no source files were specified (the pattern matched nothing in {})", src.describe())));
        }
        return Ok(out);
    }
    let rel = src.resolve(path)?.ok_or_else(|| err(format!("{path}: not found in {}", src.describe())))?;
    let meta = src.meta(&rel)?;
    if src.excluded(&rel) && !(meta.kind == Kind::Dir && src.may_reinclude()) {
        return Err(err(format!("{path}: not found in {} (excluded by .dockerignore)", src.describe())));
    }
    Ok(vec![Found { rel, meta }])
}

/// Writes the layer tar of one COPY to `out`.
pub fn write_copy<W: Write>(src: &dyn SourceFs, spec: &CopySpec<'_>, dest: Dest<'_>, out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    copy_into(src, spec, dest, &mut tar)?;
    tar.into_inner()
}

/// Appends the entries of one COPY to `tar` (ADD combines several into one layer).
pub fn copy_into<W: Write>(src: &dyn SourceFs, spec: &CopySpec<'_>, dest: Dest<'_>, tar: &mut tar::Builder<W>) -> io::Result<()> {
    let mut found = Vec::new();
    let mut wildcard = false;
    for s in &spec.srcs {
        if let Src::Path(p) = s {
            wildcard |= has_wildcards(p);
            found.push(expand(src, p)?);
        }
    }
    let count: usize = found.iter().map(Vec::len).sum::<usize>() + spec.srcs.iter().filter(|s| matches!(s, Src::Inline { .. })).count();
    let trailing = spec.dst.ends_with('/') || spec.dst == "." || spec.dst.ends_with("/.");
    if spec.srcs.len() > 1 && !trailing {
        return Err(err(format!(
            "when using COPY with more than one source file, the destination must be a directory and end with a /: {}",
            spec.dst
        )));
    }
    let joined = if spec.dst.starts_with('/') { spec.dst.to_string() } else { format!("{}/{}", spec.workdir, spec.dst) };
    let (target, existing) = match dest {
        Dest::Literal => (clean_rooted(&joined), None),
        Dest::In(view) => {
            let (p, meta) = view.resolve(&joined, true).map_err(|e| err(e.to_string()))?;
            (p, meta)
        }
    };
    let dest_is_dir = trailing || (wildcard && count > 1) || existing.as_ref().is_some_and(|m| m.kind == Kind::Dir);
    if dest_is_dir && existing.as_ref().is_some_and(|m| m.kind != Kind::Dir) {
        return Err(err(format!("{}: destination exists and is not a directory", spec.dst)));
    }
    let mut w = Writer { tar, spec, keep_owner: src.keeps_owner() };
    // Missing parents of the destination (and the destination itself when it must be a
    // directory for several entries) are created.
    if let Dest::In(view) = dest {
        let mut missing: Vec<&Path> = target.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty() && view.lookup(a).is_none()).collect();
        missing.reverse();
        for p in missing {
            w.created_dir(p)?;
        }
    }
    let mut target_created = existing.is_some();
    for s in &spec.srcs {
        if let Src::Inline { name, data } = s {
            let path = if dest_is_dir { target.join(name) } else { target.clone() };
            if dest_is_dir && !target_created {
                w.created_dir(&target)?;
                target_created = true;
            }
            w.inline_file(&path, data)?;
        }
    }
    for f in found.iter().flatten() {
        let base = if spec.parents { target.join(&f.rel) } else { target.clone() };
        if spec.parents {
            // Keep the source's parents, with their own metadata.
            let mut parents: Vec<&Path> = f.rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).collect();
            parents.reverse();
            if !target_created && !target.as_os_str().is_empty() {
                w.created_dir(&target)?;
                target_created = true;
            }
            for p in parents {
                let meta = src.meta(p)?;
                w.dir(&target.join(p), &meta)?;
            }
        }
        match f.meta.kind {
            Kind::Dir => {
                if spec.parents && base != target {
                    w.dir(&base, &f.meta)?;
                } else if !target_created && !target.as_os_str().is_empty() {
                    w.dir(&target, &f.meta)?;
                    target_created = true;
                }
                w.tree(src, &f.rel, &base, &f.rel, &mut Vec::new())?;
            }
            _ => {
                let path = if spec.parents {
                    base
                } else if dest_is_dir {
                    if !target_created && !target.as_os_str().is_empty() {
                        w.created_dir(&target)?;
                        target_created = true;
                    }
                    match f.rel.file_name() {
                        Some(n) => target.join(n),
                        None => return Err(err("a source has no file name".into())),
                    }
                } else {
                    target.clone()
                };
                if path.as_os_str().is_empty() {
                    return Err(err(format!("{}: cannot replace the root directory with a file", spec.dst)));
                }
                w.entry(src, &f.rel, &path, &f.meta)?;
            }
        }
    }
    Ok(())
}

struct Writer<'s, 't, W: Write> {
    tar: &'t mut tar::Builder<W>,
    spec: &'s CopySpec<'s>,
    keep_owner: bool,
}

impl<W: Write> Writer<'_, '_, W> {
    fn header(&self, kind: tar::EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        let (uid, gid) = match self.spec.owner {
            Some(o) => (u64::from(o.uid), u64::from(o.gid)),
            None if self.keep_owner => (uid, gid),
            None => (0, 0),
        };
        h.set_uid(uid);
        h.set_gid(gid);
        let clamp = self.spec.clamp_mtime.map_or(u64::MAX, |c| u64::try_from(c).unwrap_or(0));
        h.set_mtime(mtime.min(clamp));
        h.set_mode(mode);
        h.set_size(0);
        h
    }

    fn mode(&self, meta: &SrcMeta) -> u32 {
        match self.spec.chmod {
            Some(c) => mode::apply(c, meta.mode, meta.kind == Kind::Dir),
            None => meta.mode,
        }
    }

    /// A directory the copy creates (a missing parent): 0755, `--chown`'s owner or root.
    fn created_dir(&mut self, path: &Path) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Directory, 0o755, 0, 0, self.spec.now);
        if self.spec.owner.is_none() {
            h.set_uid(0);
            h.set_gid(0);
        }
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn dir(&mut self, path: &Path, meta: &SrcMeta) -> io::Result<()> {
        let mut h = self.header(tar::EntryType::Directory, self.mode(meta), meta.uid, meta.gid, meta.mtime);
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn inline_file(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let meta = SrcMeta { kind: Kind::File, mode: 0o644, uid: 0, gid: 0, mtime: self.spec.now, size: data.len() as u64, link: None };
        let mut h = self.header(tar::EntryType::Regular, self.mode(&meta), 0, 0, self.spec.now);
        h.set_size(data.len() as u64);
        self.tar.append_data(&mut h, path, data)
    }

    /// One non-directory entry.
    fn entry(&mut self, src: &dyn SourceFs, rel: &Path, path: &Path, meta: &SrcMeta) -> io::Result<()> {
        match meta.kind {
            Kind::File => {
                let mut h = self.header(tar::EntryType::Regular, self.mode(meta), meta.uid, meta.gid, meta.mtime);
                h.set_size(meta.size);
                let data = src.open(rel)?;
                self.tar.append_data(&mut h, path, data)
            }
            Kind::Symlink => {
                let mut h = self.header(tar::EntryType::Symlink, 0o777, meta.uid, meta.gid, meta.mtime);
                let target = meta.link.clone().ok_or_else(|| err(format!("{}: symlink without a target", rel.display())))?;
                self.tar.append_link(&mut h, path, target)
            }
            Kind::Dir => self.dir(path, meta),
            Kind::Other => Err(err(format!("{}: not a regular file, directory or symlink", rel.display()))),
        }
    }

    fn excluded(&self, src: &dyn SourceFs, rel: &Path, below_src: &Path) -> bool {
        src.excluded(rel) || self.spec.exclude.is_some_and(|ex| ex.excludes(&below_src.to_string_lossy()))
    }

    /// Copies the entries of directory `dir` to `dest`. `pending` holds directory entries not
    /// written yet because `.dockerignore` excluded them: they are written only if something
    /// below them is re-included, so a wholly excluded directory leaves no trace.
    fn tree(&mut self, src: &dyn SourceFs, dir: &Path, dest: &Path, root: &Path, pending: &mut Vec<(PathBuf, SrcMeta)>) -> io::Result<()> {
        for name in src.list(dir)? {
            let rel = dir.join(&name);
            let target = dest.join(&name);
            let below = rel.strip_prefix(root).unwrap_or(&rel).to_path_buf();
            let meta = src.meta(&rel)?;
            let excluded = self.excluded(src, &rel, &below);
            if excluded && !(meta.kind == Kind::Dir && src.may_reinclude()) {
                continue;
            }
            if !excluded {
                for (p, m) in std::mem::take(pending) {
                    self.dir(&p, &m)?;
                }
            }
            if meta.kind == Kind::Dir {
                let depth = pending.len();
                if excluded {
                    pending.push((target.clone(), meta));
                } else {
                    self.dir(&target, &meta)?;
                }
                self.tree(src, &rel, &target, root, pending)?;
                pending.truncate(depth);
            } else {
                self.entry(src, &rel, &target, &meta)?;
            }
        }
        Ok(())
    }
}

// Unix only: the tests make symlinks and check modes, which Windows files do not have.
#[cfg(all(test, unix))]
mod tests;
