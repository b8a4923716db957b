//! Windows (experimental: unit-tested under Wine): no modes (files in the user's profile are
//! private by inherited ACLs), `GetDiskFreeSpaceExW`.

use std::fs::{DirBuilder, FileType, Metadata, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;

use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;

use super::Space;

/// Files under the user's profile inherit its private ACL: nothing to add.
pub fn private(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts
}

/// Directories under the user's profile inherit its private ACL: nothing to add.
pub fn private_dir(builder: &mut DirBuilder) -> &mut DirBuilder {
    builder
}

/// Files under the user's profile inherit its private ACL: nothing to change.
pub fn set_private(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Windows has no socket files kiln could forward (an SSH agent there is a named pipe).
pub fn is_socket(_ft: &FileType) -> bool {
    false
}

/// Windows files have no unix modes: as `docker build` on Windows does, every file and
/// directory is `rwxr-xr-x` (read-only files `r-xr-xr-x`).
pub fn mode_of(meta: &Metadata) -> u32 {
    if meta.permissions().readonly() && !meta.is_dir() {
        0o555
    } else {
        0o755
    }
}

/// Sizes of the volume holding `path`.
pub fn space(path: &Path) -> io::Result<Space> {
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain(std::iter::once(0)).collect();
    let (mut available, mut total) = (0u64, 0u64);
    // SAFETY: `wide` is NUL-terminated; the two outputs are u64s we own; the third is optional.
    if unsafe { GetDiskFreeSpaceExW(wide.as_ptr(), &mut available, &mut total, std::ptr::null_mut()) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Space { total, available })
}
