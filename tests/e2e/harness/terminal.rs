//! Running kiln in a real pseudo-terminal (util-linux `script`) and replaying what the
//! terminal would show, for the progress output that redraws in place.

use std::process::{Command, Stdio};

use super::{require_tool, text, TestEnv};

/// Runs kiln (as [`TestEnv::command`] would) with a pseudo-terminal as its stdout, through
/// util-linux `script`; returns whether it succeeded and everything it wrote to the terminal.
pub fn in_terminal(env: &TestEnv, args: &[&str]) -> (bool, String) {
    require_tool("script");
    let inner = env.command(args);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().expect("utf8 argument").replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(inner.get_program()).chain(inner.get_args()).map(quote).collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        cmd.current_dir(dir);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run script");
    (out.status.success(), text(&out.stdout))
}

/// What a terminal shows after `transcript`: carriage return, line feed, `ESC[nA` (cursor up),
/// `ESC[nF` (to the start of a line n up), `ESC[2K` (clear line), `ESC[J` (clear to the end of
/// the screen) are interpreted and `ESC[...m` (colours) ignored; any other escape sequence
/// fails the test.
pub fn screen(transcript: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = transcript.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                if row == lines.len() {
                    lines.push(String::new());
                }
            }
            '\x1b' => {
                assert_eq!(chars.next(), Some('['), "only CSI sequences expected:\n{transcript:?}");
                let mut arg = String::new();
                let end = loop {
                    match chars.next() {
                        Some(d) if d.is_ascii_digit() => arg.push(d),
                        Some(end) => break end,
                        None => panic!("cut escape sequence"),
                    }
                };
                match (end, arg.as_str()) {
                    ('A', n) => row = row.saturating_sub(n.parse().unwrap_or(1)),
                    ('F', n) => {
                        row = row.saturating_sub(n.parse().unwrap_or(1));
                        col = 0;
                    }
                    ('K', "2") => lines[row].clear(),
                    ('J', "" | "0") => {
                        lines.truncate(row + 1);
                        let kept: String = lines[row].chars().take(col).collect();
                        lines[row] = kept;
                    }
                    ('m', _) => {}
                    other => panic!("unexpected escape sequence {other:?}"),
                }
            }
            c => {
                let line = &mut lines[row];
                let mut cells: Vec<char> = line.chars().collect();
                if cells.len() <= col {
                    cells.resize(col, ' ');
                    cells.push(c);
                } else {
                    cells[col] = c;
                }
                *line = cells.into_iter().collect();
                col += 1;
            }
        }
    }
    lines.into_iter().map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect()
}

