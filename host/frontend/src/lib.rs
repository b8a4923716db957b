//! The Dockerfile frontend: bytes in, a typed build graph out. Pure: no I/O, no VMs, no
//! stores, no registries.
//!
//! The full language, in layers with imports in one direction:
//! - [`ast`]: text -> syntax tree, exactly as BuildKit's parser splits it (directives,
//!   comments, continuations, JSON vs shell form, flags, heredocs, ONBUILD); [`ast::Ast::dump`]
//!   prints BuildKit's golden s-expression format.
//! - [`shell`]: word and variable expansion with BuildKit's shell-lexer semantics.
//! - [`command`]: syntax tree -> typed [`command::Command`]s, every instruction and flag checked.
//! - [`graph`]: commands -> stages, ARG scoping, stage references, `--target` pruning
//!   ([`parse_full`] then [`graph::Dockerfile::resolve`]).
//! - [`config`]: what metadata instructions do to the image config, and history lines.
//! - [`dockerignore`]: the context filter.
//! - [`lint`]: BuildKit's build checks and the `# check=` directive.
//!
//! The original single-stage API ([`parse_dockerfile`] -> [`BuildPlan`] of [`Instruction`]s,
//! in [`instructions`] and [`plan`], built on the full frontend) is what the executor uses today; it rejects
//! what the executor cannot run yet, naming the line.

pub mod ast;
pub mod command;
pub mod config;
pub mod dockerignore;
pub mod error;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod plan;
pub mod shell;

#[cfg(test)]
mod robustness;

pub use error::ParseError;
pub use graph::parse_full;
pub use instructions::{Instruction, ShellOrExec};
pub use plan::{parse_dockerfile, Base, BuildPlan, Step};
