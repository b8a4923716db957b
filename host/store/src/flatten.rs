//! Flattening an image's layers into one root filesystem tar (for `--output type=tar|local`).
//!
//! Layers are read top-down; an entry is written unless a higher layer already wrote that
//! path, deleted it (`.wh.NAME`), made its directory opaque (`.wh..wh..opq`), or put a
//! non-directory at one of its ancestors. Whiteouts hide only lower layers, never their own.
//! Entries come out top layer first; tar extractors create missing parents, and a directory's
//! own entry (from whichever layer is highest) still sets its metadata. Layer tars are hostile
//! input: every path is checked with [`check_member_path`] before it is trusted.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::layer::check_member_path;
use crate::layer_verify::decompress;
use crate::{ImageRecord, Store, StoreError};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

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
}

impl Shadow {
    fn hides(&self, path: &Path) -> bool {
        if self.written.contains(path) || self.deleted.contains(path) {
            return true;
        }
        path.ancestors().skip(1).any(|a| self.leaves.contains(a) || self.deleted.contains(a) || self.opaque.contains(a))
    }
}

fn normalise(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

fn hostile(e: impl std::fmt::Display) -> StoreError {
    StoreError::HostileLayer(e.to_string())
}

/// Writes the flattened root filesystem of `image` as one tar to `out`.
pub fn flatten_image<W: Write>(store: &Store, image: &ImageRecord, out: W) -> Result<W, StoreError> {
    let mut tar = tar::Builder::new(out);
    let mut shadow = Shadow::default();
    for digest in image.layers.iter().rev() {
        let blob = store.open_blob(digest)?;
        let (stream, _) = decompress(io::BufReader::new(blob))?;
        let mut this_layer = Shadow::default();
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(hostile)? {
            let mut entry = entry.map_err(hostile)?;
            let path = normalise(&entry.path().map_err(hostile)?);
            if path.as_os_str().is_empty() {
                continue; // The root directory itself.
            }
            check_member_path(&path).map_err(hostile)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if name == OPAQUE {
                this_layer.opaque.insert(parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                this_layer.deleted.insert(parent.join(hidden));
                continue;
            }
            if shadow.hides(&path) {
                continue;
            }
            let is_dir = entry.header().entry_type().is_dir();
            this_layer.written.insert(path.clone());
            if !is_dir {
                this_layer.leaves.insert(path.clone());
            }
            let mut header = entry.header().clone();
            if header.entry_type().is_hard_link() {
                let target = entry.link_name().map_err(hostile)?.ok_or_else(|| hostile("hardlink without a target"))?;
                check_member_path(&target).map_err(hostile)?;
                tar.append_link(&mut header, &path, normalise(&target)).map_err(|e| StoreError::io("writing rootfs tar", e))?;
                continue;
            }
            if header.entry_type().is_symlink() {
                let target = entry.link_name().map_err(hostile)?.ok_or_else(|| hostile("symlink without a target"))?;
                tar.append_link(&mut header, &path, target).map_err(|e| StoreError::io("writing rootfs tar", e))?;
                continue;
            }
            // Streamed: the header's size is the entry's, and the tar crate reads exactly that.
            tar.append_data(&mut header, &path, &mut entry).map_err(|e| StoreError::io("writing rootfs tar", e))?;
        }
        // This layer's whiteouts and entries hide what the layers below hold.
        shadow.written.extend(this_layer.written);
        shadow.leaves.extend(this_layer.leaves);
        shadow.deleted.extend(this_layer.deleted);
        shadow.opaque.extend(this_layer.opaque);
    }
    tar.into_inner().map_err(|e| StoreError::io("finishing rootfs tar", e))
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
            .write_image(NewImage { layers, config: RunConfig::default(), history: vec![], created: "2026-01-01T00:00:00Z".into(), architecture: "amd64".into(), os: "linux".into() })
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
}
