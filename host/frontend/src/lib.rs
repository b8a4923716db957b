//! The Dockerfile frontend: bytes in, a typed build plan out.
//!
//! Three layers, imports in one direction: [`parser`] splits the text into logical lines
//! (comments, continuations, JSON vs shell form), [`instructions`] turns each into a typed
//! instruction with its flags checked, [`plan`] groups them into the stage to build.
//! Nothing here does I/O or knows about VMs, stores or registries.

pub mod ast;
pub mod command;
pub mod error;
pub mod instructions;
pub mod shell;
pub mod parser;
pub mod plan;

pub use error::ParseError;
pub use instructions::{Instruction, ShellOrExec};
pub use plan::{parse_dockerfile, Base, BuildPlan, Step};
