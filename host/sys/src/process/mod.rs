//! Child processes that must not outlive kiln (VMs, virtiofsd) or must (a container's
//! supervisor).
//!
//! [`harden`] before spawning: the process dies with kiln even when kiln is SIGKILLed
//! (`PR_SET_PDEATHSIG` on Linux, a kqueue watcher on macOS) and stays out of the terminal's
//! Ctrl-C; [`adopt`] right after spawning (Windows: the kill-on-close Job Object); [`kill`] by
//! pid from a signal thread; [`detach`] for a process that must outlive kiln's terminal;
//! [`console`] a copy of kiln's stderr for a child's output.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::harden;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::harden;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
