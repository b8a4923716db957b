//! Unix-domain stream sockets on every host: std's on unix; on Windows (10 1803+) AF_UNIX
//! through `uds_windows`, which QEMU 7.2+ also speaks there. The same API either way
//! (`bind`, `accept`, `connect`, `try_clone`, `shutdown`, `set_nonblocking`, timeouts).
//! Sockets kiln makes live in per-user private directories, so no other local user can
//! connect on any host.
//!
//! [`bind_in`] and [`connect_in`] reach a socket by its directory and name, so a deep store
//! path does not hit the ~104-byte limit of a socket address (on Linux through
//! `/proc/self/fd`; elsewhere a short private path stands in for a long one).

#[cfg(unix)]
pub use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(windows)]
pub use uds_windows::{UnixListener, UnixStream};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{bind_in, connect_in};

#[cfg(not(target_os = "linux"))]
mod plain;
#[cfg(not(target_os = "linux"))]
pub use plain::{bind_in, connect_in};

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn a_socket_in_a_deep_directory_carries_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        let listener = super::bind_in(&deep, "ctl.sock").expect("bind");
        let mut client = super::connect_in(&deep, "ctl.sock").expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"hi").expect("write");
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hi");
    }
}
