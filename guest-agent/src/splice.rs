//! Zero-copy into the host connection: bytes from a socket or a pipe (a published port's
//! connection, a process's output) reach the host's port through `splice(2)`, page
//! references moved from the source into a pipe and from the pipe into the connection,
//! instead of three copies through the agent (read, frame, write). Under emulation every
//! copy costs several times what it does natively, so this is most of a stream's cost.
//!
//! Each chunk is one Data frame: its length is known once the chunk sits in the pipe, then
//! [`StreamWriter::send_direct`] writes the header and the chunk is spliced behind it. When
//! the connection cannot take a splice (a transport without one, tests over socket pairs),
//! the copy falls back to reading and writing.
//!
//! This module must never write a frame whose payload is not exactly the length announced.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use kiln_protocol::StreamWriter;

/// Bytes per frame (the default pipe's size: one splice fills it).
const CHUNK: usize = 64 * 1024;

/// The connection's descriptor (a duplicate of the mux's writer).
static CONNECTION: OnceLock<OwnedFd> = OnceLock::new();

/// Makes later copies splice into `fd`, the same connection the mux writes to.
pub fn init(fd: OwnedFd) {
    let _ = CONNECTION.set(fd);
}

fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice(2) between two descriptors this process holds open, no offsets.
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies what `src` (a socket or a pipe) yields until its end into `w`, by splice when it
/// can, else by reading it.
pub fn copy<R: io::Read + AsFd>(src: &mut R, w: &mut StreamWriter) -> io::Result<u64> {
    let Some(conn) = CONNECTION.get() else { return w.copy_from(src) };
    let from = src.as_fd().as_raw_fd();
    let (pipe_r, pipe_w) = pipe()?;
    let mut total = 0u64;
    loop {
        let n = match splice(from, pipe_w.as_raw_fd(), CHUNK) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            // Nothing moved yet and the source cannot splice: read and write instead.
            Err(e) if total == 0 && e.raw_os_error() == Some(libc::EINVAL) => return w.copy_from(src),
            Err(e) => return Err(e),
        };
        w.send_direct(n, |out| {
            let mut left = n;
            while left > 0 {
                match splice(pipe_r.as_raw_fd(), conn.as_raw_fd(), left) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(m) => left -= m,
                    // The connection takes no splice: what is left of the chunk goes through
                    // the mux's own writer (the header is already out; the length must hold).
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        let mut rest = vec![0u8; left];
                        let mut pipe = std::fs::File::from(pipe_r.try_clone()?);
                        io::Read::read_exact(&mut pipe, &mut rest)?;
                        out.write_all(&rest)?;
                        left = 0;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        total += n as u64;
    }
}
