//! Linux: a socket's address is `/proc/self/fd/N/name`, N an open handle to its directory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{UnixListener, UnixStream};

fn short(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let handle = File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", handle.as_raw_fd()));
    Ok((handle, path))
}

/// Listens on `dir/name` (the user's alone: 0600).
pub fn bind_in(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let (handle, path) = short(dir, name)?;
    let listener = UnixListener::bind(&path)?;
    drop(handle);
    crate::fs::set_private(&dir.join(name))?;
    Ok(listener)
}

/// Connects to `dir/name`.
pub fn connect_in(dir: &Path, name: &str) -> io::Result<UnixStream> {
    let (handle, path) = short(dir, name)?;
    let conn = UnixStream::connect(&path)?;
    drop(handle);
    Ok(conn)
}
