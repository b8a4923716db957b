//! Build progress on stderr: step lines, RUN output streamed (or only kept, when quiet), and
//! the tail of a failed step's output for the error message.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How much of a step's output is kept for its error message.
const TAIL_BYTES: usize = 4096;

/// Prints progress; `quiet` shows only errors.
pub struct Reporter {
    pub quiet: bool,
    started: Instant,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, started: Instant::now() }
    }

    /// `#N [LABEL] TEXT` with the elapsed time, or `CACHED`.
    pub fn step(&self, n: usize, label: &str, text: &str, cached: bool) {
        if self.quiet {
            return;
        }
        if cached {
            eprintln!("#{n} [{label}] {text}  CACHED");
        } else {
            eprintln!("#{n} [{label}] {text}  ({:.1}s)", self.started.elapsed().as_secs_f64());
        }
    }

    pub fn info(&self, text: &str) {
        if !self.quiet {
            eprintln!("   {text}");
        }
    }

    /// Writers for a process's stdout and stderr, and the shared tail they fill.
    pub fn process_output(&self) -> (Box<dyn Write + Send>, Box<dyn Write + Send>, Tail) {
        let tail = Tail::default();
        let mk = |t: &Tail| -> Box<dyn Write + Send> { Box::new(TeeTail { tail: t.clone(), echo: !self.quiet }) };
        (mk(&tail), mk(&tail), tail)
    }
}

/// The last few KiB of a process's combined output.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    /// The kept output as text, prefixed for an error message (empty if there was none).
    pub fn render(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end();
        if text.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        format!("\n--- last output lines ---\n{}", lines[start..].join("\n"))
    }
}

struct TeeTail {
    tail: Tail,
    echo: bool,
}

impl Write for TeeTail {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.echo {
            let mut err = io::stderr().lock();
            let _ = err.write_all(data);
        }
        let mut buf = self.tail.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(data);
        if buf.len() > TAIL_BYTES {
            let cut = buf.len() - TAIL_BYTES;
            buf.drain(..cut);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
