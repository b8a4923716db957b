//! Can this host boot a Linux guest under kiln's VMM? Answers with a reason either way.
//!
//! Per host, at the module boundary: [`kvm`] on x86_64 Linux (the only host the VMM runs on
//! today); everywhere else [`unsupported`] answers "not yet" with the backend to use instead,
//! so `kiln doctor` and `--backend builtin` say so in one line rather than failing obscurely.
//! This module never boots anything but the probe's own tiny guest.

use std::time::Duration;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod kvm;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use kvm::probe;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod unsupported;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub use unsupported::probe;

/// What the probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// `Ok(())` if Linux guests can boot, else the one-line reason.
    pub linux_boot: Result<(), String>,
    /// From opening the hypervisor to the guest's first instruction's exit (an `out`), when
    /// the timing guest ran.
    pub start_to_first_instruction: Option<Duration>,
    /// Time of the ring-0 loop, when it ran.
    pub ring0_loop: Option<Duration>,
}
