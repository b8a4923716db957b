//! Docker-style per-layer progress for `kiln pull` and `kiln push`: one line per layer, named
//! by its short digest, with its state (`Pulling fs layer`, `Downloading [====>   ] 1.2MB/5MB`,
//! `Pull complete`, `Pushed`, ...).
//!
//! On a terminal the lines are redrawn in place (cursor up, clear line), at most every
//! [`REDRAW_EVERY`] for byte counts and at once for state changes, each cut to the terminal's
//! width so that nothing wraps. Otherwise only state changes are printed, one line each, and
//! byte counts not at all (as Docker does when its output is not a terminal). Quiet prints
//! nothing.
//!
//! Hand-written rather than indicatif: the non-terminal mode (state lines only) and Docker's
//! exact line format would be code of its own anyway, and the in-place redraw is a few lines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_store::Digest;

use crate::humanize;

/// The shortest time between two redraws caused by byte counts.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Docker's progress bar width.
const BAR_WIDTH: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    /// State changes as lines (not a terminal).
    Lines,
    /// Redraw in place (a terminal).
    Terminal,
}

/// What a layer's line shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Text(String),
    /// `verb [====>    ] done/total`.
    Bar { verb: &'static str, done: u64, total: u64 },
}

struct Row {
    digest: Digest,
    state: State,
}

struct Inner {
    rows: Vec<Row>,
    /// How many rows are on the terminal below the cursor's line, from the last redraw.
    drawn: usize,
    last_draw: Option<Instant>,
    /// Whether a change is not on the terminal yet (held back by the rate limit).
    pending: bool,
}

/// The layer lines of one pull or push.
pub struct Board {
    mode: Mode,
    inner: Mutex<Inner>,
}

impl Board {
    /// A board for stdout: nothing when `quiet`, redrawn when stdout is a terminal, else lines.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Lines
        };
        Self { mode, inner: Mutex::new(Inner { rows: Vec::new(), drawn: 0, last_draw: None, pending: false }) }
    }

    /// Adds a layer's line (or sets its text if it has one already).
    pub fn add(&self, digest: &Digest, text: &str) {
        self.update(digest, State::Text(text.to_string()), true);
    }

    /// Sets a layer's text: a state change. Layers without a line are ignored.
    pub fn status(&self, digest: &Digest, text: &str) {
        self.update(digest, State::Text(text.to_string()), false);
    }

    /// Sets a layer's byte count (`verb` is `Downloading` or `Pushing`).
    pub fn bar(&self, digest: &Digest, verb: &'static str, done: u64, total: u64) {
        self.update(digest, State::Bar { verb, done, total }, false);
    }

    fn update(&self, digest: &Digest, state: State, create: bool) {
        if self.mode == Mode::Quiet {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        let changed_kind = match inner.rows.iter_mut().find(|r| r.digest == *digest) {
            Some(row) if row.state == state => return,
            Some(row) => {
                let was_bar = matches!(row.state, State::Bar { .. });
                let kind_changed = !(was_bar && matches!(state, State::Bar { .. }));
                row.state = state.clone();
                kind_changed
            }
            None if create => {
                inner.rows.push(Row { digest: digest.clone(), state: state.clone() });
                true
            }
            None => return,
        };
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => {
                // Byte counts are not printed (Docker's output off a terminal has none either).
                let line = match &state {
                    State::Text(t) => Some(t.clone()),
                    State::Bar { .. } => None,
                };
                if let Some(line) = line {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}: {line}", digest.short());
                    let _ = out.flush();
                }
            }
            Mode::Terminal => {
                let due = inner.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
                if changed_kind || due {
                    redraw(&mut inner);
                } else {
                    inner.pending = true;
                }
            }
        }
    }

    /// Draws the final state (on a terminal: byte counts held back by the rate limit).
    pub fn finish(&self) {
        if self.mode != Mode::Terminal {
            return;
        }
        if let Ok(mut inner) = self.inner.lock() {
            if inner.pending {
                redraw(&mut inner);
            }
        }
    }
}

