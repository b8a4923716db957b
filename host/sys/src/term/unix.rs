//! Unix: termios raw mode, `TIOCGWINSZ`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::sys::termios::{self, SetArg, Termios};

use super::Stream;

/// Restores the terminal's settings when dropped.
pub struct RawMode {
    saved: Termios,
}

fn saved_settings() -> MutexGuard<'static, Option<Termios>> {
    static SAVED: OnceLock<Mutex<Option<Termios>>> = OnceLock::new();
    SAVED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

impl RawMode {
    /// Puts stdin's terminal in raw mode: keys (Ctrl-C, Ctrl-D, Ctrl-Z included) arrive as
    /// bytes, nothing is echoed.
    pub fn enable() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        *saved_settings() = Some(saved.clone());
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        saved_settings().take();
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Restores the terminal now, if raw mode is on (before `std::process::exit`).
pub fn restore_now() {
    if let Some(saved) = saved_settings().take() {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &saved);
    }
}

/// The raw (rows, columns) of the terminal on `fd`, either possibly 0.
fn raw_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which is valid for the call; the
    // descriptor is only read, never closed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some((ws.ws_row, ws.ws_col))
}

fn raw(stream: Stream) -> Option<(u16, u16)> {
    match stream {
        Stream::Stdin => raw_size(std::io::stdin().as_fd()),
        Stream::Stdout => raw_size(std::io::stdout().as_fd()),
        Stream::Stderr => raw_size(std::io::stderr().as_fd()),
    }
}

/// Rows and columns of the terminal on `stream`, if it is one (and reports both).
pub fn size(stream: Stream) -> Option<(u16, u16)> {
    raw(stream).filter(|(rows, cols)| *rows > 0 && *cols > 0)
}

/// Columns of the terminal on `stream`, if it is one (some report 0 rows but a width).
pub fn columns(stream: Stream) -> Option<u16> {
    raw(stream).map(|(_, cols)| cols).filter(|c| *c > 0)
}
