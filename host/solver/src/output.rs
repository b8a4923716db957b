//! Build progress on stderr, BuildKit-style, in one of three modes (`--progress`):
//!
//! - `plain`: `#N [stage k/n] TEXT` when a step starts, its RUN output as `#N 1.234 line`
//!   (seconds since the step started), `#N DONE 1.2s` when it ends, `#N [..] TEXT  CACHED`
//!   for a cache hit. Lines of steps running at the same time interleave, each prefixed.
//! - `tty`: finished steps stay as one line each with their time; running steps are redrawn
//!   in place below them with a clock and the last few lines of their output.
//! - `quiet`: nothing but errors.
//!
//! Whatever the mode, the tail of each RUN's output is kept for the error message of a failed
//! step. Stages run on their own threads: a thread's current step is what its process output
//! belongs to.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of a step's output is kept for its error message.
const TAIL_BYTES: usize = 4096;
/// Output lines of a running step shown in tty mode.
const TTY_TAIL_LINES: usize = 6;
/// Redraw period of the tty clock.
const TICK: Duration = Duration::from_millis(200);

/// `--progress` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Tty,
    Quiet,
}

impl ProgressMode {
    /// Parses `auto|tty|plain|quiet`; `auto` is tty when stderr is a terminal.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(if io::stderr().is_terminal() { Self::Tty } else { Self::Plain }),
            "tty" => Ok(Self::Tty),
            "plain" => Ok(Self::Plain),
            "quiet" => Ok(Self::Quiet),
            other => Err(format!("--progress {other:?}: expected auto, tty, plain or quiet")),
        }
    }
}

thread_local! {
    /// The step the calling thread (one stage) is on: where its process output goes.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// A running step.
struct Active {
    text: String,
    started: Instant,
    lines: VecDeque<String>,
}

#[derive(Default)]
struct Live {
    active: BTreeMap<usize, Active>,
    /// Lines of the live region currently on screen (tty).
    drawn: usize,
}

/// Prints progress; shared by the stage threads of a build.
pub struct Reporter {
    mode: ProgressMode,
    started: Instant,
    live: Arc<Mutex<Live>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

fn lock(live: &Mutex<Live>) -> MutexGuard<'_, Live> {
    live.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reporter {
    /// Plain progress, or nothing with `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self::with_mode(if quiet { ProgressMode::Quiet } else { ProgressMode::Plain })
    }

    pub fn with_mode(mode: ProgressMode) -> Self {
        let live = Arc::new(Mutex::new(Live::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (mode == ProgressMode::Tty).then(|| {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kiln-progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        redraw(&mut lock(&live));
                    }
                })
                .ok()
        });
        Self { mode, started: Instant::now(), live, stop, ticker: ticker.flatten() }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// A step starts (`cached`: it is a cache hit and already done).
    pub fn step(&self, n: usize, label: &str, text: &str, cached: bool) {
        CURRENT.with(|c| c.set(n));
        let line = format!("#{n} [{label}] {text}");
        match (self.mode, cached) {
            (ProgressMode::Quiet, _) => {}
            (ProgressMode::Plain, true) | (ProgressMode::Tty, true) => self.print(&format!("{line}  CACHED")),
            (ProgressMode::Plain, false) => {
                STEP_STARTS.with(|s| s.borrow_mut().insert(n, Instant::now()));
                eprintln!("{line}");
            }
            (ProgressMode::Tty, false) => {
                let mut live = lock(&self.live);
                live.active.insert(n, Active { text: line, started: Instant::now(), lines: VecDeque::new() });
                redraw(&mut live);
            }
        }
    }

    /// Step `n` ended (successfully or not: a failure is reported by the build's error).
    pub fn done(&self, n: usize) {
        let mut live = lock(&self.live);
        let Some(step) = live.active.remove(&n) else {
            if self.mode == ProgressMode::Plain {
                drop(live);
                self.plain_done(n);
            }
            return;
        };
        let line = format!("{}  {:.1}s", step.text, step.started.elapsed().as_secs_f64());
        clear(&mut live);
        eprintln!("{line}");
        redraw(&mut live);
    }

    fn plain_done(&self, n: usize) {
        let secs = STEP_STARTS.with(|s| s.borrow_mut().remove(&n)).map_or(0.0, |t: Instant| t.elapsed().as_secs_f64());
        eprintln!("#{n} DONE {secs:.1}s");
    }

    /// A line outside any step (VM start, warnings).
    pub fn info(&self, text: &str) {
        if self.mode != ProgressMode::Quiet {
            self.print(&format!("   {text}"));
        }
    }

    /// Prints a permanent line above the live region.
    fn print(&self, line: &str) {
        let mut live = lock(&self.live);
        clear(&mut live);
        eprintln!("{line}");
        redraw(&mut live);
    }

    /// Seconds since the build started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Writers for a process's stdout and stderr (of the calling thread's current step), and
    /// the shared tail they fill.
    pub fn process_output(&self) -> (Box<dyn Write + Send>, Box<dyn Write + Send>, Tail) {
        let n = CURRENT.with(Cell::get);
        let tail = Tail::default();
        let started = Instant::now();
        let mk = |t: &Tail| -> Box<dyn Write + Send> {
            Box::new(StepOutput { tail: t.clone(), mode: self.mode, n, started, live: self.live.clone(), partial: Vec::new() })
        };
        (mk(&tail), mk(&tail), tail)
    }
}

thread_local! {
    /// Plain mode: when each of this thread's running steps started (for `#N DONE`).
    static STEP_STARTS: std::cell::RefCell<BTreeMap<usize, Instant>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        let mut live = lock(&self.live);
        clear(&mut live);
        live.active.clear();
    }
}

