//! Unix: modes, `statvfs`.

use std::fs::{DirBuilder, FileType, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::Space;

/// A file created with these options is the user's alone (0600).
pub fn private(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.mode(0o600)
}

/// A directory created by this builder is the user's alone (0700).
pub fn private_dir(builder: &mut DirBuilder) -> &mut DirBuilder {
    builder.mode(0o700)
}

/// Makes an existing file the user's alone (0600).
pub fn set_private(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Whether this host refuses some names a Linux image can hold: no, any name works here.
pub const RESTRICTED_NAMES: bool = false;

/// Why `name`, one '/'-separated component of an image path, cannot be a file name here: never
/// on unix, where any component a tar can carry (no '/', no NUL) names a file literally.
pub fn host_name_problem(_name: &str) -> Option<String> {
    None
}

/// Whether a file is a Unix socket (an SSH agent's).
pub fn is_socket(ft: &FileType) -> bool {
    ft.is_socket()
}

/// The permission bits (with setuid/setgid/sticky) of a host file, as an image records them.
pub fn mode_of(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Sizes of the filesystem holding `path`.
pub fn space(path: &Path) -> io::Result<Space> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to memory for one statvfs, which
    // the call only writes.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the fields' types differ between Linux and macOS
    let (blocks, avail, frsize) = (st.f_blocks as u64, st.f_bavail as u64, st.f_frsize as u64);
    Ok(Space { total: blocks.saturating_mul(frsize), available: avail.saturating_mul(frsize) })
}
