//! Interrupts and terminal resizes, delivered to a channel.
//!
//! [`watch`] returns a receiver of [`Event`]s: `Stop` for SIGINT/SIGTERM/SIGHUP on unix and for
//! Ctrl-C/Ctrl-Break/console close on Windows, carrying the *Linux* signal number to forward to
//! a container's process (the guest is Linux, whatever the host); `Resize` when the terminal's
//! size may have changed (SIGWINCH on unix; polled on Windows, which has no such signal).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::watch;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::watch;

/// Linux's SIGHUP.
pub const LINUX_SIGHUP: i32 = 1;
/// Linux's SIGINT.
pub const LINUX_SIGINT: i32 = 2;
/// Linux's SIGTERM.
pub const LINUX_SIGTERM: i32 = 15;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The user or the system asked kiln to stop; the Linux signal number of the request.
    Stop(i32),
    /// The terminal may have a new size.
    Resize,
}
