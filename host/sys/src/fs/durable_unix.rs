//! Unix: positional reads with `pread` (the file's own offset is left alone).

use std::fs::File;
use std::io;
use std::path::Path;
use std::os::unix::fs::FileExt;

/// Reads into `buf` from `offset`, as many bytes as one read gives.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    file.read_at(buf, offset)
}

/// Makes the entries of `dir` (files created or renamed in it) durable: fsync of the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
