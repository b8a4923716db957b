//! Splits one logical line into keyword, `--flags` and arguments, with the per-keyword rules
//! of BuildKit's line parsers:
//!
//! | keywords | arguments |
//! |---|---|
//! | RUN CMD ENTRYPOINT SHELL | a JSON array of strings, else the rest of the line as one string |
//! | ADD COPY VOLUME | a JSON array of strings, else whitespace-separated words |
//! | FROM EXPOSE | whitespace-separated words |
//! | ENV LABEL | key, value, separator triples (`=`, or `""` for the legacy `KEY value` form) |
//! | ARG | words, quotes kept |
//! | MAINTAINER USER WORKDIR STOPSIGNAL | the rest of the line as one string |
//! | HEALTHCHECK | the type word, then like CMD |
//! | ONBUILD | one nested instruction |
//! | anything else | one empty string (rejected later, by the instruction layer) |
//!
//! Errors are plain messages; the caller adds the line number.

use super::Node;

/// BuildKit's `[\t\v\f\r ]+`.
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn split_ws(s: &str) -> Vec<String> {
    s.split(is_ws).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Builds the node for one logical line (keyword first). Line numbers are filled by the caller.
pub(super) fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let (keyword, flags, rest) = split_command(line);
    let (args, sub, json) = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => match json_array(&rest)? {
            Some(v) => (v, None, true),
            None => (split_ws(&rest), None, false),
        },
        "run" | "cmd" | "entrypoint" | "shell" => maybe_json(&rest)?,
        "from" | "expose" => (split_ws(&rest), None, false),
        "env" | "label" => (name_val(&rest, &keyword.to_ascii_uppercase(), escape)?, None, false),
        "arg" => (words(&rest, escape), None, false),
        "maintainer" | "user" | "workdir" | "stopsignal" => (if rest.is_empty() { vec![] } else { vec![rest.clone()] }, None, false),
        "healthcheck" => health(&rest)?,
        "onbuild" => {
            if rest.is_empty() {
                (vec![], None, false)
            } else {
                (vec![], Some(Box::new(node_from_line(&rest, escape)?)), false)
            }
        }
        _ => (vec![String::new()], None, false),
    };
    Ok(Node { keyword, flags, args, sub, json, original: line.to_string(), start_line: 0, end_line: 0, heredocs: vec![] })
}

/// Keyword, flags, and the trimmed rest of the line.
fn split_command(line: &str) -> (String, Vec<String>, String) {
    let line = line.trim();
    match line.find(is_ws) {
        None => (line.to_string(), vec![], String::new()),
        Some(i) => {
            let (rest, flags) = extract_flags(&line[i..]);
            (line[..i].to_string(), flags, rest.trim().to_string())
        }
    }
}

/// Leading words that start with `--` (quotes and `\` escapes removed); a lone `--` ends them.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut pos = 0;
    let bytes = line.as_bytes();
    loop {
        while pos < bytes.len() && (bytes[pos] as char).is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= bytes.len() {
            return ("", flags);
        }
        if !line[pos..].starts_with("--") {
            return (&line[pos..], flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut chars = line[pos..].char_indices().peekable();
        let mut end = line.len();
        while let Some((off, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = pos + off;
                    break;
                }
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some((_, n)) = chars.next() {
                        word.push(n);
                    }
                }
                _ => word.push(c),
            }
        }
        pos = end;
        if word == "--" {
            return (line[pos..].trim_start(), flags);
        }
        flags.push(word);
    }
}

/// BuildKit's message for a JSON array that holds something other than strings.
const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// A JSON array of strings, if `rest` is one (`None`: not JSON, so the shell form). A valid
/// JSON array holding anything but strings is an error, as in BuildKit, not a shell form.
pub(super) fn json_array(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values.into_iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| NOT_STRING_ARRAY.to_string())).collect::<Result<_, _>>().map(Some)
}

type Parsed = (Vec<String>, Option<Box<Node>>, bool);

fn maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok((vec![], None, false));
    }
    Ok(match json_array(rest)? {
        Some(v) => (v, None, true),
        None => (vec![rest.to_string()], None, false),
    })
}

