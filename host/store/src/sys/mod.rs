//! The few things the store does differently per operating system, each behind the same
//! small function: positional reads of a file (`pread` on unix, `seek_read` on Windows), and
//! making a directory's entries durable (fsync of the directory on unix; on Windows a
//! directory cannot be opened as a file, and NTFS journals its entries itself).
//! Nothing else in the store may use an OS-specific API.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::{read_at, sync_dir};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{read_at, sync_dir};
