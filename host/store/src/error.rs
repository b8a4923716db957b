//! Errors of the store. Every variant names the object it concerns.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    BadDigest(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} is not in the store")]
    MissingBlob(String),
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("invalid reference format {reference:?}: {why}")]
    BadReference { reference: String, why: String },
    #[error("rejected layer: {0}")]
    HostileLayer(String),
    #[error("corrupt {what} {digest}: {why}")]
    Corrupt { what: &'static str, digest: String, why: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid archive: {0}")]
    BadArchive(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the store at {0} is not usable: {1}")]
    BadRoot(PathBuf, String),
    #[error("no image for platform {platform} (it has {available})")]
    NoPlatform { platform: String, available: String },
    #[error("{0} is a multi-platform image (an index): pick one of its platforms")]
    IsIndex(String),
    #[error("invalid platform {0}")]
    BadPlatform(String),
    /// A setting from the environment that cannot be used.
    #[error("invalid setting {0}")]
    BadSetting(String),
}

impl StoreError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// Adds context to `io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(context(), e))
    }
}
