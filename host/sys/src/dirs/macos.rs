//! macOS: `~/Library/Application Support` and `~/Library/Caches` (Apple's File System
//! Programming Guide).

use std::path::PathBuf;

use super::var;

fn library(sub: &str) -> Result<PathBuf, String> {
    var("HOME").map(|home| home.join("Library").join(sub)).ok_or_else(|| "HOME is not set".to_string())
}

/// `~/Library/Application Support`.
pub fn data_base() -> Result<PathBuf, String> {
    library("Application Support")
}

/// `~/Library/Caches`.
pub fn cache_base() -> Result<PathBuf, String> {
    library("Caches")
}
