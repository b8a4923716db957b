//! Mount points a Run needs inside the rootfs, created on demand and removed again afterwards
//! if the agent created them and they are still empty, as BuildKit does: a `FROM scratch` +
//! `RUN` must not leave `/proc`, `/dev`, `/sys` in the layer, nor a `RUN --mount` its target.
//!
//! `proc`, `dev` and `sys` are plain directories of the rootfs ([`prepare`]). `RUN --mount`
//! targets ([`prepare_targets`]) are resolved the way `openat2(RESOLVE_IN_ROOT)` would, but
//! component by component with `*at` calls that never follow a symlink in the kernel: symlinks
//! are expanded here, absolute ones and `..` relative to the rootfs, so no target can lead
//! outside it. What is missing on the way is created (directories, and the target itself as a
//! directory or an empty file) and recorded with an fd of its parent directory, whose times are
//! restored when the stub goes, so the parent's entry in the diff stays as it was.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::usermounts::{MountKind, UserMount};
use crate::error::{Context, Error, Result};
use crate::fsat;
use crate::log::info;
use crate::safepath;

const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "sys"];

/// Symlinks followed while resolving one target before giving up (ELOOP), as the kernel does.
const MAX_SYMLINKS: u32 = 40;

/// Directories and stubs created for one Run; call [`CreatedMountPoints::remove`] after the
/// process ends.
#[derive(Debug, Default)]
pub struct CreatedMountPoints {
    dirs: Vec<PathBuf>,
    stubs: Vec<Stub>,
}

/// A directory or empty file created as a mount point for a `RUN --mount` target.
#[derive(Debug)]
struct Stub {
    parent: OwnedFd,
    name: CString,
    dir: bool,
    /// The parent's atime and mtime before the stub was created.
    parent_times: (libc::timespec, libc::timespec),
    shown: String,
}

/// Makes sure `rootfs/{proc,dev,sys}` are directories, creating the missing ones.
pub fn prepare(rootfs: &Path) -> Result<CreatedMountPoints> {
    let meta = fs::metadata(rootfs).ctx(|| format!("run: stat rootfs {}", rootfs.display()))?;
    if !meta.is_dir() {
        return Err(Error::msg(format!(
            "run: rootfs {} is not a directory",
            rootfs.display()
        )));
    }
    let mut created = CreatedMountPoints::default();
    for name in MOUNT_POINTS {
        let path = rootfs.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                created.remove();
                return Err(Error::msg(format!(
                    "run: {} exists and is not a directory",
                    path.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = fs::create_dir(&path) {
                    created.remove();
                    return Err(Error::io(format!("run: mkdir {}", path.display()), e));
                }
                created.dirs.push(path);
            }
            Err(e) => {
                created.remove();
                return Err(Error::io(format!("run: lstat {}", path.display()), e));
            }
        }
    }
    Ok(created)
}

/// Resolves each mount's target inside `rootfs`, creates the missing mount points, and fills
/// in [`UserMount::path`], [`UserMount::create_from`] and (for binds) [`UserMount::dir`].
pub fn prepare_targets(
    rootfs: &Path,
    mounts: &mut [UserMount],
    created: &mut CreatedMountPoints,
) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let root =
        safepath::open_root(rootfs).ctx(|| format!("run: open rootfs {}", rootfs.display()))?;
    let mut earlier: Vec<Vec<Vec<u8>>> = Vec::new();
    for m in mounts.iter_mut() {
        if let MountKind::Bind { source, .. } = &m.kind {
            let shown = source.to_string_lossy();
            let meta = fs::metadata(&*shown).ctx(|| format!("run: bind source {shown}"))?;
            m.dir = meta.is_dir();
        }
        let (path, create_from) = resolve(&root, m, &earlier, created)?;
        m.path = path
            .iter()
            .map(|c| safepath::cname(c))
            .collect::<io::Result<_>>()
            .ctx(|| format!("run: mount target {}", m.shown))?;
        m.create_from = create_from;
        earlier.push(path);
    }
    Ok(())
}

fn shown(real: &[Vec<u8>], name: &[u8]) -> String {
    let mut p = real.to_vec();
    p.push(name.to_vec());
    format!("/{}", safepath::display(&p))
}

