//! Typed instructions: one [`Command`] per syntax-tree [`crate::ast::Node`], every argument and flag
//! checked, errors as `Dockerfile:LINE: message`.
//!
//! Values are kept as written (quotes included where the parser keeps them): expansion needs
//! the environment of the stage at that point, so it happens later, through
//! [`Command::expand`] (see [`crate::shell`]). Checks that need expanded values (ports,
//! signals, chmod modes, durations) live in [`values`] and run in `expand`.
//!
//! This module never looks at files, images or the network.

pub mod chown;
mod expand;
pub mod flags;
pub mod mount;
pub mod parse;
pub mod values;

#[cfg(test)]
mod tests;

pub use mount::{Mount, MountType, Sharing};
pub use parse::{parse_command, parse_commands, parse_onbuild_triggers};
pub use values::{add_source_kind, AddSourceKind, Chmod, PortSpec};

use crate::ShellOrExec;

/// A heredoc body used as a RUN script or a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The delimiter (`EOF`), also the file name of a COPY source.
    pub name: String,
    /// The body, tabs already stripped for `<<-`.
    pub data: String,
    /// Variables in the body are expanded (delimiter not quoted). Never for RUN.
    pub expand: bool,
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: String,
    /// Lower-cased stage name.
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// `RUN --network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// `RUN --security` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: ShellOrExec,
    pub heredocs: Vec<InlineFile>,
    pub mounts: Vec<Mount>,
    pub network: Network,
    pub security: Security,
}

/// What a RUN executes once its heredocs are taken into account (BuildKit's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunProgram {
    /// Run this command (shell form goes through the image's SHELL).
    Command(ShellOrExec),
    /// `RUN <<EOF` whose body starts with `#!`: write the body to an executable file and run it.
    Script { name: String, data: String },
}

impl Run {
    /// The program: `RUN <<EOF` runs the body as the shell command (or as a script file if it
    /// starts with `#!`); other heredocs are appended to the command line for the shell to read.
    pub fn program(&self) -> RunProgram {
        let (ShellOrExec::Shell(line), Some(first)) = (&self.cmd, self.heredocs.first()) else {
            return RunProgram::Command(self.cmd.clone());
        };
        if crate::ast::parse_heredoc_word(line.trim()).is_some() {
            if first.data.starts_with("#!") {
                return RunProgram::Script { name: first.name.clone(), data: first.data.clone() };
            }
            return RunProgram::Command(ShellOrExec::Shell(first.data.clone()));
        }
        let mut full = line.clone();
        for h in &self.heredocs {
            full.push('\n');
            full.push_str(&h.data);
            full.push_str(&h.name);
        }
        RunProgram::Command(ShellOrExec::Shell(full))
    }
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(String),
    Inline(InlineFile),
}

/// `COPY` and `ADD` (ADD-only and COPY-only flags are None/false on the other).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyLike {
    pub srcs: Vec<Source>,
    pub dst: String,
    /// COPY: stage name, stage index or image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// COPY: keep the source's parent directories.
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD: expected digest of a remote source.
    pub checksum: Option<String>,
    /// ADD: keep `.git` of a git source.
    pub keep_git_dir: bool,
}

/// `ARG NAME[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub name: String,
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    Check {
        /// `["CMD", ...]` (exec form) or `["CMD-SHELL", "cmd"]`, as in the image config.
        test: Vec<String>,
        interval: Option<std::time::Duration>,
        timeout: Option<std::time::Duration>,
        start_period: Option<std::time::Duration>,
        start_interval: Option<std::time::Duration>,
        retries: Option<u32>,
    },
}

/// An instruction, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(ShellOrExec),
    Entrypoint(ShellOrExec),
    /// Key/value pairs, values as written (quotes removed on expansion).
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDef>),
    Add(CopyLike),
    Copy(CopyLike),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Health),
    /// The trigger's text (`RUN echo x`), stored in the image; `trigger` is it, typed.
    Onbuild {
        expression: String,
        trigger: Box<Command>,
    },
}

impl Command {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Env(_) => "ENV",
            Self::Arg(_) => "ARG",
            Self::Add(_) => "ADD",
            Self::Copy(_) => "COPY",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Expose(_) => "EXPOSE",
            Self::Volume(_) => "VOLUME",
            Self::User(_) => "USER",
            Self::Workdir(_) => "WORKDIR",
            Self::Shell(_) => "SHELL",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Onbuild { .. } => "ONBUILD",
        }
    }
}

/// A command with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub end_line: usize,
    /// The logical line as written (for history and progress).
    pub text: String,
    pub command: Command,
}
