//! The build graph: stages, their dependencies, ARG scoping and `--target` pruning.
//!
//! [`parse_full`] turns Dockerfile text into a [`Dockerfile`]: parser directives, the global
//! ARGs (before the first FROM, usable only in FROM lines) and the stages with their typed
//! commands, still unexpanded. [`Dockerfile::resolve`] applies the build's options (build
//! args, target stage, platforms): it expands each FROM with the global args, links stages
//! (`FROM <stage>`, `COPY --from`, `RUN --mount from=`), keeps only the stages the target needs and
//! reports unused build args. Commands stay unexpanded: the executor expands each one with
//! the environment of its stage at that point (base image ENV included), which only it knows,
//! keeping the ARG scope with [`Scope`].
//!
//! No I/O: images are named, never pulled.

mod platform;
mod resolve;
pub mod scope;
#[cfg(test)]
mod tests;

pub use platform::{is_platform_arg, Platform, PROXY_ARGS};
pub use resolve::{BuildGraph, BuildOptions, ResolvedStage, StageBase};
pub use scope::Scope;

use crate::ast::{self, Directives};
use crate::command::{parse_commands, Command, Located};
use crate::ParseError;

/// One build stage as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages (what `COPY --from=0` refers to).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The FROM instruction.
    pub from: Located,
    /// The instructions after FROM, up to the next FROM.
    pub commands: Vec<Located>,
}

/// A whole Dockerfile, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    pub escape: char,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<Located>,
    pub stages: Vec<Stage>,
    /// Parser warnings (empty continuation lines).
    pub warnings: Vec<String>,
}

/// Parses and types a Dockerfile and splits it into stages.
pub fn parse_full(text: &str) -> Result<Dockerfile, ParseError> {
    let tree = ast::parse(text)?;
    let commands = parse_commands(&tree)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for c in commands {
        match (&c.command, stages.last_mut()) {
            (Command::From(f), _) => {
                if let Some(name) = &f.name {
                    if let Some(prev) = stages.iter().find(|s| s.name.as_ref() == Some(name)) {
                        return Err(ParseError::new(
                            c.line,
                            format!("duplicate stage name {}: also defined on line {}", ast::go_quote(name), prev.from.line),
                        ));
                    }
                }
                stages.push(Stage { index: stages.len(), name: f.name.clone(), from: c, commands: vec![] });
            }
            (_, Some(stage)) => stage.commands.push(c),
            (Command::Arg(_), None) => global_args.push(c),
            (_, None) => {
                return Err(ParseError::new(
                    c.line,
                    format!("no build stage in current context: {} before the first FROM", c.command.keyword()),
                ))
            }
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(tree.nodes.last().map_or(1, |n| n.start_line), "the Dockerfile has no FROM instruction"));
    }
    Ok(Dockerfile { directives: tree.directives, escape: tree.escape, global_args, stages, warnings: tree.warnings })
}

impl Dockerfile {
    /// Finds a stage by name (case-insensitive).
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let name = name.to_ascii_lowercase();
        self.stages.iter().find(|s| s.name.as_deref() == Some(name.as_str()))
    }
}
