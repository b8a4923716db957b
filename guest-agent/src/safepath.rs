//! Confining tar extraction to its destination directory.
//!
//! [`normalize`] turns a tar entry name into plain components, refusing absolute names and `..`.
//! [`open_parent_beneath`] opens the directory that will hold an entry with `openat2`
//! `RESOLVE_BENEATH`: symlinks inside `dest` are followed, but any resolution that would leave
//! `dest` fails with EXDEV, so nothing is ever written outside it. The final component is then
//! handled with `*at` calls that never follow it.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// `struct open_how` of openat2(2) (not in the libc crate for this target).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const SYS_OPENAT2: libc::c_long = 437;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

/// Splits a tar entry name into its normal components. `Err` for absolute names, `..`
/// components or NUL bytes. `./` and empty components are dropped; an empty result means the
/// archive root itself.
pub fn normalize(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let shown = String::from_utf8_lossy(name);
    if name.first() == Some(&b'/') {
        return Err(format!("tar entry {shown:?} has an absolute path"));
    }
    if name.contains(&0) {
        return Err(format!("tar entry {shown:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(format!("tar entry {shown:?} has a `..` component")),
            c => parts.push(c.to_vec()),
        }
    }
    Ok(parts)
}

/// Opens directory `rel` (components relative to `root`) without ever leaving `root`.
/// An empty `rel` opens `root` itself.
pub fn open_dir_beneath(root: &OwnedFd, rel: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let joined = if rel.is_empty() {
        b".".to_vec()
    } else {
        rel.join(&b'/')
    };
    let c = CString::new(joined).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and an open_how of the size we
    // pass; the returned fd is wrapped right away.
    let fd = unsafe {
        libc::syscall(
            SYS_OPENAT2,
            root.as_raw_fd(),
            c.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens a directory by absolute path (the extraction root, chosen by the trusted host).
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

/// Shows components for error messages.
pub fn display(parts: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
}

/// A NUL-terminated single path component.
pub fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Path through `/proc/self/fd` naming `name` inside the directory `dir`, for syscalls that only
/// exist in path form (`lsetxattr`). The final component is still not followed by `l*` calls.
pub fn proc_path(dir: &OwnedFd, name: &[u8]) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_relative_and_refuses_escapes() {
        assert_eq!(
            normalize(b"./a//b/./c/").expect("ok"),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert!(normalize(b"./").expect("ok").is_empty());
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"..").is_err());
        assert_eq!(normalize(b"a/..b").expect("ok").len(), 2);
    }

    #[test]
    fn open_beneath_refuses_symlink_escape() {
        let dir = std::env::temp_dir().join(format!("kiln-safepath-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("in/sub")).expect("mkdir");
        std::os::unix::fs::symlink("/", dir.join("out")).expect("symlink");
        std::os::unix::fs::symlink("in/sub", dir.join("ok")).expect("symlink");
        let root = open_root(&dir).expect("root");
        assert!(open_dir_beneath(&root, &[b"ok".to_vec()]).is_ok());
        let err = open_dir_beneath(&root, &[b"out".to_vec(), b"tmp".to_vec()]).expect_err("escape");
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
