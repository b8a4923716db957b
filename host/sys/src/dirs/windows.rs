//! Windows: `%LOCALAPPDATA%` for both; callers keep caches in a subdirectory of their own.

use std::path::PathBuf;

use super::var;

/// `%LOCALAPPDATA%`.
pub fn data_base() -> Result<PathBuf, String> {
    var("LOCALAPPDATA").ok_or_else(|| "LOCALAPPDATA is not set".to_string())
}

/// `%LOCALAPPDATA%` (callers add their own `...\cache`).
pub fn cache_base() -> Result<PathBuf, String> {
    data_base()
}
