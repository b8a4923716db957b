//! The host end of the Unix-socket vsock scheme: connect to a guest port through the VMM's
//! socket (`CONNECT <port>\n` -> `OK <local port>\n`), retrying while the guest is not yet
//! listening (it answers with a reset, which closes the host stream without `OK`).
//!
//! What the sandbox backend uses to reach the agent. Knows nothing of the device internals.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest `OK <port>\n` line accepted.
const MAX_REPLY: usize = 32;

/// Connects to guest `port`, retrying until `timeout`; `alive` is asked between attempts so a
/// guest that died is reported at once rather than at the deadline.
pub fn connect_guest_port(uds_path: &Path, port: u32, timeout: Duration, alive: &dyn Fn() -> bool) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match try_connect(uds_path, port, deadline) {
            Ok(stream) => return Ok(stream),
            Err(e) => e.to_string(),
        };
        if !alive() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, format!("guest stopped before port {port} accepted ({last})")));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("guest port {port} did not accept within {timeout:?} through {} ({last})", uds_path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn try_connect(uds_path: &Path, port: u32, deadline: Instant) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(uds_path)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
    stream.set_read_timeout(Some(wait))?;
    // Byte by byte, so no connection data after the line is consumed.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "guest refused the connection")),
            _ if byte[0] == b'\n' => break,
            _ if line.len() >= MAX_REPLY => return Err(io::Error::new(io::ErrorKind::InvalidData, "reply line too long")),
            _ => line.push(byte[0]),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected reply {:?}", String::from_utf8_lossy(&line))));
    }
    stream.set_read_timeout(None)?;
    Ok(stream)
}
