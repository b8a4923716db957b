//! macOS and Windows: the plain path (no `/proc`). A socket address holds ~104 bytes there, and
//! a store's paths are longer (`~/Library/Application Support/kiln/containers/<64 hex>/...`),
//! so a path that would not fit is replaced, on both sides alike, by one in a private
//! directory under the user's temp dir named by a hash of the long directory.

use std::io;
use std::path::{Path, PathBuf};

use super::{UnixListener, UnixStream};

/// Longest socket path used as is (macOS's sun_path is 104 bytes with the NUL).
const MAX_PLAIN: usize = 100;

/// FNV-1a: a stable name for a directory (not a security boundary: the directory it names is
/// the user's own and private).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Where the socket `name` of `dir` lives: `dir/name` when short enough, else
/// `<tmp>/kiln-<hash of dir>/name`.
pub(crate) fn socket_path(dir: &Path, name: &str, tmp: &Path) -> PathBuf {
    let plain = dir.join(name);
    if plain.as_os_str().len() <= MAX_PLAIN {
        return plain;
    }
    tmp.join(format!("kiln-{:016x}", fnv1a(dir.as_os_str().as_encoded_bytes()))).join(name)
}

/// Listens on `dir/name` (the user's alone: 0600 on macOS; the profile's ACL on Windows).
pub fn bind_in(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let path = socket_path(dir, name, &std::env::temp_dir());
    if let Some(parent) = path.parent().filter(|p| *p != dir) {
        crate::fs::private_dir(std::fs::DirBuilder::new().recursive(true)).create(parent)?;
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)?;
    crate::fs::set_private(&path)?;
    Ok(listener)
}

/// Connects to `dir/name`.
pub fn connect_in(dir: &Path, name: &str) -> io::Result<UnixStream> {
    UnixStream::connect(socket_path(dir, name, &std::env::temp_dir()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn long_socket_paths_move_to_a_stable_short_one() {
        let tmp = Path::new("/tmp");
        let short = Path::new("/a/b");
        assert_eq!(super::socket_path(short, "c.sock", tmp), short.join("c.sock"));
        let long = Path::new("/Users/alice/Library/Application Support/kiln/containers").join("f".repeat(64));
        let moved = super::socket_path(&long, "control.sock", tmp);
        assert!(moved.starts_with(tmp) && moved.ends_with("control.sock") && moved.as_os_str().len() < 60, "{}", moved.display());
        assert_eq!(moved, super::socket_path(&long, "control.sock", tmp), "both sides find the same path");
        assert_ne!(moved, super::socket_path(&long.with_file_name("e".repeat(64)), "control.sock", tmp));
    }
}
