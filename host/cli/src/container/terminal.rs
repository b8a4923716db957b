//! The host terminal while `kiln run -t` is attached: raw mode for the life of a guard (the
//! old settings come back on every exit path, panics included, through `Drop`), and the
//! window size. Linux and other Unix hosts only (termios).

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};

/// Restores the terminal's settings when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode: keys (Ctrl-C, Ctrl-D, Ctrl-Z included) go to the
    /// container as bytes, nothing is echoed by the host.
    pub fn enable() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("setting the terminal to raw mode")?;
        *saved_settings() = Some(saved.clone());
        Ok(Self { saved })
    }
}

/// The settings to restore, for an exit that cannot unwind to the guard's `Drop`.
fn saved_settings() -> std::sync::MutexGuard<'static, Option<Termios>> {
    static SAVED: std::sync::OnceLock<std::sync::Mutex<Option<Termios>>> = std::sync::OnceLock::new();
    SAVED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Restores the terminal now, if raw mode is on (before `std::process::exit`).
pub fn restore_now() {
    if let Some(saved) = saved_settings().take() {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &saved);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        saved_settings().take();
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Rows and columns of the terminal on `fd`, if it is one.
pub fn size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The size of whichever of stdout and stdin is a terminal (default 24x80).
pub fn current_size() -> (u16, u16) {
    size(std::io::stdout().as_fd()).or_else(|| size(std::io::stdin().as_fd())).unwrap_or((24, 80))
}
