//! The host terminal: its size, and raw mode for `kiln run -t` (the old settings come back on
//! every exit path through the guard's `Drop`, or [`restore_now`] before `process::exit`).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// One of kiln's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

/// The size (rows, columns) of whichever of stdout and stdin is a terminal (default 24x80).
pub fn current_size() -> (u16, u16) {
    size(Stream::Stdout).or_else(|| size(Stream::Stdin)).unwrap_or((24, 80))
}
