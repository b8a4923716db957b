//! `kiln cp`: files between a container and the host.
//!
//! Out (`CONTAINER:SRC HOSTDEST`): the container's filesystem is its image's layers plus its
//! writable layer, flattened on the host (whiteouts applied) and never extracted whole; the
//! entries under SRC are renamed to the destination and unpacked with the tar crate's
//! `unpack_in`, which refuses `..`, absolute paths and writes through symlinks (the
//! container's symlinks are recreated as symlinks, never followed). setuid/setgid bits are
//! dropped and device nodes skipped: nothing the container made gets privileges on the host.
//!
//! In (`HOSTSRC CONTAINER:DEST`): a tar of the host path is added to the writable layer (a
//! stopped container) or unpacked by the agent into the running container's root.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Component, Path, PathBuf};

use kiln_store::{Digest, Store};

use super::record::Container;
use crate::RuntimeError;

fn invalid(why: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(why.into())
}

/// `/a/b/` -> `a/b` (no `..`): a path inside the container, relative to its root.
pub fn container_rel(path: &str) -> Result<PathBuf, RuntimeError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(invalid(format!("{path}: a container path may not contain ..")))?,
        }
    }
    Ok(out)
}

/// The container's root filesystem as one plain tar in a temp file (under the store's
/// `ingest/`: as big as the container).
fn flattened(store: &Store, c: &Container) -> Result<File, RuntimeError> {
    let staging = store.staging()?;
    let mut layers: Vec<Digest> = c.config.layers.iter().map(|l| l.digest.parse()).collect::<Result<_, _>>()?;
    let rw = c.rw_layer();
    if rw.is_file() {
        let f = File::open(&rw).map_err(|e| RuntimeError::io(format!("opening {}", rw.display()), e))?;
        layers.push(staging.store().ingest_layer(f)?.digest);
    }
    let open = |d: &Digest| staging.open_blob(d);
    let tmp = tempfile::tempfile_in(store.root().join("ingest")).map_err(|e| RuntimeError::io("creating a temp file", e))?;
    let mut tmp = kiln_store::flatten::flatten_layers(&open, &layers, std::io::BufWriter::new(tmp))?
        .into_inner()
        .map_err(|e| RuntimeError::io("writing the container's filesystem", e.into_error()))?;
    tmp.rewind().map_err(|e| RuntimeError::io("rewinding a temp file", e))?;
    Ok(tmp)
}

/// Copies `src` (inside the container) to `dest` on the host, as `docker cp` does: into
/// `dest` when it is an existing directory, else as `dest`. Returns the bytes copied.
pub fn copy_out(store: &Store, c: &Container, src: &str, dest: &Path) -> Result<u64, RuntimeError> {
    let rel = container_rel(src)?;
    let name = rel.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "root".into());
    let (parent, top) = if dest.is_dir() { (dest.to_path_buf(), PathBuf::from(&name)) } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let top = PathBuf::from(dest.file_name().ok_or_else(|| invalid(format!("{}: not a file name", dest.display())))?);
        (parent, top)
    };
    if !parent.is_dir() {
        return Err(invalid(format!("{}: no such directory", parent.display())));
    }
    // Select and rename SRC's entries into a second tar, then unpack that one safely.
    let mut archive = tar::Archive::new(std::io::BufReader::new(flattened(store, c)?));
    let mut out = tar::Builder::new(tempfile::tempfile_in(store.root().join("ingest")).map_err(|e| RuntimeError::io("creating a temp file", e))?);
    let (mut found, mut bytes) = (false, 0u64);
    for entry in archive.entries().map_err(|e| RuntimeError::io("reading the container's filesystem", e))? {
        let mut entry = entry.map_err(|e| RuntimeError::io("reading the container's filesystem", e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = container_rel(&raw)?;
        let Ok(below) = path.strip_prefix(&rel) else { continue };
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        // Only the names below SRC reach the host; checked while only the temp tar is written,
        // so a refusal leaves the host untouched.
        if let Some(why) = kiln_sys::fs::host_path_problem(&below.to_string_lossy()) {
            return Err(invalid(format!("cannot copy {src} to this host: {why}")));
        }
        found = true;
        let target = if below.as_os_str().is_empty() { top.clone() } else { top.join(below) };
        let mut header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o1777; // no setuid/setgid on the host
        header.set_mode(mode);
        if kind.is_hard_link() {
            // A hardlink names another path of the container: only one inside what is copied.
            let link = entry.link_name().ok().flatten().map(|l| container_rel(&l.to_string_lossy())).transpose()?;
            let Some(inside) = link.as_ref().and_then(|l| l.strip_prefix(&rel).ok()) else { continue };
            let to = if inside.as_os_str().is_empty() { top.clone() } else { top.join(inside) };
            out.append_link(&mut header, &target, &to).map_err(|e| RuntimeError::io("copying", e))?;
            continue;
        }
        if kind.is_symlink() {
            let to = entry.link_name().ok().flatten().map(|l| l.into_owned()).unwrap_or_default();
            out.append_link(&mut header, &target, &to).map_err(|e| RuntimeError::io("copying", e))?;
            continue;
        }
        bytes += header.size().unwrap_or(0);
        out.append_data(&mut header, &target, &mut entry).map_err(|e| RuntimeError::io("copying", e))?;
    }
    if !found {
        return Err(invalid(format!("could not find the file {src} in container {}", c.config.name)));
    }
    let mut tmp = out.into_inner().map_err(|e| RuntimeError::io("copying", e))?;
    tmp.rewind().map_err(|e| RuntimeError::io("rewinding a temp file", e))?;
    let mut renamed = tar::Archive::new(std::io::BufReader::new(tmp));
    renamed.set_preserve_permissions(true);
    renamed.set_overwrite(true);
    for entry in renamed.entries().map_err(|e| RuntimeError::io("copying", e))? {
        let mut entry = entry.map_err(|e| RuntimeError::io("copying", e))?;
        let shown = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        let inside = entry.unpack_in(&parent).map_err(|e| RuntimeError::io(format!("writing {shown} into {}", parent.display()), e))?;
        if !inside {
            return Err(invalid(format!("refusing to write {shown}: it would land outside {}", parent.display())));
        }
    }
    Ok(bytes)
}

/// A tar of host path `src`, named `name` inside it (what `copy_in` adds).
fn host_tar(src: &Path, name: &Path) -> Result<File, RuntimeError> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| RuntimeError::io(format!("{}", src.display()), e))?;
    let tmp = tempfile::tempfile().map_err(|e| RuntimeError::io("creating a temp file", e))?;
    let mut b = tar::Builder::new(tmp);
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(name, src).map_err(|e| RuntimeError::io(format!("reading {}", src.display()), e))?;
    } else {
        b.append_path_with_name(src, name).map_err(|e| RuntimeError::io(format!("reading {}", src.display()), e))?;
    }
    let mut f = b.into_inner().map_err(|e| RuntimeError::io("copying", e))?;
    f.flush().map_err(|e| RuntimeError::io("copying", e))?;
    f.rewind().map_err(|e| RuntimeError::io("copying", e))?;
    Ok(f)
}

