//! kiln-sys: everything kiln's host crates need from the host OS, behind one set of names.
//!
//! One module per concern ([`dirs`], [`fs`], [`hv`], [`net`], [`process`], [`term`], [`signals`]), and inside each
//! one file per OS, chosen by `cfg` at that module boundary and nowhere else. Linux is what runs
//! kiln today; macOS and Windows compile in CI (and the Windows build's unit tests run under
//! Wine), and their code says "experimental" in its docs until it has run on those systems.
//!
//! This crate knows nothing of images, VMs or the agent: it must stay a thin, safe wrapper over
//! the OS, with a `// SAFETY:` note on every `unsafe` block.

pub mod dirs;
pub mod fs;
pub mod hv;
pub mod net;
pub mod process;
pub mod signals;
pub mod term;
