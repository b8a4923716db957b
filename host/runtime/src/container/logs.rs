//! A container's output, kept on the host in Docker's json-file shape: one JSON object per
//! line, `{"log":"text\n","stream":"stdout","time":"2026-...Z"}`, readable after the VM is
//! gone. Output is split at newlines (a partial line is written when more than 16 KiB of it
//! piles up, or when the stream ends, as Docker does); bytes that are not UTF-8 are replaced.
//!
//! Writing and reading only: this module never decides where output goes besides the file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// The log file of a container, shared by its output streams.
#[derive(Clone)]
pub struct JsonLog {
    file: Arc<Mutex<File>>,
}

const MAX_PARTIAL: usize = 16 * 1024;

impl JsonLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = kiln_sys::fs::private(File::options().create(true).append(true)).open(path)?;
        Ok(Self { file: Arc::new(Mutex::new(file)) })
    }

    /// A writer for `stream` (`stdout` or `stderr`) that logs whole lines.
    pub fn writer(&self, stream: &'static str) -> LogWriter {
        LogWriter { log: self.clone(), stream, pending: Vec::new() }
    }

    fn append(&self, stream: &str, text: &[u8]) -> io::Result<()> {
        let entry = LogEntry { log: String::from_utf8_lossy(text).into_owned(), stream: stream.into(), time: kiln_store::time::now_rfc3339_nanos() };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&line)
    }
}

/// Logs what is written to it, a line per entry.
pub struct LogWriter {
    log: JsonLog,
    stream: &'static str,
    pending: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.log.append(self.stream, &line)?;
        }
        if self.pending.len() > MAX_PARTIAL {
            let chunk = std::mem::take(&mut self.pending);
            self.log.append(self.stream, &chunk)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.log.append(self.stream, &std::mem::take(&mut self.pending));
        }
    }
}

/// Reads log entries from `reader`, one per line; a torn last line (being written right now)
/// is left for the next read, a line that is not an entry is skipped.
pub struct LogReader<R> {
    reader: BufReader<R>,
    partial: String,
}

impl<R: io::Read> LogReader<R> {
    pub fn new(reader: R) -> Self {
        Self { reader: BufReader::new(reader), partial: String::new() }
    }

    /// The next complete entry, or `None` at the current end of the file.
    pub fn next_entry(&mut self) -> io::Result<Option<LogEntry>> {
        loop {
            let n = self.reader.read_line(&mut self.partial)?;
            if n == 0 || !self.partial.ends_with('\n') {
                return Ok(None);
            }
            let line = std::mem::take(&mut self.partial);
            if let Ok(e) = serde_json::from_str::<LogEntry>(&line) {
                return Ok(Some(e));
            }
        }
    }
}

/// Writes `bytes` of a tee'd stream to two writers: the log and a live destination (a
/// terminal). The live one may fail (a closed terminal) without losing the log.
pub struct Tee<A, B> {
    log: A,
    live: Option<B>,
    log_ok: bool,
}

impl<A, B> Tee<A, B> {
    pub fn new(log: A, live: Option<B>) -> Self {
        Self { log, live, log_ok: true }
    }
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A log that cannot be written (a full disk) must not end the container or lose its
        // changes: the output still goes live, the log misses it, once said on stderr.
        if self.log_ok && self.log.write_all(buf).is_err() {
            self.log_ok = false;
            eprintln!("kiln: warning: the container's log cannot be written (disk full?): its output is no longer logged");
        }
        if let Some(live) = self.live.as_mut() {
            if live.write_all(buf).and_then(|()| live.flush()).is_err() {
                self.live = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_in_docker_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.json");
        let log = JsonLog::open(&path).expect("open");
        {
            let mut out = log.writer("stdout");
            let mut err = log.writer("stderr");
            out.write_all(b"one\ntw").expect("write");
            err.write_all(b"oops\n").expect("write");
            out.write_all(b"o\nunfinished").expect("write");
        }
        let mut r = LogReader::new(File::open(&path).expect("open"));
        let mut got = Vec::new();
        while let Some(e) = r.next_entry().expect("read") {
            assert!(e.time.ends_with('Z') && e.time.len() == 30, "{}", e.time);
            got.push((e.stream, e.log));
        }
        let want = [("stdout", "one\n"), ("stderr", "oops\n"), ("stdout", "two\n"), ("stdout", "unfinished")];
        assert_eq!(got, want.map(|(s, l)| (s.to_string(), l.to_string())));
        let raw = std::fs::read_to_string(&path).expect("read");
        assert!(raw.starts_with(r#"{"log":"one\n","stream":"stdout","time":""#), "{raw}");
    }
}
