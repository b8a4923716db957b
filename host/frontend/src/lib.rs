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
//! How an executor drives the full language (one stage, after [`parse_full`] and
//! [`graph::Dockerfile::resolve`], stages in the graph's order):
//! 1. start from the base (scratch, an earlier stage's result, or an image) and its config:
//!    [`config::StageConfig::from_base`]; run the base image's ONBUILD triggers first
//!    ([`command::parse_onbuild_triggers`]);
//! 2. keep the ARG scope with [`graph::Scope::new`]; for each command: an `ARG` goes to
//!    [`graph::Scope::declare`]; any other is expanded with
//!    `located.expand(&Lexer::new(escape), &scope.expansion_env(&config.env_pairs()))`;
//! 3. metadata commands go to [`config::StageConfig::apply`]; RUN runs
//!    [`command::Run::program`] through [`config::ImageConfig::argv`] with the environment
//!    [`graph::Scope::run_env`]; COPY/ADD resolve `--chown` with [`command::chown`];
//! 4. each step's history line is [`config::created_by`] (RUN: with
//!    [`graph::Scope::history_args`]).

pub mod ast;
pub mod command;
pub mod config;
pub mod dockerignore;
pub mod error;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod shell;

#[cfg(test)]
mod robustness;

pub use error::ParseError;
pub use graph::parse_full;
pub use instructions::ShellOrExec;
