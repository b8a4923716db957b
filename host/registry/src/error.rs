//! Errors of the registry client. Every variant says which registry object it concerns.

use kiln_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The connection failed (TLS, protocol, a dropped body) after every retry.
    #[error("{context}: {cause}")]
    Http { context: String, cause: Box<ureq::Error> },
    /// The registry (or the host a redirect named) cannot be reached at all: refused, no such
    /// host, no route. Not retried with backoff.
    #[error("cannot connect to {target}: {why}")]
    Unreachable { target: String, why: String },
    /// The registry answered with an unexpected status.
    #[error("{context}: the registry answered {status}{detail}")]
    Status { context: String, status: u16, detail: String },
    /// Credentials were missing or refused.
    #[error("{registry}: unauthorized: {why}")]
    Unauthorized { registry: String, why: String },
    /// The manifest or tag does not exist.
    #[error("manifest for {0} not found: manifest unknown")]
    ManifestUnknown(String),
    /// A document or blob broke a rule (size, digest, media type, JSON shape).
    #[error("{0}")]
    Invalid(String),
    /// No manifest for the requested platform in an index.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference} (it has: {available})")]
    NoPlatform { platform: String, reference: String, available: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Reading or writing the docker config, or running a credential helper.
    #[error("{context}: {why}")]
    Config { context: String, why: String },
    #[error("{context}: {cause}")]
    Io { context: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        Self::Invalid(why.into())
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), cause: source }
    }

    pub(crate) fn config(context: impl Into<String>, why: impl ToString) -> Self {
        Self::Config { context: context.into(), why: why.to_string() }
    }
}
