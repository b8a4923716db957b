//! Windows: positional reads with `ReadFile` at an explicit offset (`seek_read`). It moves the
//! file's own offset, which the store never relies on for these files.

use std::fs::File;
use std::io;
use std::os::windows::fs::FileExt;

/// Reads into `buf` from `offset`, as many bytes as one read gives.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.seek_read(buf, offset)
}