fn health(rest: &str) -> Result<Parsed, String> {
    let sep = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((vec![], None, false));
    }
    let (typ, tail) = rest.split_at(sep);
    let (mut cmd, _, json) = maybe_json(tail.trim_start())?;
    let mut args = vec![typ.to_string()];
    args.append(&mut cmd);
    Ok((args, None, json))
}

/// Words separated by whitespace; quotes and escapes are kept (removed later, on expansion).
pub(super) fn words(rest: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            None if c.is_whitespace() => {
                if in_word && (blank_ok || !word.is_empty()) {
                    out.push(std::mem::take(&mut word));
                }
                word.clear();
                in_word = false;
                blank_ok = false;
            }
            None => {
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                    word.push(c);
                } else if c == escape {
                    if i + 1 < chars.len() {
                        word.push(c);
                        word.push(chars[i + 1]);
                        i += 1;
                    }
                } else {
                    word.push(c);
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                    word.push(c);
                } else if c == escape && q != '\'' {
                    if i + 1 < chars.len() {
                        word.push(c);
                        word.push(chars[i + 1]);
                        i += 1;
                    } else {
                        quote = None;
                    }
                } else {
                    word.push(c);
                }
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        out.push(word);
    }
    out
}

/// ENV/LABEL: `KEY value` (legacy, separator "") or `K=V K2="v 2"` (separator "=").
fn name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let ws = words(rest, escape);
    let Some(first) = ws.first() else { return Ok(vec![]) };
    if !first.contains('=') {
        let mut parts = rest.splitn(2, is_ws);
        let key = parts.next().unwrap_or_default();
        let value = parts.next().map(|v| v.trim_start_matches(is_ws)).unwrap_or_default();
        if value.is_empty() {
            return Err(format!("{keyword} must have two arguments"));
        }
        return Ok(vec![key.to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::new();
    for w in ws {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!("Syntax error - can't find = in {}. Must be of the form: name=value", super::go_quote(&w)));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_split_off() {
        assert_eq!(
            split_command("COPY --from=a --chown=\"x y\" src dst"),
            ("COPY".into(), vec!["--from=a".into(), "--chown=x y".into()], "src dst".into())
        );
        assert_eq!(split_command("RUN -- --not-a-flag"), ("RUN".into(), vec![], "--not-a-flag".into()));
        assert_eq!(split_command("RUN --network=none"), ("RUN".into(), vec!["--network=none".into()], "".into()));
        assert_eq!(split_command("  cmd  "), ("cmd".into(), vec![], "".into()));
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(words(r#"a "b c" d\ e ''"#, '\\'), vec!["a", "\"b c\"", "d\\ e", "''"]);
        assert_eq!(words("x=`\"y", '`'), vec!["x=`\"y"]);
    }

    #[test]
    fn name_val_forms() {
        assert_eq!(name_val("A b c", "ENV", '\\').expect("legacy"), vec!["A", "b c", ""]);
        assert_eq!(name_val("A=1 B=\"x y\"", "ENV", '\\').expect("new"), vec!["A", "1", "=", "B", "\"x y\"", "="]);
        assert!(name_val("A=1 B", "ENV", '\\').expect_err("no =").contains("can't find ="));
        assert_eq!(name_val("A", "LABEL", '\\').expect_err("one"), "LABEL must have two arguments");
    }

    #[test]
    fn json_needs_strings() {
        assert_eq!(json_array(r#"["a", "b"]"#), Ok(Some(vec!["a".into(), "b".into()])));
        assert_eq!(json_array(r#"["a", 1]"#), Err(NOT_STRING_ARRAY.into()));
        assert_eq!(json_array(r#"[ "echo", [ "nested json" ] ]"#), Err(NOT_STRING_ARRAY.into()));
        assert_eq!(json_array(r#"["a"] x"#), Ok(None));
        assert_eq!(json_array("[]"), Ok(Some(vec![])));
        for line in [r#"CMD [ "echo", [ "nested json" ] ]"#, r#"RUN ["a", 1]"#, r#"COPY ["a", {}]"#, r#"HEALTHCHECK CMD [true]"#] {
            assert_eq!(node_from_line(line, '\\').err().as_deref(), Some(NOT_STRING_ARRAY), "{line}");
        }
    }
}
