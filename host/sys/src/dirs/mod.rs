//! Where a user's application data and caches go, by each platform's convention: the XDG base
//! directories on Linux (and other unix), `~/Library/Application Support` and
//! `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows (machine-local, not roaming: a
//! store of images must not travel with a roaming profile). Only the bases: callers add
//! `kiln`. Errors name the variable to set.

#[cfg(all(unix, not(target_os = "macos")))]
mod xdg;
#[cfg(all(unix, not(target_os = "macos")))]
pub use xdg::{cache_base, data_base};

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::{cache_base, data_base};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{cache_base, data_base};

use std::path::PathBuf;

/// A non-empty environment variable, as a path.
fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}