/// Erases the live region (tty).
fn clear(live: &mut Live) {
    if live.drawn > 0 {
        let mut err = io::stderr().lock();
        let _ = write!(err, "\x1b[{}F\x1b[J", live.drawn);
        live.drawn = 0;
    }
}

fn terminal_width() -> usize {
    kiln_sys::term::columns(kiln_sys::term::Stream::Stderr).map_or(80, usize::from)
}

fn cut(line: &str, width: usize) -> String {
    line.chars().take(width.saturating_sub(1)).collect()
}

/// Redraws the running steps (tty): each with its clock and last output lines.
fn redraw(live: &mut Live) {
    if live.active.is_empty() && live.drawn == 0 {
        return;
    }
    let width = terminal_width();
    let mut text = String::new();
    if live.drawn > 0 {
        text.push_str(&format!("\x1b[{}F\x1b[J", live.drawn));
    }
    let mut lines = 0;
    for step in live.active.values() {
        let head = format!("{}  {:.1}s", step.text, step.started.elapsed().as_secs_f64());
        text.push_str(&format!("\x1b[1m{}\x1b[0m\n", cut(&head, width)));
        lines += 1;
        for l in &step.lines {
            text.push_str(&format!("\x1b[2m  {}\x1b[0m\n", cut(l, width.saturating_sub(2))));
            lines += 1;
        }
    }
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
    live.drawn = lines;
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

/// One output stream of a step: kept in the tail, and shown as the mode says.
struct StepOutput {
    tail: Tail,
    mode: ProgressMode,
    n: usize,
    started: Instant,
    live: Arc<Mutex<Live>>,
    /// Plain/tty: the unfinished last line.
    partial: Vec<u8>,
}

impl StepOutput {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Plain => {
                eprintln!("#{} {:.3} {text}", self.n, self.started.elapsed().as_secs_f64());
            }
            ProgressMode::Tty => {
                let mut live = lock(&self.live);
                if let Some(step) = live.active.get_mut(&self.n) {
                    step.lines.push_back(text.replace('\t', "    "));
                    while step.lines.len() > TTY_TAIL_LINES {
                        step.lines.pop_front();
                    }
                }
            }
        }
    }
}

impl Write for StepOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        {
            let mut buf = self.tail.0.lock().unwrap_or_else(|e| e.into_inner());
            buf.extend_from_slice(data);
            if buf.len() > TAIL_BYTES {
                let cut = buf.len() - TAIL_BYTES;
                buf.drain(..cut);
            }
        }
        if self.mode != ProgressMode::Quiet {
            self.partial.extend_from_slice(data);
            while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                self.emit(&line[..line.len() - 1]);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StepOutput {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(ProgressMode::parse("plain"), Ok(ProgressMode::Plain));
        assert_eq!(ProgressMode::parse("tty"), Ok(ProgressMode::Tty));
        assert_eq!(ProgressMode::parse("quiet"), Ok(ProgressMode::Quiet));
        assert!(ProgressMode::parse("auto").is_ok());
        assert!(ProgressMode::parse("fancy").is_err());
    }

    #[test]
    fn output_is_split_into_lines_and_the_tail_keeps_the_end() {
        let r = Reporter::with_mode(ProgressMode::Tty);
        r.step(7, "1/1", "RUN x", false);
        let (mut out, _, tail) = r.process_output();
        for i in 0..10 {
            write!(out, "line {i}\npart").expect("write");
            writeln!(out, "ial {i}").expect("write");
        }
        {
            let live = lock(&r.live);
            let step = &live.active[&7];
            assert_eq!(step.lines.len(), TTY_TAIL_LINES);
            assert_eq!(step.lines.back().map(String::as_str), Some("partial 9"));
        }
        write!(out, "{}", "y".repeat(TAIL_BYTES)).expect("write");
        drop(out);
        assert_eq!(tail.0.lock().expect("tail").len(), TAIL_BYTES);
        r.done(7);
        assert!(lock(&r.live).active.is_empty());
    }
}
