//! macOS and Windows: the plain path (no `/proc`); the OS refuses one that is too long.

use std::io;
use std::path::Path;

use super::{UnixListener, UnixStream};

/// Listens on `dir/name` (the user's alone: 0600 on macOS; the profile's ACL on Windows).
pub fn bind_in(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let path = dir.join(name);
    let listener = UnixListener::bind(&path)?;
    crate::fs::set_private(&path)?;
    Ok(listener)
}

/// Connects to `dir/name`.
pub fn connect_in(dir: &Path, name: &str) -> io::Result<UnixStream> {
    UnixStream::connect(dir.join(name))
}