/// Copies host path `src` to `dest` in the container (into `dest` when it names a directory,
/// written as `dest/` or `.`; else as `dest`). A running container gets the tar through its
/// owner (the control socket); a stopped one in its writable layer.
pub fn copy_in(c: &Container, src: &Path, dest: &str) -> Result<(), RuntimeError> {
    let rel = container_rel(dest)?;
    let into_dir = dest.ends_with('/') || dest.ends_with("/.") || rel.as_os_str().is_empty();
    let (dir, name) = if into_dir {
        (rel.clone(), PathBuf::from(src.file_name().ok_or_else(|| invalid(format!("{}: not a file name", src.display())))?))
    } else {
        (rel.parent().map(Path::to_path_buf).unwrap_or_default(), PathBuf::from(rel.file_name().unwrap_or_default()))
    };
    let tar = host_tar(src, &dir.join(&name))?;
    if c.is_running() {
        return super::control::send_tar(&c.dir, tar);
    }
    // Stopped: the new entries go after the writable layer's, so they win when it is laid.
    let rw = c.rw_layer();
    let mut out = tar::Builder::new(tempfile::NamedTempFile::new_in(&c.dir).map_err(|e| RuntimeError::io("copying", e))?);
    if rw.is_file() {
        let mut old = tar::Archive::new(File::open(&rw).map_err(|e| RuntimeError::io("opening the writable layer", e))?);
        for e in old.entries().map_err(|e| RuntimeError::io("reading the writable layer", e))? {
            let mut e = e.map_err(|e| RuntimeError::io("reading the writable layer", e))?;
            let h = e.header().clone();
            out.append(&h, &mut e).map_err(|e| RuntimeError::io("copying", e))?;
        }
    }
    let mut new = tar::Archive::new(tar);
    for e in new.entries().map_err(|e| RuntimeError::io("copying", e))? {
        let mut e = e.map_err(|e| RuntimeError::io("copying", e))?;
        let h = e.header().clone();
        out.append(&h, &mut e).map_err(|e| RuntimeError::io("copying", e))?;
    }
    let tmp = out.into_inner().map_err(|e| RuntimeError::io("copying", e))?;
    let check = File::open(tmp.path()).map_err(|e| RuntimeError::io("copying", e))?;
    kiln_store::layer_verify::check_layer(check).map_err(|e| invalid(format!("the copied files cannot join the container: {e}")))?;
    tmp.persist(&rw).map_err(|e| RuntimeError::io("saving the writable layer", e.error))?;
    Ok(())
}
