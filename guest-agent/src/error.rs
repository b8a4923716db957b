//! The agent's error type: an OS error plus what the agent was doing when it happened.
//!
//! Every failure that reaches the host is a `Response::Error` whose message names the syscall
//! or step and the path involved, e.g. `mount overlay on /mnt/root: Invalid argument (os error 22)`.

use std::fmt;
use std::io;

/// A failure with human-readable context.
#[derive(Debug)]
pub struct Error {
    context: String,
    source: Option<io::Error>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error that has no OS cause (bad request, refused tar entry, ...).
    pub fn msg(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }

    /// An OS error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self {
            context: context.into(),
            source: Some(source),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Adds context to OS-level results.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), io::Error::from_raw_os_error(e as i32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_context_and_cause() {
        let r: io::Result<()> = Err(io::Error::from_raw_os_error(libc::ENOENT));
        let e = r.ctx(|| "open /x".into()).expect_err("error");
        assert!(e.to_string().starts_with("open /x: "), "{e}");
        let n: nix::Result<()> = Err(nix::errno::Errno::EPERM);
        assert!(n
            .ctx(|| "mount".into())
            .expect_err("e")
            .to_string()
            .contains("mount: "));
    }
}
