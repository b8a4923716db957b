//! Linux and other unix: `$XDG_DATA_HOME` (`~/.local/share`), `$XDG_CACHE_HOME` (`~/.cache`).

use std::path::PathBuf;

use super::var;

fn home_relative(xdg: &str, fallback: &str) -> Result<PathBuf, String> {
    if let Some(dir) = var(xdg) {
        return Ok(dir);
    }
    var("HOME").map(|home| home.join(fallback)).ok_or_else(|| format!("neither {xdg} nor HOME is set"))
}

/// `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn data_base() -> Result<PathBuf, String> {
    home_relative("XDG_DATA_HOME", ".local/share")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_base() -> Result<PathBuf, String> {
    home_relative("XDG_CACHE_HOME", ".cache")
}
