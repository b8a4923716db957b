//! The few things the store does differently per operating system, each behind the same
//! small function: positional reads of a file (`pread` on unix, `seek_read` on Windows).
//! Nothing else in the store may use an OS-specific API.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::read_at;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::read_at;
