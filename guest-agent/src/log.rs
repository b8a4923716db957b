//! Console logging for the agent.
//!
//! Log lines go to the agent's stderr, which PID-1 setup points at `/dev/console` (the serial
//! console the host can watch when debugging). They must never reach the protocol channel.
//! Per-request lines are only written when the kernel command line has `kiln.debug=1`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns per-request debug logging on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug logging is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one line; logging failures are ignored (there is nowhere else to report them).
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let line = format!("kiln-agent: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Always-on log line (startup, errors).
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}

/// Log line written only with `kiln.debug=1`.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write_line(format_args!($($arg)*))
        }
    };
}

pub(crate) use {debug, info};
