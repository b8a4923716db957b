//! The line scanner: physical lines in, [`Node`]s out.
//!
//! Rules (BuildKit's): a line whose first non-blank character is `#` is a comment, also inside
//! a continued instruction; parser directives are `# key=value` comments before anything else
//! (a blank line, another comment or an instruction ends them; each may appear once); the
//! escape character as the last non-blank character continues the line, unless it is itself
//! escaped; blank lines inside a continuation are skipped with a warning; continuation lines
//! keep their leading whitespace; after an ADD/COPY/RUN line (or ONBUILD of one) in shell form,
//! the bodies of its heredocs follow, in order, each up to its delimiter line.

use super::args::node_from_line;
use super::heredoc::heredocs_in_line;
use super::{Ast, Directives, Node};
use crate::ParseError;

/// Directive-tracking state while scanning the top of the file.
struct DirectiveState {
    directives: Directives,
    escape: char,
    done: bool,
}

impl DirectiveState {
    /// Looks at one line while directives may still appear.
    fn observe(&mut self, line: &str, lineno: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let d = &mut self.directives;
        let slot_taken = match key.as_str() {
            "escape" => d.escape.is_some(),
            "syntax" => d.syntax.is_some(),
            "check" => d.check.is_some(),
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot_taken {
            return Err(ParseError::new(lineno, format!("only one {key} parser directive can be used")));
        }
        match key.as_str() {
            "escape" => {
                let c = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    other => return Err(ParseError::new(lineno, format!("invalid escape token '{other}' does not match ` or \\"))),
                };
                d.escape = Some(c);
                self.escape = c;
            }
            "syntax" => d.syntax = Some(value),
            _ => d.check = Some(value),
        }
        Ok(())
    }
}

/// `# key = value` → (lower-cased key, value), for keys `[a-zA-Z][a-zA-Z0-9]*`.
fn directive(line: &str) -> Option<(String, String)> {
    let body = line.strip_prefix('#')?.trim_start();
    let key_len = body.chars().take_while(char::is_ascii_alphanumeric).count();
    let key = &body[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = body[key_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.to_string()))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// Strips a trailing continuation; returns the line and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else { return (line.to_string(), true) };
    if before.is_empty() {
        return (String::new(), false);
    }
    if before.ends_with(escape) {
        return (line.to_string(), true);
    }
    (before.to_string(), false)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.sub, node.command().as_str()) {
        (Some(sub), "ONBUILD") => sub,
        _ => node,
    };
    matches!(n.command().as_str(), "ADD" | "COPY" | "RUN") && !n.json
}

/// Parses Dockerfile text into its syntax tree.
pub fn parse(text: &str) -> Result<Ast, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut state = DirectiveState { directives: Directives::default(), escape: '\\', done: false };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = trim_newline(lines[i]).trim_start();
        i += 1;
        let start = i;
        state.observe(first, i)?;
        let body = if first.starts_with('#') { "" } else { first };
        let (mut line, mut ends) = trim_continuation(body, state.escape);
        if ends && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !ends && i < lines.len() {
            let raw = trim_newline(lines[i]);
            i += 1;
            state.observe(raw, i)?;
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, e) = trim_continuation(raw, state.escape);
            line.push_str(&piece);
            ends = e;
        }
        if empty_continuation {
            warnings.push(format!("[WARNING]: Empty continuation line found in:\n    {line}"));
        }
        let mut node = node_from_line(&line, state.escape).map_err(|m| ParseError::new(start, m))?;
        if can_contain_heredoc(&node) {
            for mut doc in heredocs_in_line(&line) {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let candidate = trim_newline(raw);
                    let candidate = if doc.chomp { candidate.trim_start_matches('\t') } else { candidate };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    return Err(ParseError::new(start, format!("unterminated heredoc {}", doc.name)));
                }
                node.heredocs.push(doc);
            }
        }
        node.start_line = start;
        node.end_line = i;
        nodes.push(node);
    }
    if !warnings.is_empty() {
        warnings.push("[WARNING]: Empty continuation lines will become errors in a future release.".to_string());
    }
    if nodes.is_empty() {
        return Err(ParseError::new(lines.len().max(1), "file with no instructions"));
    }
    Ok(Ast { directives: state.directives, escape: state.escape, nodes, warnings })
}
