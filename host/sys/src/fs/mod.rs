//! Files: private files and directories (0600/0700 on unix; on Windows the per-user profile's
//! inherited ACLs already keep them private), free space, the unix bits of a host file,
//! positional reads and durable directory entries.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

// Positional reads of a file (`pread` on unix, `seek_read` on Windows) and making a
// directory's entries durable (fsync of the directory on unix; on Windows a directory cannot be
// opened as a file, and NTFS journals its entries itself).
#[cfg(unix)]
mod durable_unix;
#[cfg(unix)]
pub use durable_unix::{read_at, sync_dir};

#[cfg(windows)]
mod durable_windows;
#[cfg(windows)]
pub use durable_windows::{read_at, sync_dir};

/// Sizes of the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Its whole size.
    pub total: u64,
    /// What an unprivileged user may still write.
    pub available: u64,
}

/// [`space`] of `path`, or, when it does not exist yet, of its nearest existing parent.
pub fn space_near(path: &std::path::Path) -> std::io::Result<Space> {
    space(path.ancestors().find(|p| p.exists()).unwrap_or(path))
}

/// Why the '/'-separated image path `path` cannot be written as files on this host (the first
/// component that cannot, see `host_name_problem`), if it cannot.
pub fn host_path_problem(path: &str) -> Option<String> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").find_map(host_name_problem)
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_paths_windows_would_read_differently_are_named() {
        let windows = cfg!(windows);
        for bad in ["a/C:/x", "a\\..\\..\\evil", "etc/passwd:stream", "dev/CON", "x/nul.txt", "COM1", "lpt9.log", "COM\u{b9}", "trailing.", "space ", "q?", "tab\there"] {
            assert_eq!(super::host_path_problem(bad).is_some(), windows, "{bad}");
        }
        for good in ["usr/bin/env", "./a/b", "a/b/", "COM0", "console", "CONFIG", "a.b.c", "..", "com10", "del\u{7f}"] {
            assert_eq!(super::host_path_problem(good), None, "{good}");
        }
    }

    #[test]
    fn a_temp_dir_has_some_space_and_a_private_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = super::space_near(&dir.path().join("not/yet")).expect("space");
        assert!(space.total > 0 && space.available <= space.total, "{space:?}");
        let path = dir.path().join("f");
        super::private(std::fs::File::options().write(true).create(true)).open(&path).expect("create");
        super::private_dir(std::fs::DirBuilder::new().recursive(true)).create(dir.path().join("d/e")).expect("mkdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(dir.path().join("d/e")).expect("meta").permissions().mode() & 0o777, 0o700);
        }
    }
}
