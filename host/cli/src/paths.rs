//! Where kiln keeps things: the store root and the cache dir, from flags and XDG variables.

use std::path::PathBuf;

use anyhow::{bail, Result};

fn home_relative(var: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(fallback)),
        None => bail!("cannot place the store: neither {var} nor HOME is set (set KILN_ROOT)"),
    }
}

/// The store root: `--root`/`$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub fn store_root(flag: Option<PathBuf>) -> Result<PathBuf> {
    match flag {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(home_relative("XDG_DATA_HOME", ".local/share")?.join("kiln")),
    }
}

/// Cache for machine probes: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(v) = std::env::var_os("KILN_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    Ok(home_relative("XDG_CACHE_HOME", ".cache")?.join("kiln"))
}
