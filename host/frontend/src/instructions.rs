//! Typed instructions: one parse function per keyword, checking arguments and flags.
//!
//! What kiln does not support yet is an error naming the instruction or flag, never silently
//! ignored: a build that runs must mean what the Dockerfile says.

use crate::parser::LogicalLine;
use crate::ParseError;

/// The exec (JSON array) or shell form of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

impl ShellOrExec {
    /// The argv this runs, given the image's shell (`["/bin/sh", "-c"]` by default).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Self::Exec(v) => v.clone(),
            Self::Shell(s) => shell.iter().cloned().chain(std::iter::once(s.clone())).collect(),
        }
    }
}

/// One instruction, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From { image: String, alias: Option<String> },
    Run(ShellOrExec),
    Copy { srcs: Vec<String>, dst: String, chmod: Option<u32> },
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    Workdir(String),
    Env(Vec<(String, String)>),
}

/// Instructions of the Dockerfile language that kiln does not implement yet.
const NOT_YET: &[&str] = &[
    "ADD", "ARG", "LABEL", "MAINTAINER", "EXPOSE", "VOLUME", "USER", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD",
];

fn err(l: &LogicalLine, msg: impl Into<String>) -> ParseError {
    ParseError::new(l.line, msg)
}

fn no_expansion(l: &LogicalLine, s: &str) -> Result<(), ParseError> {
    if s.contains('$') {
        return Err(err(l, format!("{}: variable expansion is not supported by kiln yet", l.keyword)));
    }
    Ok(())
}

fn no_flags(l: &LogicalLine) -> Result<(), ParseError> {
    match l.flags.first() {
        Some(f) => Err(err(l, format!("{}: flag --{} is not supported by kiln yet", l.keyword, flag_name(f)))),
        None => Ok(()),
    }
}

fn flag_name(f: &str) -> &str {
    f.split('=').next().unwrap_or(f)
}

