//! Splits Dockerfile text into logical lines: one per instruction, with its line number,
//! keyword, `--flags` and the rest of the line.
//!
//! Handles comments (a `#` first on a line), blank lines, line continuation with `\` (comment
//! and empty lines inside a continuation are skipped, as BuildKit does), and the `# escape=`
//! parser directive (`\` or `` ` ``). Heredocs and the other directives are not parsed yet.

use crate::ParseError;

/// One instruction as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// Line of the instruction's first physical line (1-based).
    pub line: usize,
    /// Upper-cased instruction keyword.
    pub keyword: String,
    /// Leading `--name[=value]` flags, in order.
    pub flags: Vec<String>,
    /// Everything after the keyword and flags, trimmed.
    pub rest: String,
}

fn escape_directive(text: &str) -> Result<char, ParseError> {
    // Directives are `# key=value` lines at the very top, before any other line.
    for (i, raw) in text.lines().enumerate() {
        let Some(body) = raw.trim().strip_prefix('#') else { break };
        let Some((key, value)) = body.split_once('=') else { break };
        let key = key.trim().to_ascii_lowercase();
        if key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" {
            return match value.trim() {
                "\\" => Ok('\\'),
                "`" => Ok('`'),
                other => Err(ParseError::new(i + 1, format!("invalid escape token {other:?}: must be ` or \\"))),
            };
        }
    }
    Ok('\\')
}

/// Splits the text into logical lines.
pub fn logical_lines(text: &str) -> Result<Vec<LogicalLine>, ParseError> {
    let escape = escape_directive(text)?;
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let trimmed = raw.trim_start();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && (trimmed.starts_with('#') || trimmed.trim().is_empty()) {
            continue;
        }
        let body = raw.trim_end();
        let (piece, continues) = match body.strip_suffix(escape) {
            Some(p) => (p, true),
            None => (body, false),
        };
        let (start, mut acc) = current.take().unwrap_or((lineno, String::new()));
        acc.push_str(piece);
        if continues {
            current = Some((start, acc));
        } else {
            out.push(split_instruction(start, &acc)?);
        }
    }
    if let Some((start, acc)) = current {
        // A trailing continuation ends the instruction at end of file, as BuildKit accepts.
        out.push(split_instruction(start, &acc)?);
    }
    Ok(out)
}

fn split_instruction(line: usize, text: &str) -> Result<LogicalLine, ParseError> {
    let text = text.trim();
    let (keyword, mut rest) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    let mut flags = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        flags.push(after[..end].to_string());
        rest = after[end..].trim_start();
    }
    Ok(LogicalLine { line, keyword: keyword.to_ascii_uppercase(), flags, rest: rest.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_flags() {
        let text = "# a comment\nFROM scratch\n\ncopy --chmod=755 a \\\n  # inside\n\n  b /dst\nRUN echo \\\n hi\n";
        let lines = logical_lines(text).expect("parse");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], LogicalLine { line: 2, keyword: "FROM".into(), flags: vec![], rest: "scratch".into() });
        assert_eq!(lines[1].line, 4);
        assert_eq!(lines[1].keyword, "COPY");
        assert_eq!(lines[1].flags, vec!["chmod=755".to_string()]);
        assert_eq!(lines[1].rest, "a   b /dst");
        assert_eq!(lines[2].rest, "echo  hi");
    }

    #[test]
    fn backtick_escape_directive() {
        let text = "# escape=`\nFROM scratch\nRUN dir c:\\ `\n  /w\n";
        let lines = logical_lines(text).expect("parse");
        assert_eq!(lines[1].rest, "dir c:\\   /w");
        assert!(logical_lines("# escape=x\nFROM scratch\n").is_err());
    }
}