/// Moves the cursor up to the first row still on screen, rewrites every row from there, each
/// cleared and cut to the terminal's width.
fn redraw(inner: &mut Inner) {
    let (width, height) = terminal_size().unwrap_or((80, 24));
    // Rows that scrolled above the screen cannot be reached: they stay as they are.
    let reachable = inner.drawn.min(height.saturating_sub(1));
    let first = inner.drawn - reachable;
    let mut text = String::new();
    if reachable > 0 {
        text.push_str(&format!("\x1b[{reachable}A"));
    }
    for row in &inner.rows[first..] {
        let line = render(&row.digest, &row.state, width.saturating_sub(1));
        text.push_str("\r\x1b[2K");
        text.push_str(&line);
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    inner.drawn = inner.rows.len();
    inner.last_draw = Some(Instant::now());
    inner.pending = false;
}

/// One layer's line, at most `width` characters: the bar shrinks (or goes) first.
fn render(digest: &Digest, state: &State, width: usize) -> String {
    let id = digest.short();
    let line = match state {
        State::Text(t) => format!("{id}: {t}"),
        State::Bar { verb, done, total } => {
            let numbers = format!("{:>8}/{}", humanize::size(*done), humanize::size(*total));
            // `ID: VERB [` + bar + `>] ` + numbers.
            let fixed = id.len() + 2 + verb.len() + 2 + 3 + numbers.len();
            let bar_width = BAR_WIDTH.min(width.saturating_sub(fixed));
            if bar_width >= 10 {
                format!("{id}: {verb} {} {numbers}", bar(*done, *total, bar_width))
            } else {
                format!("{id}: {verb} {numbers}")
            }
        }
    };
    line.chars().take(width.max(1)).collect()
}

/// Docker's bar: `[=====>     ]`, `width` cells of `=` and spaces, then a `>` after the last
/// `=` (so the brackets hold `width + 1` characters).
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { width } else { ((done.min(total) as u128 * width as u128) / total as u128) as usize };
    format!("[{}>{}]", "=".repeat(filled), " ".repeat(width - filled))
}

/// Columns and rows of the terminal on stdout.
fn terminal_size() -> Option<(usize, usize)> {
    kiln_sys::term::size(kiln_sys::term::Stream::Stdout).map(|(rows, cols)| (usize::from(cols), usize::from(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(b"layer")
    }

    #[test]
    fn bars_fill_like_dockers() {
        assert_eq!(bar(0, 100, 10), "[>          ]");
        assert_eq!(bar(50, 100, 10), "[=====>     ]");
        assert_eq!(bar(100, 100, 10), "[==========>]");
        assert_eq!(bar(7, 0, 4), "[====>]");
    }

    #[test]
    fn lines_fit_the_width() {
        let d = digest();
        let state = State::Bar { verb: "Downloading", done: 12_300_000, total: 50_000_000 };
        let wide = render(&d, &state, 200);
        assert!(wide.starts_with(&format!("{}: Downloading [", d.short())), "{wide}");
        assert!(wide.ends_with("  12.3MB/50MB"), "{wide}");
        assert_eq!(wide.matches('=').count(), 12, "12.3 of 50 MB fill 12 of 50 cells: {wide}");
        assert_eq!(wide.len(), 12 + 2 + 11 + 1 + 53 + 1 + 13, "{wide}");
        let narrow = render(&d, &state, 60);
        assert!(narrow.len() <= 60 && narrow.contains('['), "{narrow}");
        let tiny = render(&d, &state, 40);
        assert!(tiny.len() <= 40 && !tiny.contains('['), "{tiny}");
        assert_eq!(render(&d, &State::Text("Pull complete".into()), 80), format!("{}: Pull complete", d.short()));
    }
}
