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

/// Whether this host refuses some names a Linux image can hold: yes (see
/// [`host_name_problem`]), so paths written to host files must be checked first.
pub const RESTRICTED_NAMES: bool = true;

/// Why `name`, one '/'-separated component of an image path, cannot be a file name on Windows,
/// where it would not name a file literally: a `\\` is a separator there (`a\\..\\..` climbs),
/// a `:` starts a drive (`C:` joined onto a path replaces it) or an alternate data stream,
/// `<>"|?*` and control characters are refused by the OS, a trailing dot or space is
/// silently dropped (two image files would become one), and `CON`, `NUL`, `COM1`... (with any
/// extension) are devices, not files.
pub fn host_name_problem(name: &str) -> Option<String> {
    if let Some(c) = name.chars().find(|c| matches!(c, '\\' | ':' | '<' | '>' | '"' | '|' | '?' | '*') || (*c as u32) < 0x20) {
        return Some(format!("{name:?} contains {c:?}, which Windows file names cannot hold"));
    }
    if name.ends_with('.') && name != "." && name != ".." || name.ends_with(' ') {
        return Some(format!("{name:?} ends with a dot or space, which Windows drops"));
    }
    let stem = name.split('.').next().unwrap_or_default().trim_end().to_ascii_uppercase();
    // COM1..COM9 and LPT1..LPT9, and with the superscript digits Windows also takes (COM¹).
    let numbered = |prefix: &str| {
        stem.strip_prefix(prefix).is_some_and(|n| matches!(n, "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "\u{b9}" | "\u{b2}" | "\u{b3}"))
    };
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$") || numbered("COM") || numbered("LPT");
    device.then(|| format!("{name:?} names a Windows device, not a file"))
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
