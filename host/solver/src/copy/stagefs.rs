//! [`SourceFs`] over another stage's or image's root filesystem, for `COPY --from`: a
//! read-only view of its layers ([`kiln_store::rootfs::RootFs`]); entries keep their owner.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use kiln_store::rootfs::{NodeKind, RootFs};
use kiln_store::{Digest, Staging};

use super::source::{SourceFs, SrcMeta};
use crate::fsview::Kind;
use crate::BuildError;

pub struct StageFs {
    root: RootFs,
}

fn io_err(e: kiln_store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

impl StageFs {
    /// The view of `layers` (bottom first), whose blobs are in the staging area or the store.
    pub fn new(staging: &Staging, layers: &[Digest]) -> Result<Self, BuildError> {
        let open = |d: &Digest| staging.open_blob(d);
        Ok(Self { root: RootFs::from_layers(&open, layers)? })
    }

    /// The entries of an (uncompressed) tar archive, for `ADD archive.tar.gz /dst`.
    pub fn from_tar(tar: std::fs::File, name: &Path) -> Result<Self, BuildError> {
        Ok(Self { root: crate::add::archive_view(tar, name)? })
    }
}

impl SourceFs for StageFs {
    fn resolve(&self, path: &str) -> io::Result<Option<PathBuf>> {
        self.root.resolve(path, true).map_err(io_err)
    }

    fn meta(&self, rel: &Path) -> io::Result<SrcMeta> {
        let n = self.root.node(rel).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}: not found", rel.display())))?;
        let kind = match n.kind {
            NodeKind::Dir => Kind::Dir,
            NodeKind::File => Kind::File,
            NodeKind::Hardlink if n.has_data() => Kind::File,
            NodeKind::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Ok(SrcMeta { kind, mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime, size: n.size, link: n.link.clone() })
    }

    fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        Ok(self.root.children(rel).iter().filter_map(|n| n.path.file_name().map(|f| f.to_os_string())).collect())
    }

    fn open(&self, rel: &Path) -> io::Result<Box<dyn Read + '_>> {
        let n = self.root.node(rel).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}: not found", rel.display())))?;
        Ok(Box::new(self.root.open(n).map_err(io_err)?))
    }

    fn keeps_owner(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "the source stage".into()
    }
}
