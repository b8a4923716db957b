//! Writing a command's results to stdout: buffered, and quiet when the reader goes away
//! (`kiln images | head` must not panic or print an error, as `println!` would on EPIPE).

use std::io::{self, Write};

use anyhow::{Context, Result};

/// Runs `write` against a buffered, locked stdout; a closed pipe ends the output silently.
pub fn write_with(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    match write(&mut w).and_then(|()| w.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