/// Parses `["a", "b"]` if `rest` is a JSON array of strings.
fn json_array(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

fn shell_or_exec(l: &LogicalLine) -> Result<ShellOrExec, ParseError> {
    if l.rest.is_empty() {
        return Err(err(l, format!("{} requires at least one argument", l.keyword)));
    }
    Ok(match json_array(&l.rest) {
        Some(v) => ShellOrExec::Exec(v),
        None => ShellOrExec::Shell(l.rest.clone()),
    })
}

/// Splits on whitespace, honouring double/single quotes and backslash escapes (ENV values).
fn words(l: &LogicalLine, s: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(err(l, "unterminated quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn parse_from(l: &LogicalLine) -> Result<Instruction, ParseError> {
    if let Some(f) = l.flags.first() {
        return Err(err(l, format!("FROM: flag --{} is not supported by kiln yet", flag_name(f))));
    }
    let parts: Vec<&str> = l.rest.split_whitespace().collect();
    no_expansion(l, &l.rest)?;
    match parts.as_slice() {
        [image] => Ok(Instruction::From { image: image.to_string(), alias: None }),
        [image, kw, alias] if kw.eq_ignore_ascii_case("as") => {
            Ok(Instruction::From { image: image.to_string(), alias: Some(alias.to_ascii_lowercase()) })
        }
        _ => Err(err(l, "FROM requires either one argument, or three: FROM <image> AS <name>")),
    }
}

fn parse_copy(l: &LogicalLine) -> Result<Instruction, ParseError> {
    let mut chmod = None;
    for f in &l.flags {
        match f.split_once('=') {
            Some(("chmod", v)) => {
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| err(l, format!("COPY: invalid --chmod value {v:?}: expected an octal mode")))?;
                chmod = Some(mode);
            }
            _ => return Err(err(l, format!("COPY: flag --{} is not supported by kiln yet", flag_name(f)))),
        }
    }
    no_expansion(l, &l.rest)?;
    let args = match json_array(&l.rest) {
        Some(v) => v,
        None => l.rest.split_whitespace().map(str::to_string).collect(),
    };
    if args.len() < 2 {
        return Err(err(l, "COPY requires at least two arguments, but only one was provided. Destination could not be determined"));
    }
    let (dst, srcs) = args.split_last().ok_or_else(|| err(l, "COPY requires arguments"))?;
    Ok(Instruction::Copy { srcs: srcs.to_vec(), dst: dst.clone(), chmod })
}

fn parse_env(l: &LogicalLine) -> Result<Instruction, ParseError> {
    no_flags(l)?;
    no_expansion(l, &l.rest)?;
    let first = l.rest.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err(err(l, "ENV requires at least one argument"));
    }
    if !first.contains('=') {
        // Legacy form: ENV KEY the rest of the line.
        let value = l.rest[first.len()..].trim_start();
        let value = words(l, value)?.join(" ");
        return Ok(Instruction::Env(vec![(first.to_string(), value)]));
    }
    let mut pairs = Vec::new();
    for w in words(l, &l.rest)? {
        let (k, v) = w.split_once('=').ok_or_else(|| err(l, format!("ENV: {w:?} is not of the form KEY=VALUE")))?;
        if k.is_empty() {
            return Err(err(l, "ENV names can not be blank"));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(Instruction::Env(pairs))
}

/// Types one logical line.
pub fn parse_instruction(l: &LogicalLine) -> Result<Instruction, ParseError> {
    match l.keyword.as_str() {
        "FROM" => parse_from(l),
        "RUN" => {
            if let Some(f) = l.flags.first() {
                return Err(err(l, format!("RUN: flag --{} is not supported by kiln yet", flag_name(f))));
            }
            if l.rest.contains("<<") {
                return Err(err(l, "RUN: heredocs are not supported by kiln yet"));
            }
            Ok(Instruction::Run(shell_or_exec(l)?))
        }
        "COPY" => parse_copy(l),
        "CMD" => {
            no_flags(l)?;
            Ok(Instruction::Cmd(shell_or_exec(l)?))
        }
        "ENTRYPOINT" => {
            no_flags(l)?;
            Ok(Instruction::Entrypoint(shell_or_exec(l)?))
        }
        "WORKDIR" => {
            no_flags(l)?;
            no_expansion(l, &l.rest)?;
            if l.rest.is_empty() {
                return Err(err(l, "WORKDIR requires exactly one argument"));
            }
            Ok(Instruction::Workdir(l.rest.clone()))
        }
        "ENV" => parse_env(l),
        k if NOT_YET.contains(&k) => Err(err(l, format!("{k} is not supported by kiln yet"))),
        k => Err(err(l, format!("unknown instruction: {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::logical_lines;

    fn one(text: &str) -> Result<Instruction, ParseError> {
        let lines = logical_lines(text)?;
        parse_instruction(&lines[0])
    }

    #[test]
    fn run_forms() {
        assert_eq!(one("RUN echo hi").expect("ok"), Instruction::Run(ShellOrExec::Shell("echo hi".into())));
        assert_eq!(
            one(r#"RUN ["/bin/echo", "a b"]"#).expect("ok"),
            Instruction::Run(ShellOrExec::Exec(vec!["/bin/echo".into(), "a b".into()]))
        );
        // Not valid JSON: shell form, as Docker does.
        assert_eq!(one("RUN [not json").expect("ok"), Instruction::Run(ShellOrExec::Shell("[not json".into())));
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        assert_eq!(ShellOrExec::Shell("x".into()).argv(&sh), vec!["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn copy_and_env() {
        assert_eq!(
            one("COPY --chmod=750 a b /d/").expect("ok"),
            Instruction::Copy { srcs: vec!["a".into(), "b".into()], dst: "/d/".into(), chmod: Some(0o750) }
        );
        assert_eq!(
            one(r#"ENV A=1 B="two words" C=a\ b"#).expect("ok"),
            Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "two words".into()), ("C".into(), "a b".into())])
        );
        assert_eq!(one("ENV A hello world").expect("ok"), Instruction::Env(vec![("A".into(), "hello world".into())]));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e = one("\n\nFOO bar").expect_err("unknown");
        assert_eq!(e.to_string(), "Dockerfile:3: unknown instruction: FOO");
        assert_eq!(one("COPY onlyone").expect_err("short").line, 1);
        assert!(one("COPY --from=x a b").expect_err("flag").message.contains("--from"));
        assert!(one("COPY --chmod=99 a b").expect_err("mode").message.contains("octal"));
        assert!(one("ADD a b").expect_err("not yet").message.contains("not supported"));
        assert!(one("ENV A=$B").expect_err("expansion").message.contains("expansion"));
        assert!(one("RUN --mount=type=cache,target=/x true").is_err());
        assert!(one("ENV A=\"open").is_err());
    }
}
