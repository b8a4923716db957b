//! The single-stage build plan the executor runs today: the base to start from and the
//! steps to apply, in order.
//!
//! Built on the full frontend ([`crate::ast`] + [`crate::command`]), then narrowed to what the
//! executor implements: anything else (other instructions, flags, variable expansion, a second
//! FROM, heredoc sources...) is an error naming the line and saying it is not supported yet,
//! never silently ignored. When the executor adopts [`crate::parse_full`], this module goes.

use crate::ast::{self, Node};
use crate::command::{parse_command, values, Chmod, Command, CopyLike, RunProgram, Source};
use crate::instructions::{Instruction, ShellOrExec};
use crate::shell::Lexer;
use crate::ParseError;

/// Where the image starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image name, resolved by the caller.
    Image(String),
}

/// One step after FROM, with its Dockerfile line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub instruction: Instruction,
    /// The instruction's text as written (for history and progress lines).
    pub text: String,
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub base: Base,
    pub steps: Vec<Step>,
}

fn not_yet(line: usize, what: String) -> ParseError {
    ParseError::new(line, format!("{what} is not supported by kiln yet"))
}

fn no_expansion(line: usize, keyword: &str, values: &[&str]) -> Result<(), ParseError> {
    if values.iter().any(|v| v.contains('$')) {
        return Err(ParseError::new(line, format!("{keyword}: variable expansion is not supported by kiln yet")));
    }
    Ok(())
}

/// The step text: upper-case keyword, then the line as written.
fn step_text(node: &Node) -> String {
    let original = node.original.trim();
    let rest = original.get(node.keyword.len()..).unwrap_or_default();
    let mut text = format!("{}{}", node.keyword.to_ascii_uppercase(), rest);
    for h in &node.heredocs {
        text.push('\n');
        text.push_str(&h.content);
        text.push_str(&h.name);
    }
    text
}

/// Unquotes a value with no `$` in it (quotes and escapes, BuildKit's rules).
fn unquote(line: usize, escape: char, s: &str) -> Result<String, ParseError> {
    let empty: Vec<(String, String)> = Vec::new();
    Lexer::new(escape).process_word(s, &empty).map_err(|e| ParseError::new(line, e.to_string()))
}

fn copy(line: usize, escape: char, c: CopyLike) -> Result<Instruction, ParseError> {
    let unsupported = [
        ("from", c.from.is_some()),
        ("chown", c.chown.is_some()),
        ("link", c.link),
        ("parents", c.parents),
        ("exclude", !c.exclude.is_empty()),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(not_yet(line, format!("COPY: flag --{flag}")));
    }
    let chmod = match c.chmod.as_deref().map(values::parse_chmod).transpose().map_err(|e| ParseError::new(line, format!("COPY: {e}")))? {
        None => None,
        Some(Chmod::Octal(m)) => Some(m),
        Some(Chmod::Symbolic(s)) => return Err(not_yet(line, format!("COPY: symbolic --chmod={s}"))),
    };
    let mut srcs = Vec::new();
    for s in c.srcs {
        match s {
            Source::Path(p) => {
                no_expansion(line, "COPY", &[&p])?;
                srcs.push(unquote(line, escape, &p)?);
            }
            Source::Inline(_) => return Err(not_yet(line, "COPY: heredoc sources".into())),
        }
    }
    no_expansion(line, "COPY", &[&c.dst])?;
    Ok(Instruction::Copy { srcs, dst: unquote(line, escape, &c.dst)?, chmod })
}

fn instruction(line: usize, escape: char, command: Command) -> Result<Instruction, ParseError> {
    Ok(match command {
        Command::From(f) => {
            if f.platform.is_some() {
                return Err(not_yet(line, "FROM: flag --platform".into()));
            }
            no_expansion(line, "FROM", &[&f.image])?;
            Instruction::From { image: f.image, alias: f.name }
        }
        Command::Run(r) => {
            if !r.mounts.is_empty() {
                return Err(not_yet(line, "RUN: flag --mount".into()));
            }
            if r.network != Default::default() {
                return Err(not_yet(line, "RUN: flag --network".into()));
            }
            if r.security != Default::default() {
                return Err(not_yet(line, "RUN: flag --security".into()));
            }
            match r.program() {
                RunProgram::Command(cmd) => Instruction::Run(cmd),
                RunProgram::Script { .. } => return Err(not_yet(line, "RUN: a heredoc script with #!".into())),
            }
        }
        Command::Copy(c) => copy(line, escape, c)?,
        Command::Cmd(c) => Instruction::Cmd(c),
        Command::Entrypoint(c) => Instruction::Entrypoint(c),
        Command::Workdir(d) => {
            no_expansion(line, "WORKDIR", &[&d])?;
            Instruction::Workdir(unquote(line, escape, &d)?)
        }
        Command::Env(pairs) => {
            let mut out = Vec::new();
            for (k, v) in pairs {
                no_expansion(line, "ENV", &[&k, &v])?;
                out.push((unquote(line, escape, &k)?, unquote(line, escape, &v)?));
            }
            Instruction::Env(out)
        }
        other => return Err(not_yet(line, other.keyword().to_string())),
    })
}

/// Parses a Dockerfile into a single-stage plan.
pub fn parse_dockerfile(text: &str) -> Result<BuildPlan, ParseError> {
    let tree = match ast::parse(text) {
        Ok(t) => t,
        Err(e) if e.message == "file with no instructions" => {
            return Err(ParseError::new(1, "the Dockerfile has no instructions"));
        }
        Err(e) => return Err(e),
    };
    let mut base = None;
    let mut steps = Vec::new();
    for node in &tree.nodes {
        let located = parse_command(node)?;
        let line = located.line;
        let is_from = matches!(located.command, Command::From(_));
        if base.is_none() && !is_from {
            if matches!(located.command, Command::Arg(_)) {
                return Err(not_yet(line, "ARG".into()));
            }
            return Err(ParseError::new(line, "no build stage in current context: the first instruction must be FROM"));
        }
        let instruction = instruction(line, tree.escape, located.command)?;
        match instruction {
            Instruction::From { image, .. } if base.is_none() => {
                base = Some(if image.eq_ignore_ascii_case("scratch") { Base::Scratch } else { Base::Image(image) });
            }
            Instruction::From { .. } => return Err(ParseError::new(line, "multi-stage builds are not supported by kiln yet")),
            instruction => steps.push(Step { line, instruction, text: step_text(node) }),
        }
    }
    let base = base.ok_or_else(|| ParseError::new(1, "the Dockerfile has no instructions"))?;
    Ok(BuildPlan { base, steps })
}

impl Step {
    /// Whether the step runs a process (and so needs a guest).
    pub fn needs_guest(&self) -> bool {
        matches!(self.instruction, Instruction::Run(_))
    }
}

/// Convenience for callers that only care about a RUN's argv.
pub fn run_argv(cmd: &ShellOrExec) -> Vec<String> {
    cmd.argv(&["/bin/sh".to_string(), "-c".to_string()])
}

#[cfg(test)]
mod tests;
