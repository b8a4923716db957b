//! Windows: positional reads with `ReadFile` at an explicit offset (`seek_read`). It moves the
//! file's own offset, which the store never relies on for these files.

use std::fs::File;
use std::io;
use std::path::Path;
use std::os::windows::fs::FileExt;

/// Reads into `buf` from `offset`, as many bytes as one read gives.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.seek_read(buf, offset)
}

/// Directory entries need no separate flush on Windows (a directory cannot be opened as a file
/// without backup semantics, and NTFS journals renames); checks only that `dir` is a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if std::fs::metadata(dir)?.is_dir() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"))
    }
}
