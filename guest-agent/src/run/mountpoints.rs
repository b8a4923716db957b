//! Mount points a Run needs inside the rootfs (`proc`, `dev`, `sys`), created on demand and
//! removed again afterwards if the agent created them and they are still empty, as BuildKit
//! does: a `FROM scratch` + `RUN` must not leave `/proc`, `/dev`, `/sys` in the layer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::log::info;

const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "sys"];

/// Directories created for one Run; call [`CreatedMountPoints::remove`] after the process ends.
#[derive(Debug, Default)]
pub struct CreatedMountPoints {
    dirs: Vec<PathBuf>,
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

impl CreatedMountPoints {
    /// Removes the created directories that are empty. The mounts on them lived in the child's
    /// mount namespace, which is gone once the child is reaped; a short retry covers a
    /// namespace teardown that is still in flight.
    pub fn remove(&mut self) {
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
