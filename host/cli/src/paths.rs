//! Where kiln keeps things: the store root and the cache dir, from flags and environment
//! variables, else each platform's convention (kiln_sys::dirs): XDG on Linux,
//! `~/Library/Application Support/kiln` and `~/Library/Caches/kiln` on macOS,
//! `%LOCALAPPDATA%\kiln` and `%LOCALAPPDATA%\kiln-cache` on Windows.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

/// The cache's directory name under the platform's cache base: on Windows both bases are
/// `%LOCALAPPDATA%`, so the cache gets a name of its own beside the store.
const CACHE_NAME: &str = if cfg!(windows) { "kiln-cache" } else { "kiln" };

/// The store root: `--root`/`$KILN_ROOT`, else `kiln` in the platform's data directory
/// (`$XDG_DATA_HOME/kiln`, `~/.local/share/kiln` on Linux).
pub fn store_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    match flag {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(kiln_sys::dirs::data_base().map_err(|why| anyhow!("cannot place the store: {why} (set KILN_ROOT)"))?.join("kiln")),
    }
}

/// Cache for machine probes: `$KILN_CACHE_DIR`, else the platform's cache directory
/// (`$XDG_CACHE_HOME/kiln`, `~/.cache/kiln` on Linux).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(v) = std::env::var_os("KILN_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    Ok(kiln_sys::dirs::cache_base().map_err(|why| anyhow!("cannot place the cache: {why} (set KILN_CACHE_DIR)"))?.join(CACHE_NAME))
}
