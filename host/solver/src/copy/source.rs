//! Where COPY/ADD read from: the build context on the host ([`ContextFs`]) or another stage's
//! or image's root filesystem ([`StageFs`], a read-only view over its layers). The copy logic
//! in [`super`] sees only [`SourceFs`].
//!
//! Both are confined: a context source that resolves (through symlinks) outside the context is
//! refused, and a stage path resolves inside that stage's root as openat2(RESOLVE_IN_ROOT)
//! would. Symlinks below a copied directory are copied as symlinks, never followed.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_frontend::dockerignore::Dockerignore;

use crate::fsview::Kind;

/// One source entry's metadata.
#[derive(Debug, Clone)]
pub struct SrcMeta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<PathBuf>,
}

/// A tree COPY can read. Paths are relative to the source's root, `/`-separated, clean.
pub trait SourceFs {
    /// Resolves a source as written in the Dockerfile (symlinks followed, the last one too);
    /// `None` when absent.
    fn resolve(&self, path: &str) -> io::Result<Option<PathBuf>>;
    /// Metadata without following a final symlink.
    fn meta(&self, rel: &Path) -> io::Result<SrcMeta>;
    /// Names in a directory, sorted.
    fn list(&self, rel: &Path) -> io::Result<Vec<OsString>>;
    /// A regular file's bytes.
    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + '_>>;
    /// Hidden by `.dockerignore` (context only).
    fn excluded(&self, _rel: &Path) -> bool {
        false
    }
    /// Whether an excluded directory may still hold re-included entries.
    fn may_reinclude(&self) -> bool {
        false
    }
    /// Whether entries keep their owner (a stage) or become root's (the context).
    fn keeps_owner(&self) -> bool;
    /// A short identity for error messages.
    fn describe(&self) -> String;
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The build context directory.
pub struct ContextFs<'a> {
    root: PathBuf,
    ignore: Option<&'a Dockerignore>,
}

impl<'a> ContextFs<'a> {
    pub fn new(root: &Path, ignore: Option<&'a Dockerignore>) -> io::Result<Self> {
        let root = fs::canonicalize(root).map_err(|e| io::Error::new(e.kind(), format!("build context {}: {e}", root.display())))?;
        Ok(Self { root, ignore })
    }
}

impl SourceFs for ContextFs<'_> {
    fn resolve(&self, path: &str) -> io::Result<Option<PathBuf>> {
        let rel = super::clean_rooted(path);
        let resolved = match fs::canonicalize(self.root.join(&rel)) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match resolved.strip_prefix(&self.root) {
            Ok(r) => Ok(Some(r.to_path_buf())),
            Err(_) => Err(invalid(format!("{path}: resolves to a path outside the build context"))),
        }
    }

    fn meta(&self, rel: &Path) -> io::Result<SrcMeta> {
        let m = fs::symlink_metadata(self.root.join(rel))?;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        let link = if kind == Kind::Symlink { Some(fs::read_link(self.root.join(rel))?) } else { None };
        Ok(SrcMeta {
            kind,
            mode: kiln_sys::fs::mode_of(&m),
            uid: 0,
            gid: 0,
            mtime: m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs()),
            size: m.len(),
            link,
        })
    }

    fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let mut names: Vec<OsString> = fs::read_dir(self.root.join(rel))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        Ok(names)
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(fs::File::open(self.root.join(rel))?))
    }

    fn excluded(&self, rel: &Path) -> bool {
        match self.ignore {
            Some(ig) if !rel.as_os_str().is_empty() => ig.excludes(&rel.to_string_lossy()),
            _ => false,
        }
    }

    fn may_reinclude(&self) -> bool {
        self.ignore.is_some_and(Dockerignore::has_exceptions)
    }

    fn keeps_owner(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "the build context".into()
    }
}
