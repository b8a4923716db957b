//! The host terminal while `kiln run -t` is attached: raw mode for the life of a guard (the
//! old settings come back on every exit path, panics included, through `Drop`), and the
//! window size. The per-OS work is kiln_sys::term's; this adds the CLI's error context.

use anyhow::{Context, Result};

pub use kiln_sys::term::{current_size, restore_now};

/// Restores the terminal's settings when dropped.
pub struct RawMode(#[allow(dead_code)] kiln_sys::term::RawMode);

impl RawMode {
    /// Puts stdin's terminal in raw mode: keys (Ctrl-C, Ctrl-D, Ctrl-Z included) go to the
    /// container as bytes, nothing is echoed by the host.
    pub fn enable() -> Result<Self> {
        Ok(Self(kiln_sys::term::RawMode::enable().context("setting the terminal to raw mode")?))
    }
}