/// Walks `m.lexical` from the root; returns the symlink-free path and the index from which
/// the child must create components (the path entered an earlier mount's target there).
fn resolve(
    root: &OwnedFd,
    m: &UserMount,
    earlier: &[Vec<Vec<u8>>],
    created: &mut CreatedMountPoints,
) -> Result<(Vec<Vec<u8>>, usize)> {
    let target = &m.shown;
    let fail =
        |what: String, e: io::Error| Error::io(format!("run: mount target {target}: {what}"), e);
    let refuse = |what: String| Error::msg(format!("run: mount target {target}: {what}"));
    let mut remaining: std::collections::VecDeque<Vec<u8>> = m.lexical.iter().cloned().collect();
    let mut real: Vec<Vec<u8>> = Vec::new();
    // dirs[i] is the open directory at real[..i].
    let mut dirs = vec![root.try_clone().map_err(|e| fail("dup".into(), e))?];
    let mut links = 0;
    let plain = |c: &Vec<u8>| !c.is_empty() && c != b".";
    while let Some(comp) = remaining.pop_front() {
        if !plain(&comp) {
            continue;
        }
        if !real.is_empty() && earlier.contains(&real) {
            // Inside an earlier mount: the overlay's content here is hidden from the process.
            let create_from = real.len();
            real.push(comp);
            real.extend(remaining.into_iter().filter(plain));
            if real[create_from..].iter().any(|c| c == b"..") {
                return Err(refuse("`..` inside another mount's target".into()));
            }
            return Ok((real, create_from));
        }
        if comp == b".." {
            if real.pop().is_some() {
                dirs.pop();
            }
            continue;
        }
        let name = safepath::cname(&comp).map_err(|e| fail("bad name".into(), e))?;
        let cur = dirs
            .last()
            .ok_or_else(|| refuse("internal: no directory".into()))?;
        let last = remaining.is_empty();
        match fsat::lstat(cur.as_fd(), &name)
            .map_err(|e| fail(format!("lstat {}", shown(&real, &comp)), e))?
        {
            None => {
                if real
                    .first()
                    .is_some_and(|c| MOUNT_POINTS.iter().any(|p| p.as_bytes() == c))
                {
                    return Err(refuse("lies under /proc, /dev or /sys".into()));
                }
                let dir = !last || m.dir;
                let path = shown(&real, &comp);
                created
                    .create_stub(cur, name.clone(), dir, &path)
                    .map_err(|e| fail(format!("create {path}"), e))?;
                if !last {
                    let fd = fsat::open_dir(cur.as_fd(), &name)
                        .map_err(|e| fail(format!("open {path}"), e))?;
                    dirs.push(fd);
                }
                real.push(comp);
            }
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(fail(
                        "resolve".into(),
                        io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                let link = fsat::readlink(cur.as_fd(), &name)
                    .map_err(|e| fail(format!("readlink {}", shown(&real, &comp)), e))?;
                if link.first() == Some(&b'/') {
                    real.clear();
                    dirs.truncate(1);
                }
                for c in link.split(|b| *b == b'/').rev() {
                    remaining.push_front(c.to_vec());
                }
            }
            Some(st) if fsat::is_dir(&st) => {
                if !last {
                    let fd = fsat::open_dir(cur.as_fd(), &name)
                        .map_err(|e| fail(format!("open {}", shown(&real, &comp)), e))?;
                    dirs.push(fd);
                }
                real.push(comp);
            }
            Some(_) if last => real.push(comp),
            Some(_) => {
                let e = io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(fail(shown(&real, &comp), e));
            }
        }
    }
    if real.is_empty() {
        return Err(refuse("resolves to the root".into()));
    }
    if MOUNT_POINTS.iter().any(|p| p.as_bytes() == real[0]) {
        return Err(refuse("lies under /proc, /dev or /sys".into()));
    }
    let create_from = real.len();
    Ok((real, create_from))
}

fn times(st: &libc::stat) -> (libc::timespec, libc::timespec) {
    (
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    )
}

impl CreatedMountPoints {
    fn create_stub(
        &mut self,
        parent: &OwnedFd,
        name: CString,
        dir: bool,
        shown: &str,
    ) -> io::Result<()> {
        let st = fsat::fstat(parent.as_fd())?;
        if dir {
            fsat::mkdir(parent.as_fd(), &name, 0o755)?;
        } else {
            drop(fsat::create_file(parent.as_fd(), &name)?);
        }
        self.stubs.push(Stub {
            parent: parent.try_clone()?,
            name,
            dir,
            parent_times: times(&st),
            shown: shown.to_string(),
        });
        Ok(())
    }

    /// Removes the created stubs and directories that are still empty. The mounts on them
    /// lived in the child's mount namespace, which is gone once the child is reaped; a short
    /// retry covers a namespace teardown that is still in flight.
    pub fn remove(&mut self) {
        for stub in self.stubs.drain(..).rev() {
            stub.remove();
        }
        for dir in self.dirs.drain(..).rev() {
            for attempt in 0..20 {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    // Not empty: the step put something there on purpose; keep it.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => {
                        info!("run: could not remove mount point {}: {e}", dir.display());
                        break;
                    }
                }
            }
        }
    }
}

impl Stub {
    fn remove(&self) {
        for attempt in 0..20 {
            match fsat::lstat(self.parent.as_fd(), &self.name) {
                Ok(Some(st)) if self.dir && fsat::is_dir(&st) => {}
                // A file stub is only removed while it is still the empty file created here.
                Ok(Some(st))
                    if !self.dir
                        && st.st_mode & libc::S_IFMT == libc::S_IFREG
                        && st.st_size == 0 => {}
                Ok(None) => return,
                Ok(Some(_)) => {
                    info!("run: mount point {} was replaced; keeping it", self.shown);
                    return;
                }
                Err(e) => {
                    info!("run: could not lstat mount point {}: {e}", self.shown);
                    return;
                }
            }
            match fsat::unlink(self.parent.as_fd(), &self.name, self.dir) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Not empty: the step put something there on purpose; keep it.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => return,
                Err(e) => {
                    info!("run: could not remove mount point {}: {e}", self.shown);
                    return;
                }
            }
        }
        let (atime, mtime) = self.parent_times;
        if let Err(e) = fsat::set_times(self.parent.as_fd(), atime, mtime) {
            info!(
                "run: could not restore the times of the parent of {}: {e}",
                self.shown
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_and_removes_only_created_empty_dirs() {
        let root = std::env::temp_dir().join(format!("kiln-mp-{}", std::process::id()));
        fs::create_dir_all(root.join("proc")).expect("mkdir");
        let mut created = prepare(&root).expect("prepare");
        assert!(root.join("dev").is_dir() && root.join("sys").is_dir());
        fs::write(root.join("sys/keep"), b"x").expect("write");
        created.remove();
        assert!(root.join("proc").is_dir(), "pre-existing dir must stay");
        assert!(!root.join("dev").exists(), "created empty dir must go");
        assert!(root.join("sys/keep").exists(), "non-empty dir must stay");
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
