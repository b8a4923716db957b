//! Sandboxes: a running guest VM and the agent connection it yields.
//!
//! A [`Backend`] boots the guest image ([`GuestImage`]) and hands back a [`Vm`], whose
//! [`AgentClient`] speaks the kiln protocol. The QEMU backend ([`qemu`]) works everywhere QEMU
//! does; kiln's own VMM will be a second backend behind the same trait. This crate knows
//! nothing of Dockerfiles or images: it boots, connects, and tears down — always, including on
//! errors and Ctrl-C ([`children`]).

pub mod accel;
pub mod agent;
// The built-in VMM runs on x86_64 Linux only (kiln-vmm is its probe elsewhere).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod builtin;
pub mod children;
pub mod error;
pub mod guest;
pub mod interactive;
mod machine;
pub mod qemu;
pub mod virtiofs;
pub mod watchdog;
mod qmp;
pub mod snapshot;
mod select;
pub mod vz;

pub use agent::{AgentClient, ExitStatus, GuestInfo};
pub use interactive::{ProcessControl, ProcessIo, RunningProcess};
pub use select::{builtin_status, choose_backend, BackendKind, ChosenLater};
pub use error::SandboxError;
pub use guest::{GuestArch, GuestImage};
pub use machine::qemu_binary;

/// Settings for starting a guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub memory_mib: u32,
    pub cpus: u32,
    /// Directory for probe results that outlive one build (e.g. whether KVM works here).
    pub cache_dir: std::path::PathBuf,
    /// Show the guest's serial console on stderr.
    pub debug: bool,
    /// Host directories shared with the guest (containers' `-v`), mounted by
    /// [`AgentClient::mount_share`] under their tags.
    pub shares: Vec<Share>,
}

/// A host directory the VM shares with its guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The name the guest mounts it by (letters, digits, `_`).
    pub tag: String,
    pub host_path: std::path::PathBuf,
    pub readonly: bool,
    /// The guest's owners, modes and special files are kept in extended attributes of the
    /// host files (a volume kiln owns, where `chown` must work) instead of being the user's
    /// plain files (a host directory the user shares).
    pub keep_owners: bool,
    /// Shared over virtiofs (a `virtiofsd` per share, see [`virtiofs`]) rather than 9p; the
    /// guest mounts it by the same tag. Not with `keep_owners`.
    pub virtiofs: bool,
}

/// A running guest. Dropping it stops the guest. `Send`: a build's stages share one guest
/// from several threads (through the agent client, which is `Clone + Sync`).
pub trait Vm: Send {
    fn agent(&self) -> &AgentClient;
    /// Asks the agent to sync and power off, then makes sure the VM process is gone.
    fn shutdown(self: Box<Self>) -> Result<(), SandboxError>;
    /// What the backend chose, for progress output (e.g. "qemu/tcg").
    fn describe(&self) -> String;
}

/// Something that can boot the guest (from whichever stage thread first needs it).
pub trait Backend: Sync {
    fn start(&self, image: &GuestImage, config: &VmConfig) -> Result<Box<dyn Vm>, SandboxError>;
}
