//! Errors of the runtime. Every variant says what was being done.

use kiln_sandbox::SandboxError;
use kiln_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input from the user (flags, names): one line, no context needed.
    #[error("{0}")]
    Invalid(String),
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// The request conflicts with the container's state (name in use, running, stopped).
    #[error("{0}")]
    Conflict(String),
    /// (`cause` is printed, not chained: an error chain would print it twice.)
    #[error("{context}: {cause}")]
    Io { context: String, cause: std::io::Error },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), cause: source }
    }
}
