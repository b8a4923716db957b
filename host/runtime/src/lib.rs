//! kiln's runtime: layers -> a root filesystem in a guest -> a process -> a diff, shared by
//! builds (the solver's RUN steps) and containers (`kiln run` and its lifecycle).
//!
//! Layering: below the solver and the CLI, above the sandbox (which yields an agent
//! connection) and the store. The runtime knows nothing of Dockerfiles; the solver knows
//! nothing of containers. Container state lives under the store root
//! (`$KILN_ROOT/containers/<id>/`), never in blobs.

pub mod budget;
pub mod container;
pub mod emulate;
pub mod error;
pub mod layers;
pub mod spec;

pub use error::RuntimeError;
